"""Errors raised by the CRDT library.

Every error derives from `CrdtError`, so callers can catch the library's faults in one place.
The concrete classes also derive from `ValueError`, because each one means "this input is not
acceptable", and code that only knows the standard hierarchy still handles them sensibly.
"""

from __future__ import annotations

__all__ = ["CodecError", "CounterOverflowError", "CrdtError", "SlotFullError"]


class CrdtError(Exception):
    """Root of every error raised by `crdt`."""


class CounterOverflowError(CrdtError, ValueError):
    """An increment would push a slot past uint64 or a counter's value outside int64."""


class SlotFullError(CounterOverflowError):
    """An increment would push its actor's slot past uint64 although the value stays in
    range: the same increment under a fresh actor (an empty slot) would be accepted."""


class CodecError(CrdtError, ValueError):
    """Bytes (or a decoded wire object) are not a valid frame of this codec."""
