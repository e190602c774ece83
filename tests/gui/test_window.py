"""The real window, offscreen: scans, clicks, SoftHSM, SQLite and virtual devices on ptys."""

from __future__ import annotations

from PySide6.QtCore import Qt as QtNS
from PySide6.QtCore import QTimer
from pytestqt.qtbot import QtBot

from fixtures.virtual_dut import Faults
from station.config import ScannerConfig
from station.domain import UnitStatus
from station.gui.slots import SlotState
from station.gui.window import AdminPage, LinePage, QualityPage, SignInPage
from tests.gui.conftest import WindowFactory, scan, sign_in

LONG = 30_000


def _refusals(window: object) -> list[dict[str, str]]:
    store = window.controller.station.store  # type: ignore[attr-defined]
    return [e.detail for e in store.events() if e.kind == "refusal"]


def test_scan_sign_in_work_order_then_provision_four_by_click(qtbot: QtBot,
                                                               make_window: WindowFactory) -> None:
    window = make_window()
    assert isinstance(window.current_page(), SignInPage)
    sign_in(qtbot, window)
    qtbot.waitUntil(lambda: isinstance(window.current_page(), LinePage))
    assert window.session.operator is not None and window.session.operator.role == "technician"
    scan(qtbot, window, "WO-DEMO-1001")
    qtbot.waitUntil(lambda: window.controller.work_order is not None)
    assert "WO-DEMO-1001" in window.line.banner.work_order.text()
    assert "Tess Technician" in window.line.banner.operator.text()

    qtbot.mouseClick(window.line.start_all, QtNS.MouseButton.LeftButton)
    model = window.controller.slot_model
    qtbot.waitUntil(lambda: all(v.state is SlotState.PASS for v in model.views()), timeout=LONG)
    for tile, view in zip(window.line.grid.tiles, model.views(), strict=True):
        assert "PASS" in tile.verdict.text() and "\u2714" in tile.verdict.text()  # word + icon
        assert view.unit_serial and view.unit_serial in tile.line1.text()
    store = window.controller.station.store
    units = list(store.list_units(work_order="WO-DEMO-1001"))
    assert [u.status for u in units] == [UnitStatus.PROVISIONED] * 4
    assert "Done 4 of 16" in window.line.banner.done.text()
    assert window.controller.results_model.rowCount() == 4
    kinds = [e.kind for e in store.events()]
    assert "sign_in" in kinds


def test_faulty_device_shows_fail_with_reason_and_hint(qtbot: QtBot, make_window: WindowFactory) -> None:
    window = make_window([None, Faults(bad_csr_signature=True)])
    sign_in(qtbot, window)
    scan(qtbot, window, "WO-DEMO-1001")
    qtbot.waitUntil(lambda: window.controller.work_order is not None)
    tile = window.line.grid.tiles[1]
    qtbot.mouseClick(tile, QtNS.MouseButton.LeftButton)  # start slot 2 by clicking its tile
    qtbot.waitUntil(lambda: window.controller.slot_model.view(1).state is SlotState.FAIL, timeout=LONG)
    assert "FAIL" in tile.verdict.text() and "\u2718" in tile.verdict.text()
    assert "certificate request was refused" in tile.line1.text()
    assert "Set the device aside" in tile.hint.text()
    assert window.controller.slot_model.view(0).state is not SlotState.RUNNING  # only slot 2 ran
    window.line.results.clicked.emit(window.controller.results_model.index(0, 0))
    timeline = window.controller.timeline_model
    assert timeline.rowCount() >= 2
    last = timeline.index(timeline.rowCount() - 1, 2).data()
    assert "failed" in last


def test_a_critical_fail_flashes_until_acknowledged(qtbot: QtBot, make_window: WindowFactory) -> None:
    """HMI.md: flash only for a critical state, slowly, stopping on acknowledge. A device that cannot
    prove it holds its certified key (its certificate is marked for revocation) is critical; a
    refused CSR (the unit is set aside) is an ordinary FAIL and does not flash."""
    window = make_window([Faults(bad_challenge=True), Faults(bad_csr_signature=True)])
    sign_in(qtbot, window)
    scan(qtbot, window, "WO-DEMO-1001")
    qtbot.waitUntil(lambda: window.controller.work_order is not None)
    qtbot.mouseClick(window.line.start_all, QtNS.MouseButton.LeftButton)
    model = window.controller.slot_model
    qtbot.waitUntil(lambda: all(v.state is SlotState.FAIL for v in model.views()), timeout=LONG)
    critical, ordinary = window.line.grid.tiles
    assert model.view(0).critical and model.view(0).error_code == "pop_failed"
    assert critical.blinking and not ordinary.blinking
    styles = set()
    qtbot.waitUntil(lambda: styles.add(critical.styleSheet()) or len(styles) >= 2, timeout=2000)
    assert "FAIL" in critical.verdict.text()  # the word stays in both phases
    assert "call quality" in critical.hint.text() and "revoked" in critical.hint.text()
    qtbot.mouseClick(critical, QtNS.MouseButton.LeftButton)  # acknowledge
    qtbot.waitUntil(lambda: model.view(0).state is not SlotState.FAIL)
    assert not critical.blinking


def test_tiles_sit_where_the_slots_are_in_the_fixture(qtbot: QtBot, make_window: WindowFactory) -> None:
    """HMI.md: the grid mirrors the fixture as built. Slots 1-4 wired right to left, two rows."""
    window = make_window(places=[(1, 2), (1, 1), (2, 2), (2, 1)])
    sign_in(qtbot, window)
    qtbot.waitUntil(lambda: isinstance(window.current_page(), LinePage))
    layout = window.line.grid.layout()
    where = []
    for tile in window.line.grid.tiles:
        r, c, _, _ = layout.getItemPosition(layout.indexOf(tile))  # type: ignore[union-attr]
        where.append((tile.number.text(), r + 1, c + 1))
    assert where == [("Slot 1", 1, 2), ("Slot 2", 1, 1), ("Slot 3", 2, 2), ("Slot 4", 2, 1)]
    tiles = window.line.grid.tiles
    qtbot.waitUntil(lambda: tiles[0].geometry().x() > tiles[1].geometry().x())  # 1 right of 2
    assert tiles[2].geometry().y() > tiles[0].geometry().y()  # 3 below 1


def test_the_sites_scanner_prefix_and_label_pattern_apply(qtbot: QtBot, make_window: WindowFactory) -> None:
    """A site whose scanners send a ']C1' prefix and whose unit labels read SN + 8 digits."""
    window = make_window([None], scanner=ScannerConfig(prefix="]C1", unit_label="SN[0-9]{8}"))
    sign_in(qtbot, window)
    scan(qtbot, window, "]C1WO-DEMO-1001")
    qtbot.waitUntil(lambda: window.controller.work_order is not None)
    scan(qtbot, window, "]C1SN12345678")
    qtbot.waitUntil(lambda: window.controller.slot_model.view(0).label == "SN12345678")


def test_a_retry_from_fail_is_for_the_same_unit(qtbot: QtBot, make_window: WindowFactory,
                                               monkeypatch: object) -> None:
    """Starting a FAIL again (Start all, without acknowledging it: a click on the tile acknowledges)
    retries that unit only: the job carries the hardware id that failed; the same unit, rebooted,
    then passes."""
    window = make_window([Faults(reboot_at="get_csr")])
    sign_in(qtbot, window)
    scan(qtbot, window, "WO-DEMO-1001")
    qtbot.waitUntil(lambda: window.controller.work_order is not None)
    model = window.controller.slot_model
    tile = window.line.grid.tiles[0]
    qtbot.mouseClick(tile, QtNS.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: model.view(0).state is SlotState.FAIL, timeout=LONG)
    failed_hw = model.view(0).hardware_id
    assert failed_hw
    station = window.controller.station
    asked: list[object] = []
    real = station.slot_runs

    def spy(*args: object, **kwargs: object) -> object:
        asked.append(kwargs.get("expected_hardware_ids"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(station, "slot_runs", spy)  # type: ignore[attr-defined]
    qtbot.mouseClick(window.line.start_all, QtNS.MouseButton.LeftButton)  # the FAIL again: a retry
    qtbot.waitUntil(lambda: model.view(0).state is SlotState.PASS, timeout=LONG)
    assert asked == [[failed_hw]]
    assert model.view(0).hardware_id == failed_hw


def test_a_transient_failure_is_tried_again_by_itself(qtbot: QtBot, make_window: WindowFactory) -> None:
    """HMI.md: transient link failures are requeued automatically, a bounded number of times: a
    unit that restarts mid-session is tried again on its own and passes on its second attempt."""
    window = make_window([Faults(reboot_at="get_csr")])
    sign_in(qtbot, window)
    scan(qtbot, window, "WO-DEMO-1001")
    qtbot.waitUntil(lambda: window.controller.work_order is not None)
    notices: list[str] = []
    window.controller.notice.connect(lambda text, level: notices.append(text))
    qtbot.keyClick(window, QtNS.Key.Key_F5)
    model = window.controller.slot_model
    qtbot.waitUntil(lambda: model.view(0).state is SlotState.PASS, timeout=LONG)
    assert model.view(0).attempts == 2
    assert any("trying the same unit again" in n for n in notices)
    results = window.controller.results_model
    codes = {results.row(n).result.error_code for n in range(results.rowCount())}
    assert codes == {"device_rebooted", None}  # both attempts are listed


def test_function_keys_work_right_after_a_scan(qtbot: QtBot, make_window: WindowFactory) -> None:
    """F5 pressed the moment the work order's scan ends starts the line (a known gap: with
    QShortcuts it was lost while nothing had the focus); Ctrl+2 starts slot 2 alone; F12 signs out."""
    window = make_window([None, None, None])
    sign_in(qtbot, window)
    scan(qtbot, window, "WO-DEMO-1001")
    qtbot.keyClick(window, QtNS.Key.Key_2, QtNS.KeyboardModifier.ControlModifier)
    model = window.controller.slot_model
    qtbot.waitUntil(lambda: model.view(1).state is SlotState.PASS, timeout=LONG)
    assert model.view(0).state is SlotState.IDLE and model.view(2).state is SlotState.IDLE
    scan(qtbot, window, "WO-DEMO-1001")  # the same work order again, then at once F5
    qtbot.keyClick(window, QtNS.Key.Key_F5)
    qtbot.waitUntil(lambda: model.view(0).state is SlotState.PASS and model.view(2).state is
                    SlotState.PASS, timeout=LONG)
    qtbot.waitUntil(lambda: model.view(1).state is not SlotState.RUNNING, timeout=LONG)
    qtbot.keyClick(window, QtNS.Key.Key_F12)
    qtbot.waitUntil(lambda: window.session.operator is None)


def test_manual_entry_at_human_speed_is_handled_like_a_scan(qtbot: QtBot,
                                                            make_window: WindowFactory) -> None:
    window = make_window([None])
    sign_in(qtbot, window)
    entry = window.line.entry
    entry.setFocus()
    qtbot.keyClicks(entry, "WO-DEMO-1002", delay=60)  # a person typing, not a scanner
    qtbot.keyClick(entry, QtNS.Key.Key_Return)
    qtbot.waitUntil(lambda: window.controller.work_order is not None)
    assert window.controller.work_order.number == "WO-DEMO-1002"  # type: ignore[union-attr]
    assert entry.text() == ""


def test_scan_into_a_focused_text_box_is_routed_not_typed(qtbot: QtBot, make_window: WindowFactory) -> None:
    window = make_window([None])
    sign_in(qtbot, window)
    window.line.entry.setFocus()
    scan(qtbot, window.line.entry, "WO-DEMO-1001")
    qtbot.waitUntil(lambda: window.controller.work_order is not None)
    assert window.line.entry.text() == ""


def test_unit_label_scan_binds_a_slot_and_starts_it(qtbot: QtBot, make_window: WindowFactory) -> None:
    window = make_window([None, None])
    sign_in(qtbot, window)
    scan(qtbot, window, "WO-DEMO-1001")
    qtbot.waitUntil(lambda: window.controller.work_order is not None)
    with qtbot.waitSignal(window.controller.result_added, timeout=LONG) as blocker:
        scan(qtbot, window, "U-LABEL-0001")
    result = blocker.args[0]
    assert result.ok and result.slot == "1"
    events = list(window.controller.station.store.events(unit_id=result.unit_id))
    assert any(e.kind == "unit_label" and e.detail.get("label") == "U-LABEL-0001" for e in events)


def test_technician_cannot_leave_kiosk_or_open_configuration(qtbot: QtBot,
                                                            make_window: WindowFactory) -> None:
    window = make_window([None], kiosk=True)
    assert window.windowFlags() & QtNS.WindowType.FramelessWindowHint
    sign_in(qtbot, window)
    qtbot.waitUntil(lambda: isinstance(window.current_page(), LinePage))
    assert not window.close()  # the close button
    qtbot.keyClick(window, QtNS.Key.Key_F4, QtNS.KeyboardModifier.AltModifier)
    qtbot.keyClick(window, QtNS.Key.Key_Q, QtNS.KeyboardModifier.ControlModifier)
    assert window.isVisible()
    qtbot.mouseClick(window.line.config_button, QtNS.MouseButton.LeftButton)
    qtbot.keyClick(window, QtNS.Key.Key_F10)
    assert not isinstance(window.current_page(), AdminPage)
    assert "Refused" in window.line.notice.text()
    refusals = _refusals(window)
    actions = [(r["action"], r["where"]) for r in refusals]
    assert ("leave_kiosk", "window close") in actions
    assert ("leave_kiosk", "Alt+F4") in actions
    assert ("leave_kiosk", "Ctrl+Q") in actions
    assert ("configure", "configuration page") in actions
    assert all(r["role"] == "technician" for r in refusals)

    # An admin may: configuration opens, and leaving the kiosk closes the window.
    window.session.sign_out("user")
    sign_in(qtbot, window, "B-9001", "9876")
    qtbot.waitUntil(lambda: window.session.role == "admin")
    assert window.open_admin() and isinstance(window.current_page(), AdminPage)
    qtbot.mouseClick(window.admin.leave, QtNS.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.isVisible())


def test_wrong_pin_is_refused_and_logged(qtbot: QtBot, make_window: WindowFactory) -> None:
    window = make_window([None])
    sign_in(qtbot, window, "B-1001", "0000")
    assert window.session.operator is None
    assert "not accepted" in window.sign_in.message.text()
    events = [e for e in window.controller.station.store.events() if e.kind == "sign_in"]
    assert events[-1].outcome == "failed" and "0000" not in repr(events[-1])


def test_sign_out_on_idle(qtbot: QtBot, make_window: WindowFactory) -> None:
    window = make_window([None], idle_timeout_s=0.5)
    sign_in(qtbot, window)
    qtbot.waitUntil(lambda: window.session.operator is not None)
    qtbot.waitUntil(lambda: window.session.operator is None, timeout=5_000)
    assert isinstance(window.current_page(), SignInPage)
    events = list(window.controller.station.store.events())
    assert events[-1].kind == "sign_out_reason" and events[-1].detail["reason"] == "idle"
    assert events[-2].kind == "sign_out"


def test_quality_sees_audit_page_and_technician_is_refused(qtbot: QtBot,
                                                           make_window: WindowFactory) -> None:
    window = make_window([None])
    sign_in(qtbot, window, "B-2001", "2345")
    qtbot.waitUntil(lambda: isinstance(window.current_page(), QualityPage))
    assert not window.controller.start_slot(0)  # quality is read-only
    window.session.sign_out("user")
    sign_in(qtbot, window, "B-1001", "1234")
    qtbot.waitUntil(lambda: isinstance(window.current_page(), LinePage))
    assert not window.open_audit()
    assert ("view_audit", "audit page") in [(r["action"], r["where"]) for r in _refusals(window)]


def test_quality_revokes_a_certificate_in_two_steps(qtbot: QtBot, make_window: WindowFactory) -> None:
    """HMI.md: revocation takes two steps and a reason, is limited by role and is logged."""
    from PySide6.QtWidgets import QDialogButtonBox

    window = make_window([None])
    sign_in(qtbot, window)
    scan(qtbot, window, "WO-DEMO-1001")
    qtbot.waitUntil(lambda: window.controller.work_order is not None)
    qtbot.keyClick(window, QtNS.Key.Key_F5)
    model = window.controller.slot_model
    qtbot.waitUntil(lambda: model.view(0).state is SlotState.PASS, timeout=LONG)
    window.session.sign_out("user")
    sign_in(qtbot, window, "B-2001", "2345")
    qtbot.waitUntil(lambda: isinstance(window.current_page(), QualityPage))
    view = window.quality.view  # type: ignore[union-attr]
    view.apply_filters()  # type: ignore[attr-defined]
    qtbot.waitUntil(lambda: view.model.rowCount() == 1)  # type: ignore[attr-defined]
    view.table.selectRow(0)  # type: ignore[attr-defined]
    detail = view.detail  # type: ignore[attr-defined]
    qtbot.waitUntil(lambda: detail.revoke_button.isVisible())
    qtbot.mouseClick(detail.revoke_button, QtNS.MouseButton.LeftButton)  # step one
    dialog = detail.dialog
    assert dialog is not None and dialog.isVisible()
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert not ok.isEnabled()  # a note and the confirmation first
    dialog.note.setText("proof of possession failed at rework")
    dialog.reason.setCurrentText("key_compromise")
    assert not ok.isEnabled()
    dialog.confirm.setChecked(True)
    assert ok.isEnabled()
    qtbot.mouseClick(ok, QtNS.MouseButton.LeftButton)  # step two
    store = window.controller.station.store
    unit = next(iter(store.list_units()))
    assert unit.status is UnitStatus.REVOKED
    revoked = [e for e in store.events() if e.kind == "revoked"]
    assert [(e.operator, e.detail["reason"], e.detail["note"]) for e in revoked] == [
        ("B-2001", "key_compromise", "proof of possession failed at rework")]
    assert not detail.revoke_button.isVisible()  # nothing left to revoke
    assert "REVOKED" in detail.unit_labels["status"].text()


def test_window_stays_responsive_while_a_device_hangs(qtbot: QtBot, make_window: WindowFactory) -> None:
    window = make_window([Faults(silent_at="generate_key"), None])
    sign_in(qtbot, window)
    scan(qtbot, window, "WO-DEMO-1001")
    qtbot.waitUntil(lambda: window.controller.work_order is not None)
    window.controller.start_slot(0)
    model = window.controller.slot_model
    qtbot.waitUntil(lambda: model.view(0).step == "generate_key", timeout=LONG)
    ticks: list[int] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start()
    qtbot.wait(400)
    timer.stop()
    assert model.view(0).state is SlotState.RUNNING  # still hung...
    assert len(ticks) >= 10  # ...while the GUI thread keeps running its timers
    window.controller.start_slot(1)  # and another slot provisions meanwhile
    qtbot.waitUntil(lambda: model.view(1).state is SlotState.PASS, timeout=LONG)
    qtbot.waitUntil(lambda: model.view(0).state is SlotState.FAIL, timeout=LONG)
    assert "stopped answering" in model.view(0).message
