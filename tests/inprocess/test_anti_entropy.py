"""Anti-entropy and write replies repair a replica whose counter keeps changing.

A replica that missed some writes of a counter (frames to it lost) must get them back while
the counter goes on being written: nothing about the repair may wait for the counter to
stand still. Two paths do it: a write reply that shows the replica lacks something makes
the coordinator send it what it lacks, and gossip's per-shard comparison ships, both ways,
every counter whose state the other side lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from node.base.keys import Key
from node.cluster import wire
from node.cluster.anti_entropy import FULL_EVERY
from node.cluster.wire import ProtocolError
from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster, Node, eventually

WRITES = (wire.SLOTS, wire.REPLICATE)
KEY: Key = ("t", "ns", "hot")
ROUNDS = 10  # gossip rounds a repair may take: a few exchanges with each peer


async def _add(node: Node, key: Key, delta: int = 1, consistency: str = "quorum") -> None:
    (result,) = await node.coordinator.run([Op(OpKind.INCREMENT, key, delta)], consistency)
    assert result.ok, result


@contextlib.asynccontextmanager
async def _steady_writes(node: Node, key: Key, every_s: float = 0.01) -> AsyncIterator[None]:
    """Increment key through node at a steady rate until the block ends."""

    async def write() -> None:
        while True:
            await _add(node, key)
            await asyncio.sleep(every_s)

    task = asyncio.create_task(write(), name="steady-writes")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _slot(node: Node, key: Key, actor: str) -> tuple[int, int]:
    state = node.store.get(key)
    return (0, 0) if state is None else state.slot(actor)


async def _miss_writes_of(inproc: InProcessCluster, missed: Node, writer: Node) -> str:
    """Writes of KEY through `writer` that never reach `missed`; returns writer's actor.
    Anti-entropy pushes are held back too while they are made: on a loaded machine a gossip
    round can fall between two of the writes and repair `missed` before the test starts."""
    inproc.network.drop(1.0, dst=missed.address, kinds=(*WRITES, wire.PUSH))
    inproc.network.drop(1.0, src=missed.address, kinds=[wire.PUSH])  # and their replies
    for _ in range(5):
        await _add(writer, KEY, 3)
    inproc.network.heal()
    actor = writer.cluster.actor
    assert _slot(missed, KEY, actor) != _slot(writer, KEY, actor)
    return actor


async def test_a_replica_that_missed_writes_converges_while_the_counter_keeps_changing(
    inproc: InProcessCluster,
):
    """Only anti-entropy can repair here: the missed slot is n2's, which no longer changes,
    and the replica's write replies to n1 are lost, so n1 never learns what it lacks. The
    repair must come within a few gossip rounds of the replica, not after a lucky round in
    which neither side happened to change."""
    writer, other, missed = await inproc.start(3)
    actor = await _miss_writes_of(inproc, missed, other)
    inproc.network.drop(1.0, src=missed.address, dst=writer.address, kinds=[wire.SLOTS])
    start = missed.parts.gossip.rounds
    async with _steady_writes(writer, KEY):
        await eventually(
            lambda: (
                _slot(missed, KEY, actor) == _slot(other, KEY, actor)
                or missed.parts.gossip.rounds > start + ROUNDS
            ),
            f"{missed.node_id} repaired, or {ROUNDS} gossip rounds gone by",
        )
        assert _slot(missed, KEY, actor) == _slot(other, KEY, actor), (
            f"{missed.node_id} still lacks {other.node_id}'s slot after {ROUNDS} rounds"
            f" and {_slot(writer, KEY, writer.cluster.actor)[0]} writes"
        )
    assert sum(n.parts.gossip.repaired_keys for n in (writer, other, missed)) > 0


async def test_a_write_reply_that_shows_the_replica_is_stale_repairs_it(
    inproc: InProcessCluster,
):
    """Without gossip at all: the coordinator sees from the reply that the replica lacks a
    slot it holds, and sends it."""
    writer, other, missed = await inproc.start(3)
    await inproc.pause_gossip()
    actor = await _miss_writes_of(inproc, missed, other)
    await _add(writer, KEY)
    await eventually(
        lambda: _slot(missed, KEY, actor) == _slot(other, KEY, actor),
        f"{missed.node_id} repaired by {writer.node_id}'s write reply",
        show=lambda: (_slot(missed, KEY, actor), _slot(other, KEY, actor)),
    )
    await eventually(
        lambda: writer.store.get(KEY) == other.store.get(KEY) == missed.store.get(KEY),
        "one state on every replica",
    )


async def test_one_exchange_repairs_both_sides(inproc: InProcessCluster):
    """Each side holds a slot the other lacks: one exchange, started by either, leaves both
    with the merge (the peer answers the push with what it holds more of)."""
    first, second, _ = await inproc.start(3)
    await inproc.pause_gossip()
    for writer, reader in ((first, second), (second, first)):
        inproc.network.drop(1.0, dst=reader.address, kinds=WRITES)
        await _add(writer, KEY, 7)
        inproc.network.heal()
    assert first.store.get(KEY) != second.store.get(KEY)

    await first.parts.gossip.exchange(second.node_id, second.address)
    assert first.store.get(KEY) == second.store.get(KEY)
    assert first.value(KEY) == 14


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("digests", [[1]]),
        ("receipts", "junk"),
        ("receipts", [1000, 0, "5", []]),
        ("receipts", [1000, 0, 5, [["shard", 1]]]),
    ],
)
async def test_a_gossip_message_with_malformed_digests_is_refused_and_changes_nothing(
    inproc: InProcessCluster, field: str, bad: object
):
    first, second, _ = await inproc.start(3)
    await inproc.pause_gossip()
    message = second.parts.gossip.message(first.node_id)
    heard = first.cluster.detector.last_heard(second.node_id)
    with pytest.raises(ProtocolError):
        first.parts.gossip.answer({**message, field: bad})
    assert first.cluster.detector.last_heard(second.node_id) == heard  # not even heard


async def test_idle_exchanges_carry_the_total_and_no_digests(inproc: InProcessCluster):
    """While a peer's last told total equals ours, a message carries no shard digests
    (every FULL_EVERY exchanges it does all the same), and a reply never does."""
    first, second, _ = await inproc.start(3)
    await inproc.pause_gossip()
    await _add(first, KEY, 3)
    await eventually(lambda: second.store.get(KEY) == first.store.get(KEY), "replicated")
    gossip = first.parts.gossip
    await gossip.exchange(second.node_id, second.address)  # each learns the other's total
    message = gossip.message(second.node_id)
    assert message["digests"] == [] and type(message["total"]) is int
    reply = second.parts.gossip.answer(message)
    assert "digests" not in reply and reply["total"] == message["total"]
    sent = [len(gossip.message(second.node_id)["digests"]) for _ in range(FULL_EVERY)]
    assert sent.count(0) == FULL_EVERY - 1 and max(sent) > 0


async def test_a_counter_only_the_peer_holds_comes_with_its_next_exchange(
    inproc: InProcessCluster,
):
    """Our total did not move since we last told the peer, but the peer's did: its totals
    differ from what we told it, so its next exchange sends the digests and pushes the
    counter; the reply to ours tells us its new total, so ours sends them too."""
    first, second, _ = await inproc.start(3)
    await inproc.pause_gossip()
    await first.parts.gossip.exchange(second.node_id, second.address)
    await second.parts.gossip.exchange(first.node_id, first.address)
    inproc.network.drop(1.0, dst=first.address, kinds=WRITES)
    await _add(second, KEY, 5)
    inproc.network.heal()
    assert first.store.get(KEY) is None
    await first.parts.gossip.exchange(second.node_id, second.address)
    assert first.parts.gossip.message(second.node_id)["digests"]  # it learned they differ
    await second.parts.gossip.exchange(first.node_id, first.address)
    assert first.value(KEY) == 5 and first.store.get(KEY) == second.store.get(KEY)
