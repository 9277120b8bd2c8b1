"""Where a node's memory per counter goes (issue 13): a real node, filled as bench_scale.py
fills it, then asked for a snapshot of its heap.

Run from the repo root:

    .venv/bin/python loadtest/memory_breakdown.py --counters 1000000 [--trace]

It starts one node (N=1, the embedded SQLite replica, bench_scale.py's flags) through this
script's `--serve` mode, which runs `python -m node` in-process with a SIGUSR1 hook; creates
the counters in batches of 1,000 and increments each again (bench_scale.py's fill), waits
`--settle-s` seconds, and sends SIGUSR1 (and again after `--later-s` more seconds, the
write-behind and history flushes long done). The hook writes, per call:
  - RSS, and glibc's own accounting (mallinfo2: the heap in use, free in the heap, mmapped);
  - pymalloc's (sys._debugmallocstats: arenas, bytes in blocks used and free), so that RSS
    minus what Python's objects use shows the fragmentation (free blocks, unused pools);
  - with `--trace` (the node runs under tracemalloc, 5 frames, slower and bigger, so its
    RSS is not the figure), the live blocks grouped by the innermost frame in the project
    (node/, crdt/, ring/), bytes per counter, largest first.

The figures are per counter: divided by --counters. Every wait is bounded; the node is
stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import io
import os
import runpy
import shutil
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
FRAMES = 5
ARENA_SIZE = 1 << 20  # pymalloc's, Python 3.10 and later
PROJECT = ("/node/", "/crdt/", "/ring/")


# -- the node side ----------------------------------------------------------------------------


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _mallinfo() -> dict[str, int]:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    info = libc.mallinfo2()
    return {"heap": info.arena, "in_use": info.uordblks, "free": info.fordblks, "mmap": info.hblkhd}


def _mallocstats() -> str:
    """sys._debugmallocstats() writes to the C stderr: catch it through a temporary file."""
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        return out.read().decode(errors="replace")


def _dump(path: Path) -> None:
    text = io.StringIO()
    print(f"rss {_rss()}", file=text)
    for name, value in _mallinfo().items():
        print(f"malloc_{name} {value}", file=text)
    stats = _mallocstats()
    for line in stats.splitlines():
        if line.startswith("#") and "=" in line:
            label, value = line[1:].rsplit("=", 1)
            print(f"pymalloc {label.strip()} = {value.strip()}", file=text)
        elif "bytes in" in line or "unused pools" in line or "arenas" in line:
            label, _, value = line.rpartition(" ")
            print(f"pymalloc {label.strip()} = {value.strip()}", file=text)
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot()
        snapshot.dump(str(path) + ".snapshot")
        print(f"traced {tracemalloc.get_traced_memory()[0]}", file=text)
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what glibc holds free, given back: how much?
    print(f"rss_trimmed {_rss()}", file=text)
    partial = path.with_suffix(".partial")
    partial.write_text(text.getvalue())
    partial.rename(path)


def serve(dump_to: str, trace: bool, argv: list[str]) -> None:
    """Run the node in this process; each SIGUSR1 writes dump_to.<n> (the n-th call)."""
    if trace:
        tracemalloc.start(FRAMES)
    calls = [0]

    def on_signal(signum: int, frame: object) -> None:
        calls[0] += 1
        _dump(Path(f"{dump_to}.{calls[0]}"))

    signal.signal(signal.SIGUSR1, on_signal)
    sys.argv = ["node", *argv]
    sys.path.insert(0, os.getcwd())  # as `python -m node` from the repo root would
    runpy.run_module("node", run_name="__main__")


# -- the driver side --------------------------------------------------------------------------


def _read_dump(path: Path, deadline: float) -> dict[str, str]:
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no dump at {path}")
        time.sleep(0.2)
    figures = {}
    for line in path.read_text().splitlines():
        if " = " in line:
            label, value = line.split(" = ", 1)
        else:
            label, value = line.split(" ", 1)
        figures[label] = value
    return figures


def _project_frame(trace: tracemalloc.Trace) -> str:
    frames = list(reversed(trace.traceback))  # most recent first
    inner = f"{Path(frames[0].filename).name}:{frames[0].lineno}"
    for frame in frames:
        if any(part in frame.filename for part in PROJECT):
            where = f"{frame.filename.split('/memory/')[-1]}:{frame.lineno}"
            return where if where.endswith(inner) else f"{where} ({inner})"
    return f"(outside the project) {frames[0].filename.split('/')[-1]}:{frames[0].lineno}"


def _grouped(snapshot_path: Path) -> dict[str, list[int]]:
    """Innermost project frame -> [bytes, blocks] of the live blocks allocated there."""
    sizes: dict[str, list[int]] = {}
    for trace in tracemalloc.Snapshot.load(str(snapshot_path)).traces:
        entry = sizes.setdefault(_project_frame(trace), [0, 0])
        entry[0] += trace.size
        entry[1] += 1
    return sizes


def _breakdown(snapshot_path: Path, empty_path: Path, counters: int, top: int) -> list[str]:
    """The blocks grown since the empty node's snapshot, per counter."""
    sizes = _grouped(snapshot_path)
    for where, (size, blocks) in _grouped(empty_path).items():
        entry = sizes.setdefault(where, [0, 0])
        entry[0] -= size
        entry[1] -= blocks
    total = sum(size for size, _ in sizes.values())
    lines = [f"traced: {total / counters:.1f} B per counter, by innermost project frame:"]
    for where, (size, blocks) in sorted(sizes.items(), key=lambda item: -item[1][0])[:top]:
        lines.append(f"  {size / counters:8.1f} B {blocks / counters:6.2f} blocks  {where}")
    return lines


def _report(name: str, figures: dict[str, str], empty: dict[str, str], counters: int) -> list[str]:
    def per(label: str, unit: int = 1) -> str:
        if label not in figures or label not in empty:
            return "     n/a"
        grown = int(figures[label].replace(",", "")) - int(empty[label].replace(",", ""))
        return f"{grown * unit / counters:8.1f} B per counter"

    rows = [
        ("RSS", "rss", 1),
        ("RSS after malloc_trim(0)", "rss_trimmed", 1),
        ("glibc heap in use", "malloc_in_use", 1),
        ("glibc heap free", "malloc_free", 1),
        ("glibc mmapped blocks (large)", "malloc_mmap", 1),
        ("pymalloc arenas (1 MiB each)", "pymalloc arenas allocated current", ARENA_SIZE),
        ("pymalloc blocks in use", "pymalloc bytes in allocated blocks", 1),
        ("pymalloc blocks free in used pools", "pymalloc bytes in available blocks", 1),
    ]
    lines = [f"{name}:"]
    lines.extend(f"  {shown:<36}{per(label, unit)}" for shown, label, unit in rows)
    return lines


def _node_argv(workdir: Path, address: str, counters: int) -> list[str]:
    """bench_systems.start_cluster's flags for one node (N=1), bench_scale.py's quota."""
    argv = ["--node-id", "n1", "--listen", address, "--seeds", address]
    argv += ["--data-dir", str(workdir / "data"), "--replicas", "1", "--write-quorum", "1"]
    argv += ["--read-quorum", "1", "--auth", "none", "--rate-limit-per-s", "0"]
    argv += ["--max-counters-per-tenant", str(max(1_000_000, counters))]
    return argv


def drive(args: argparse.Namespace) -> None:
    from bench_systems import Processes, free_port, wait_ready
    from scale_load import Deadline, chunked, fill_delta, run_batches

    workdir = Path(tempfile.mkdtemp(prefix="counters-memory-"))
    processes = Processes(workdir)
    dump_to = workdir / "dump"
    try:
        address = f"127.0.0.1:{free_port()}"
        serve_argv = [sys.executable, str(HERE / "memory_breakdown.py"), "--serve", str(dump_to)]
        if args.trace:
            serve_argv.append("--trace")
        node_argv = [*serve_argv, "--", "node", *_node_argv(workdir, address, args.counters)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERS_")}
        processes.start("node", node_argv, env)
        urls = [f"http://{address}"]
        wait_ready(processes, urls)
        time.sleep(1.0)
        child = processes.children["node"]
        bound = time.monotonic() + args.max_s
        child.send_signal(signal.SIGUSR1)
        empty = _read_dump(Path(f"{dump_to}.1"), bound)
        empty_snapshot = Path(f"{dump_to}.1.snapshot")
        deadline = Deadline(args.max_s)
        chunks = chunked(range(args.counters))
        for what, delta in (("creation", fill_delta), ("increments", lambda i: 1)):
            print(f"{what} ...", file=sys.stderr, flush=True)
            asyncio.run(run_batches(urls, chunks, delta, args.clients, deadline, what))
        time.sleep(args.settle_s)
        child.send_signal(signal.SIGUSR1)
        after = _read_dump(Path(f"{dump_to}.2"), bound)
        print("\n".join(_report("right after the fill", after, empty, args.counters)))
        if args.trace:
            snapshot = Path(f"{dump_to}.2.snapshot")
            print("\n".join(_breakdown(snapshot, empty_snapshot, args.counters, args.top)))
        time.sleep(args.later_s)
        child.send_signal(signal.SIGUSR1)
        later = _read_dump(Path(f"{dump_to}.3"), bound)
        print("\n".join(_report(f"{args.later_s:g} s later", later, empty, args.counters)))
        if args.trace:
            snapshot = Path(f"{dump_to}.3.snapshot")
            print("\n".join(_breakdown(snapshot, empty_snapshot, args.counters, args.top)))
    finally:
        processes.stop_all()
        if args.keep_dir:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        rest = sys.argv[3:]
        trace = bool(rest) and rest[0] == "--trace"
        rest = rest[1:] if trace else rest
        serve(sys.argv[2], trace, rest[1:] if rest[:1] == ["--"] else rest)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counters", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--trace", action="store_true", help="tracemalloc the node's blocks")
    parser.add_argument("--settle-s", type=float, default=0.0, help="after the fill, first dump")
    parser.add_argument("--later-s", type=float, default=30.0, help="then the second dump")
    parser.add_argument("--top", type=int, default=30, help="lines of the breakdown")
    parser.add_argument("--max-s", type=float, default=1_800.0, help="bound of the whole run")
    parser.add_argument("--keep-dir", action="store_true")
    with contextlib.suppress(KeyboardInterrupt):
        drive(parser.parse_args())


if __name__ == "__main__":
    main()
