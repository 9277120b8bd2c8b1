"""What the start records prove (node/storage/incarnation.py), and the slots a store saw."""

from __future__ import annotations

from pathlib import Path

from crdt import PNCounter
from node.storage.durable import DurableError
from node.storage.incarnation import (
    UNPROVEN_FILE,
    incarnation_of,
    mark_proven,
    start_incarnation,
)
from node.storage.store import CounterStore


class Durable:
    """last_incarnation as the replicas keep it: record the max, return the one before."""

    name = "fake"

    def __init__(self, known: int = 0, down: bool = False) -> None:
        self.known = known
        self.down = down

    async def last_incarnation(self, node_id: str, current: int) -> int:
        if self.down:
            raise DurableError("down")
        before, self.known = self.known, max(self.known, current)
        return before


async def test_a_new_data_dir_is_not_a_complete_record_until_proven(tmp_path: Path):
    start = await start_incarnation(tmp_path, "n1", Durable())  # type: ignore[arg-type]
    assert (start.incarnation, start.complete_dir, start.durable_recorded) == (1, False, True)
    assert (tmp_path / UNPROVEN_FILE).exists()
    # dying before a proof: the file it wrote is not a history
    again = await start_incarnation(tmp_path, "n1", Durable(1))  # type: ignore[arg-type]
    assert (again.incarnation, again.complete_dir) == (2, False)
    mark_proven(tmp_path)
    proven = await start_incarnation(tmp_path, "n1", Durable(2))  # type: ignore[arg-type]
    assert (proven.incarnation, proven.complete_dir) == (3, True)


async def test_a_durable_replica_that_knows_more_shows_the_data_dir_incomplete(tmp_path: Path):
    (tmp_path / "incarnation").write_text("2\n")
    durable = Durable(known=6)
    start = await start_incarnation(tmp_path, "n1", durable, durable_outside=True)  # type: ignore[arg-type]
    assert (start.incarnation, start.complete_dir, start.durable_recorded) == (7, False, True)
    assert start.durable_outside and durable.known == 7
    assert (tmp_path / UNPROVEN_FILE).exists()


async def test_an_unreachable_durable_replica_records_nothing(tmp_path: Path):
    (tmp_path / "incarnation").write_text("4\n")
    start = await start_incarnation(tmp_path, "n1", Durable(down=True))  # type: ignore[arg-type]
    assert (start.incarnation, start.complete_dir, start.durable_recorded) == (5, True, False)


def test_actor_ids_parse_to_node_and_incarnation():
    assert incarnation_of("n2:3") == ("n2", 3)
    assert incarnation_of("host:8080:12") == ("host:8080", 12)
    assert incarnation_of("n2:3#floor") == ("n2", 3)
    for odd in ("n2", ":3", "n2:", "n2:-1", "n2:x", "n2:³"):
        assert incarnation_of(odd) is None, odd


def test_a_store_knows_the_highest_incarnation_of_each_node_in_its_slots():
    store = CounterStore(lambda key: 0)
    store.increment(("t", "ns", "a"), "n1:2", 5)
    store.merge(("t", "ns", "b"), PNCounter.from_slot("n1:7", 0, 3))
    store.merge(("t", "ns", "b"), PNCounter.from_slot("n2:1", 1, 0))
    store.increment(("t", "ns", "a"), "n1:3", -1)
    assert store.incarnations() == {"n1": 7, "n2": 1}
