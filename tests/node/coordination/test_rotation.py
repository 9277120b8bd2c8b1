"""ActorRotation (node/coordination/rotation.py): a full slot moves the node to a persisted,
new incarnation once, however many requests hit it; and a slot sent after a rotation keeps
the actor it was made under (Replicator.write)."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

import pytest

from crdt import CounterOverflowError, PNCounter
from node.base.config import Config
from node.base.errors import Overflow, ServerError
from node.cluster.membership import Cluster
from node.coordination.replication import _sole_actor
from node.coordination.rotation import MAX_ROTATIONS, ActorRotation
from node.storage.durable import DurableError
from node.storage.incarnation import FILE_NAME, next_incarnation
from node.storage.store import CounterStore

BIG = 2**62
KEY = ("t", "ns", "swing")


class Durable:
    """last_incarnation as the replicas keep it: record the max, return the one before."""

    name = "fake"

    def __init__(self, known: int = 0, down: bool = False) -> None:
        self.known = known
        self.down = down
        self.calls = 0

    async def last_incarnation(self, node_id: str, current: int) -> int:
        self.calls += 1
        await asyncio.sleep(0)  # a round trip: other requests run meanwhile
        if self.down:
            raise DurableError("down")
        before, self.known = self.known, max(self.known, current)
        return before


def _cluster(tmp_path: Path) -> Cluster:
    config = Config(node_id="n1", data_dir=str(tmp_path), auth="none")
    incarnation = next_incarnation(tmp_path)  # as a start takes it
    cluster = Cluster(config, incarnation)
    cluster.proven = True
    return cluster


def _full_slot(store: CounterStore, actor: str) -> None:
    """p and n of actor at 3 * 2**62: one more 2**62 either way passes UINT64_MAX."""
    for _ in range(3):
        store.increment(KEY, actor, BIG)
        store.increment(KEY, actor, -BIG)


async def test_concurrent_requests_on_a_full_slot_rotate_once_to_a_persisted_incarnation(
    tmp_path: Path,
):
    cluster = _cluster(tmp_path)
    durable = Durable()
    rotation = ActorRotation(cluster, durable)  # type: ignore[arg-type]
    store = CounterStore(cluster.shard_of)
    _full_slot(store, "n1:1")

    def apply(delta: int, actor: str) -> tuple[PNCounter, PNCounter]:
        return store.increment(KEY, actor, delta)

    moved = await asyncio.gather(
        *(rotation.apply_fresh("n1:1", partial(apply, delta)) for delta in (BIG, -BIG, BIG))
    )

    assert [actor for actor, _ in moved] == ["n1:2"] * 3
    assert rotation.rotations == 1
    assert (cluster.incarnation, cluster.actor) == (2, "n1:2")
    assert (tmp_path / FILE_NAME).read_text().strip() == "2"  # on disk before use
    assert durable.known == 2
    state = store.get(KEY)
    assert state is not None and state.value() == BIG
    assert state.slot("n1:2") == (2 * BIG, BIG) and state.slot("n1:1") == (3 * BIG, 3 * BIG)


async def test_a_rotation_goes_above_what_the_durable_replica_knew(tmp_path: Path):
    cluster = _cluster(tmp_path)
    rotation = ActorRotation(cluster, Durable(known=7))  # type: ignore[arg-type]
    await rotation.away_from("n1:1")
    assert cluster.actor == "n1:8"
    assert (tmp_path / FILE_NAME).read_text().strip() == "8"


async def test_an_unreachable_durable_replica_still_rotates_from_the_data_dir(tmp_path: Path):
    cluster = _cluster(tmp_path)
    rotation = ActorRotation(cluster, Durable(down=True))  # type: ignore[arg-type]
    await rotation.away_from("n1:1")
    assert cluster.actor == "n1:2"
    await rotation.away_from("n1:1")  # already moved on: nothing happens
    assert cluster.actor == "n1:2"


async def test_no_incarnation_stored_is_a_server_error_and_nothing_moves(tmp_path: Path):
    cluster = _cluster(tmp_path)
    (tmp_path / FILE_NAME).write_text("garbage")
    rotation = ActorRotation(cluster, Durable())  # type: ignore[arg-type]
    with pytest.raises(ServerError):
        await rotation.away_from("n1:1")
    assert cluster.actor == "n1:1"


async def test_a_value_leaving_int64_is_still_refused_and_a_slot_that_keeps_filling_gives_up(
    tmp_path: Path,
):
    cluster = _cluster(tmp_path)
    rotation = ActorRotation(cluster, Durable())  # type: ignore[arg-type]

    def out_of_range(actor: str) -> None:
        raise CounterOverflowError("value would leave int64")

    with pytest.raises(CounterOverflowError):
        await rotation.apply_fresh("n1:1", out_of_range)

    def always_full(actor: str) -> None:
        from crdt import SlotFullError

        raise SlotFullError(actor)

    with pytest.raises(Overflow):
        await rotation.apply_fresh(cluster.actor, always_full)
    assert rotation.rotations == 1 + MAX_ROTATIONS


def test_a_slot_is_sent_under_the_actor_it_was_made_under():
    one = PNCounter.from_slot("n1:1", 5, 3)
    assert _sole_actor(one) == "n1:1"
    assert _sole_actor(PNCounter.from_slot("n1:1", 0, 3)) == "n1:1"
    # slots of two actors (around a rotation) travel as a whole state, never as one slot
    assert _sole_actor(one.merge(PNCounter.from_slot("n1:2", 1, 0))) is None
    assert (
        _sole_actor(PNCounter.from_slot("n1:1", 1, 0).merge(PNCounter.from_slot("n1:2", 0, 1)))
        is None
    )
    assert _sole_actor(PNCounter.empty()) is None
