"""CounterStore: increments return the changed slot, merges are idempotent, digests track state."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt import CounterOverflowError, PNCounter
from node.storage.store import CounterStore

KEY = ("t", "ns", "c")


def _store() -> CounterStore:
    return CounterStore(lambda key: len(key[2]) % 4)


def test_increment_returns_state_and_only_the_changed_slot():
    store = _store()
    store.merge(KEY, PNCounter.empty().increment("other:1", 10))
    state, delta = store.increment(KEY, "me:1", 3)
    assert state.value() == 13
    assert delta == PNCounter.empty().increment("me:1", 3)


def test_overflow_changes_nothing():
    store = _store()
    store.increment(KEY, "me:1", 2**63 - 1)
    digest = store.digest(1)
    with pytest.raises(CounterOverflowError):
        store.increment(KEY, "me:1", 1)
    assert store.get(KEY).value() == 2**63 - 1
    assert store.digest(1) == digest


def test_merge_is_idempotent_and_digest_follows_content_not_history():
    one, two = _store(), _store()
    a = PNCounter.empty().increment("a:1", 4)
    b = PNCounter.empty().increment("b:1", -2)
    one.merge(KEY, a)
    one.merge(KEY, b)
    two.merge(KEY, b)
    two.merge(KEY, a)
    two.merge(KEY, a)
    assert one.get(KEY) == two.get(KEY)
    assert one.digest(1) == two.digest(1) != 0
    assert one.digest(2) == 0


def test_scan_lists_one_namespace_in_name_order_after_the_cursor():
    store = _store()
    for name in ["b", "a", "c", "ab"]:
        store.increment(("t", "ns", name), "me:1", 1)
    store.increment(("t", "other", "a"), "me:1", 1)
    store.increment(("u", "ns", "a"), "me:1", 1)
    rows = store.scan("t", "ns", "", "a", 10, {0, 1, 2, 3})
    assert [name for name, _ in rows] == ["ab", "b", "c"]
    assert [name for name, _ in store.scan("t", "ns", "a", "", 10, {0, 1, 2, 3})] == ["a", "ab"]


def test_drop_shard_forgets_its_keys():
    store = _store()
    store.increment(KEY, "me:1", 1)
    assert store.drop_shard(1) == 1
    assert store.get(KEY) is None and len(store) == 0
    assert store.scan("t", "ns", "", "", 10, {0, 1, 2, 3}) == []


names = st.text(alphabet="abc", min_size=1, max_size=4)


@given(
    st.lists(st.tuples(st.sampled_from(["t", "u"]), st.sampled_from(["ns", "x"]), names)),
    st.text(alphabet="abc", max_size=2),
    st.text(alphabet="abc", max_size=3),
    st.integers(1, 5),
    st.sets(st.integers(0, 3)),
)
def test_scan_answers_what_a_scan_of_every_key_would(keys, prefix, after, limit, shards):
    store = _store()
    for key in keys:
        store.increment(key, "me:1", 1)
    expected = sorted(
        {
            name
            for tenant, ns, name in keys
            if (tenant, ns) == ("t", "ns")
            and len(name) % 4 in shards
            and name.startswith(prefix)
            and name > after
        }
    )[:limit]
    rows = store.scan("t", "ns", prefix, after, limit, shards)
    assert [name for name, _ in rows] == expected
    assert all(state == store.get(("t", "ns", name)) for name, state in rows)


def test_states_loaded_from_the_durable_replica_are_not_written_back_nor_recorded():
    """A start loads every counter; writing them all back (and recording each in the
    history again) kept the write-behind busy for a minute and delayed the next stop.
    A loaded state that adds to one already held is a change like any other."""
    store = _store()
    held = ("t", "ns", "held")
    store.merge(held, PNCounter.empty().increment("me:1", 1))
    store.take_dirty(), store.take_history_dirty()
    fresh = ("t", "ns", "fresh")
    store.load_durable(
        [
            (fresh, PNCounter.empty().increment("old:1", 4)),
            (held, PNCounter.empty().increment("old:1", 2)),
            (fresh, PNCounter.empty().increment("old:2", 1)),  # another slot, apart
        ]
    )
    assert store.get(fresh) == PNCounter.empty().increment("old:1", 4).increment("old:2", 1)
    assert store.get(held).value() == 3
    # fresh's second slot merged into a held state, so it goes out too; that costs a
    # rewrite only for counters whose slots arrive apart, which the loaders avoid
    assert {key for key, _, _ in store.take_dirty()} == {held, fresh}
    store.take_history_dirty()
    store.load_durable([(("t", "ns", "quiet"), PNCounter.empty().increment("old:1", 1))])
    assert store.take_dirty() == [] and store.take_history_dirty() == []
    assert store.get(("t", "ns", "quiet")).value() == 1
