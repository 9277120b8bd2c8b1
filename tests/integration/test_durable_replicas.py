"""The durable replica contract, on real Redis, a real Redis Cluster and SQLite.

Writes are per-slot maxima: idempotent, order-free, exact for counts past 2**53, and a
shard's load returns exactly its counters.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crdt import PNCounter
from crdt.gcounter import UINT64_MAX
from node.storage.durable import DurableReplica
from node.storage.durable_redis import RedisReplica
from node.storage.durable_sqlite import SqliteReplica

KINDS = ["sqlite", "redis", "redis-cluster"]


@pytest.fixture(params=KINDS)
async def replica(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DurableReplica]:
    opened: DurableReplica
    if request.param == "sqlite":
        opened = SqliteReplica(tmp_path / "durable.sqlite3")
    elif request.param == "redis":
        server = request.getfixturevalue("redis_server")
        opened = RedisReplica(server.url, cluster=False)
    else:
        cluster = request.getfixturevalue("redis_cluster")
        opened = RedisReplica(cluster.url, cluster=True)
    try:
        yield opened
    finally:
        await opened.close()


def _key(name: str, tmp: str = "") -> tuple[str, str, str]:
    return ("tenant", "ns" + tmp, name)


async def test_writes_merge_per_slot_and_load_returns_exactly_the_shard(
    replica: DurableReplica, tmp_path: Path
):
    ns = tmp_path.name  # a fresh namespace per test, as the Redis servers are shared
    a = PNCounter.empty().increment("n1:1", 5).increment("n2:1", -3)
    older_a = PNCounter.empty().increment("n1:1", 2)
    b = PNCounter.empty().increment("n3:7", 9)
    await replica.write([(_key("a", ns), 11, a), (_key("b", ns), 12, b)])
    await replica.write([(_key("a", ns), 11, older_a)])  # an older state changes nothing
    await replica.write([(_key("a", ns), 11, a)])  # nor does a repeat
    loaded = dict(await replica.load({11}))
    assert loaded[_key("a", ns)] == a
    assert _key("b", ns) not in loaded
    both = dict(await replica.load({11, 12}))
    assert both[_key("b", ns)] == b
    assert _key("a", ns) not in dict(await replica.load({99}))


async def test_counts_past_two_to_the_53_stay_exact(replica: DurableReplica, tmp_path: Path):
    ns = tmp_path.name
    big = PNCounter.from_slot("n1:1", UINT64_MAX, UINT64_MAX - 1)
    bigger_than_doubles = PNCounter.from_slot("n1:1", 2**53 + 1, 0)
    await replica.write([(_key("big", ns), 5, bigger_than_doubles)])
    await replica.write([(_key("big", ns), 5, big)])
    await replica.write([(_key("big", ns), 5, PNCounter.from_slot("n1:1", 2**53 + 3, 7))])
    loaded = dict(await replica.load({5}))
    assert loaded[_key("big", ns)] == big
    assert loaded[_key("big", ns)].value() == 1


async def test_many_counters_of_one_shard_in_one_write(replica: DurableReplica, tmp_path: Path):
    ns = tmp_path.name
    entries = [
        (_key(f"k{i}", ns), 3, PNCounter.empty().increment(f"n{i % 3}:1", i + 1))
        for i in range(500)
    ]
    await replica.write(entries)
    loaded = {key: state for key, state in await replica.load({3}) if key[1] == "ns" + ns}
    assert loaded == {key: state for key, _, state in entries}


async def test_an_unreachable_redis_raises_durable_error():
    from node.storage.durable import DurableError
    from tests.support import free_port

    unreachable = RedisReplica(f"redis://127.0.0.1:{free_port()}", cluster=False)
    try:
        with pytest.raises(DurableError):
            await unreachable.write([(("t", "n", "c"), 1, PNCounter.from_slot("a", 1, 0))])
        with pytest.raises(DurableError):
            await unreachable.load({1})
    finally:
        await unreachable.close()


async def test_receipts_are_kept_first_write_wins_and_load_by_shard(
    replica: DurableReplica, tmp_path: Path
):
    from crdt.receipts import Receipt

    ns = tmp_path.name
    now_ms = int(time.time() * 1000)
    first = Receipt(now_ms, "n1:1", "fp-a", 15)
    later = Receipt(now_ms + 5, "n2:1", "fp-b", 99)
    window = 60_000
    c = _key("c", ns)
    await replica.write_receipts([(c, 21, "order-1", first)], window, now_ms)
    await replica.write_receipts([(c, 21, "order-1", later), (c, 21, "o2", later)], window, now_ms)
    loaded = {
        (key, idem): receipt
        async for page in replica.load_receipts({21}, now_ms)
        for key, _, idem, receipt in page
    }
    assert {idem: r for (key, idem), r in loaded.items() if key == c} == {
        "order-1": first,
        "o2": later,
    }
    assert not [e async for page in replica.load_receipts({22}, now_ms) for e in page if e[0] == c]


async def test_redis_remembers_the_highest_incarnation(redis_server, tmp_path: Path):
    replica = RedisReplica(redis_server.url, cluster=False)
    node = f"node-{tmp_path.name}"
    try:
        assert await replica.last_incarnation(node, 1) == 0
        assert await replica.last_incarnation(node, 3) == 1
        assert await replica.last_incarnation(node, 2) == 3  # never lowered
    finally:
        await replica.close()


async def test_flushing_only_changed_slots_reloads_every_slot(
    replica: DurableReplica, tmp_path: Path
):
    """A flush carries the slots that changed since the last one (CounterStore.take_dirty),
    not whole states: the durable replica must still end up holding every slot."""
    from node.storage.store import CounterStore

    ns = tmp_path.name
    store = CounterStore(lambda key: 11)
    key = _key("slots", ns)
    store.increment(key, "n1:1", 5)
    store.merge(key, PNCounter.empty().increment("n2:1", -4).increment("n3:1", 7))
    await replica.write(store.take_dirty())
    store.merge(key, PNCounter.empty().increment("n2:1", -6))  # only n2's slot moves
    store.increment(key, "n1:1", 1)  # and n1's
    [(taken, shard, changed)] = store.take_dirty()
    assert (taken, shard) == (key, 11)
    assert changed.actors() == {"n1:1", "n2:1"}
    await replica.write([(taken, shard, changed)])
    assert store.take_dirty() == []  # clean until the next change
    loaded = dict(await replica.load({11}))
    assert loaded[key] == store.get(key)
    assert loaded[key].value() == 5 + 1 - 6 + 7


async def test_a_copy_of_its_own_lists_and_forgets_shards_a_shared_one_keeps_them(
    replica: DurableReplica, tmp_path: Path
):
    """A start loads the shards a node's own copy holds to hand them over, and a hand-over
    forgets them there (node/cluster/handover.py); a shared copy (Redis) is the owners'
    too: it lists none and forgets nothing."""
    ns = tmp_path.name
    state = PNCounter.empty().increment("n1:1", 4)
    await replica.write([(_key(f"c{shard}", ns), shard, state) for shard in (3, 7, 4095)])

    listed = await replica.stored_shards()
    await replica.forget_shard(7)

    shared = replica.shared
    assert shared is isinstance(replica, RedisReplica)
    assert listed == (set() if shared else {3, 7, 4095})
    assert await replica.stored_shards() == (set() if shared else {3, 4095})
    assert (_key("c7", ns) in dict(await replica.load({7}))) is shared
    assert _key("c3", ns) in dict(await replica.load({3}))
