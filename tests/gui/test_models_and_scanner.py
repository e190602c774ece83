"""Models checked with qtmodeltester; the scanner's pure part with a fake clock."""

from __future__ import annotations

from datetime import datetime

from pytestqt.modeltest import ModelTester

from station.domain import Outcome, Step, StepTiming
from station.gui.models import ResultRow, ResultsModel, SlotListModel, TimelineModel
from station.gui.scanner import ScanClassifier, ScanKind, ScanPatterns
from station.gui.slots import SlotState, SlotView
from station.roles import Action, allowed
from station.workflow import UnitResult


def _failed() -> UnitResult:
    return UnitResult(slot="2", ok=False, failed_step=Step.PRE_ISSUANCE, error_code="csr_rejected",
                      message="refused", hint="aside",
                      timings=(StepTiming(step=Step.CONNECT, outcome=Outcome.OK, duration_ms=1.0),))


def test_slot_model(qtmodeltester: ModelTester) -> None:
    model = SlotListModel([SlotView(name="1", port="/dev/a"), SlotView(name="2", port="/dev/b")])
    qtmodeltester.check(model)
    model.set_view(1, model.view(1).with_(state=SlotState.FAIL, message="x"))
    assert model.index(1, 0).data() == "Slot 2: FAIL"
    qtmodeltester.check(model)


def test_results_and_timeline_models(qtmodeltester: ModelTester) -> None:
    results = ResultsModel(limit=3)
    qtmodeltester.check(results)
    for n in range(5):
        results.add(ResultRow(finished=datetime.now(), result=UnitResult(slot=str(n), ok=True,
                                                                         unit_serial=f"S{n}")))
    results.add(ResultRow(finished=datetime.now(), result=_failed()))
    qtmodeltester.check(results)
    assert results.rowCount() == 3 and results.index(0, 3).data() == "\u2718 FAIL"
    timeline = TimelineModel()
    timeline.show(_failed())
    qtmodeltester.check(timeline)
    assert [timeline.index(r, 1).data() for r in range(2)] == ["connect", "pre issuance"]
    # As the workflow reports it: the failed step is the last timing, and shows once, as failed.
    real = UnitResult(slot="2", ok=False, failed_step=Step.PRE_ISSUANCE, error_code="csr_rejected",
                      timings=(StepTiming(step=Step.CONNECT, outcome=Outcome.OK, duration_ms=1.0),
                               StepTiming(step=Step.PRE_ISSUANCE, outcome=Outcome.FAILED,
                                          duration_ms=2.0)))
    timeline.show(real)
    assert [(timeline.index(r, 1).data(), timeline.index(r, 2).data())
            for r in range(timeline.rowCount())] == [("connect", "\u2714 ok"),
                                                     ("pre issuance", "\u2718 failed")]


def test_scan_patterns_and_rescan_window() -> None:
    now = [100.0]
    c = ScanClassifier(clock=lambda: now[0])
    assert c.classify("WO-1001") is not None
    assert c.classify("WO-1001") is None  # identical rescan within 2 s
    now[0] += 2.5
    scan = c.classify("WO-1001")
    assert scan is not None and scan.kind is ScanKind.WORK_ORDER
    kinds = [c.classify(t) for t in ("B-1001", "U-ABC-1", "hello")]
    assert [k.kind for k in kinds if k] == [ScanKind.BADGE, ScanKind.UNIT_LABEL, ScanKind.UNKNOWN]
    prefixed = ScanClassifier(patterns=ScanPatterns(prefix="]C1"))
    got = prefixed.classify("]C1B-2001")
    assert got is not None and got.kind is ScanKind.BADGE and got.text == "B-2001"


def test_permission_table() -> None:
    assert allowed("technician", Action.PROVISION)
    assert not allowed("technician", Action.CONFIGURE)
    assert not allowed("technician", Action.LEAVE_KIOSK)
    assert not allowed("quality", Action.PROVISION) and allowed("quality", Action.VIEW_AUDIT)
    assert allowed("admin", Action.LEAVE_KIOSK)
    assert not allowed(None, Action.PROVISION)
