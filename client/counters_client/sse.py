"""Server-sent events framing (the WHATWG "event stream" rules): bytes in, frames out. Pure.

Lines end with CRLF, LF or CR. A line starting with ":" is a comment (the node's heartbeat).
`field: value` (one space after the colon dropped) sets `event`, appends to `data` (lines
joined with LF), sets `id` (kept across frames until the next `id:`, and ignored when it
holds NUL) or `retry` (digits only). An empty line ends a frame and makes its id the last
event id (`last_id`), even when the frame, without data, is not dispatched (the node's
first frame gives so the stream's starting position). A frame cut short by the end of the
stream is dropped, its id with it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Frame:
    event: str  # "message" when the frame names none
    data: str
    id: str | None  # the last event id seen so far on this stream (the resume point)


class Parser:
    """Splits a byte stream into frames; `last_id` and `retry_ms` as the stream set them."""

    def __init__(self, last_id: str | None = None) -> None:
        self.last_id = last_id
        self._id = last_id  # the id of the frame being read: last_id once it ends
        self.retry_ms: int | None = None
        self.comments = 0
        self._pending = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[Frame]:
        """The frames `chunk` completes, in order."""
        buffer = self._pending + chunk
        frames: list[Frame] = []
        start = 0
        while True:
            cut = _line_end(buffer, start)
            if cut is None:
                break
            end, after = cut
            frame = self._line(buffer[start:end].decode("utf-8", "replace"))
            if frame is not None:
                frames.append(frame)
            start = after
        self._pending = buffer[start:]
        return frames

    def _line(self, line: str) -> Frame | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            if "\0" not in value:
                self._id = value
        elif field == "retry":
            if value.isascii() and value.isdigit():
                self.retry_ms = int(value)
        return None  # unknown fields are ignored, as the rules say

    def _dispatch(self) -> Frame | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        self.last_id = self._id
        if not data:
            return None
        return Frame(event, "\n".join(data), self.last_id)


def _line_end(buffer: bytes, start: int) -> tuple[int, int] | None:
    """Where the line from `start` ends and the next begins; None when it is not whole yet
    (a CR at the very end may be the first half of a CRLF)."""
    lf = buffer.find(b"\n", start)
    cr = buffer.find(b"\r", start, lf if lf >= 0 else len(buffer))
    if cr >= 0:
        if cr + 1 == len(buffer):
            return None
        return cr, cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
    if lf >= 0:
        return lf, lf + 1
    return None
