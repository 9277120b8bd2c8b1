"""CounterStore's write-behind bookkeeping (take_dirty, mark_dirty), checked against a model
of a durable replica that merges slot by slot, as SQLite and Redis do.

A flush takes only the slots that changed (db188e2); whatever happens meanwhile (merges of
peers' states, resets, rotations to a fresh actor, flushes that fail and put their slots
back, a flush still in flight while new changes arrive, dropped shards), the durable
replica must end up holding every slot the store holds, and a receipt must be durable no
earlier than the slot that counts it (idempotency.py: one atomic write)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from crdt import CounterOverflowError, PNCounter
from crdt.receipts import Receipt
from node.base.keys import Key
from node.storage.store import CounterStore

KEYS: list[Key] = [("t", "ns", "x"), ("t", "ns", "y"), ("t", "ns", "zz")]
ACTORS = ["a:1", "a:2", "b:1", "c:1"]
AT_MS = 1_000_000  # receipts are never expired here

steps = st.one_of(
    st.tuples(
        st.just("increment"), st.sampled_from(KEYS), st.sampled_from(ACTORS), st.integers(-9, 9)
    ),
    st.tuples(st.just("keyed"), st.sampled_from(KEYS), st.sampled_from(ACTORS), st.integers(1, 9)),
    st.tuples(
        st.just("merge"),
        st.sampled_from(KEYS),
        st.sampled_from(ACTORS),
        st.integers(0, 40),
        st.integers(0, 40),
    ),
    st.tuples(st.just("reset"), st.sampled_from(KEYS)),
    st.tuples(
        st.just("take"),
    ),
    st.tuples(
        st.just("commit"),
    ),
    st.tuples(
        st.just("fail"),
    ),
    st.tuples(st.just("drop"), st.sampled_from([0, 1])),
)


def _shard(key: Key) -> int:
    return len(key[2]) % 2


@settings(max_examples=400, deadline=None)
@given(st.lists(steps, max_size=50))
def test_a_slot_wise_durable_replica_ends_up_with_every_slot_and_receipts_never_lead(steps):
    store = CounterStore(_shard)
    durable: dict[Key, PNCounter] = {}
    durable_receipts: set[tuple[Key, str]] = set()
    counts: dict[tuple[Key, str], tuple[str, int, int]] = {}  # receipt -> slot it counts
    in_flight = None
    for number, step in enumerate(steps):
        kind = step[0]
        if kind == "increment" or kind == "keyed":
            _, key, actor, delta = step
            try:
                state, _ = store.increment(key, actor, delta)
            except CounterOverflowError:
                continue
            if kind == "keyed":  # a keyed op: its receipt is added in the same loop turn
                idem = f"idem-{number}"
                store.add_receipt(key, idem, Receipt(AT_MS, actor, "fp", state.value()))
                counts[(key, idem)] = (actor, *state.slot(actor))
        elif kind == "merge":
            _, key, actor, p, n = step
            store.merge(key, PNCounter.from_slot(actor, p, n))
        elif kind == "reset":
            store.reset(step[1])
        elif kind == "take" and in_flight is None:
            in_flight = (store.take_dirty(), store.take_dirty_receipts())
        elif kind == "commit" and in_flight is not None:
            entries, receipts = in_flight
            for key, _, state in entries:
                durable[key] = durable.get(key, PNCounter.empty()).merge(state)
            for key, _, idem, _ in receipts:
                durable_receipts.add((key, idem))
            store.receipts_flushed(receipts)
            in_flight = None
            for (key, idem), (actor, p, n) in counts.items():
                if (key, idem) in durable_receipts and key in durable:
                    held = durable[key].slot(actor)
                    assert held[0] >= p and held[1] >= n, (key, idem, held, (p, n))
        elif kind == "fail" and in_flight is not None:
            entries, receipts = in_flight
            store.mark_dirty(entries)
            store.mark_receipts_dirty(receipts)
            in_flight = None
        elif kind == "drop":
            store.drop_shard(step[1])
    if in_flight is not None:
        store.mark_dirty(in_flight[0])
    for key, _, state in store.take_dirty():
        durable[key] = durable.get(key, PNCounter.empty()).merge(state)
    for key in KEYS:
        held = store.get(key)
        if held is not None:
            written = durable.get(key, PNCounter.empty())
            assert written.merge(held) == written, (key, written, held)


def test_mark_shard_slots_dirty_marks_the_picked_slots_asking_once_per_actor():
    store = CounterStore(lambda key: len(key[2]) % 2)  # x, y: shard 1; zz: shard 0
    for key in KEYS:
        store.merge(key, PNCounter.from_slot("a:1", 1, 0).merge(PNCounter.from_slot("b:1", 2, 1)))
    store.merge(KEYS[0], PNCounter.from_slot("c:1", 3, 0))
    store.take_dirty()
    asked: list[tuple[int, str]] = []

    def writes(shard: int, actor: str) -> bool:
        asked.append((shard, actor))
        return (actor == "b:1" and shard == 1) or actor == "c:1"

    assert store.mark_shard_slots_dirty(1, writes) == 2
    assert store.mark_shard_slots_dirty(0, lambda shard, actor: False) == 0
    assert sorted(asked) == [(1, "a:1"), (1, "b:1"), (1, "c:1")]
    taken = {key: state for key, _, state in store.take_dirty()}
    both = PNCounter.from_slot("b:1", 2, 1).merge(PNCounter.from_slot("c:1", 3, 0))
    assert taken == {KEYS[0]: both, KEYS[1]: PNCounter.from_slot("b:1", 2, 1)}


def test_take_dirty_asks_the_slot_rule_once_per_shard_and_actor():
    store = CounterStore(lambda key: len(key[2]) % 2)  # x, y: shard 1; zz: shard 0
    for key in KEYS:
        store.merge_slot(key, "b:1", 2, 0)  # another node's slot, as a replica merges it
        store.increment_slot(key, "a:1", 1)  # this node's own
    asked: list[tuple[int, str]] = []

    def writes(shard: int, actor: str) -> bool:
        asked.append((shard, actor))
        return actor == "a:1"

    taken = {key: (shard, state) for key, shard, state in store.take_dirty(writes)}
    assert sorted(asked) == [(0, "a:1"), (0, "b:1"), (1, "a:1"), (1, "b:1")]
    own = PNCounter.from_slot("a:1", 1, 0)
    assert taken == {KEYS[0]: (1, own), KEYS[1]: (1, own), KEYS[2]: (0, own)}
    assert store.dirty_count() == 0 and store.take_dirty(writes) == []


def test_take_dirty_skips_counters_whose_changed_slots_it_does_not_write_and_drops_them():
    store = CounterStore(lambda key: len(key[2]) % 2)
    store.merge_slot(KEYS[0], "b:1", 2, 0)
    store.merge_slot(KEYS[2], "b:1", 5, 0)
    assert store.dirty_count() == 2
    assert store.take_dirty(lambda shard, actor: actor != "b:1") == []
    assert store.dirty_count() == 0  # clean now, though nothing was written


def test_a_dropped_shard_leaves_nothing_dirty_and_the_others_stay():
    store = CounterStore(lambda key: len(key[2]) % 2)
    for key in KEYS:
        store.increment_slot(key, "a:1", 1)
    assert store.drop_shard(1) == 2 and store.dirty_count() == 1
    assert [(key, shard) for key, shard, _ in store.take_dirty()] == [(KEYS[2], 0)]


def test_a_flush_takes_every_actor_changed_since_the_last_whatever_the_order():
    store = CounterStore(lambda key: len(key[2]) % 2)
    store.increment_slot(KEYS[0], "a:1", 1)
    store.merge_slot(KEYS[0], "b:1", 2, 0)
    store.increment_slot(KEYS[0], "a:1", 1)  # again: the two slots stay marked, once each
    store.merge_slot(KEYS[0], "c:1", 0, 4)
    store.increment_slot(KEYS[1], "a:1", 3)
    store.increment_slot(KEYS[1], "a:1", 3)
    store.merge(KEYS[2], PNCounter.from_slot("b:1", 1, 0))  # new here: every slot
    store.merge_slot(KEYS[2], "c:1", 1, 0)
    taken = {key: state for key, _, state in store.take_dirty()}
    a, b, c = (PNCounter.from_slot(*slot) for slot in (("a:1", 2, 0), ("b:1", 2, 0), ("c:1", 0, 4)))
    assert taken[KEYS[0]] == a.merge(b).merge(c)
    assert taken[KEYS[1]] == PNCounter.from_slot("a:1", 6, 0)
    assert taken[KEYS[2]] == store.get(KEYS[2])
    assert store.take_dirty() == []
