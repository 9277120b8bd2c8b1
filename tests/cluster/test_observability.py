"""What an operator sees of a live cluster: /metrics tallies that match what clients did, JSON
logs that carry the request's trace id and never its token or body, and OTLP traces that
follow a request across nodes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from node.http.auth import READ, WRITE
from ring import key_hash
from tests.cluster.harness import Cluster, Node
from tests.support import bearer, eventually, free_port

SECRET = "observability-secret-" * 4
METRICS_TOKEN = "scrape-token-" * 3
NS = "obs"
INCREMENT = "/v1/namespaces/{namespace}/counters/{name}/increment"


def _bearer(tenant: str) -> dict[str, str]:
    return bearer(SECRET, tenant, [READ, WRITE])


async def _scrape(cluster: Cluster, node: Node) -> dict[tuple[str, tuple[Any, ...]], float]:
    """{(sample name, sorted labels): value} of a node's /metrics."""
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    async with cluster.session.get(node.url + "/metrics", headers=headers) as response:
        assert response.status == 200
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("counters_"), family.name
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _total(scrapes: list[dict], name: str, **labels: str) -> float:
    """The sum over nodes of every sample `name` whose labels include `labels`."""
    return sum(
        value
        for samples in scrapes
        for (sample, found), value in samples.items()
        if sample == name and set(labels.items()) <= set(found)
    )


async def test_metrics_count_what_clients_did(cluster: Cluster):
    cluster.settings.update(
        COUNTERS_AUTH="jwt",
        COUNTERS_JWT_SECRET=SECRET,
        COUNTERS_RATE_LIMIT_OVERRIDES="noisy=1:1",
        COUNTERS_METRICS_TOKEN=METRICS_TOKEN,
    )
    nodes = await cluster.start(3)
    for headers in ({}, {"Authorization": "Bearer guess"}, _bearer("acme")):
        async with cluster.session.get(nodes[0].url + "/metrics", headers=headers) as response:
            assert response.status == 401  # tenants' names and traffic are not for everyone
    acme = _bearer("acme")
    path = f"/v1/namespaces/{NS}/counters"
    for i in range(5):
        status, _ = await cluster.request(
            "POST", nodes[i % 3], f"{path}/c{i}/increment", json={"delta": 1}, headers=acme
        )
        assert status == 200
    retry = {**acme, "Idempotency-Key": "once"}
    for node in nodes[:2]:  # the same increment twice: applied once, answered twice
        status, _ = await cluster.request(
            "POST", node, f"{path}/c0/increment", json={"delta": 1}, headers=retry
        )
        assert status == 200
    ops = [{"op": "increment", "name": f"b{i}"} for i in range(3)] + [{"op": "get", "name": "c0"}]
    status, _ = await cluster.request(
        "POST", nodes[1], f"/v1/namespaces/{NS}/batch", json={"ops": ops}, headers=acme
    )
    assert status == 200
    # noisy may read once a second: reads at once until one is limited, however slow the box
    statuses: list[int] = []
    for _ in range(10):
        replies = await asyncio.gather(
            *(
                cluster.request("GET", nodes[2], f"{path}/c1", headers=_bearer("noisy"))
                for _ in "ab"
            )
        )
        statuses += [status for status, _ in replies]
        if 429 in statuses:
            break
    assert statuses[0] == 200 and 429 in statuses and set(statuses) <= {200, 429}, statuses
    limited = statuses.count(429)

    async def flushed() -> bool:
        scrapes = [await _scrape(cluster, node) for node in nodes]
        return _total(scrapes, "counters_persistence_flush_seconds_count") > 0

    await eventually(flushed, "a persistence flush to be timed", 10)
    scrapes = [await _scrape(cluster, node) for node in nodes]
    # Operations applied where they ran: 5 + 1 (the retry applies nothing) + 3 increments
    assert _total(scrapes, "counters_operations_total", kind="increment") == 9
    assert _total(scrapes, "counters_idempotency_hits_total") == 1
    assert _total(scrapes, "counters_operations_total", kind="get") >= 2  # batch + noisy read
    assert (
        _total(
            scrapes, "counters_http_requests_total", route=INCREMENT, status="200", tenant="acme"
        )
        == 7
    )
    assert _total(scrapes, "counters_http_requests_total", status="429", tenant="noisy") == limited
    assert _total(scrapes, "counters_rate_limited_total", tenant="noisy") == limited
    assert _total(scrapes, "counters_http_request_duration_seconds_count", tenant="acme") == 8
    assert _total(scrapes, "counters_replication_frames_total") > 0
    assert _total(scrapes, "counters_replication_frame_seconds_count") > 0
    assert _total(scrapes, "counters_gossip_rounds_total") > 0
    for samples in scrapes:
        assert samples[("counters_node_ready", ())] == 1
        assert samples[("counters_ring_members", (("status", "up"),))] == 3
        assert samples[("counters_store_counters", ())] >= 8  # N=3 of 3: every node holds all
        assert samples[("counters_store_unweighed_shards", ())] == 0  # nothing loaded
        assert samples[("counters_realtime_restoring_shards", ())] == 0  # no window file
    assert len({s[("counters_ring_checksum", ())] for s in scrapes}) == 1
    assert len({s[("counters_ring_epoch", ())] for s in scrapes}) == 1

    async def peers_heard_recently() -> bool:
        """Each node exports how long ago it heard each peer (not itself), and under
        gossip every 0.2 s that is soon well under a second everywhere."""
        for node in nodes:
            samples = await _scrape(cluster, node)
            heard[node.node_id] = {
                peer: samples.get(("counters_peer_last_heard_seconds", (("peer", peer),)))
                for peer in ("n1", "n2", "n3")
            }
        return all(
            (ages[peer] is None) == (peer == node_id)
            and (ages[peer] is None or 0 <= ages[peer] < 1.0)
            for node_id, ages in heard.items()
            for peer in ages
        )

    heard: dict[str, dict[str, float | None]] = {}
    try:
        await eventually(peers_heard_recently, "every peer heard within 1 s", 10)
    except AssertionError:
        raise AssertionError(f"peers not heard recently; last saw {heard}") from None

    # Two replicas gone: a write that needs all three is refused, and counted as such
    nodes[1].kill()
    nodes[2].kill()
    await cluster.wait_marked_down(nodes[0], nodes[2])
    status, body = await cluster.request(
        "POST", nodes[0], f"{path}/c0/increment?consistency=all", json={"delta": 1}, headers=acme
    )
    assert status == 503, body
    samples = await _scrape(cluster, nodes[0])
    assert _total([samples], "counters_quorum_failures_total", reason="unavailable") == 1


async def test_logs_are_json_with_the_trace_id_and_never_a_token_or_body(cluster: Cluster):
    cluster.settings.update(
        COUNTERS_AUTH="jwt", COUNTERS_JWT_SECRET=SECRET, COUNTERS_LOG_LEVEL="debug"
    )
    [node] = await cluster.start(1)
    headers = {
        **_bearer("acme"),
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    secret_body = {"delta": "body-marker-7c1e"}  # a bad delta: refused, and logged at debug
    async with cluster.session.post(
        f"{node.url}/v1/namespaces/{NS}/counters/x/increment", json=secret_body, headers=headers
    ) as response:
        assert response.status == 400
        assert response.headers["X-Trace-Id"] == "0af7651916cd43dd8448eb211c80319c"
    node.terminate()
    lines = node.log_path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "node", "event"} <= entry.keys() for entry in entries)
    path = f"/v1/namespaces/{NS}/counters/x/increment"  # not a /readyz asked while starting
    refused = [e for e in entries if e["event"] == "request refused" and e["path"] == path]
    assert refused and refused[0]["trace_id"] == "0af7651916cd43dd8448eb211c80319c", refused
    assert refused[0]["type"] == "invalid-delta" and refused[0]["status"] == 400
    text = "\n".join(lines)
    assert "body-marker-7c1e" not in text
    assert headers["Authorization"].split()[1] not in text and SECRET not in text


@pytest.fixture
async def collector() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An OTLP/HTTP trace receiver on 127.0.0.1: (its URL, the spans it received)."""
    spans: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        {
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "node": attributes.get("service.instance.id"),
                        }
                    )
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}", spans
    finally:
        await runner.cleanup()


async def test_a_request_is_traced_across_nodes(collector, cluster: Cluster):
    # collector before cluster: it is set up first and torn down last, so the nodes never
    # outlive it (a node that cannot export its spans rightly logs an error)
    url, spans = collector
    cluster.settings.update(COUNTERS_OTLP_ENDPOINT=url, OTEL_BSP_SCHEDULE_DELAY="100")
    nodes = await cluster.start(3)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    # An Idempotency-Key sends the increment to its shard's first replica: pick a name whose
    # shard nodes[0] does not coordinate, so the request must travel to another node.
    ring = await cluster.ring(nodes[0])
    name = next(
        f"t{i}"
        for i in range(1000)
        if ring["preference_lists"][key_hash("default", NS, f"t{i}") % ring["shards"]][0] != "n1"
    )
    async with cluster.session.post(
        f"{nodes[0].url}/v1/namespaces/{NS}/counters/{name}/increment",
        json={"delta": 1},
        headers={**headers, "Idempotency-Key": "traced"},
    ) as response:
        assert response.status == 200

    async def whole_trace() -> bool:
        found = {(s["name"], s["node"]) for s in spans if s["trace_id"] == trace_id}
        entry = {(f"POST {INCREMENT}", "n1"), ("forward", "n1")}  # where the request arrived
        coordinators = {node for name, node in found if name == "peer forward" and node != "n1"}
        return entry <= found and any(("replica write", c) in found for c in coordinators)

    await eventually(whole_trace, "the request's spans from both nodes under one trace", 5)
    server = next(s for s in spans if s["name"] == f"POST {INCREMENT}")
    assert server["parent"] == "00f067aa0ba902b7"  # it continued the client's trace
