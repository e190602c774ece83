"""Benchmarks 2-4: line throughput, station overhead per unit, wire efficiency.

All three run the real station (:func:`station.app.open_station`: SoftHSM signer, SQLite audit store
with durable commits behind the audit writer, serial links over pseudo-terminals) against virtual
devices in a separate process (:mod:`bench.perf.devices`), which count every byte on the wire.

2. Line throughput: N slots, each provisioning K units back to back at 115200 baud with the default
   key-generation delay. The virtual devices pace both directions (10 bit times a byte, 8N1). The
   limit per unit is the time the device was busy with it, as the device itself measures: from the
   first byte of each request to the last byte of its reply, which is the wire time of both at the
   baud rate plus the device's own delays (key generation, CSR and challenge signing). N slots run in
   parallel, so the line limit is N x 3600 / that; whatever else a unit takes is the station's. The
   reference text also shows the limit computed from the byte counters alone ((bytes both ways) x
   10 / baud + key delay), which leaves out the device's signing time, and the ratio against it.
3. Overhead with instant devices (no delays, no pacing), one slot: per unit, wall time minus the time
   the station was blocked reading the port (device and pty), minus the HSM's C_Sign, minus the durable
   commits it waited for. What is left is the station's own work: checks, building, verifying,
   encoding, audit bookkeeping, thread hand-offs.
4. Wire efficiency: bytes on the wire per unit (device counters) against the payload bytes; and the
   same exchange as an AT-command installer sends it, hex-encoded.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bench.perf.common import Intervals, Row, bench_ca, fmt, median, percentile, work_order
from bench.perf.devices import DeviceProcess
from hsm.pin import FixedPin, Pin
from station.app import Station, open_station
from station.domain import Step, WorkOrder
from station.ports import AuditStore, DeviceLink
from station.signing import HsmSigner
from station.transport import SerialDeviceLink
from station.workflow import Provisioner, SlotJob, UnitResult

BAUD = 115200
KEY_DELAY = 0.08  # the virtual device's default key-generation time
FRAME_FLOOR_BYTES = 13  # per frame: 2 delimiters + 1 COBS code byte + 6 header + 4 CRC-32C


class _TimedAudit:
    """The audit writer, with the time each call blocked its caller recorded as ``await``."""

    def __init__(self, inner: AuditStore, intervals: Intervals) -> None:
        self._inner = inner
        self._intervals = intervals

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        return self._intervals.wrap("await", attr) if callable(attr) else attr


@dataclass
class _Bench:
    station: Station
    provisioner: Provisioner
    work_order: WorkOrder
    intervals: Intervals


@contextmanager
def _station(quantity: int) -> Iterator[_Bench]:
    """The real station on a fresh token and database, instrumented (bench-side only)."""
    with bench_ca("bench-line") as ca, tempfile.TemporaryDirectory(prefix="station-bench-db-") as tmp:
        signer = HsmSigner.open(module_path=ca.module_path, token_label=ca.token_label,
                                key_label=ca.key_label, pin_source=FixedPin(Pin(ca.pin)),
                                ca_chain_path=ca.ca_dir / "chain.pem")
        wo = work_order(quantity)
        intervals = Intervals()
        # Instrumentation: the HSM's C_Sign and SQLite's COMMIT (which includes the fsync).
        ca_key = getattr(signer, "_issuer").ca_key  # noqa: B009 - bench-only timing hook
        ca_key.sign_digest = intervals.wrap("sign", ca_key.sign_digest)
        with open_station(station_id="bench-station", signer=signer, database=Path(tmp) / "audit.db",
                          work_order=wo) as station:
            dialect = station.store.engine.dialect
            dialect.do_commit = intervals.wrap("commit", dialect.do_commit)  # type: ignore[method-assign]
            audit = cast(AuditStore, _TimedAudit(station.writer, intervals))
            provisioner = Provisioner(signer=signer, audit=audit)
            yield _Bench(station=station, provisioner=provisioner, work_order=wo, intervals=intervals)


def _opener(port: str, slot: str, intervals: Intervals | None) -> Callable[[], DeviceLink]:
    def open_link() -> DeviceLink:
        link = SerialDeviceLink(port, baudrate=BAUD, slot=slot)
        if intervals is not None:  # time blocked in reads = waiting for the device and the pty
            read = getattr(link, "_read")  # noqa: B009 - bench-only timing hook
            setattr(link, "_read", intervals.wrap("wait", read))  # noqa: B010
        return link
    return open_link


@dataclass(frozen=True)
class _Unit:
    result: UnitResult
    start: float
    end: float
    thread: int


def _run_slots(bench: _Bench, slots: Sequence[Sequence[str]], *,
               instrument: bool) -> tuple[list[_Unit], float]:
    """Each slot provisions its ports one after another; all slots in parallel. Returns units, wall."""
    barrier = threading.Barrier(len(slots))

    def worker(index: int) -> list[_Unit]:
        name = str(index + 1)
        out = []
        barrier.wait()
        for port in slots[index]:
            job = SlotJob(station="bench-station", slot=name, port=port, operator="bench",
                          work_order=bench.work_order)
            start = time.perf_counter()
            result = bench.provisioner.provision(
                job, _opener(port, name, bench.intervals if instrument else None))
            out.append(_Unit(result, start, time.perf_counter(), threading.get_ident()))
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        units = [u for chunk in pool.map(worker, range(len(slots))) for u in chunk]
    wall = time.perf_counter() - started
    failed = [u.result for u in units if not u.result.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} units failed, first: {failed[0].error_code} {failed[0].message}")
    return units, wall


def throughput(*, quick: bool = False, slot_counts: Sequence[int] = (1, 4, 8, 16)) -> list[Row]:
    per_slot = 2 if quick else 10
    rows = []
    total = sum(n * per_slot for n in slot_counts) + 1
    with _station(total) as bench:
        with DeviceProcess(1) as warm:  # first unit pays imports and caches
            _run_slots(bench, [warm.ports], instrument=False)
        for n in slot_counts:
            with DeviceProcess(n * per_slot, baud=BAUD, key_delay=KEY_DELAY) as devices:
                ports = devices.ports
                slots = [ports[i * per_slot:(i + 1) * per_slot] for i in range(n)]
                units, wall = _run_slots(bench, slots, instrument=False)
                stats = devices.stats()
            wire_bytes = sum(s["rx"] + s["tx"] for s in stats) / len(stats)
            computed_s = wire_bytes * 10 / BAUD + KEY_DELAY
            device_s = sum(s["busy_s"] for s in stats) / len(stats)  # each device is one unit
            limit = n * 3600 / device_s
            measured = len(units) * 3600 / wall
            rows.append(Row(
                bench="2", figure=f"line, {n} slot{'s' if n > 1 else ''} x {per_slot} units, units/hour",
                value=measured, unit="u/h",
                reference=(f"devices busy {device_s * 1000:.0f} ms/unit (computed {computed_s * 1000:.0f} ms "
                           f"= {wire_bytes:.0f} B + key delay: {measured / (n * 3600 / computed_s):.3f}x)"),
                ref_value=limit, target=">= 95 %", met=measured >= 0.95 * limit))
    return rows


def _payload_bytes(result: UnitResult, chain: Sequence[bytes], wo: WorkOrder) -> dict[str, int]:
    """The meaningful bytes of one unit's exchange, by item."""
    assert result.cert_der is not None
    cert = x509.load_der_x509_certificate(result.cert_der)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    details = {t.step: t.detail for t in result.timings}
    subject = [a.value for a in cert.subject]
    return {
        "hardware id": len(bytes.fromhex(result.hardware_id or "")),
        "config": sum(len(k.encode()) + len(v.encode()) for k, v, _ in wo.commissioning),
        "public key": len(spki),
        "subject asked": sum(len(str(v).encode()) for v in subject),
        "CSR nonce": 16,
        "CSR": int(details[Step.GET_CSR].get("csr_bytes", "0")),
        "certificate + chain": len(result.cert_der) + sum(len(c) for c in chain),
        "challenge nonce": 32,
        "challenge signature": 71,  # P-256 ECDSA DER: 70-72 bytes
    }


def _at_exchange(payload: dict[str, int], wo: WorkOrder) -> int:
    """Bytes of the same exchange as an AT-command installer sends it: hex-encoded lines, OK replies."""
    ok = len("\r\nOK\r\n")
    n = len("AT+ID?\r\n") + len("+ID: \r\n") + 2 * payload["hardware id"] + ok
    for key, value, _ in wo.commissioning:
        n += len(f'AT+CFG="{key}","{value}"\r\n') + ok
    n += len("AT+KEYGEN=P256\r\n") + len("+KEYGEN: \r\n") + 2 * payload["public key"] + ok
    n += len('AT+CSR="","","",\r\n') + payload["subject asked"] + 2 * payload["CSR nonce"]
    n += len("+CSR: \r\n") + 2 * payload["CSR"] + ok
    bundle, chunk = payload["certificate + chain"], 256
    for offset in range(0, bundle, chunk):
        n += len(f"AT+CERT={offset},\r\n") + 2 * min(chunk, bundle - offset) + ok
    n += len("AT+CHAL=\r\n") + 2 * payload["challenge nonce"]
    n += len("+CHAL: \r\n") + 2 * payload["challenge signature"] + ok
    n += len("AT+LOCK\r\n") + ok + len("AT+STATUS?\r\n") + len("+STATUS: LOCKED\r\n") + ok
    return n


def overhead_and_wire(*, quick: bool = False) -> list[Row]:
    count, skip = (60, 5) if quick else (400, 20)
    with _station(count) as bench, DeviceProcess(count) as devices:
        units, _ = _run_slots(bench, [devices.ports], instrument=True)
        stats = devices.stats()
        chain = list(bench.station.signer.chain())
        iv = bench.intervals
        overheads = []
        for u in units[skip:]:
            wall = u.end - u.start
            wait = iv.total("wait", u.start, u.end, u.thread)
            sign = iv.total("sign", u.start, u.end, u.thread)
            commit = iv.overlap("commit", "await", u.start, u.end, u.thread)
            overheads.append((wall - wait - sign - commit) * 1000)
        commits = len([i for i in iv.items if i[1] == "commit"]) / len(units)
        walls = [(u.end - u.start) * 1000 for u in units[skip:]]
        payload = _payload_bytes(units[-1].result, chain, bench.work_order)
        at_bytes = _at_exchange(payload, bench.work_order)
    med, p99 = median(overheads), percentile(overheads, 0.99)
    wire = sum(s["rx"] + s["tx"] for s in stats) / len(stats)
    pay = sum(payload.values())
    # Every frame costs at least 13 B: two 0x00 delimiters, one COBS code byte, the 6-byte header
    # (type, flags, seq, length) and the CRC-32C; each request has exactly one reply.
    frames = 2 * sum(len(s["requests"]) for s in stats) / len(stats)
    floor = pay + FRAME_FLOOR_BYTES * frames
    return [
        Row(bench="3", figure=f"station overhead/unit, median ({len(overheads)} units, 1 slot)",
            value=med, unit="ms", reference=f"unit wall time, median ({commits:.1f} commits/unit)",
            ref_value=median(walls), target="<= 2 ms", met=med <= 2.0, ratio_override=None),
        Row(bench="3", figure="station overhead/unit, p99", value=p99, unit="ms",
            reference="unit wall time, p99", ref_value=percentile(walls, 0.99)),
        Row(bench="4", figure="wire bytes/unit (both directions)", value=wire, unit="B",
            reference="payload: " + ", ".join(f"{k} {v}" for k, v in payload.items()),
            ref_value=float(pay), target="<= 1.03x", met=wire <= 1.03 * pay),
        Row(bench="4", figure=f"wire floor: payload + {FRAME_FLOOR_BYTES} B x {frames:.0f} frames "
                              "(CRC+seq per frame)", value=floor, unit="B",
            reference="payload (1.03x needs <= 4 frames: not reachable with one frame per request)",
            ref_value=float(pay)),
        Row(bench="4", figure="peer: same exchange hex-encoded as AT commands", value=float(at_bytes),
            unit="B", reference=f"payload ({fmt(at_bytes / wire)}x our wire bytes)", ref_value=float(pay)),
    ]
