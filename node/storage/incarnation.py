"""The node's incarnation number, kept in its data dir and raised at every start.

The actor id `node_id:incarnation` is new at every start, so a restarted node never reuses
an old actor slot: it cannot lose or double count increments made before it restarted.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from node.base.errors import RefusedToStart
from node.storage.durable import DurableError, DurableReplica

FILE_NAME = "incarnation"
log = logging.getLogger("counters.incarnation")


async def start_incarnation(data_dir: Path, node_id: str, durable: DurableReplica) -> int:
    """This start's incarnation: the data dir's next, and above any the durable replica
    knows of (so a lost or older data dir never reuses an actor id)."""
    incarnation = next_incarnation(data_dir)
    try:
        known = await durable.last_incarnation(node_id, incarnation)
    except DurableError as error:
        log.warning(
            "durable replica unreachable at start, incarnation from the data dir: %s", error
        )
        return incarnation
    if known >= incarnation:
        incarnation = next_incarnation(data_dir, at_least=known + 1)
        with contextlib.suppress(DurableError):  # the data dir has it; the store may lag
            await durable.last_incarnation(node_id, incarnation)
    return incarnation


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
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w") as handle:
        handle.write(f"{current}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return current
