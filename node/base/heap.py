"""The heap's settings for a node: memory freed by bursts goes back to the system, and the
cyclic garbage collector runs less often.

A node's long-lived memory is a million small objects (pymalloc) and a few hundred large
dict tables; bursts of work (a batch of 1,000 ops, a flush of 50,000 dirty counters, a
history turn) allocate large tables and lists and free them a moment later. glibc serves an
allocation of at least its mmap threshold with its own mapping, given back whole on free,
but by default it raises that threshold to the size of each such block freed (up to 32
MiB), so after the first bursts their large blocks come from the heap instead, and what
they free stays there in holes between long-lived blocks, which neither glibc nor
malloc_trim can give back: at 200,000 counters, 380 bytes per counter of the node's RSS
was free heap after a fill (loadtest/memory_breakdown.py). Pinning the threshold at glibc's
default (128 KiB) keeps large blocks in their own mappings whenever the heap has no free
room for them (glibc looks there first); the cost is an mmap and a
munmap per large block, a few per batch against the batch's 1,000 ops.

Only glibc has mallopt(M_MMAP_THRESHOLD); elsewhere this does nothing. An operator's
MALLOC_MMAP_THRESHOLD_ in the environment wins (glibc read it at start).

The cyclic collector: CPython collects its youngest generation every 700 container
allocations more than freed, and the oldest (the whole heap) every 100 of those. A node
allocates short-lived tuples, lists and dicts per op, none of them in cycles, so the
collector found almost nothing to free and cost about 10% of a node's CPU under
`loadtest/bench.py` batches and single increments (gc.callbacks over each node's life,
three nodes, two runs: 0.9-1.2 of 9-11.7 CPU s), a tenth of it full collections of 45-80
ms each, which a request caught in one waits out. At 20,000 the collector costs 1.5-2% and
runs no full collection in such a run; the garbage of rare cycles waits longer, a few MB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from collections.abc import Mapping

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024  # bytes: glibc's default, pinned (setting it ends the raising)


GC_THRESHOLDS = (20_000, 10, 10)  # CPython's default: (700, 10, 10)


def tune_gc() -> None:
    """Collect the youngest generation every GC_THRESHOLDS[0] allocations (see above)."""
    gc.set_threshold(*GC_THRESHOLDS)


def pin_mmap_threshold(environ: Mapping[str, str] | None = None) -> bool:
    """Pin glibc's mmap threshold (see above); whether it was pinned here."""
    if "MALLOC_MMAP_THRESHOLD_" in (os.environ if environ is None else environ):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
