"""Identifier randomness: pooled per thread, never repeated, never shared with a fork."""

from __future__ import annotations

import os
import threading

from bastion.core import crypto
from bastion.core.ids import new_id


def test_ids_are_distinct_across_threads_and_pool_refills() -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def make() -> None:
        ids = [new_id("evt") for _ in range(2000)]  # several 4 KiB pools each
        with lock:
            seen.extend(ids)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == len(seen) == 8000


def test_random_bits_stay_in_range_and_vary() -> None:
    values = [crypto.random_int_bits(80) for _ in range(1000)]
    assert all(0 <= v < 2**80 for v in values)
    assert len(set(values)) == 1000
    assert max(values).bit_length() > 70  # the top bits are used too
    assert {crypto.random_int_bits(3) for _ in range(200)} == set(range(8))


def test_a_forked_child_does_not_reuse_its_parents_pool() -> None:
    crypto.random_int_bits(80)  # the parent's pool holds unused bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what it would take next
        os.write(write, crypto.random_int_bits(80).to_bytes(10, "big"))
        os._exit(0)
    os.close(write)
    child = int.from_bytes(os.read(read, 10), "big")
    os.waitpid(pid, 0)
    os.close(read)
    assert crypto.random_int_bits(80) != child
