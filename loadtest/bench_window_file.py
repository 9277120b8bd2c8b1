"""What the window file costs a node per write (window_file.py, journal.py), in one process.

    .venv/bin/python loadtest/bench_window_file.py --counters 1000000 --changes 15000 \
        [--trees /path/to/old/checkout .]

Fills the windows of 256 shards (one namespace) with `--counters` counters changed in the
current minute and writes them to a window file in a temporary dir, then, 8 times, changes
`--changes` random counters (a second of a node's changes) and times the write: the
journal's take (on the event loop in a node) and the file's write (in its worker thread),
CPU time of this process, median of the 8. With `--trees`, each checkout runs in its own
subprocess (its code by PYTHONPATH), three rounds alternating, so both meet the same
machine; the medians of the rounds are printed side by side.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARDS = 256
WRITES = 8


def measure(counters: int, changes: int) -> dict[str, float]:
    from node.realtime.journal import Journal
    from node.realtime.window_file import WindowFile
    from node.realtime.windows import Windows
    from node.storage.store_dirty import Change

    windows, journal, minute = Windows(), Journal(), 1_000
    file = WindowFile(Path(tempfile.mkdtemp()) / "windows.sqlite3")
    names = [f"c{i:07d}" for i in range(counters)]
    # as Realtime._journaled feeds the journal (earlier versions: touch without names)
    takes_names = "names" in Journal.touch.__code__.co_varnames

    def change(i: int) -> None:
        name, shard = names[i], i % SHARDS
        windows.add(shard, "t", "ns", name, minute, 1)
        space = (shard, "t", "ns")
        journal.touch(space, minute, (name,)) if takes_names else journal.touch(space, minute)
        journal.afters[("t", "ns", name)] = Change(("t", "ns", name), shard, 0, 1)

    for i in range(counters):
        change(i)
    file.write(journal.take(windows))
    gc.collect()
    gc.freeze()  # the fill's objects, as a node's long-lived ones: out of the measure
    takes, writes = [], []
    for _ in range(WRITES):
        for _ in range(changes):
            change(random.randrange(counters))
        start = time.process_time()
        batch = journal.take(windows)
        taken = time.process_time()
        file.write(batch)
        takes.append(taken - start)
        writes.append(time.process_time() - taken)
    return {"take_ms": 1e3 * statistics.median(takes), "write_ms": 1e3 * statistics.median(writes)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counters", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=15_000)
    parser.add_argument("--trees", nargs=2, type=Path, help="A and B checkouts to compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child's run
    args = parser.parse_args()
    if args.one or not args.trees:
        figures = measure(args.counters, args.changes)
        print(json.dumps(figures) if args.one else f"take {figures['take_ms']:.1f} ms, "
              f"write {figures['write_ms']:.1f} ms (CPU, median of {WRITES} writes)")  # fmt: skip
        return 0
    runs: dict[Path, list[dict[str, float]]] = {tree: [] for tree in args.trees}
    for round_ in range(args.rounds):
        for tree in args.trees if round_ % 2 == 0 else args.trees[::-1]:
            argv = [sys.executable, str(Path(__file__).resolve()), "--one"]
            argv += ["--counters", str(args.counters), "--changes", str(args.changes)]
            env = {"PYTHONPATH": str(tree.resolve()), "PATH": "/usr/bin:/bin"}
            out = subprocess.run(argv, env=env, cwd="/", capture_output=True, text=True, check=True)
            runs[tree].append(json.loads(out.stdout))
            print(f"round {round_ + 1} {tree}: {runs[tree][-1]}", flush=True)
    print(f"\n{args.counters:,} counters changed this minute, {args.changes:,} changes a write;")
    print(f"CPU ms per write, medians of {args.rounds} rounds (each a median of {WRITES} writes):")
    for tree, figures in runs.items():
        take = statistics.median(f["take_ms"] for f in figures)
        write = statistics.median(f["write_ms"] for f in figures)
        print(f"  {tree}: take {take:.1f} (event loop), write {write:.1f} (writer thread)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
