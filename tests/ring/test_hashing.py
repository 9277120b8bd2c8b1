"""hash64 and key_hash: stable across processes and versions, shard_of always in range."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from ring.hashing import hash64, key_hash
from ring.ring import Ring

ROOT = Path(__file__).resolve().parents[2]


def test_hash64_is_pinned() -> None:
    # Computed once: a change here re-shards every counter of every deployed cluster.
    assert hash64(b"counters") == 0x8F56808886620DAA
    assert key_hash("acme", "web", "views") == 6343321049113492730


@given(st.binary())
def test_hash64_is_a_64_bit_function(data: bytes) -> None:
    assert 0 <= hash64(data) < 2**64
    assert hash64(data) == hash64(bytes(data))


@given(st.text(), st.text(), st.text())
def test_key_hash_hashes_the_slash_joined_name(tenant: str, namespace: str, name: str) -> None:
    joined = f"{tenant}/{namespace}/{name}".encode("utf-8", "surrogatepass")
    assert key_hash(tenant, namespace, name) == hash64(joined)


@given(st.integers(0, 16), st.text(), st.text(), st.text())
def test_shard_of_is_in_range(power: int, tenant: str, namespace: str, name: str) -> None:
    ring = Ring.build([], shards=2**power)
    shard = ring.shard_of(tenant, namespace, name)
    assert 0 <= shard < ring.shards
    assert shard == key_hash(tenant, namespace, name) % ring.shards


def test_lone_surrogate_still_hashes() -> None:
    assert 0 <= key_hash("t", "ns", "\ud800") < 2**64


_PROBE = """
from ring import Ring
ids = ["node-%d" % i for i in range(12)] + ["é", "a/b", "Z"]
for n in (1, 2, 3):
    ring = Ring.build(ids, replicas=n)
    ring = ring.without_node("node-3").with_node("late").without_node("é")
    print(ring.checksum())
"""


def _checksums(seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout


def test_placement_does_not_depend_on_the_process_hash_seed() -> None:
    # str hashes (and so set order) change with the seed; placement must not.
    assert _checksums("1") == _checksums("2") == _checksums("12345")
