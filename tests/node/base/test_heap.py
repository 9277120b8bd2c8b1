"""node/base/heap.py: the mmap threshold is pinned on glibc, and an operator's setting wins."""

from __future__ import annotations

import ctypes
import ctypes.util

from node.base.heap import pin_mmap_threshold


def _mapped_bytes() -> int:
    """glibc's mallinfo2().hblkhd: bytes in blocks served by their own mappings."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    fields = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks")
    ]
    fields += [(name, ctypes.c_size_t) for name in ("uordblks", "fordblks", "keepcost")]
    info = type("Mallinfo2", (ctypes.Structure,), {"_fields_": fields})
    libc.mallinfo2.restype = info
    return int(libc.mallinfo2().hblkhd)


def test_an_operators_threshold_is_left_alone() -> None:
    assert pin_mmap_threshold({"MALLOC_MMAP_THRESHOLD_": "65536"}) is False


def test_a_large_block_gets_its_own_mapping_after_one_was_freed() -> None:
    # Unpinned, glibc raises its threshold to 4 MiB when the first block is freed, and
    # the smaller second one comes from the heap, where freeing it leaves a hole.
    assert pin_mmap_threshold({}) is True
    first = bytearray(4 << 20)
    del first
    before = _mapped_bytes()
    second = bytearray(2 << 20)
    assert _mapped_bytes() >= before + (2 << 20)
    del second
