"""node/base/heap.py: the mmap threshold is pinned on glibc, and an operator's setting wins.

glibc serves a large block from the heap when the heap already has room for it, so whether a
block gets its own mapping depends on what the process allocated before; the scenario runs
in a fresh interpreter, where the heap is small.
"""

from __future__ import annotations

import subprocess
import sys

from node.base.heap import pin_mmap_threshold

SCENARIO = """
import ctypes, ctypes.util, sys
from node.base.heap import pin_mmap_threshold

libc = ctypes.CDLL(ctypes.util.find_library("c"))
names = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
         "uordblks", "fordblks", "keepcost")
info = type("Mallinfo2", (ctypes.Structure,), {"_fields_": [(n, ctypes.c_size_t) for n in names]})
libc.mallinfo2.restype = info

def mapped():  # bytes in blocks served by their own mappings
    return int(libc.mallinfo2().hblkhd)

if sys.argv[1] == "pinned":
    assert pin_mmap_threshold({}) is True
first = bytearray(4 << 20)
del first
before = mapped()
second = bytearray(2 << 20)
print(mapped() - before)
"""


def _mapped_growth(mode: str) -> int:
    """Bytes newly mapped for a 2 MiB block allocated after a 4 MiB one was freed."""
    done = subprocess.run(
        [sys.executable, "-c", SCENARIO, mode],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": "."},
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_an_operators_threshold_is_left_alone() -> None:
    assert pin_mmap_threshold({"MALLOC_MMAP_THRESHOLD_": "65536"}) is False


def test_a_large_block_gets_its_own_mapping_after_one_was_freed() -> None:
    # Unpinned, glibc raises its threshold to 4 MiB when the first block is freed, and the
    # smaller second one comes from the heap, where freeing it leaves a hole.
    assert _mapped_growth("unpinned") < 2 << 20
    assert _mapped_growth("pinned") >= 2 << 20
