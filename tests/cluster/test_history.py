"""Counter history in a live three-node cluster, on PostgreSQL and on the embedded store.

Whichever node coordinates a counter records it; any node answers its history and the
namespace's rollups, from the shared PostgreSQL table or, embedded, by asking its peers.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tests.cluster.harness import Cluster, Node, eventually

NS = "history"
EXPECTED = {"views": 12, "likes": 7, "shares": -3, "downloads": 30}
FAST_HISTORY = {"COUNTERS_HISTORY_FLUSH_INTERVAL_S": "0.2"}


async def _write(cluster: Cluster, nodes: list[Node]) -> None:
    """EXPECTED's totals, in steps of varied sign, through every node in turn."""
    step = 0
    for name, total in EXPECTED.items():
        parts = [total - 2, 5, -3] if total >= 0 else [total + 1, -1]
        for delta in parts:
            status, body = await cluster.increment(nodes[step % len(nodes)], NS, name, delta)
            assert status == 200, body
            step += 1


async def _history_everywhere(cluster: Cluster, nodes: list[Node]) -> None:
    """Every node answers every counter's history ending at its total, and the hourly
    rollups sum to the namespace's total."""
    seen: dict[str, Any] = {}

    async def complete() -> bool:
        for node in nodes:
            for name, total in EXPECTED.items():
                path = f"/v1/namespaces/{NS}/counters/{name}/history"
                status, body = await cluster.get(node, path)
                seen[f"{node.node_id}/{name}"] = body
                series = body["series"] if status == 200 else []
                if not series or series[-1]["value"] != total:
                    return False
                if sum(point["delta"] for point in series) != total:
                    return False
            status, body = await cluster.get(node, f"/v1/namespaces/{NS}/rollups?period=hour")
            seen[f"{node.node_id}/rollups"] = body
            if status != 200 or sum(r["total"] for r in body["rollups"]) != sum(EXPECTED.values()):
                return False
        return True

    try:
        await eventually(complete, "history and rollups on every node", 20, every=0.2)
    except AssertionError:
        raise AssertionError(f"history incomplete; last saw {seen}") from None
    status, body = await cluster.get(nodes[0], f"/v1/namespaces/{NS}/rollups?period=day&top=2")
    assert status == 200 and "unreachable_nodes" not in body, body
    # Each day's leaders are its largest increases, as each counter's daily series has them:
    # a run that straddles UTC midnight splits the writes over two days and is checked alike.
    daily: dict[str, dict[str, int]] = {}
    for name in EXPECTED:
        path = f"/v1/namespaces/{NS}/counters/{name}/history?step=day"
        status, series = await cluster.get(nodes[0], path)
        assert status == 200, series
        for point in series["series"]:
            daily.setdefault(point["bucket"], {})[name] = point["delta"]
    assert [rollup["period"] for rollup in body["rollups"]] == sorted(daily), (body, daily)
    for rollup in body["rollups"]:
        increases = daily[rollup["period"]]
        leaders = sorted(increases, key=lambda name: (-increases[name], name))[:2]
        expected = [{"name": name, "increase": increases[name]} for name in leaders]
        assert rollup["top"] == expected, (rollup, increases)
    if len(daily) == 1:  # one day (nearly always): the two biggest counters overall
        assert [leader["name"] for leader in body["rollups"][0]["top"]] == ["downloads", "views"]


async def _bad_queries_answer_400(cluster: Cluster, node: Node) -> None:
    base = f"/v1/namespaces/{NS}/counters/views/history"
    for query in [
        "?step=week",
        "?from=yesterday",
        "?from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z",
        "?from=1700000000&to=1700000000",
        "?from=2020-01-01&to=2021-01-02",  # over 366 days at minute step
    ]:
        status, body = await cluster.get(node, base + query)
        assert status == 400 and body["type"].endswith("invalid-body"), (query, body)
    status, body = await cluster.get(node, base + "?from=2020-01-01&to=2021-01-02&step=day")
    assert status == 200 and body["series"] == [], body
    for query in ["?period=minute", "?top=0", "?top=101", "?to=-5"]:
        status, body = await cluster.get(node, f"/v1/namespaces/{NS}/rollups{query}")
        assert status == 400 and body["type"].endswith("invalid-body"), (query, body)
    status, body = await cluster.get(node, f"/v1/namespaces/{NS}/counters/a..b/history")
    assert status == 400 and body["type"].endswith("invalid-name"), body
    status, _ = await cluster.get(node, "/peer/history?namespace=history&from=0&to=1")
    assert status == 403  # peers only


async def test_history_with_postgres(cluster: Cluster, postgres_database: str) -> None:
    # a database of this test's own in the session's PostgreSQL: no other test sees NS
    cluster.settings.update(COUNTERS_POSTGRES_URL=postgres_database, **FAST_HISTORY)
    nodes = await cluster.start(3)  # three nodes migrating one database at once
    await _write(cluster, nodes)
    await _history_everywhere(cluster, nodes)
    statuses = [(await cluster.get(node, "/admin/history"))[1] for node in nodes]
    assert all(s["store"] == "postgres" and s["healthy"] for s in statuses), statuses
    assert sum(s["written"] for s in statuses) >= len(EXPECTED), statuses
    await _bad_queries_answer_400(cluster, nodes[1])


async def test_history_with_the_embedded_store(cluster: Cluster) -> None:
    cluster.settings.update(FAST_HISTORY)
    nodes = await cluster.start(3)
    await _write(cluster, nodes)
    await _history_everywhere(cluster, nodes)
    status, body = await cluster.get(nodes[2], "/admin/history")
    assert status == 200 and body["store"] == "sqlite", body
    recorded = {node.node_id: _recorded_names(cluster.root / node.node_id) for node in nodes}
    assert set().union(*recorded.values()) == set(EXPECTED), recorded
    # each node recorded only the counters it coordinates, yet every node answered them all
    assert any(names != set(EXPECTED) for names in recorded.values()), recorded


def _recorded_names(data_dir: Path) -> set[str]:
    """The counters a node's own history file holds (read beside the running node)."""
    connection = sqlite3.connect(data_dir / "history.sqlite3")
    try:
        query = "SELECT DISTINCT name FROM counter_history WHERE namespace = ?"
        return {name for (name,) in connection.execute(query, (NS,))}
    finally:
        connection.close()
