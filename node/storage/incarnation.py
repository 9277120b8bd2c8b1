"""The node's incarnation number, kept in its data dir and raised at every start.

The actor id `node_id:incarnation` is new at every start, so a restarted node never reuses
an old actor slot: it cannot lose or double count increments made before it restarted.

This module keeps the records (the data dir's file, the durable replica's) and says what
they prove; node/cluster/identity.py holds the rule for a start they do not prove, and its
argument. The data dir's record is complete (every incarnation this node id used was
written there before use) unless the dir was lost or replaced since, so a start that finds
no record leaves a mark, UNPROVEN_FILE, which only a proven start removes: a node that
dies again before it proved its identity does not mistake the file it wrote for a history.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from crdt.pncounter import FLOOR_SUFFIX
from node.base.errors import RefusedToStart
from node.storage.durable import DurableError, DurableReplica

FILE_NAME = "incarnation"
UNPROVEN_FILE = "incarnation.unproven"
log = logging.getLogger("counters.incarnation")


@dataclass(frozen=True)
class Start:
    """This start's incarnation and what the records at start prove of it."""

    incarnation: int
    # the data dir held a complete record (no lost or new dir): above every one used before
    complete_dir: bool
    # the durable replica holds this incarnation (False: it did not answer, or knew higher)
    durable_recorded: bool
    # that replica lives outside the data dir (Redis), so it outlives a lost disk
    durable_outside: bool


async def start_incarnation(
    data_dir: Path, node_id: str, durable: DurableReplica, durable_outside: bool = False
) -> Start:
    """This start's incarnation: the data dir's next, and above any the durable replica
    knows of (so a lost or older data dir never reuses an actor id)."""
    complete = (data_dir / FILE_NAME).exists() and not (data_dir / UNPROVEN_FILE).exists()
    if not complete:
        mark_unproven(data_dir)
    incarnation = next_incarnation(data_dir)
    recorded = False
    try:
        known = await durable.last_incarnation(node_id, incarnation)
        recorded = True
        if known >= incarnation:  # the data dir's record is not complete after all
            complete = False
            mark_unproven(data_dir)
            incarnation = next_incarnation(data_dir, at_least=known + 1)
            recorded = False
            with contextlib.suppress(DurableError):  # the data dir has it; retried before use
                recorded = await durable.last_incarnation(node_id, incarnation) < incarnation
    except DurableError as error:
        log.warning(
            "durable replica unreachable at start, incarnation from the data dir: %s", error
        )
    return Start(incarnation, complete, recorded, durable_outside)


def mark_unproven(data_dir: Path) -> None:
    """The data dir's record is not (or no longer) known complete; before it is written."""
    if not (data_dir / UNPROVEN_FILE).exists():
        _write_durably(data_dir, UNPROVEN_FILE, "")


def mark_proven(data_dir: Path) -> None:
    """This start's incarnation is proven new: the data dir's record is complete again."""
    with contextlib.suppress(FileNotFoundError):
        (data_dir / UNPROVEN_FILE).unlink()
        _sync_dir(data_dir)


def incarnation_of(actor: str) -> tuple[str, int] | None:
    """(node id, incarnation) of an actor id `node_id:K` (or its floor actor), else None."""
    if actor.endswith(FLOOR_SUFFIX):
        actor = actor[: -len(FLOOR_SUFFIX)]
    node_id, _, number = actor.rpartition(":")
    if not node_id or not (number.isascii() and number.isdigit()):
        return None
    return node_id, int(number)


def next_incarnation(data_dir: Path, at_least: int = 0) -> int:
    """Read the last incarnation, store and return the next one (durably, before use); at
    least `at_least`, which the durable replica may know of when the data dir was lost."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / FILE_NAME
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = "0"
    except UnicodeDecodeError:
        text = ""
    # Plain decimal digits only (int() also takes "-3", "+3", "1_0"); the file is replaced
    # atomically, so even an empty one is damage, not a fresh start.
    if not (text.isascii() and text.isdigit()):
        raise RefusedToStart(f"{path} is corrupt; refusing to guess an incarnation")
    last = int(text)
    current = max(last + 1, at_least)
    _write_durably(data_dir, FILE_NAME, f"{current}\n")
    return current


def _write_durably(data_dir: Path, name: str, text: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / name
    temporary = path.with_suffix(path.suffix + ".tmp")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _sync_dir(data_dir)


def _sync_dir(data_dir: Path) -> None:
    directory = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
