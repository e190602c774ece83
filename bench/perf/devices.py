"""A separate process full of virtual devices, as real units are separate hardware.

``python -m bench.perf.devices --count N [--baud B] [--key-delay S]`` starts N devices, prints one JSON
line ``{"ports": [...]}``, then answers each ``stats`` line on stdin with a JSON list of per-device byte
counters, and exits on ``quit`` or end of input. Running the devices outside the station's process
keeps their CPU (key generation, CSR signing) off the station's interpreter lock.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from fixtures.virtual_dut import virtual_devices


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf.devices")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--baud", type=int, default=None)
    parser.add_argument("--key-delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    with virtual_devices(args.count, key_delay=args.key_delay, baud=args.baud) as devices:
        print(json.dumps({"ports": [d.port for d in devices]}), flush=True)
        for line in sys.stdin:
            if line.strip() == "stats":
                print(json.dumps([{"rx": d.bytes_received, "tx": d.bytes_sent, "busy_s": d.busy_s,
                                   "requests": d.requests} for d in devices]), flush=True)
            elif line.strip() == "quit":
                break
    return 0


class DeviceProcess:
    """Start :func:`main` in a child process; ``ports`` once started, :meth:`stats` any time."""

    def __init__(self, count: int, *, baud: int | None = None, key_delay: float = 0.0) -> None:
        cmd = [sys.executable, "-m", "bench.perf.devices", "--count", str(count),
               "--key-delay", str(key_delay)]
        if baud:
            cmd += ["--baud", str(baud)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        first = self._proc.stdout.readline()
        if not first:
            self._proc.wait()
            raise RuntimeError("the device process did not start")
        self.ports: list[str] = json.loads(first)["ports"]

    def stats(self) -> list[dict[str, Any]]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write("stats\n")
        self._proc.stdin.flush()
        result: list[dict[str, Any]] = json.loads(self._proc.stdout.readline())
        return result

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write("quit\n")
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> DeviceProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


if __name__ == "__main__":
    raise SystemExit(main())
