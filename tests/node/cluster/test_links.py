"""Reconnect backoff: none before a failure, doubling after each, capped at a second."""

from __future__ import annotations

from node.cluster.links import backoff


def test_backoff_doubles_and_caps():
    assert backoff(0) == 0.0
    assert [backoff(n) for n in range(1, 5)] == [0.05, 0.1, 0.2, 0.4]
    assert backoff(10) == backoff(100) == 1.0
