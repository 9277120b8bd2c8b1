"""CounterQuota on one node: what it counts and gossips, what it refuses, and that a bad
report from a peer is dropped without refusing the peer's gossip."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.base.config import Config
from node.cluster.membership import Cluster
from node.coordination import quota as quota_module
from node.coordination.quota import CounterQuota, QuotaExceeded
from node.storage.store import CounterStore


def _node(tmp_path: Path, overrides: str) -> tuple[CounterQuota, CounterStore]:
    config = Config(
        node_id="n1",
        data_dir=str(tmp_path),
        auth="none",
        max_counters_per_tenant=0,
        counter_quota_overrides=overrides,
    )
    cluster = Cluster(config, 1)
    cluster.step()
    cluster.step()  # a ring of one: n1 coordinates every shard
    assert cluster.state.current.nodes == ("n1",)
    store = CounterStore(cluster.shard_of)
    return CounterQuota(config, cluster, store), store


def _create(store: CounterStore, tenant: str, count: int) -> None:
    for i in range(count):
        store.increment((tenant, "ns", f"c{i}"), "n1:1", 1)


def test_counts_only_tenants_with_a_quota_and_refuses_past_it(tmp_path: Path):
    quota, store = _node(tmp_path, "acme=3,globex=10")
    _create(store, "acme", 3)
    _create(store, "globex", 2)
    _create(store, "free", 5)  # no quota: never reported, never refused
    assert quota.own_counts() == {"acme": 3, "globex": 2}
    with pytest.raises(QuotaExceeded):
        quota.admit_new("acme")
    quota.admit_new("globex")
    quota.admit_new("free")


def test_a_bad_report_is_dropped_and_strangers_do_not_count(tmp_path: Path):
    quota, store = _node(tmp_path, "acme=5")
    _create(store, "acme", 2)
    quota.heard("n2", {"acme": "lots"})  # no exception: the rest of the gossip goes on
    quota.heard("n2", ["acme", 3])
    assert quota._reports == {}
    quota.heard("n9", {"acme": 100})  # n9 is not in the ring: its word does not count
    assert quota.total("acme") == 2


def test_reports_are_bounded_nearest_their_quota_first(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(quota_module, "MAX_REPORTED_TENANTS", 2)
    quota, store = _node(tmp_path, "a=100,b=4,c=10")
    _create(store, "a", 3)  # 3% of its quota
    _create(store, "b", 3)  # 75%
    _create(store, "c", 3)  # 30%
    assert quota.own_counts() == {"b": 3, "c": 3}


def test_creating_up_to_the_quota_one_at_a_time_is_refused_exactly_at_it(tmp_path: Path):
    """As the coordinator does: a check, then the counter; the last check before the
    quota passes and the one at it refuses, however many checks were answered from the
    bound on growth since the last count."""
    quota, store = _node(tmp_path, "acme=50")
    _create(store, "free", 7)  # other tenants' counters grow the store too
    for i in range(50):
        quota.admit_new("acme")
        store.increment(("acme", "ns", f"c{i}"), "n1:1", 1)
        store.increment(("free", "ns", f"x{i}"), "n1:1", 1)
    with pytest.raises(QuotaExceeded):
        quota.admit_new("acme")


def test_a_dropped_shard_does_not_hide_counters_created_after_it(tmp_path: Path):
    """A drop shrinks the store: growth measured by its size alone would miss counters
    created after it, so the count is taken again."""
    quota, store = _node(tmp_path, "acme=5")
    other = ("free", "ns", "gone")
    store.increment(other, "n1:1", 1)
    dropped = store._shard_of(other)
    names = (f"c{i}" for i in range(1000))
    acme = [k for k in (("acme", "ns", n) for n in names) if store._shard_of(k) != dropped][:5]
    for key in acme[:4]:
        store.increment(key, "n1:1", 1)
    quota.admit_new("acme")  # 4 of 5, counted with the store at 5 counters
    store.drop_shard(dropped)
    store.increment(acme[4], "n1:1", 1)  # 5 of 5, the store at 5 counters again
    with pytest.raises(QuotaExceeded):
        quota.admit_new("acme")


def test_admit_given_the_key_shard_answers_as_without_it(tmp_path: Path):
    quota, store = _node(tmp_path, "acme=2")
    _create(store, "acme", 2)
    held, new = ("acme", "ns", "c0"), ("acme", "ns", "fresh")
    for shard in (quota.cluster.shard_of(held), -1):
        quota.admit(held, shard)  # an existing counter always passes
    for shard in (quota.cluster.shard_of(new), -1):
        with pytest.raises(QuotaExceeded):
            quota.admit(new, shard)
