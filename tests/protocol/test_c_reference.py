"""The C reference of the framing (firmware_protocol/reference_c) agrees with the vectors and with the
Python implementation: an implementation written from PROTOCOL.md alone, in the language devices use.

The C code is compiled here with the warnings a firmware team would turn on (C99, -Wall -Wextra
-Werror -pedantic) and driven through its line harness, sp_vectors.c.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from firmware_protocol.codec import Frame, crc32c

HERE = Path(__file__).resolve().parents[2] / "firmware_protocol"
SOURCES = [HERE / "reference_c" / "sp_frame.c", HERE / "reference_c" / "sp_vectors.c"]
VECTORS = json.loads((HERE / "vectors" / "frames.json").read_text())


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        if os.environ.get("CI"):
            pytest.fail("no C compiler: tools/bootstrap installs gcc")
        pytest.skip("no C compiler (cc) on this machine")
    exe = tmp_path_factory.mktemp("c-reference") / "sp_vectors"
    subprocess.run([compiler, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2",
                    "-o", str(exe), *map(str, SOURCES)], check=True, capture_output=True)
    return exe


def ask(harness: Path, commands: list[str]) -> list[list[str]]:
    """Run the commands; the answer lines of each, in order."""
    done = subprocess.run([str(harness)], input="\n".join(commands) + "\n", text=True,
                          capture_output=True, check=True, timeout=60)
    answers: list[list[str]] = [[]]
    for line in done.stdout.splitlines():
        if line == "END":
            answers.append([])
        else:
            answers[-1].append(line)
    assert answers[-1] == []
    return answers[:-1]


def test_crc_and_cobs_vectors(harness: Path) -> None:
    crcs = VECTORS["crc32c"]
    cobs = VECTORS["cobs"]
    answers = ask(harness, [f"C {v['input_ascii'].encode().hex()}" for v in crcs]
                  + [f"B {v['decoded']}" for v in cobs] + [f"U {v['encoded']}" for v in cobs])
    assert [a[0] for a in answers[:len(crcs)]] == [v["crc"] for v in crcs]
    encoded = answers[len(crcs):len(crcs) + len(cobs)]
    decoded = answers[len(crcs) + len(cobs):]
    assert [a[0] for a in encoded] == [v["encoded"] for v in cobs]
    assert [a[0] for a in decoded] == [v["decoded"] or "-" for v in cobs]


def test_frame_vectors_decode_and_encode(harness: Path) -> None:
    frames = VECTORS["frames"]
    answers = ask(harness, [f"D {v['hex']}" for v in frames])
    rebuild: list[str] = []
    expected_wire: list[str] = []
    for vector, answer in zip(frames, answers, strict=True):
        if not vector["valid"]:
            assert answer == [f"DROP {vector['reason']}"], vector["name"]
            continue
        drops = [f"DROP {r}" for r in vector.get("dropped_before", [])]
        assert answer[:-1] == drops, vector["name"]
        kind, msg_type, seq, flags, payload = answer[-1].split()
        assert (kind, int(msg_type), int(seq)) == ("FRAME", vector["msg_type"], vector["seq"]), vector["name"]
        if not drops:
            rebuild.append(f"E {msg_type} {seq} {flags} {payload}")
            expected_wire.append(vector["hex"])
    assert [a[0] for a in ask(harness, rebuild)] == expected_wire


def test_c_and_python_agree_on_random_frames(harness: Path) -> None:
    """400 frames of random type, sequence number, flags and payload (zeros, 254-byte runs and
    the 1024-byte maximum included): the same wire bytes both ways, and the C receiver reads the
    Python frames back, also when several arrive in one stream."""
    rng = random.Random(20261125)
    frames = []
    for i in range(400):
        size = rng.choice([0, 1, 253, 254, 255, 508, 1023, 1024, rng.randrange(0, 1025)])
        alphabet = [0, 1, 0xFF] if i % 3 == 0 else list(range(256))
        payload = bytes(rng.choice(alphabet) for _ in range(size))
        frames.append(Frame(msg_type=rng.randrange(256), seq=rng.randrange(65536),
                            flags=rng.randrange(256), payload=payload))
    answers = ask(harness, [f"E {f.msg_type} {f.seq} {f.flags} {f.payload.hex() or '-'}" for f in frames])
    assert [a[0] for a in answers] == [f.to_wire().hex() for f in frames]
    stream = b"".join(f.to_wire() for f in frames[:40])
    got = ask(harness, [f"D {stream.hex()}"])[0]
    assert got == [f"FRAME {f.msg_type} {f.seq} {f.flags} {f.payload.hex() or '-'}" for f in frames[:40]]
    data = bytes(rng.randrange(256) for _ in range(3000))
    assert ask(harness, [f"C {data.hex()}"])[0] == [f"{crc32c(data):08x}"]
