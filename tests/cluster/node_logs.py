"""What a node's log may hold: the cluster harness fails a test whose nodes logged an error.

A node writes its log as JSON lines (one object per line, with a "level") to stderr, which
the harness sends to `<tmp>/<node_id>.log` together with stdout. A line at level error or
critical is a problem, and so is any text that is not a JSON line: Python writes tracebacks,
warnings and crashes there raw. Consecutive raw lines are reported as one block.

ALLOWED names the few lines that are expected, each with the reason. Add to it only what a
correct node must log in the situation a test creates, never to quiet a bug.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

BAD_LEVELS = frozenset({"error", "critical"})


@dataclass(frozen=True)
class Allowed:
    pattern: re.Pattern[str]  # searched in the event (and its "error" text) or a raw block
    why: str
    # True: expected only when the test killed or paused one of the cluster's nodes
    only_after_fault: bool


ALLOWED: tuple[Allowed, ...] = ()


@dataclass(frozen=True)
class Problem:
    line: int  # 1-based line number of the first line in the log file
    text: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.text}"


def _entry(line: str) -> dict[str, object] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and "level" in entry else None


def _allowed(text: str, faulted: bool) -> bool:
    return any(
        rule.pattern.search(text) and (faulted or not rule.only_after_fault) for rule in ALLOWED
    )


def problems(log_text: str, faulted: bool) -> list[Problem]:
    """The error lines and raw blocks in a node's log that ALLOWED does not expect;
    `faulted` says whether the test killed or paused a node of the cluster."""
    found: list[Problem] = []
    raw: list[str] = []
    raw_start = 0

    def end_raw_block() -> None:
        text = "\n".join(raw)
        if raw and text.strip() and not _allowed(text, faulted):
            found.append(Problem(raw_start, text))
        raw.clear()

    for number, line in enumerate(log_text.splitlines(), 1):
        entry = _entry(line)
        if entry is None:
            if not raw:
                raw_start = number
            raw.append(line)
            continue
        end_raw_block()
        if str(entry["level"]) not in BAD_LEVELS:
            continue
        text = f"{entry.get('event', '')}\n{entry.get('error', '')}".strip()
        if not _allowed(text, faulted):
            found.append(Problem(number, text))
    end_raw_block()
    return found
