"""Hand-off marks: a restarted node's empty mark outranks what it announced in a past life."""

from __future__ import annotations

from pathlib import Path

from node.base.config import Config
from node.cluster.membership import VERSION_STRIDE, Cluster
from ring import View


def _cluster(tmp_path: Path, node_id: str, incarnation: int) -> Cluster:
    config = Config(node_id=node_id, listen="127.0.0.1:7000", data_dir=str(tmp_path / node_id))
    return Cluster(config, incarnation)


def test_a_newer_stamp_wins_and_an_older_one_is_ignored(tmp_path: Path):
    observer = _cluster(tmp_path, "a", 1)
    before_restart = _cluster(tmp_path, "d", 1)
    before_restart.mark_synced("checksum@4")
    state = observer.state
    observer.absorb(View.empty(), state, {"d": tuple(before_restart.synced_to_wire()["d"])})
    assert observer.synced["d"] == "checksum@4"

    restarted = _cluster(tmp_path, "d", 2)  # its memory, and its pull, are gone
    observer.absorb(View.empty(), state, {"d": tuple(restarted.synced_to_wire()["d"])})
    assert observer.synced["d"] == ""
    # gossip from a peer that still carries the old mark changes nothing
    observer.absorb(View.empty(), state, {"d": (1 * VERSION_STRIDE + 1, "checksum@4")})
    assert observer.synced["d"] == ""


def test_shard_of_answers_the_ring_through_a_bounded_cache(tmp_path, monkeypatch):
    import node.cluster.membership as membership

    monkeypatch.setattr(membership, "SHARD_CACHE_SIZE", 5)
    cluster = _cluster(tmp_path, "n1", 1)
    keys = [(t, ns, f"k{i}") for t in ("t", "u") for ns in ("a", "b") for i in range(4)]
    for key in keys + keys[::-1] + keys:
        assert cluster.shard_of(key) == cluster.state.current.shard_of(*key)
        assert cluster._shards_cached <= 5
