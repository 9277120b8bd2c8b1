"""The client places counters exactly as the node does, and reads the node's topology."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from counters_client.topology import Topology, key_hash, valid_name
from hypothesis import given, settings
from hypothesis import strategies as st

from node.base.config import Config
from node.cluster.membership import Cluster
from node.http import validation
from node.http.topology import topology
from ring import Ring
from ring.hashing import key_hash as node_key_hash

texts = st.text(min_size=0, max_size=40)


@settings(deadline=None)  # pure and fast; a shared machine's pause is not a failure
@given(texts, texts, texts)
def test_key_hash_is_the_nodes(tenant: str, namespace: str, name: str) -> None:
    assert key_hash(tenant, namespace, name) == node_key_hash(tenant, namespace, name)


@settings(deadline=None)
@given(st.text(max_size=210))
def test_name_rule_is_the_nodes(name: str) -> None:
    try:
        validation.name(name)
        node_ok = True
    except validation.InvalidName:
        node_ok = False
    assert valid_name(name) == node_ok


def _wire(ring: Ring, status: dict[str, str], tenant: str = "acme") -> dict[str, object]:
    nodes = {n: {"address": f"127.0.0.1:{7000 + i}", "status": status.get(n, "up")}
             for i, n in enumerate(ring.nodes)}  # fmt: skip
    return {
        "epoch": ring.epoch,
        "checksum": ring.checksum(),
        "shards": ring.shards,
        "replicas": ring.replicas,
        "tenant": tenant,
        "nodes": nodes,
        "preference_lists": [list(entry) for entry in ring.table],
    }


def test_shards_and_coordinators_match_the_ring() -> None:
    ring = Ring.build(["n1", "n2", "n3", "n4"], shards=64)
    found = Topology.from_json(_wire(ring, {}), "http://seed:1")
    for i in range(500):
        name = f"c{i}"
        shard = ring.shard_of("acme", "ns", name)
        assert found.shard_of("ns", name) == shard
        first = ring.preference_list(shard)[0]
        assert found.coordinator(shard) == f"http://127.0.0.1:{7000 + ring.nodes.index(first)}"


def test_coordinator_skips_down_and_avoided_replicas() -> None:
    ring = Ring.build(["n1", "n2", "n3"], shards=8)
    shard = 0
    first, second, third = ring.preference_list(shard)
    found = Topology.from_json(_wire(ring, {first: "down"}), "https://seed")
    assert found.urls[second].startswith("https://")
    assert found.coordinator(shard) == found.urls[second]
    assert found.coordinator(shard, avoid={second}) == found.urls[third]
    # every replica avoided or down: still somewhere to send (the node forwards)
    assert found.coordinator(shard, avoid={second, third}) == found.urls[first]


def test_reads_what_the_node_answers(tmp_path: Path) -> None:
    # its own data dir: `make run` leaves data/n1 (a ring of three) in the checkout
    config = Config(node_id="n1", listen="127.0.0.1:7000", data_dir=str(tmp_path))
    cluster = Cluster(config, incarnation=1)
    body = topology(cluster, "acme")
    found = Topology.from_json(body, "http://127.0.0.1:7000")
    assert (found.epoch, found.shards, found.tenant) == (
        cluster.state.current.epoch,
        cluster.state.current.shards,
        "acme",
    )
    assert found.urls == {"n1": "http://127.0.0.1:7000"}
    assert found.status == {"n1": "joining"}  # a lone fresh node, before its first ring


def test_a_malformed_topology_is_a_value_error() -> None:
    import pytest

    ring = Ring.build(["n1"], shards=4)
    good = _wire(ring, {})
    for bad in ({}, {**good, "shards": 3}, {**good, "preference_lists": [["n1"]]}, None,
                SimpleNamespace()):  # fmt: skip
        with pytest.raises(ValueError):
            Topology.from_json(bad, "http://x")
