"""What the acknowledged writes say, for the real-time tests (test_realtime.py,
test_window_restart.py): each counter's value, which is also its change within a window
holding every write."""

from __future__ import annotations

import random
from typing import Any

from tests.cluster.harness import Cluster, Node


class Model:
    def __init__(self, namespace: str, names: list[str]) -> None:
        self.namespace = namespace
        self.names = names
        self.values: dict[str, int] = {}

    async def write(self, cluster: Cluster, nodes: list[Node], rounds: int, seed: int) -> None:
        """`rounds` increments (-3..20) of random names through random nodes, each 200."""
        rng = random.Random(seed)
        for _ in range(rounds):
            name, delta = rng.choice(self.names), rng.randint(-3, 20)
            status, body = await cluster.increment(rng.choice(nodes), self.namespace, name, delta)
            assert status == 200, body
            self.values[name] = self.values.get(name, 0) + delta

    def aggregate(self, prefix: str, span: str = "15m") -> dict[str, Any]:
        chosen = [v for n, v in self.values.items() if n.startswith(prefix)]
        return {
            "namespace": self.namespace,
            "prefix": prefix,
            "counters": len(chosen),
            "total": sum(chosen),
            "window": {"span": span, "change": sum(chosen)},
        }

    def top(self, prefix: str, by: str, k: int) -> list[dict[str, Any]]:
        chosen = [(n, v) for n, v in self.values.items() if n.startswith(prefix)]
        chosen.sort(key=lambda item: (-item[1], item[0]))
        if by == "change":  # changes equal values here; a zero net change is not ranked
            chosen = [(n, v) for n, v in chosen if v]
        return [{"name": n, "value": v, "change": v} for n, v in chosen[:k]]
