"""Real-time reads at scale (issue 14), a phase of bench_scale.py and a standalone in-process
measure of what windows cost per change.

    .venv/bin/python loadtest/bench_scale.py --counters 1000000 --restarts 0 --realtime
    .venv/bin/python loadtest/bench_scale.py --counters 1000000 --restarts 1 --no-windows
    .venv/bin/python loadtest/bench_realtime.py --changes 200000

The phase (`--realtime`, after bench_scale's fill and increments, so every counter exists and
changed within the hour, and 10 s for their flushes, then until the node is quiet (under 5%
of a core over a second, at most two minutes more)): each query once, timed apart (it may
build what the others read: a namespace index, a ranking), then `--realtime-queries` times
in a row from one client: p50/p99/max latency and the node's CPU per query; and a check
that the aggregate equals the acknowledged values.

The in-process measure feeds changes of distinct counters through the change tap into a
Realtime with windows on and off: CPU µs per change of each, and bytes per counter held;
and with windows and a window file (window_persist.py): the CPU per change of the journal
and of the file's writes (its worker thread's included, one write per minute of changes
here, the same rows as one a second), and the file's bytes per (counter, minute) and per
counter.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NAMESPACE = "scale"  # bench_scale.py's
SETTLE_S = 10.0  # after the load: the write-behind and history flushes of it finish first
SETTLE_MAX_S = 120.0  # ... and then until the nodes are quiet, at most this long
QUIET_CPU = 0.05  # quiet: under 5% of a core over a second
QUERIES = {
    "aggregate": "/aggregate",
    "aggregate_window_1h": "/aggregate?window=1h",
    "aggregate_prefix_10pct": "/aggregate?prefix=c00",  # not at a delimiter: sums a run
    "top10_value": "/top?k=10",
    "top1000_value": "/top?k=1000",
    "top10_value_prefix": "/top?k=10&prefix=c001",
    "top10_change_1h": "/top?k=10&by=change&window=1h",
    "top1000_change_1h": "/top?k=1000&by=change&window=1h",
    "counter_window_15m": "/counters/c0000042?window=15m",
}


async def _timed(session: aiohttp.ClientSession, url: str) -> tuple[float, Any]:
    began = time.perf_counter()
    async with session.get(url) as response:
        body = await response.json(content_type=None)
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}: {str(body)[:300]}")
    return time.perf_counter() - began, body


def _summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": p99 * 1000,
        "max_ms": ordered[-1] * 1000,
    }


async def _phase(
    urls: list[str], queries: int, cpu_seconds: Callable[[], float] | None
) -> dict[str, Any]:
    base = f"{urls[0]}/v1/namespaces/{NAMESPACE}"
    figures: dict[str, Any] = {}
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for label, path in QUERIES.items():
            # The first one may build what the rest read (index.py, ranking.py).
            first, _ = await _timed(session, base + path)
            figures[label + "_first_ms"] = first * 1000
            timings, body = [], None
            cpu_before = cpu_seconds() if cpu_seconds else 0.0
            for _ in range(queries):
                seconds, body = await _timed(session, base + path)
                timings.append(seconds)
            figures[label] = _summary(timings)
            if cpu_seconds:  # the nodes' CPU per query: unlike latency, steady on a busy machine
                figures[label]["cpu_us"] = (cpu_seconds() - cpu_before) * 1e6 / queries
            figures[label + "_body"] = _short(body)
    return figures


def _short(body: Any) -> Any:
    if isinstance(body, dict) and isinstance(body.get("top"), list):
        return {**body, "top": body["top"][:3]}
    return body


def _settle(cpu_seconds: Callable[[], float] | None) -> None:
    """Wait for the load's aftermath (the write-behind, the history's record and write of
    a million rows) to end, so the queries are timed on a node done with it."""
    time.sleep(SETTLE_S)
    deadline = time.monotonic() + SETTLE_MAX_S
    while cpu_seconds is not None and time.monotonic() < deadline:
        before = cpu_seconds()
        time.sleep(1.0)
        if cpu_seconds() - before < QUIET_CPU:
            return


def realtime_phase(
    urls: list[str],
    acknowledged: dict[str, int],
    queries: int,
    cpu_seconds: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """The phase's figures; RuntimeError when the aggregate misses an acknowledged value."""
    _settle(cpu_seconds)
    figures = asyncio.run(_phase(urls, queries, cpu_seconds))
    body = figures["aggregate_body"]
    want = (len(acknowledged), sum(acknowledged.values()))
    if (body["counters"], body["total"]) != want:
        raise RuntimeError(f"aggregate {body} is not the acknowledged {want}")
    return figures


def report_lines(figures: dict[str, Any]) -> list[str]:
    lines = []
    for label in QUERIES:
        if label in figures:
            f = figures[label]
            first = figures.get(label + "_first_ms")
            extra = f", first {first:.0f}" if first is not None else ""
            if "cpu_us" in f:
                extra += f", {f['cpu_us']:,.0f} CPU us/query"
            lines.append(
                f"  {label:<24} p50 {f['p50_ms']:6.1f}  p99 {f['p99_ms']:6.1f}  "
                f"max {f['max_ms']:6.1f} ms{extra}"
            )
    return lines


def shard_of(key: tuple[str, str, str]) -> int:
    return hash(key[2]) & 255


def _feed(changes: int, minutes: int, windows: bool, traced: bool) -> float:
    """Each of `changes` counters changed once a minute for `minutes` minutes, handed to a
    Realtime: the CPU µs per change it took, or (traced) the bytes per counter held."""
    from node.realtime.changes import ChangeTap
    from node.realtime.service import Realtime
    from node.storage.store import CounterStore

    store = CounterStore(shard_of, track_changes=True)
    clock = [0]
    realtime = Realtime(store, 256, lambda s: True, lambda: True, windows, lambda: clock[0])
    tap = ChangeTap(store, shard_of, [realtime], clock_ms=lambda: clock[0])
    realtime.observe(0)  # a replica of every shard from the start, as a node is once ready
    keys = [("t", "ns", f"c{i:07d}") for i in range(changes)]
    cpu_s = 0.0
    gc.collect()
    if traced:
        tracemalloc.start()
    for minute in range(minutes):
        clock[0] = minute * 60_000
        if minute:  # new strings of the names, as each request decodes its own
            keys = [("t", "ns", f"c{i:07d}") for i in range(changes)]
        for key in keys:
            store.increment_slot(key, "a:1", 1)
        del keys
        taken = tap.take()  # the tap's own work, apart from what its subscribers do
        began = time.process_time()
        realtime.on_changes(taken, clock[0])
        cpu_s += time.process_time() - began
        del taken  # the turn's list goes once handed on
    if not traced:
        return cpu_s * 1e6 / (changes * minutes)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return held / changes  # the store's records included


def _feed_file(changes: int, minutes: int) -> dict[str, float]:
    """As _feed with windows, a journal and a window file in a temporary dir: CPU µs per
    change (handing on and writing), and the file's size per (counter, minute) and counter."""
    import tempfile

    from node.realtime.changes import ChangeTap
    from node.realtime.journal import Journal
    from node.realtime.service import Realtime
    from node.realtime.window_persist import WindowPersister, open_window_file
    from node.storage.store import CounterStore

    store = CounterStore(shard_of, track_changes=True)
    clock = [0]
    journal = Journal()
    realtime = Realtime(
        store, 256, lambda s: True, lambda: True, True, lambda: clock[0], journal=journal
    )
    tap = ChangeTap(store, shard_of, [realtime], clock_ms=lambda: clock[0])
    realtime.observe(0)
    keys = [("t", "ns", f"c{i:07d}") for i in range(changes)]
    cpu_s = 0.0
    with tempfile.TemporaryDirectory() as data_dir:
        file, stored = asyncio.run(open_window_file(Path(data_dir), 0))
        persister = WindowPersister(realtime, journal, file, stored, lambda: clock[0])
        gc.collect()
        for minute in range(minutes):
            clock[0] = minute * 60_000
            for key in keys:
                store.increment_slot(key, "a:1", 1)
            taken = tap.take()
            began = time.process_time()
            realtime.on_changes(taken, clock[0])
            asyncio.run(persister.write())
            cpu_s += time.process_time() - began
            del taken
        for shard in range(256):  # as the log merges itself once it outgrows its last merge
            with file.db:
                file.compact(shard)
        file.db.execute("VACUUM")
        file.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        bucket_bytes, value_bytes = file.blob_bytes()
        size = file.size_bytes()
        file.close()
    return {
        "cpu_us_per_change": cpu_s * 1e6 / (changes * minutes),
        "bucket_blob_bytes_per_counter_minute": bucket_bytes / (changes * minutes),
        "value_blob_bytes_per_counter": value_bytes / changes,
        "file_bytes_per_counter_minute": size / (changes * minutes),
    }


def _restore_cost(changes: int, minutes: int) -> float:
    """CPU seconds a node takes to restore `changes` counters' windows (`minutes` minutes
    of buckets each) from its window file at start, every shard, once recovered."""
    import tempfile

    from node.realtime.changes import ChangeTap
    from node.realtime.journal import Journal
    from node.realtime.service import Realtime
    from node.realtime.window_persist import WindowPersister, open_window_file
    from node.storage.store import CounterStore

    keys = [("t", "ns", f"c{i:07d}") for i in range(changes)]

    def life(data_dir: Path, now_ms: int, live: list[bool]) -> tuple[Any, ...]:
        store = CounterStore(shard_of, track_changes=True)
        journal, clock = Journal(), [now_ms]
        realtime = Realtime(
            store, 256, lambda s: True, lambda: live[0], clock_ms=lambda: clock[0],
            journal=journal,
        )  # fmt: skip
        tap = ChangeTap(store, shard_of, [realtime], lambda: clock[0], [realtime.watch])
        file, stored = asyncio.run(open_window_file(data_dir, now_ms))
        persister = WindowPersister(realtime, journal, file, stored, lambda: clock[0])
        return store, realtime, tap, persister, clock

    with tempfile.TemporaryDirectory() as name:
        data_dir = Path(name)
        store, realtime, tap, persister, clock = life(data_dir, 0, [True])
        asyncio.run(tap.turn())
        realtime.observe(0)
        for minute in range(minutes):
            clock[0] = minute * 60_000
            for key in keys:
                store.increment_slot(key, "a:1", 1)
            asyncio.run(tap.turn())
            asyncio.run(persister.write())
        asyncio.run(persister.close())
        live = [False]
        store, _, tap, persister, _ = life(data_dir, clock[0] + 5_000, live)
        store.load_slots([(key, shard_of(key), "a:1", minutes, 0) for key in keys])
        live[0] = True
        asyncio.run(tap.turn())
        gc.collect()
        began = time.process_time()
        asyncio.run(persister.turn())
        spent = time.process_time() - began
        assert persister.restored == 256, persister.restored
        persister.file.close()
    return spent


def inprocess_cost(changes: int, minutes: int = 3) -> dict[str, Any]:
    """CPU µs per change handed to Realtime (windows on, off) and bytes held per counter."""
    from node.storage.store import CounterStore

    figures: dict[str, Any] = {"changes": changes, "minutes": minutes}
    for windows in (True, False):
        label = "windows_on" if windows else "windows_off"
        figures[label] = {"cpu_us_per_change": _feed(changes, minutes, windows, traced=False)}
        figures[label]["bytes_per_counter"] = _feed(changes, minutes, windows, traced=True)
    store_only = CounterStore(shard_of, track_changes=True)
    keys = [("t", "ns", f"c{i:07d}") for i in range(changes)]  # made untraced, as in _feed
    gc.collect()
    tracemalloc.start()
    for key in keys:
        store_only.increment_slot(key, "a:1", 1)
    store_only.take_changes()  # as the tap would
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    figures["store_bytes_per_counter"] = base / changes
    for label in ("windows_on", "windows_off"):
        figures[label]["realtime_bytes_per_counter"] = (
            figures[label]["bytes_per_counter"] - figures["store_bytes_per_counter"]
        )
    figures["window_file"] = _feed_file(changes, max(minutes, 2))
    figures["window_file"]["restore_cpu_s"] = _restore_cost(changes, minutes)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200_000, help="distinct counters changed")
    parser.add_argument("--minutes", type=int, default=3, help="each changed once a minute")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args(argv)
    figures = inprocess_cost(args.changes, args.minutes)
    on, off = figures["windows_on"], figures["windows_off"]
    per_entry = (on["bytes_per_counter"] - off["bytes_per_counter"]) / args.minutes
    figures["window_bytes_per_counter_minute"] = per_entry
    on_file = figures["window_file"]
    for label, f in (("windows on", on), ("windows off", off), ("window file", on_file)):
        print(f"{label:<12} {f['cpu_us_per_change']:5.2f} CPU us per change handed on")
    print(
        f"window file: {on_file['file_bytes_per_counter_minute']:.0f} B on disk per counter "
        f"and minute with a change, all told; of which blobs: "
        f"{on_file['bucket_blob_bytes_per_counter_minute']:.1f} B per (counter, minute), "
        f"{on_file['value_blob_bytes_per_counter']:.1f} B per counter (its last value); "
        f"restoring them at start: {on_file['restore_cpu_s']:.2f} s CPU"
    )
    print(
        f"indexes: {off['realtime_bytes_per_counter']:.0f} B per counter beside the store "
        f"(nothing is kept per counter); windows: {per_entry:.0f} B "
        "per counter and minute with a change"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
