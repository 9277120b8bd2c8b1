"""A stateful model: replicas increment and gossip many counters; a plain int per counter is truth.

Each replica is one actor. Rules increment a counter at a replica, merge one replica's states
into another (directly, as deltas, or through a batch frame), and finally merge everything; the
invariant is that merging all replicas gives each counter's model sum.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from crdt.codec import decode_batch, encode_batch
from crdt.pncounter import PNCounter

COUNTERS = (("t", "ns", "likes"), ("t", "ns", "views"), ("u", "ns", "likes"))
REPLICAS = ("node-a:1", "node-b:1", "node-c:1")

counters = st.sampled_from(COUNTERS)
replicas = st.sampled_from(REPLICAS)

Key = tuple[str, str, str]


class ReplicatedCounters(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model: dict[Key, int] = dict.fromkeys(COUNTERS, 0)
        self.states: dict[str, dict[Key, PNCounter]] = {
            replica: dict.fromkeys(COUNTERS, PNCounter.empty()) for replica in REPLICAS
        }
        # What each replica last shipped to each peer, the base of its next delta.
        self.acked: dict[tuple[str, str], dict[Key, PNCounter]] = {
            (sender, receiver): dict.fromkeys(COUNTERS, PNCounter.empty())
            for sender in REPLICAS
            for receiver in REPLICAS
        }
        self.converged = False

    def _receive(self, replica: str, key: Key, incoming: PNCounter) -> None:
        before = self.states[replica][key]
        after = before.merge(incoming)
        assert after.merge(before) == after, "merge lost information"
        self.states[replica][key] = after

    @rule(counter=counters, replica=replicas, delta=st.integers(-(10**12), 10**12))
    def increment(self, counter: Key, replica: str, delta: int) -> None:
        self.states[replica][counter] = self.states[replica][counter].increment(replica, delta)
        self.model[counter] += delta
        self.converged = False

    @rule(receiver=replicas, sender=replicas)
    def merge(self, receiver: str, sender: str) -> None:
        for key, state in self.states[sender].items():
            self._receive(receiver, key, state)

    @rule(receiver=replicas, sender=replicas)
    def ship_deltas_in_a_batch(self, receiver: str, sender: str) -> None:
        acked = self.acked[sender, receiver]
        # Deltas are relative to what the receiver acknowledged, which it still holds.
        entries = [
            (key, state.delta_since(acked[key])) for key, state in self.states[sender].items()
        ]
        for key, delta in decode_batch(encode_batch(entries)):
            self._receive(receiver, key, delta)
            acked[key] = self.states[sender][key]

    @rule()
    def merge_all(self) -> None:
        for receiver in REPLICAS:
            for sender in REPLICAS:
                self.merge(receiver, sender)
        self.converged = True

    @precondition(lambda self: self.converged)
    @invariant()
    def converged_replicas_are_equal_and_exact(self) -> None:
        for key, total in self.model.items():
            states = {self.states[replica][key] for replica in REPLICAS}
            assert len(states) == 1
            assert states.pop().value() == total

    @invariant()
    def merging_everything_gives_the_model_sum(self) -> None:
        for key, total in self.model.items():
            merged = PNCounter.empty()
            for replica in REPLICAS:
                merged = merged.merge(self.states[replica][key])
            assert merged.value() == total


ReplicatedCounters.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None
)
TestReplicatedCounters = ReplicatedCounters.TestCase
