"""Long fuzz run of the frame decoder, the message parser and the CSR intake path.

    .venv/bin/python bench/fuzz.py [--inputs 1000000] [--csr-inputs N] [--seed S]

Prints one ``name: value`` a line: decoder_inputs, decoder_crashes, csr_inputs, csr_crashes,
fuzz_inputs, fuzz_crashes, seconds. A crash is any exception other than the layer's own bad-input
error; the first few are printed to stderr with the input in hex so they can be replayed.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _loop(name: str, target: Callable[[bytes], object], seeds: Sequence[bytes], count: int,
          rng: random.Random) -> int:
    from tests.reliability.fuzz_targets import mutate

    crashes = 0
    for _ in range(count):
        data = mutate(rng, seeds)
        try:
            target(data)
        except Exception as exc:  # anything escaping is a crash, by definition
            crashes += 1
            if crashes <= 5:
                print(f"{name} crash: {type(exc).__name__}: {exc}; input {data.hex()}", file=sys.stderr)
    return crashes


def run(inputs: int, csr_inputs: int, seed: int) -> dict[str, float]:
    from fixtures.softhsm import create_test_ca
    from hsm.issuer import Issuer
    from hsm.keys import CaKey
    from tests.reliability.fuzz_targets import csr_intake, decode_stream, frame_seeds, station_receive

    rng = random.Random(seed)
    started = time.perf_counter()
    half = inputs // 2  # the stream decoder+parser, and the station connection, each half

    decoder_crashes = _loop("decoder", decode_stream, frame_seeds(), inputs - half, rng)
    decoder_crashes += _loop("connection", station_receive, frame_seeds(), half, rng)
    csr_crashes = 0
    if csr_inputs:
        with tempfile.TemporaryDirectory(prefix="fuzz-ca-") as tmp:
            ca = create_test_ca(Path(tmp))
            token = ca.open()
            try:
                intake = csr_intake(Issuer(CaKey(token, label=ca.key_label), [ca.ca_cert()]))
                csr_crashes = _loop("csr", intake.check, intake.seeds, csr_inputs, rng)
            finally:
                token.close()
    return {"decoder_inputs": inputs, "decoder_crashes": decoder_crashes, "csr_inputs": csr_inputs,
            "csr_crashes": csr_crashes, "fuzz_inputs": inputs + csr_inputs,
            "fuzz_crashes": decoder_crashes + csr_crashes,
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--inputs", type=int, default=1_000_000, help="decoder/parser inputs")
    parser.add_argument("--csr-inputs", type=int, default=None,
                        help="CSR intake inputs (default: inputs / 20)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    csr = args.csr_inputs if args.csr_inputs is not None else args.inputs // 20
    figures = run(args.inputs, csr, seed)
    print(f"seed: {seed}")
    for name, value in figures.items():
        print(f"{name}: {value}")
    return 0 if figures["fuzz_crashes"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
