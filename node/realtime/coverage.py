"""Which windows a replica's observation of a shard answers exactly: its start and its gaps.

A replica observes a shard from `since_ms` (0: since ever). A replica that restored its
buckets from its window file (window_file.py) after a stop also carries a gap per restore:
it persisted its buckets through `through_ms` (P), was down, and observes live again from
`live_ms` (R); every change between P and R is in the bucket of P's minute, as one tail per
counter (the value at R minus the value the file holds for P; window_persist.py). A window
whose first minute f is at or before P's minute then sums the whole tail, and every change
of the tail came after P, so after f: exact. A window that begins after the live cut (the
first minute starting at or after R) sums only what this replica observed live: exact. A
window beginning between them would have to split the tail by minute, which is unknown: it
is not answered here (another replica may answer it, or the answer says since when it is
exact). So a gap is (P's minute, R's cut), both excluded, and an observation answers a window
starting at minute f exactly when f is at or after `since` and inside no gap.

Catch-up (buckets.py) replaces the buckets before this replica's own live cut by another
replica's; it is taken when the other's observation answers every window this one answers
and more (`better`), and only when every gap of the other's ends at or before that cut, so
no change of the other's tail is also one this replica observed live after the cut.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.realtime.windows import MAX_SPAN_MIN, MINUTE_MS

Gap = tuple[int, int]  # (last exact first minute, first exact minute again), both excluded


def cut_minute(at_ms: int) -> int:
    """The first minute that starts at or after at_ms."""
    return -(-at_ms // MINUTE_MS)


@dataclass(frozen=True)
class Observation:
    since_ms: int = 0
    gaps: tuple[Gap, ...] = ()  # oldest first

    def start_for(self, first: int) -> int:
        """The first minute from which this observation sums exactly, for a window whose
        first minute is `first`: `first` itself when it answers that window."""
        start = max(first, cut_minute(self.since_ms))
        for low, high in self.gaps:
            if low < start < high:
                start = high
        return start

    def live_cut(self) -> int:
        """The minute from which the buckets hold only what this replica observed live."""
        return max(cut_minute(self.since_ms), self.gaps[-1][1] if self.gaps else 0)

    def restored(self, through_ms: int, live_ms: int) -> Observation:
        """This observation after a restore: persisted through `through_ms`, live again
        from `live_ms`; a gap only when some window would begin inside it."""
        low, high = through_ms // MINUTE_MS, cut_minute(live_ms)
        return self if high - low < 2 else Observation(self.since_ms, (*self.gaps, (low, high)))

    def pruned(self, oldest: int) -> Observation:
        """Without the gaps no window reaching back to minute `oldest` can begin in."""
        kept = tuple(gap for gap in self.gaps if gap[1] > oldest)
        return self if kept == self.gaps else Observation(self.since_ms, kept)


def better(theirs: Observation, ours: Observation, cut: int) -> bool:
    """Whether taking their buckets before minute `cut` answers strictly more windows than
    ours do (and theirs end before the cut, see the module docstring)."""
    if any(high > cut for _, high in theirs.gaps) or cut_minute(theirs.since_ms) > cut:
        return False
    more = False
    for first in range(cut - MAX_SPAN_MIN - 1, cut):
        mine, other = ours.start_for(first) == first, theirs.start_for(first) == first
        if mine and not other:
            return False
        more = more or (other and not mine)
    return more
