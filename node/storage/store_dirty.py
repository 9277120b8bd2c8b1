"""The dirty side of a CounterStore: which counters, and which of their slots, changed since
the durable replica and the history last took them. A base class of CounterStore (store.py),
apart so that each module stays small; it reads records through the store's lookups."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import NamedTuple, cast

from crdt import PNCounter
from crdt import packed as pk
from crdt.pncounter import with_covered
from node.base.keys import Key

_CLEAN: set[str] = set()  # marker: a key not in the dirty map
HEADER_SIZE = 16  # store.HEADER's size: a record's packed state starts there
_UNMARKED = object()  # no change-tap mark (a mark of a counter new here is None)
Names = dict[str, bytes]  # name -> record, for one (shard, tenant, namespace)


class Change(NamedTuple):
    """A counter's net change over a turn of the change tap (node/realtime/changes.py)."""

    key: Key
    shard: int
    before: int  # the value before the turn's first change (0 for a counter new here)
    after: int  # the value at the end of the turn


_new_change = tuple.__new__  # Change(...) without the Python frame of its __new__


class DirtyCounters:
    """Dirty bookkeeping over the store's records (see CounterStore)."""

    def __init__(self, track_changes: bool = False) -> None:
        # changed since the last write to the durable replica: per shard, per key, the actors
        # whose slots changed (a tuple, a set once a second actor's did; None: all of them),
        # so a flush writes a changed slot, not the state. By shard, so a flush reads each
        # record and asks the slot rule without hashing a key to its shard again (under
        # batches that was a third of a flush).
        self._dirty: dict[int, dict[Key, Collection[str] | None]] = {}
        self._taken_shards: set[int] = set()  # the shards of the last take_dirty's marks
        self._history_dirty: set[Key] = set()  # changed since history last recorded them
        # the change tap (take_changes), when asked for: per shard, per counter changed since
        # the last take, its value before the first of those changes (None: it is new here).
        # By shard, so a take reads each counter's record without hashing its key again.
        self._changes: dict[int, dict[Key, int | None]] | None = {} if track_changes else None
        # per shard: counters that arrived without being changes (loads, hand-off arrivals),
        # so what follows the changes knows to look at the store again (node/realtime)
        self.arrivals: dict[int, int] = {}
        self._actors = pk.ActorTable()  # the actor ids of every packed state here

    _shards: dict[int, dict[str, dict[str, Names]]]  # the store's records

    # the store's (CounterStore overrides them)
    def _lookup(self, key: Key) -> tuple[int, object, bytes | None]:
        raise NotImplementedError

    def _shard_records(self, shard: int) -> Iterator[tuple[Key, bytes]]:
        raise NotImplementedError

    def _shard(self, key: Key) -> int:
        raise NotImplementedError

    def pending_changes(self) -> Mapping[Key, int]:
        """Per counter changed since the last take_changes, its value before (what a reader
        of values must use for a change the tap has yet to hand on): a copy."""
        changes = self._changes
        if not changes:
            return {}
        return {key: before or 0 for marks in changes.values() for key, before in marks.items()}

    def handed_value(self, key: Key, shard: int = -1) -> int:
        """key's value as the change tap last handed it on, what node/realtime's windows
        and indexes count up to: its value before a change the tap has yet to hand on, else
        its value now (0 when not held). `shard`: key's, if the caller has it."""
        if shard < 0:
            shard = self._shard(key)
        marks = (self._changes or {}).get(shard)
        if marks and key in marks:
            return marks[key] or 0
        record = self._lookup(key)[2]
        return 0 if record is None else pk.value(record, HEADER_SIZE)

    def _change_pending(self, key: Key) -> bool:
        """Whether the change tap holds a mark of key (False when it tracks nothing)."""
        changes = self._changes
        return changes is not None and key in changes.get(self._shard(key), ())

    def pending_shards(self) -> set[int]:
        """The shards of the counters changed since the last take_changes."""
        return {shard for shard, marks in (self._changes or {}).items() if marks}

    def _arrived(self, key: Key) -> None:
        """key is new here without being a change: the tap does not see it."""
        changes = self._changes
        if changes is None:
            return
        shard = self._shard(key)
        marks = changes.get(shard)
        if marks is not None and marks.pop(key, _UNMARKED) is not _UNMARKED:
            self.arrivals[shard] = self.arrivals.get(shard, 0) + 1

    def _shard_numbers(self) -> list[int]:
        raise NotImplementedError

    def merge(self, key: Key, incoming: PNCounter) -> PNCounter:
        raise NotImplementedError

    def _state(self, record: bytes) -> PNCounter:
        return pk.unpack(record[HEADER_SIZE:], self._actors)

    def _put_dirty(self, shard: int, key: Key, actors: Collection[str] | None) -> None:
        """Mark these slots of key (None: all of them) for the next flush. A first mark
        keeps the writer's tuple (one actor's slot, most writes), so a write makes no set."""
        marks = self._dirty.get(shard)
        if marks is None:
            marks = self._dirty[shard] = {}
        found = marks.get(key, _CLEAN)
        if found is None:
            return  # all of its slots go already
        if actors is None:
            marks[key] = None
        elif found is _CLEAN:
            marks[key] = actors if type(actors) is tuple else tuple(actors)
        elif type(found) is tuple:
            if found != actors:
                marks[key] = {*found, *actors}
        else:
            cast(set[str], found).update(actors)

    def _dirty_states(self, dirty: Iterable[Key]) -> list[tuple[Key, int, PNCounter]]:
        out = []
        for key in dirty:
            shard, _, record = self._lookup(key)
            if record is not None:
                out.append((key, shard, self._state(record)))
        return out

    def take_dirty(
        self, writes: Callable[[int, str], bool] | None = None
    ) -> list[tuple[Key, int, PNCounter]]:
        """The changed counters (key, shard, their changed slots at their current values);
        they count as clean from now. Both durable replicas merge slot by slot, so the
        slots that did not change since the last flush need not go again. `writes(shard,
        actor)`: whether this node writes that slot (cluster/slot_owners.py); the others
        count as clean too. It is asked once per shard and actor, and a counter whose
        changed slots are all another node's (a replica's merges, two in three marks at
        N=3) costs a set and a dict lookup: no record read, no state built."""
        dirty, self._dirty = self._dirty, {}
        self._taken_shards = {shard for shard, marks in dirty.items() if marks}
        out: list[tuple[Key, int, PNCounter]] = []
        held, table, unpack_only = self._shards, self._actors, pk.unpack_only
        for shard, marks in dirty.items():
            tenants = held.get(shard)
            if tenants is None:
                continue  # dropped since
            picked: dict[str, bool] = {}  # this shard's answers of writes(shard, actor)
            for key, changed in marks.items():
                actors: Collection[str] | None = changed
                if writes is not None and changed is not None:
                    actors = []
                    for actor in changed:
                        mine = picked.get(actor)
                        if mine is None:
                            mine = picked[actor] = writes(shard, actor)
                        if mine:
                            actors.append(actor)
                    if not actors:
                        continue
                    actors = with_covered(actors)
                spaces = tenants.get(key[0])
                names = None if spaces is None else spaces.get(key[1])
                record = None if names is None else names.get(key[2])
                if record is None:
                    continue
                if actors is not None:  # only the slots written: the others are never built
                    out.append((key, shard, unpack_only(record[HEADER_SIZE:], table, actors)))
                    continue
                state = self._state(record)
                if writes is not None:
                    actors = with_covered([a for a in state.actors() if writes(shard, a)])
                    if not actors:
                        continue
                    if len(actors) < len(state.p) + len(state.n):
                        state = state.restricted_to(actors)
                out.append((key, shard, state))
        return out

    def changed_lately(self, shard: int) -> bool:
        """Whether a counter of the shard changed here (a write or a merge) since the flush
        before the last one: within one to two write-behind intervals, or since the last
        flush that failed. What anti-entropy asks to tell a shard whose replicas differ by
        the writes in flight from one that stands still (node/cluster/anti_entropy.py)."""
        return bool(self._dirty.get(shard)) or shard in self._taken_shards

    def keys(self) -> list[Key]:
        """Every counter held, as a list (a snapshot: the store may change meanwhile)."""
        return [key for shard in self._shard_numbers() for key, _ in self._shard_records(shard)]

    def shard_numbers(self) -> list[int]:
        """The shards holding counters here (a snapshot)."""
        return self._shard_numbers()

    def mark_shard_slots_dirty(self, shard: int, writes: Callable[[int, str], bool]) -> int:
        """Mark the slots of this shard's counters that `writes(shard, actor)` picks as
        changed, so the next flush writes them; returns how many counters had one. It asks
        `writes` once per actor, and reads no record when it picks none (a restarted node
        whose rule changed scanned every counter it held for nothing, seconds at a million)."""
        table = self._actors.actors
        picked = {index for index, actor in enumerate(table) if writes(shard, actor)}
        if not picked:
            return 0
        marked = 0
        for key, record in self._shard_records(shard):
            slots = pk.SLOT.iter_unpack(record[HEADER_SIZE:])
            actors = [table[index] for index, _, _ in slots if index in picked]
            if actors:
                self._put_dirty(shard, key, actors)
                marked += 1
        return marked

    def mark_dirty(self, entries: Iterable[tuple[Key, int, PNCounter]]) -> None:
        """Put back counters whose write failed; their slots' latest values go next time."""
        for key, shard, state in entries:
            self._put_dirty(shard, key, state.p.slots.keys() | state.n.slots.keys())

    def take_history_dirty(self) -> list[tuple[Key, int, PNCounter]]:
        """Counters changed since the history last took them: (key, shard, state)."""
        dirty, self._history_dirty = self._history_dirty, set()
        return self._dirty_states(dirty)

    def history_dirty_count(self) -> int:
        """How many counters changed since the history last took them."""
        return len(self._history_dirty)

    def take_history_values(
        self, records: Callable[[int], bool], limit: int | None = None
    ) -> list[tuple[Key, int, int]]:
        """Counters changed since the history last took them, of the shards `records(shard)`
        picks (those this node records), with their values and versions: (key, value,
        version). The others count as taken too. No state is built, and a counter of a
        shard not picked (two in three at N=3) costs a hash lookup. With a `limit`, at most
        that many counters are taken and the rest wait for the next take, so the recorder
        takes a million changed counters in parts and lets the event loop run between them."""
        if limit is None or len(self._history_dirty) <= limit:
            dirty, self._history_dirty = self._history_dirty, set()
        else:
            pop = self._history_dirty.pop
            dirty = {pop() for _ in range(limit)}
        shard_of, lookup, value_and_version = self._shard, self._lookup, pk.value_and_version
        picked: dict[int, bool] = {}
        out = []
        for key in dirty:
            shard = shard_of(key)
            mine = picked.get(shard)
            if mine is None:
                mine = picked[shard] = records(shard)
            if mine:
                record = lookup(key)[2]
                if record is not None:
                    out.append((key, *value_and_version(record, HEADER_SIZE)))
        return out

    def history_values_of(self, shard: int) -> list[tuple[Key, int, int]]:
        """Every counter of the shard, with its value and version: what the history records
        of a shard whose recording it takes over (history/recorder.py)."""
        value_and_version = pk.value_and_version
        return [
            (key, *value_and_version(record, HEADER_SIZE))
            for key, record in self._shard_records(shard)
        ]

    def take_changes(self) -> list[Change]:
        """The change tap: each counter whose value changed since the last take, or that is
        new here (even at 0, so what indexes names learns it), with its value before (0 for
        a counter new here) and now, and start afresh. Counters loaded
        at start (load_durable) or arriving with a hand-off are not changes, nor are those
        of a shard dropped since. Empty unless the store was made with track_changes.

        One pass over the marks, shard by shard, reading each record from its namespace's
        dict: no key is hashed to its shard again, and no state is built."""
        changes = self._changes
        if not changes:
            return []
        self._changes = {}
        held, value, new = self._shards, pk.value, _new_change
        out: list[Change] = []
        for shard, marks in changes.items():
            tenants = held.get(shard)
            if tenants is None:
                continue  # dropped since
            for key, before in marks.items():
                spaces = tenants.get(key[0])
                names = None if spaces is None else spaces.get(key[1])
                record = None if names is None else names.get(key[2])
                if record is None:
                    continue
                after = value(record, HEADER_SIZE)
                if after != before:  # None, new here, differs from every value
                    out.append(new(Change, (key, shard, before or 0, after)))
        return out

    def dirty_count(self) -> int:
        return sum(map(len, self._dirty.values()))
