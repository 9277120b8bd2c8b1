"""Windows survive a restart of every node (issue 14): write with sync durability into
counters across two minutes' buckets, kill -9 every node at once right after the last
acknowledged write (so the last second's buckets were never written to the window files),
start them all again, and every windowed read, windowed aggregate and top k by change
equals the model, with no `complete: false`; then the same across a SIGTERM of every node.

The nodes' real-time clock is shifted (COUNTERS_REALTIME_CLOCK_SHIFT_MS) so that a
minute's edge falls a few seconds after the cluster is up: the test crosses it without
waiting a minute."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.cluster.harness import Cluster, Node, eventually
from tests.cluster.realtime_model import Model

NS = "wr"
NAMES = [f"{group}:{i}" for group in ("a", "b") for i in range(5)]
MINUTE_MS = 60_000
LEAD_MS = 12_000  # from the shifted clock at start to the minute's edge


async def windows_match(cluster: Cluster, node: Node, model: Model) -> None:
    """Every window at node (all writes lie within them) equals the model, complete."""
    seen: dict[str, Any] = {}
    values = model.values

    async def check() -> bool:
        for span, seconds in (("1m", 60), ("15m", 900)):
            for prefix in ("", "a:"):
                path = f"/v1/namespaces/{NS}/aggregate?prefix={prefix}&window={span}"
                status, body = await cluster.get(node, path)
                seen[f"aggregate {prefix} {span}"] = (status, body)
                if (status, body) != (200, model.aggregate(prefix, span)):
                    return False
            status, body = await cluster.get(
                node, f"/v1/namespaces/{NS}/top?k=4&by=change&window={span}"
            )
            seen[f"top {span}"] = (status, body)
            if status != 200 or body["top"] != model.top("", "change", 4) or "complete" in body:
                return False
            for name in NAMES:
                path = f"/v1/namespaces/{NS}/counters/{name}?window={span}"
                status, body = await cluster.get(node, path)
                seen[f"window {name} {span}"] = (status, body)
                want_change = values.get(name, 0)
                if status != 200 or body.get("window") != {
                    "span": span,
                    "change": want_change,
                    "rate_per_s": round(want_change / seconds, 6),
                }:
                    return False
        return True

    await eventually(check, f"complete windows at {node.node_id}", 20, show=lambda: seen)


async def restart_all(cluster: Cluster, nodes: list[Node]) -> None:
    for node in nodes:
        node.start(cluster.seeds())
    for node in nodes:
        await cluster.wait_ready(node)
    await cluster.settled_ring(nodes, {node.node_id for node in nodes})


async def test_windows_survive_a_kill_and_a_stop_of_every_node(cluster: Cluster):
    now_ms = time.time_ns() // 1_000_000
    edge_ms = (now_ms + LEAD_MS) // MINUTE_MS * MINUTE_MS + MINUTE_MS
    shift_ms = edge_ms - LEAD_MS - now_ms  # the shifted clock reaches the edge in LEAD_MS
    cluster.settings.update(
        COUNTERS_DURABILITY="sync", COUNTERS_REALTIME_CLOCK_SHIFT_MS=str(shift_ms)
    )
    nodes = await cluster.start(3)
    model = Model(NS, NAMES)
    await model.write(cluster, nodes, 30, seed=1)
    to_edge_s = (edge_ms - shift_ms - time.time_ns() // 1_000_000) / 1000
    assert to_edge_s > 0, f"the first writes ended {-to_edge_s:.1f}s after the minute's edge"
    await asyncio.sleep(to_edge_s + 0.2)  # the clock itself, not a state: nothing to poll
    await model.write(cluster, nodes, 30, seed=2)

    for node in nodes:  # within the window files' write interval of the last write
        node.kill()
    await restart_all(cluster, nodes)
    for node in nodes:
        await windows_match(cluster, node, model)

    await model.write(cluster, nodes, 20, seed=3)
    await cluster.stop()
    await restart_all(cluster, nodes)
    for node in nodes:
        await windows_match(cluster, node, model)


async def test_a_node_without_a_readable_window_file_says_its_windows_are_incomplete(
    cluster: Cluster,
):
    """Its window file unreadable (then, set aside, absent): the only replica restores
    nothing, so windows count from its restart and say so; values are untouched."""
    [node] = await cluster.start(1)
    for damage in ("unreadable", "absent"):
        status, _ = await cluster.increment(node, NS, "a:1", 5)
        assert status == 200
        await cluster.stop()
        window_file = cluster.root / node.node_id / "windows.sqlite3"
        if damage == "unreadable":
            window_file.write_bytes(b"\x00not sqlite" * 4096)
        else:
            window_file.unlink()
        for suffix in ("-wal", "-shm"):
            window_file.with_name(window_file.name + suffix).unlink(missing_ok=True)
        await restart_all(cluster, [node])
        status, body = await cluster.get(node, f"/v1/namespaces/{NS}/counters/a:1?window=15m")
        assert status == 200, body
        window = body["window"]  # from its restart: nothing before it, and it says so
        assert window["change"] == 0 and window.get("complete") is False, (damage, body)
        assert window["observed_since_ms"] > time.time_ns() // 1_000_000 - MINUTE_MS, body
        assert body["value"] == (5 if damage == "unreadable" else 10)


async def test_a_node_started_without_its_window_file_restores_its_windows_later(
    cluster: Cluster,
):
    """Started without a window file, the only replica observes its loaded counters' shard
    from the next minute's cut; a write of the file hands it every counter's value
    (Realtime.make_whole), so after a kill -9 and a start a minute later (its clock shifted
    one more minute) a window beginning at that cut is restored, exact and complete."""
    [node] = await cluster.start(1)
    status, _ = await cluster.increment(node, NS, "a:1", 5)  # loaded at the next starts
    assert status == 200
    await cluster.stop()
    window_file = cluster.root / node.node_id / "windows.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        window_file.with_name(window_file.name + suffix).unlink(missing_ok=True)

    now_ms = time.time_ns() // 1_000_000
    edge_ms = (now_ms + LEAD_MS) // MINUTE_MS * MINUTE_MS + MINUTE_MS
    shift_ms = edge_ms - LEAD_MS - now_ms
    cluster.settings.update(
        COUNTERS_DURABILITY="sync", COUNTERS_REALTIME_CLOCK_SHIFT_MS=str(shift_ms)
    )
    await restart_all(cluster, [node])  # observes a:1's shard from the edge (its cut)
    to_edge_s = (edge_ms - shift_ms - time.time_ns() // 1_000_000) / 1000
    assert to_edge_s > 0, f"the node was ready {-to_edge_s:.1f}s after the minute's edge"
    await asyncio.sleep(to_edge_s + 2.5)  # past the edge, and a write of the file after it
    model = {"a:1": 7, "a:2": 4}
    for name, delta in model.items():
        status, body = await cluster.increment(node, NS, name, delta)
        assert status == 200, body
    node.kill()  # these two are not in the file: the restore's tail

    cluster.settings["COUNTERS_REALTIME_CLOCK_SHIFT_MS"] = str(shift_ms + MINUTE_MS)
    await restart_all(cluster, [node])
    seen: dict[str, Any] = {}

    async def restored() -> bool:
        for name, change in model.items():
            path = f"/v1/namespaces/{NS}/counters/{name}?window=1m"
            status, body = seen[name] = await cluster.get(node, path)
            if status != 200 or body["window"] != {
                "span": "1m",
                "change": change,
                "rate_per_s": round(change / 60, 6),
            }:
                return False
        path = f"/v1/namespaces/{NS}/aggregate?window=1m"
        status, body = seen["aggregate"] = await cluster.get(node, path)
        return (status, body.get("window"), body.get("total")) == (
            200,
            {"span": "1m", "change": 11},
            16,
        )

    await eventually(restored, "windows restored at the cut", 20, show=lambda: seen)
