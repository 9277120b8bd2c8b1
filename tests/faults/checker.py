"""What a fault run measured and whether it kept its promises.

Correctness (always asserted): after the load stops and every fault heals, each counter on
every node (quorum reads through each node, and `consistency=one` reads: of each node's own
replica with three nodes, where every node holds every counter; through the node with five)
settles within
[acknowledged + unknown negatives, acknowledged + unknown positives] (Jepsen's counter
checker) and the nodes agree; every node shows one settled ring.

Availability (the targets of issue 12): during faults, quorum writes at nodes that kept a
majority succeed >= 97%; plain `one` writes >= 95% at every node that runs; writes sent 5 s
or more after a heal all succeed; the nodes agree within 5 s of the load stopping. Keyed
writes are shown in rows of their own: whatever their level, a keyed op applies only with
grants from a majority of its replicas (node/coordination/fencing.py), so on a minority side
it is refused by design (503, nothing applied), as exactly-once requires.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field

import aiohttp

from tests.faults.cluster import FaultCluster
from tests.faults.nemesis import Window
from tests.faults.workload import LEVELS, NAMESPACE, OpRecord, Outcome, bounds

QUORUM_TARGET = 0.97  # share of quorum writes at majority-side nodes that succeed in faults
ONE_TARGET = 0.95  # share of `one` writes that succeed at each running node in faults
HEAL_TARGET_S = 5.0  # seconds after a heal from which every write succeeds
CONVERGE_TARGET_S = 5.0  # seconds after the load stops within which every node agrees
CONVERGE_BOUND_S = 60.0  # how long the checker waits before it calls a run divergent
READ_TIMEOUT = aiohttp.ClientTimeout(total=4)
Read = int | str  # a counter's value, or what a read got instead ("503 <type>", "TimeoutError")


@dataclass
class Tally:
    ok: int = 0
    total: int = 0

    def add(self, record: OpRecord) -> None:
        self.total += 1
        self.ok += record.outcome is Outcome.OK

    @property
    def share(self) -> float:
        return self.ok / self.total if self.total else 1.0

    def __str__(self) -> str:
        return f"{100 * self.share:5.1f}% of {self.total:4d}" if self.total else "      -     "


@dataclass
class Report:
    """Measured figures; `targets_missed` and `violations` say what went wrong."""

    by_level_side: dict[tuple[str, str], Tally] = field(default_factory=dict)
    one_by_node: dict[str, Tally] = field(default_factory=dict)
    heals: list[tuple[str, float | None, int]] = field(default_factory=list)
    converge_s: float | None = None
    ops: int = 0  # writes sent in the whole run
    violations: list[str] = field(default_factory=list)  # correctness: always fatal
    targets_missed: list[str] = field(default_factory=list)

    def table(self) -> str:
        sides = ("majority", "minority", "down")
        lines = [f"{self.ops} writes sent in all"]
        lines.append("availability during faults (writes ok / sent), by side of the node asked:")
        lines.append(f"  {'level':12} " + " ".join(f"{side:>16}" for side in sides))
        for label in [row for level in LEVELS for row in (level, f"{level} keyed")]:
            cells = [str(self.by_level_side.get((label, side), Tally())) for side in sides]
            lines.append(f"  {label:12} " + " ".join(f"{cell:>16}" for cell in cells))
        lines.append("  plain `one` per running node: " + ", ".join(
            f"{node} {tally}" for node, tally in sorted(self.one_by_node.items())
        ))  # fmt: skip
        lines.append("seconds from each heal to full service (every later write ok):")
        for what, seconds, failed in self.heals:
            shown = "not within the quiet time" if seconds is None else f"{seconds:5.1f} s"
            lines.append(f"  {what:32} {shown}  ({failed} writes failed after the heal)")
        shown = "never" if self.converge_s is None else f"{self.converge_s:.1f} s"
        lines.append(f"convergence after the load stopped: {shown}")
        return "\n".join(lines)


def side_of(window: Window, index: int) -> str:
    if index in window.down:
        return "down"
    return "minority" if index in window.fault.minority else "majority"


def availability(
    report: Report, records: list[OpRecord], windows: list[Window], names: list[str]
) -> None:
    """Fill the availability table and the heal times from the records (pure)."""
    by_level_side: dict[tuple[str, str], Tally] = defaultdict(Tally)
    one_by_node: dict[str, Tally] = defaultdict(Tally)
    for window in windows:
        during = [r for r in records if window.started <= r.sent < window.healed]
        for record in during:
            side = side_of(window, names.index(record.node))
            label = f"{record.level} keyed" if record.keyed else record.level
            by_level_side[label, side].add(record)
            if record.level == "one" and not record.keyed and side != "down":
                one_by_node[record.node].add(record)
        # Writes sent after the heal and answered before the next fault began.
        after = [r for r in records if window.healed <= r.sent and r.done < window.quiet_until]
        failed = [r for r in after if r.outcome is not Outcome.OK]
        what = window.fault.describe(names)
        if not failed:
            report.heals.append((what, 0.0, 0))
            continue
        last = max(r.sent for r in failed) - window.healed
        quiet = window.quiet_until - window.healed
        late = last > quiet - 1.0  # still failing at the end: it never came back meanwhile
        report.heals.append((what, None if late else last, len(failed)))
        if late or last > HEAL_TARGET_S:
            kinds = sorted({f"{r.level}@{r.node}:{r.status or r.detail}" for r in failed})[:6]
            report.targets_missed.append(
                f"after heal of {what}: writes failed until {last:.1f} s ({kinds})"
            )
    report.by_level_side = dict(by_level_side)
    report.one_by_node = dict(one_by_node)
    plain, keyed = (by_level_side.get((q, "majority"), Tally()) for q in ("quorum", "quorum keyed"))
    majority = Tally(plain.ok + keyed.ok, plain.total + keyed.total)
    if majority.share < QUORUM_TARGET:
        report.targets_missed.append(
            f"quorum writes at majority nodes: {majority} ok, target {QUORUM_TARGET:.0%}"
        )
    for node, tally in sorted(one_by_node.items()):
        if tally.share < ONE_TARGET:
            report.targets_missed.append(
                f"`one` writes at {node}: {tally} ok, target {ONE_TARGET:.0%}"
            )


async def converge(report: Report, cluster: FaultCluster, records: list[OpRecord]) -> None:
    """Wait (bounded) until every node agrees within bounds; record when, or what it saw."""
    names = sorted({r.name for r in records})
    limits = {name: bounds(records, name) for name in names}
    nodes = list(cluster.nodes.values())
    started = time.monotonic()
    seen: dict[str, dict[str, tuple[Read, Read]]] = {}

    async def read(node_url: str, name: str, level: str) -> Read:
        """The value, or what came instead (status and problem type, or the error)."""
        assert cluster.session is not None
        url = f"{node_url}/v1/namespaces/{NAMESPACE}/counters/{name}?consistency={level}"
        try:
            async with cluster.session.get(url, timeout=READ_TIMEOUT) as response:
                body = await response.json(content_type=None)
                if response.status != 200:
                    kind = body.get("type", "") if isinstance(body, dict) else ""
                    return f"{response.status} {kind}".strip()
                return int(body["value"])
        except (TimeoutError, OSError, ValueError, aiohttp.ClientError) as error:
            return type(error).__name__  # not yet

    while time.monotonic() - started < CONVERGE_BOUND_S:
        for node in nodes:
            pairs = await asyncio.gather(
                *(
                    asyncio.gather(read(node.url, n, "one"), read(node.url, n, "quorum"))
                    for n in names
                )
            )
            seen[node.node_id] = {n: (p[0], p[1]) for n, p in zip(names, pairs, strict=True)}
        if _settled(seen, limits):
            report.converge_s = time.monotonic() - started
            break
        await asyncio.sleep(0.2)
    else:
        report.violations.append(_divergence(seen, limits))
        return
    if report.converge_s is not None and report.converge_s > CONVERGE_TARGET_S:
        report.targets_missed.append(
            f"nodes agreed {report.converge_s:.1f} s after the load stopped, "
            f"target {CONVERGE_TARGET_S:g} s"
        )


def _settled(
    seen: dict[str, dict[str, tuple[Read, Read]]],
    limits: dict[str, tuple[int, int]],
) -> bool:
    for name, (low, high) in limits.items():
        values = {reads[name][0] for reads in seen.values()}
        values |= {reads[name][1] for reads in seen.values()}
        if len(values) != 1:
            return False
        value = values.pop()
        if not isinstance(value, int) or not low <= value <= high:
            return False
    return True


def _divergence(
    seen: dict[str, dict[str, tuple[Read, Read]]],
    limits: dict[str, tuple[int, int]],
) -> str:
    lines = [f"no agreement within bounds after {CONVERGE_BOUND_S:g} s; (one, quorum) reads:"]
    for name, (low, high) in limits.items():
        reads = {node: values[name] for node, values in seen.items()}
        flag = ""
        for one, quorum in reads.values():
            for value in (one, quorum):
                if isinstance(value, int) and not low <= value <= high:
                    flag = "  OUT OF BOUNDS"
        lines.append(f"  {name}: bounds [{low}, {high}], reads {reads}{flag}")
    return "\n".join(lines)


async def one_ring(report: Report, cluster: FaultCluster) -> None:
    """Every node shows the same settled ring of every node, each up."""
    nodes = list(cluster.nodes.values())
    try:
        await cluster.settled_ring(nodes, set(cluster.nodes), timeout=30.0)
    except AssertionError as error:
        report.violations.append(str(error))
