"""Per-shard digests of idempotency receipts, so anti-entropy repairs receipts too.

Counter states converge by later writes as well as by anti-entropy, so a receipt that
missed a replica could stay missing while every state digest matched. Each receipt
therefore counts in its shard's receipt digest by a 64-bit hash of (counter, idempotency
key, receipt), summed modulo 2**64: equal sets give equal digests in any order, and adding,
replacing or expiring one costs O(1).

Replicas cannot compare every receipt they hold: the newest are still in flight, and the
oldest leave at whatever moment each node's expiry runs. So receipts are also grouped by
time bucket (`at_ms // bucket_ms`) and gossip compares a range of settled buckets, those
that ended at least `settle_ms` ago (5 s, more than a write's replication takes) and that
start at least `settle_ms` after the window's edge (`covered`). The initiator names the
range and both sides sum the same buckets, so two replicas that hold the same settled
receipts agree whatever is in flight, and a digest that differs means a receipt really is
missing on one side.

Cost: a digest over a range costs O(buckets the range moved since the shard's last
digest), amortised O(1) per shard per gossip round; a shard without receipts costs a dict
lookup; a counter's sum over a range costs O(its buckets), with no hashing. Memory: one
small entry per non-empty (shard, bucket) and (counter, bucket), at most one per receipt
and usually far fewer (16-second buckets for windows of 17 minutes and more: a counter
keyed without pause for a day holds 5,400).
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b
from typing import Any

from crdt.receipts import Receipt
from node.base.keys import Key

MASK64 = (1 << 64) - 1
Buckets = dict[int, tuple[int, int]]  # time bucket -> (receipts, sum of their terms)
MAX_BUCKET_MS = 16_000
MIN_BUCKET_MS = 100
MAX_SETTLE_MS = 5_000


def bucket_ms_for(window_ms: int) -> int:
    """A 64th of the window, within [0.1 s, 16 s]: coarse enough that a counter keyed all
    day long holds few buckets, fine enough that a receipt is compared soon after it lands."""
    return max(MIN_BUCKET_MS, min(MAX_BUCKET_MS, window_ms // 64))


def term(key: Key, idem: str, receipt: Receipt) -> int:
    """A receipt's share of its shard's digest: the same on every node that holds it."""
    tenant, namespace, name = key
    r = receipt
    text = f"{tenant}\0{namespace}\0{name}\0{idem}\0{r.at_ms}\0{r.actor}\0{r.fingerprint}\0"
    text += str(r.value)
    return int.from_bytes(blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest())


class ReceiptDigests:
    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self.bucket_ms = bucket_ms_for(window_ms)
        self.settle_ms = min(MAX_SETTLE_MS, window_ms // 4)
        self._buckets: dict[int, Buckets] = {}  # shard -> bucket -> (receipts, sum)
        self._key_buckets: dict[Key, Buckets] = {}  # the same per counter
        self._last: dict[int, tuple[int, int, int]] = {}  # shard -> (lo, hi, digest) last asked

    def covered(self, now_ms: int) -> tuple[int, int]:
        """The settled buckets [lo, hi) at now_ms: ended settle_ms ago, and starting
        settle_ms after the oldest receipt the window still holds."""
        size, settle = self.bucket_ms, self.settle_ms
        hi = (now_ms - settle) // size
        lo = -(-(now_ms - self.window_ms + settle) // size)
        return lo, max(lo, hi)

    def comparable(self, lo: int, hi: int, now_ms: int) -> bool:
        """Whether a range a peer names can be compared here at now_ms: no longer than the
        window, and starting after what this node may already have expired. A peer whose
        clock lags ours by settle_ms or more (up to a bucket more) names older buckets,
        whose receipts may be gone here but not there: comparing them would ship the same
        receipts every round."""
        size = self.bucket_ms
        return (
            0 <= lo <= hi
            and hi - lo <= self.window_ms // size + 2
            and (lo * size >= now_ms - self.window_ms)
        )

    def add(self, shard: int, key: Key, at_ms: int, value: int, sign: int = 1) -> None:
        """Count one receipt of key (sign 1) or stop counting it (sign -1)."""
        bucket = at_ms // self.bucket_ms
        _bump(self._buckets, shard, bucket, sign, value)
        _bump(self._key_buckets, key, bucket, sign, value)
        last = self._last.get(shard)
        if last is not None and last[0] <= bucket < last[1]:
            self._last[shard] = (last[0], last[1], (last[2] + sign * value) & MASK64)

    def remove(self, shard: int, key: Key, at_ms: int, value: int) -> None:
        self.add(shard, key, at_ms, value, -1)

    def drop_shard(self, shard: int, keys: Iterable[Key]) -> None:
        self._buckets.pop(shard, None)
        self._last.pop(shard, None)
        for key in keys:
            self._key_buckets.pop(key, None)

    def key_digest(self, key: Key, lo: int, hi: int) -> int:
        """The sum of one counter's receipts in buckets [lo, hi): O(its buckets)."""
        buckets = self._key_buckets.get(key, {})
        return sum(s for bucket, (_, s) in buckets.items() if lo <= bucket < hi) & MASK64

    def shards(self) -> list[int]:
        """The shards holding any receipt."""
        return list(self._buckets)

    def digest(self, shard: int, lo: int, hi: int) -> int:
        """The sum of the shard's receipts in buckets [lo, hi)."""
        buckets = self._buckets.get(shard)
        if not buckets:
            return 0
        last = self._last.get(shard)
        if last is not None and last[0] == lo and last[1] == hi:
            return last[2]  # the usual case: every peer asks about the same range
        if last is not None and abs(lo - last[0]) + abs(hi - last[1]) < len(buckets):
            lo0, hi0, total = last
            # S(lo, hi) = S(lo0, hi0) + S(hi0, hi) - S(lo0, lo), S signed for reversed ranges
            total += _signed_sum(buckets, hi0, hi) - _signed_sum(buckets, lo0, lo)
        else:
            total = sum(s for bucket, (_, s) in buckets.items() if lo <= bucket < hi)
        total &= MASK64
        self._last[shard] = (lo, hi, total)
        return total


def _bump(groups: dict[Any, Buckets], group: Any, bucket: int, sign: int, value: int) -> None:
    buckets = groups.get(group)
    if buckets is None:
        buckets = groups[group] = {}
    count, total = buckets.get(bucket, (0, 0))
    count += sign
    if count:
        buckets[bucket] = (count, (total + sign * value) & MASK64)
    else:
        del buckets[bucket]
        if not buckets:
            del groups[group]


def _signed_sum(buckets: Buckets, start: int, end: int) -> int:
    if end >= start:
        return sum(buckets.get(b, (0, 0))[1] for b in range(start, end))
    return -sum(buckets.get(b, (0, 0))[1] for b in range(end, start))
