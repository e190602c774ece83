"""Serials: 128 CSPRNG bits each, never repeated, also across a fork (the buffer is per process)."""

from __future__ import annotations

import os

from hsm.issuer import random_serial


def test_serials_are_distinct_positive_and_at_most_128_bits() -> None:
    serials = [random_serial() for _ in range(20_000)]  # several 4 KiB refills
    assert len(set(serials)) == len(serials)
    assert all(0 < s < (1 << 128) for s in serials)
    assert max(s.bit_length() for s in serials) > 120  # the whole width is used


def test_a_forked_child_never_hands_out_the_parents_serials() -> None:
    random_serial()  # the parent has a partly used buffer now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report the next serials and leave at once
        os.close(read)
        os.write(write, b"".join(random_serial().to_bytes(16, "big") for _ in range(8)))
        os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 4096):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    child = {int.from_bytes(data[i:i + 16], "big") for i in range(0, len(data), 16)}
    parent = {random_serial() for _ in range(8)}
    assert len(child) == 8 and not child & parent
