"""The pages of slots a start reads from the SQLite durable replica (durable_sqlite.py).

A start reads every stored slot (a million counters, issue 13), so this is the path where
Python's cost per row is the start's cost. Two kinds of page, both in primary key order (a
range of the table's own B-tree, no index lookups; through the shard index a load cost a
lookup of the table per row, three times the pass):

- A named page (NamedSlots): counters of one tenant and namespace, one slot each, names
  free of escapes. The stored key is JSON text, and every counter of a tenant and
  namespace starts with the same text, '["tenant","namespace","', so the counters of one
  are a key range, and SQLite cuts each name out of its key and checks the counts; the
  rows come out of fetchall as the store takes them, and the page is checked as a whole
  by calls that loop in C (no Python code per row here). A bit over half the CPU of a
  slot page per counter, most of it now SQLite's.
- A slot page (SlotRow): anything else, a key parsed per counter and every row checked in
  Python: counters with several slots (several actors wrote them), names with escapes,
  counts past int64, and whatever a named page finds wrong (a corrupt row is refused
  there, as DurableError). Small namespaces also go this way (see SMALL_RANGE).
"""

from __future__ import annotations

import json
import sqlite3
from operator import eq, itemgetter
from typing import Any

from crdt import CodecError, codec
from crdt.codec import MAX_KEY_PART_BYTES
from crdt.gcounter import UINT64_MAX
from node.base.keys import Key
from node.storage.durable import (
    DurableError,
    NamedSlots,
    SlotChecker,
    SlotPage,
    SlotRow,
    member,
)

# Counts that fit an int64 come as integers, converted by SQLite rather than by int() per
# row; larger ones come as text.
_COUNT = "CASE WHEN {0} <= '09223372036854775807' THEN CAST({0} AS INTEGER) ELSE {0} END"
_SLOT_COLUMNS = f"counter, shard, actor, {_COUNT.format('p')}, {_COUNT.format('n')}"
LOAD_SLOTS = f"SELECT {_SLOT_COLUMNS} FROM slots WHERE counter > ? ORDER BY counter, actor LIMIT ?"
LOAD_COUNTER = f"SELECT {_SLOT_COLUMNS} FROM slots WHERE counter = ? ORDER BY actor"
FIRST_AFTER = "SELECT counter, actor FROM slots WHERE counter > ? ORDER BY counter, actor LIMIT 1"
SLOTS_OF = "SELECT count(*) FROM (SELECT 1 FROM slots WHERE counter = ? LIMIT 2)"
# A named page's rows: the name (NULL when the key text or a count is not what a named page
# takes: a count past int64, or a corrupt one), shard, actor (NULL for :actor, the page's
# first, so that most rows make no string of it), p, n. Counts are stored as 20-digit
# text, so one between '0' and int64's maximum as text starts with a digit and fits an
# int64. :start and :cut are the tenant and namespace's prefix length + 1 and + 2.
LOAD_NAMED = """
SELECT CASE WHEN substr(counter, -2) = '"]' AND length(counter) > :cut
    AND p BETWEEN '0' AND '09223372036854775807' AND n BETWEEN '0' AND '09223372036854775807'
    THEN substr(counter, :start, length(counter) - :cut) END,
  shard, nullif(actor, :actor), CAST(p AS INTEGER), CAST(n AS INTEGER)
FROM slots WHERE counter > :after AND counter < :upper ORDER BY counter, actor LIMIT :limit
"""
LOAD_PAGE = 50_000  # rows fetched at a time: memory per step stays bounded
# A named page this short (its namespace ended) costs two queries for few rows: the next
# page is a slot page, which takes any namespaces, so many small ones cost what they did.
SMALL_RANGE = 1_000
# After a page that could not be a named one (read for nothing), this many slot pages come
# before the next try, doubling while tries fail: a table of counters with several slots
# each (N=3) reads few pages twice.
MAX_SKIP = 63
# A name this short is within MAX_KEY_PART_BYTES whatever its characters (4 bytes each at most).
SHORT_NAME_CHARS = MAX_KEY_PART_BYTES // 4
_names = itemgetter(0)
_shards = itemgetter(1)
_actors = itemgetter(2)


def _key(text: str, parts: dict[str, str]) -> Key:
    """A stored key (`member`'s JSON text); without a backslash its quotes can only be
    the delimiters, so a split reads it exactly, five times faster than json.loads."""
    if "\\" not in text and text.startswith('["') and text.endswith('"]'):
        raw: Any = text[2:-2].split('","')
    else:
        raw = json.loads(text)
    tenant, namespace, name = codec.key_from_wire(raw)
    return (parts.setdefault(tenant, tenant), parts.setdefault(namespace, namespace), name)


class _Keys:
    """Stored keys of a load, read in key order: a counter whose text starts like the last
    one read in full (same tenant and namespace, nothing escaped) takes only its name from
    the text, and shares the tenant and namespace strings with it."""

    __slots__ = ("namespace", "parts", "prefix", "tenant")

    def __init__(self) -> None:
        self.parts: dict[str, str] = {}  # each tenant and namespace held once
        self.prefix = ""  # '["tenant","namespace","' of the last key read in full
        self.tenant = self.namespace = ""

    def of(self, text: str) -> Key:
        cut = text.rfind('","') + 3
        if cut == len(self.prefix) and text.startswith(self.prefix) and text.endswith('"]'):
            name = text[cut:-2]
            if name and "\\" not in name and len(name) <= SHORT_NAME_CHARS:
                return (self.tenant, self.namespace, name)
        key = _key(text, self.parts)
        if "\\" not in text:
            self.prefix, self.tenant, self.namespace = text[:cut], key[0], key[1]
        return key


class SlotPages:
    """One load's pages, read one at a time by `page` (in a worker thread)."""

    def __init__(self, db: sqlite3.Connection, wanted: frozenset[int]) -> None:
        self._db = db
        self._wanted = wanted
        self._keys = _Keys()
        self._checker = SlotChecker()
        self._skip = 0  # slot pages to read before the next named one is tried
        self._failed = 0  # named pages tried in a row that were not

    def page(self, after: str) -> tuple[SlotPage, str | None]:
        """The counters after `after` (a page of them, each counter whole) and the counter
        the next page starts after; None: this was the last page."""
        if self._skip:
            self._skip -= 1
            return self._slot_page(after)
        first = self._db.execute(FIRST_AFTER, (after,)).fetchone()
        if first is None:
            return [], None
        found = self._named_page(after, *first)
        if found is not None:
            self._failed = 0
            return found
        self._failed += 1
        self._skip = min(MAX_SKIP, 2 ** (self._failed - 1))
        return self._slot_page(after)

    def _named_page(self, after: str, first: str, actor: str) -> tuple[NamedSlots, str] | None:
        """The named page from `after` on, first's tenant and namespace (actor: first's
        first slot's), if it is one."""
        try:
            tenant, namespace, _ = _key(first, self._keys.parts)
        except (ValueError, TypeError, CodecError):
            return None  # the slot page refuses it
        prefix = member((tenant, namespace, "x"))[:-3]  # '["tenant","namespace","'
        if not first.startswith(prefix) or self._db.execute(SLOTS_OF, (first,)).fetchone()[0] > 1:
            return None
        upper = prefix[:-1] + chr(ord('"') + 1)  # after every text starting with prefix
        start, cut = len(prefix) + 1, len(prefix) + 2
        query = {"start": start, "cut": cut, "after": after, "upper": upper, "actor": actor}
        query["limit"] = LOAD_PAGE
        rows = self._db.execute(LOAD_NAMED, query).fetchall()
        names = list(map(_names, rows))
        if len(rows) < 2 or None in names:
            return None
        joined = "".join(names)
        if "\\" in joined or '"' in joined or max(map(len, names)) > SHORT_NAME_CHARS:
            return None  # escapes, or long names: each is checked on a slot page
        if any(map(eq, names, names[1:])):
            return None  # a counter of several slots
        checked = self._checker.actors
        for other in ({actor} | set(map(_actors, rows))) - checked - {None}:
            self._checker.check(other, 0, 0)
        if len(rows) == LOAD_PAGE:  # the last counter may go on: it starts the next page
            del rows[-1]
            following = prefix + names[-2] + '"]'
        else:  # this namespace ends here
            following = prefix + names[-1] + '"]'
            self._skip = 1 if len(rows) < SMALL_RANGE else 0
        if not self._wanted.issuperset(map(_shards, rows)):
            rows = [row for row in rows if row[1] in self._wanted]
        return NamedSlots(tenant, namespace, actor, rows), following

    def _slot_page(self, after: str) -> tuple[list[SlotRow], str | None]:
        rows = self._db.execute(LOAD_SLOTS, (after, LOAD_PAGE)).fetchall()
        following: str | None = None
        if len(rows) == LOAD_PAGE:  # the last counter may go on: it starts the next page
            last = rows[-1][0]
            cut = len(rows) - 1
            while cut and rows[cut - 1][0] == last:
                cut -= 1
            if cut:
                del rows[cut:]
            else:  # one counter fills the page: all of its slots, then the next page
                rows = self._db.execute(LOAD_COUNTER, (last,)).fetchall()
            following = rows[-1][0]
        page: list[SlotRow] = []
        append = page.append
        last_text, key = "", ("", "", "")
        key_of_text = self._keys.of
        wanted, checker = self._wanted, self._checker
        checked = checker.actors
        try:
            for counter, shard, actor, p, n in rows:
                if shard not in wanted:
                    continue
                if counter != last_text:
                    last_text, key = counter, key_of_text(counter)
                if type(p) is not int or type(n) is not int:
                    p, n = int(p), int(n)
                if actor not in checked or p > UINT64_MAX or n > UINT64_MAX or p < 0 or n < 0:
                    checker.check(actor, p, n)
                append((key, shard, actor, p, n))
        except (ValueError, TypeError, CodecError) as error:
            raise DurableError(f"corrupt slot of {last_text[:80]!r} in sqlite") from error
        return page, following
