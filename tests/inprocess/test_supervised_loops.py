"""A background loop whose turns fail unexpectedly is reported, counted and carries on.

A node's real parts, wired as app.py wires them; the write-behind's durable replica (a real
SQLite file) is made to fail as a bug would, with an error no one maps to DurableError.
The persister loop must not die: /readyz keeps answering 200 (in async durability the node
serves from memory) and names the loop, its last error and since when; the metrics count the
errors; writes go on; and once the fault is gone the backlog drains and the report clears.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from node.coordination.ops import Op, OpKind
from node.http import health
from node.http.appkeys import CLUSTER, CONFIG, FEED, HISTORY, PERSISTER, SUPERVISOR
from node.http.metrics import NodeCollector
from node.http.ratelimit import RateLimiter
from node.obs.metrics import Metrics
from tests.inprocess.cluster import InProcessCluster, Node, eventually


async def _readyz(node: Node) -> tuple[int, dict[str, Any]]:
    app = web.Application()
    parts = node.parts
    app[CLUSTER], app[CONFIG], app[PERSISTER] = parts.cluster, parts.config, parts.persister
    app[HISTORY], app[SUPERVISOR], app[FEED] = parts.history, parts.supervisor, parts.feed
    try:
        response = await health.readyz(make_mocked_request("GET", "/readyz", app=app))
    except web.HTTPException as error:  # not expected here; shown if it happens
        return error.status, {"text": error.text}
    except Exception as error:  # NotReady: a problem, mapped by the edge middleware
        return 503, dict(getattr(error, "extra", {}), detail=str(error))
    assert isinstance(response, web.Response) and response.text is not None
    return response.status, json.loads(response.text)


def _loop_errors(node: Node) -> dict[str, float]:
    parts = node.parts
    collector = NodeCollector(
        Metrics(), parts.cluster, parts.store, parts.pool, parts.coordinator, parts.gossip,
        parts.handoff, parts.persister, parts.history, RateLimiter(parts.config),
        parts.supervisor,
    )  # fmt: skip
    found = {}
    for family in collector.collect():
        if family.name == "counters_loop_errors":
            for sample in family.samples:
                if sample.name == "counters_loop_errors_total":
                    found[sample.labels["loop"]] = sample.value
    return found


async def test_an_unexpected_write_behind_error_is_reported_and_the_loop_carries_on(
    inproc: InProcessCluster, monkeypatch: pytest.MonkeyPatch
):
    n1, _, _ = await inproc.start(3)
    key = ("t", "ns", "supervised")
    real_write = n1.durable.write_changes

    async def broken(*args: Any) -> int:
        raise RuntimeError("a bug in the backend")

    monkeypatch.setattr(n1.durable, "write_changes", broken)
    [result] = await n1.coordinator.run([Op(OpKind.INCREMENT, key, 5)], "quorum")
    assert result.value == 5
    supervisor = n1.parts.supervisor
    await eventually(lambda: supervisor.loops["persister"].failing, "the loop to fail")

    status, body = await _readyz(n1)
    assert status == 200, body
    reported = [d for d in body["degraded"] if d.startswith("background loop persister")]
    assert reported and "RuntimeError: a bug in the backend" in reported[0], body
    [persister] = [loop for loop in body["loops"] if loop["loop"] == "persister"]
    assert persister["failing"] and persister["since"] is not None, persister
    assert _loop_errors(n1)["persister"] >= 1
    [result] = await n1.coordinator.run([Op(OpKind.INCREMENT, key, 2)], "quorum")
    assert result.value == 7  # writes go on
    assert n1.parts.persister.backlog >= 1  # nothing taken was dropped

    monkeypatch.setattr(n1.durable, "write_changes", real_write)
    await eventually(
        lambda: not supervisor.loops["persister"].failing and n1.parts.persister.backlog == 0,
        "the loop to recover and drain",
    )
    status, body = await _readyz(n1)
    assert status == 200 and body["degraded"] == [], body
    assert dict(await n1.durable.load({n1.cluster.shard_of(key)}))[key].value() == 7
    # The loop logged its failure once (an error, with the traceback): expected here.
    expected = [e for e in inproc._errors if "background loop persister failed" in e]
    assert len(expected) == 1, inproc._errors
    inproc._errors.remove(expected[0])
