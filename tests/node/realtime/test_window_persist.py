"""The window persister (node/realtime/window_persist.py) over a real store, change tap and
SQLite file: a node that dies after its last write restores its buckets and adds each
counter's tail (what it missed) to the minute of that write, counting every change once,
recovery merges included; a long stop leaves a gap it does not answer strictly; an absent
file restores nothing and the windows say so; a restore waits, bounded, for the replicas
not pulled; restored buckets share the store's name strings. The file's own format, its
versions and its writes: test_window_file.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import cast

from crdt import PNCounter
from node.http.metrics_realtime import RealtimeCollector
from node.realtime.fanout import Fanout
from node.realtime.query import Kind, Query
from node.realtime.window_persist import RESTORE_WAIT_S, shared_names, tails
from node.realtime.windows import MINUTE_MS
from tests.node.realtime.window_node import SHARDS, T0, Node, key, shard_of, values


def test_a_kill_after_the_last_write_loses_no_change_from_the_windows(tmp_path: Path) -> None:
    first = Node(tmp_path, T0 + 1_000)
    first.recover()  # an empty store: observed since ever
    first.add(1, 3)
    first.add(2, 4)
    first.ms = T0 + MINUTE_MS + 10_000
    first.add(1, 5)
    asyncio.run(first.persister.write())  # P: minute 1001
    first.ms += 10_000
    first.add(2, 6)  # after the last write: a kill -9 loses them from the file
    first.add(3, 2)
    durable = values(first)
    first.persister.file.close()  # killed: nothing more is written

    second = Node(tmp_path, T0 + MINUTE_MS + 40_000)
    own = [(k, s) for k, s in durable if k != key(2)]
    second.store.load_durable([*own, (key(2), PNCounter.from_slot("a:1", 4, 0))])
    second.store.merge(key(2), PNCounter.from_slot("a:1", 10, 0))  # a peer's, while recovering
    second.recover()
    assert second.persister.restored == SHARDS and second.persister.tail_counters == 2
    assert second.minutes() == {1000: {"v:1": 3, "v:2": 4}, 1001: {"v:1": 5, "v:2": 6, "v:3": 2}}
    strict = second.ask(1, strict=True)  # minutes 1000 and 1001: observed whole
    assert sorted(strict.done) == [0, 1] and strict.change == 20
    second.add(1, 1)  # live again: counted once
    assert second.ask(15, name="v:1").change == 9
    second.stop()  # a clean stop writes through the stop: nothing to add at the next start

    third = Node(tmp_path, second.ms + 5_000)
    third.store.load_durable(values(second))
    third.recover()
    assert third.persister.tail_counters == 0
    assert third.minutes() == second.minutes()
    assert third.ask(15, strict=True).change == 21


def test_a_long_stop_leaves_a_gap_that_is_not_answered_strictly(tmp_path: Path) -> None:
    first = Node(tmp_path, T0 + 1_000)
    first.recover()
    first.add(1, 3)
    first.stop()  # P: minute 1000
    second = Node(tmp_path, T0 + 10 * MINUTE_MS + 30_000)  # back in minute 1010
    second.store.load_durable([(key(1), PNCounter.from_slot("a:1", 3, 0))])
    second.store.merge(key(1), PNCounter.from_slot("b:1", 7, 0))  # the others' meanwhile
    second.recover()
    assert second.minutes() == {1000: {"v:1": 10}}  # the tail, in P's minute
    whole = second.ask(15, strict=True)  # from minute 995: before P, so the tail is in
    assert sorted(whole.done) == [0, 1] and whole.change == 10
    inside = second.ask(5, strict=True)  # from minute 1005: the tail may be before or after
    assert inside.refused == dict.fromkeys(range(SHARDS), 1011 * MINUTE_MS)
    loose = second.ask(5)
    assert (loose.change, loose.since_ms) == (0, 1011 * MINUTE_MS)


def test_a_shard_observed_from_a_cut_is_made_whole_and_restored_exactly(tmp_path: Path) -> None:
    # Started without a restorable file, v:1 loaded: shard 1 is observed from the next
    # minute's cut, and the file lacks v:1's value until a write hands it on (make_whole).
    # A kill after that, then a start: the shard is restored, and windows from its cut on
    # are exact, the change after the last write included (its tail).
    first = Node(tmp_path, T0 + 1_000)
    first.store.load_durable([(key(1), PNCounter.from_slot("a:1", 3, 0))])
    first.recover()
    assert not first.realtime.whole(1)
    first.ms = T0 + MINUTE_MS + 5_000  # minute 1001: the cut
    first.add(1, 5)
    asyncio.run(first.persister.write())  # P, in minute 1001; the shard made whole first
    assert first.realtime.whole(1)
    first.ms += 10_000
    first.add(1, 2)  # after the last write: a kill -9 loses it from the file
    durable = values(first)
    first.persister.file.close()

    second = Node(tmp_path, first.ms + 5_000)
    second.store.load_durable(durable)
    second.recover()
    assert second.persister.restored == SHARDS and second.persister.tail_counters == 1
    second.ms = T0 + 2 * MINUTE_MS + 1_000  # a 1m window now begins at the cut
    strict = second.ask(1, strict=True)
    assert sorted(strict.done) == [0, 1] and strict.change == 7
    assert second.ask(15, strict=True).refused == {1: T0 + MINUTE_MS}  # before the cut


def test_a_shard_dropped_while_observed_is_not_made_whole(tmp_path: Path) -> None:
    # Its file rows may hold counters gone with the drop, whose tails would be wrong.
    node = Node(tmp_path, T0 + 1_000)
    node.store.load_durable([(key(1), PNCounter.from_slot("a:1", 3, 0))])
    node.recover()
    node.store.drop_shard(1)
    node.store.load_durable([(key(1), PNCounter.from_slot("a:1", 3, 0))])
    asyncio.run(node.persister.write())
    assert not node.realtime.whole(1) and node.realtime.whole(0)


def test_an_absent_file_restores_nothing(tmp_path: Path) -> None:
    node = Node(tmp_path / "fresh", T0 + 1_000)
    node.store.load_durable([(key(1), PNCounter.from_slot("a:1", 3, 0))])
    node.recover()
    assert node.persister.restored == 0
    loose = node.ask(15)
    assert (loose.change, loose.since_ms, loose.refused) == (0, T0 + MINUTE_MS, {})


def test_a_counter_absent_at_the_restore_is_counted_once_when_it_comes(tmp_path: Path) -> None:
    first = Node(tmp_path, T0 + 1_000)
    first.recover()
    first.add(1, 3)
    first.add(3, 4)
    first.stop()
    second = Node(tmp_path, T0 + 30_000)
    second.store.load_durable([(key(1), PNCounter.from_slot("a:1", 3, 0))])  # v:3 not here
    second.recover()
    assert second.minutes() == {1000: {"v:1": 3, "v:3": 0}}
    second.store.merge(key(3), PNCounter.from_slot("a:1", 4, 0))  # back from a peer, later
    asyncio.run(second.tap.turn())
    assert second.ask(15, strict=True).change == 7 and second.ask(15, name="v:3").change == 4


def test_a_restore_waits_for_the_replicas_not_pulled_and_then_gives_up(tmp_path: Path) -> None:
    first = Node(tmp_path, T0 + 1_000)
    first.recover()
    first.add(1, 3)  # shard 1
    first.add(2, 4)  # shard 0
    first.stop()
    second = Node(tmp_path, T0 + 20_000)
    second.store.load_durable(values(first))
    second.unpulled = {1}  # a replica of shard 1 was down: its state may hold more
    second.recover()
    assert second.persister.restored == 1  # shard 0; shard 1 waits, answered as from now
    waiting = second.ask(15)
    assert (waiting.change, waiting.since_ms, waiting.counters) == (4, T0 + MINUTE_MS, 2)
    assert second.ask(15, strict=True).refused == {1: T0 + MINUTE_MS}
    second.ms += int(RESTORE_WAIT_S * 1000) + 1
    asyncio.run(second.persister.turn())
    second.realtime.observe(second.ms)
    assert second.persister.given_up == 1 and second.persister.restored == 1
    assert second.realtime.since[1] == T0 + MINUTE_MS  # from its cut, as without a file


def test_tails_are_the_moves_since_the_file_per_namespace() -> None:
    """A namespace equal to the file's has no tail; the others give each counter's move, a
    change the tap has yet to hand on counts from its value before, and a counter the file
    held but the store does not (in a namespace held or not) moves to 0."""
    spaces = [
        ("t", "same", {"a": 1, "b": 2}),
        ("t", "ns", {"a": 5, "b": 2, "new": 3, "waits": 9}),
    ]
    pending = {("t", "ns", "waits"): 4, ("t", "ns", "absent"): 7}  # before the tap's next turn
    afters = {
        ("t", "same"): {"a": 1, "b": 2},
        ("t", "ns"): {"a": 1, "b": 2, "gone": 6, "waits": 1, "zero": 0},
        ("u", "lost"): {"x": 3, "y": 0},
    }
    assert tails(spaces, pending, afters) == {
        ("t", "ns", "a"): (4, 5),
        ("t", "ns", "new"): (3, 3),
        ("t", "ns", "waits"): (3, 4),
        ("t", "ns", "gone"): (-6, 0),
        ("u", "lost", "x"): (-3, 0),
    }
    assert tails([("t", "same", {"a": 1})], {}, {}) == {("t", "same", "a"): (1, 1)}


def test_the_shards_waiting_for_a_restore_are_a_gauge(tmp_path: Path) -> None:
    """Operators (and bench_scale.py, before it measures idle CPU) see how many shards still
    wait for their windows after a start: every restorable one, then none once restored."""

    def restoring(node: Node) -> float:
        collector = RealtimeCollector(node.realtime, cast(Fanout, SimpleNamespace(rounds=0)))
        [gauge] = [m for m in collector.collect() if m.name == "counters_realtime_restoring_shards"]
        return gauge.samples[0].value

    first = Node(tmp_path, T0 + 1_000)
    first.recover()
    first.add(1, 3)
    first.add(2, 4)
    assert restoring(first) == 0
    first.stop()
    second = Node(tmp_path, T0 + 2_000)
    assert restoring(second) == SHARDS
    second.recovered = True  # recovered, the restore still to come: counted from a cut
    query = Query(Kind.WINDOW, "t", "ns", name="v:1", span_min=15, at_ms=second.ms, shards=(1,))
    waiting = second.realtime.answer(query)
    assert waiting.done == [1] and waiting.seen is None  # the minute under way: not counted
    second.store.load_durable(values(first))
    second.recover()
    assert restoring(second) == 0
    assert second.minutes() == first.minutes()


def test_restored_buckets_share_the_stores_name_strings() -> None:
    """A restored bucket is keyed by the store's own string of each name it holds (the
    file's are copies, one per minute: ~80 B per counter at a million), with the same
    deltas; a name the store no longer holds keeps its entry."""
    held = {"".join(["v:", "1"]): 3, "".join(["v:", "2"]): 4}  # strings made apart
    buckets = {("t", "ns"): [(1000, {"v:1": 1, "gone": 5}), (1001, {"v:1": 2, "v:2": 4})]}
    copies = [name for _, bucket in buckets[("t", "ns")] for name in bucket]
    assert not any(name is mine for name in copies for mine in held)
    shared = shared_names(buckets, [("t", "ns", held), ("t", "other", {"x": 1})])
    assert shared == {("t", "ns"): [(1000, {"v:1": 1, "gone": 5}), (1001, {"v:1": 2, "v:2": 4})]}
    for _, bucket in shared[("t", "ns")]:
        for name in bucket:
            assert name == "gone" or any(name is mine for mine in held), name


def test_a_restore_keys_its_buckets_by_the_stores_names(tmp_path: Path) -> None:
    first = Node(tmp_path, T0 + 1_000)
    first.recover()
    first.add(1, 3)
    first.stop()
    second = Node(tmp_path, T0 + 2_000)
    second.store.load_durable(values(first))
    second.recover()
    [(tenant, namespace, held)] = list(second.store.space_values(shard_of(key(1))))
    assert second.realtime.windows is not None
    window = second.realtime.windows.get(shard_of(key(1)), tenant, namespace)
    assert window is not None and window.deltas == [{"v:1": 3}]
    [name] = window.deltas[0]
    assert any(name is mine for mine in held)
