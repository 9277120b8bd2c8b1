"""bench_scale.py's load: the batches of 1,000 ops it sends (increments, or gets to read the
counters back), from concurrent clients spread over the nodes, each bounded by the run's
deadline; the timed fill and the check of every value read against what was acknowledged."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
from bench_systems import Processes

NAMESPACE = "scale"
BATCH = 1_000  # ops per request: the node's most per batch
REQUEST_TIMEOUT_S = 120.0


def name_of(index: int) -> str:
    return f"c{index:07d}"


def fill_delta(index: int) -> int:
    """The first increment of each counter differs, so a value shows which counter it is."""
    return 1 + index % 5


def _body(indexes: Sequence[int], delta: Callable[[int], int] | None) -> bytes:
    """A batch body, written directly: the client must not be what the run measures."""
    if delta is None:
        ops = ",".join(f'{{"op":"get","name":"{name_of(i)}"}}' for i in indexes)
    else:
        ops = ",".join(
            f'{{"op":"increment","name":"{name_of(i)}","delta":{delta(i)}}}' for i in indexes
        )
    return f'{{"ops":[{ops}]}}'.encode()


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise TimeoutError(f"--max-s reached during {what}")


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> list[dict[str, Any]]:
    async with session.post(
        f"{url}/v1/namespaces/{NAMESPACE}/batch",
        data=body,
        headers={"Content-Type": "application/json"},
    ) as response:
        text = await response.text()
        if response.status != 200:
            raise RuntimeError(f"batch answered {response.status}: {text[:300]}")
    results: list[dict[str, Any]] = json.loads(text)["results"]
    bad = [r for r in results if "value" not in r]
    if bad:
        raise RuntimeError(f"{len(bad)} ops of a batch failed, first: {bad[0]}")
    return results


async def run_batches(
    urls: list[str],
    chunks: list[Sequence[int]],
    delta: Callable[[int], int] | None,
    clients: int,
    deadline: Deadline,
    what: str,
) -> dict[str, int]:
    """One batch per chunk of counter indexes (increments by `delta`, or gets), sent from
    `clients` concurrent clients spread over the nodes; returns the values answered."""
    values: dict[str, int] = {}
    pending = iter(enumerate(chunks))
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)

    async def client(session: aiohttp.ClientSession) -> None:
        for number, indexes in pending:
            deadline.check(what)
            results = await _post(session, urls[number % len(urls)], _body(indexes, delta))
            for result in results:
                values[result["name"]] = result["value"]

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return values


def chunked(indexes: Sequence[int]) -> list[Sequence[int]]:
    return [indexes[start : start + BATCH] for start in range(0, len(indexes), BATCH)]


def timed_load(
    processes: Processes,
    urls: list[str],
    args: argparse.Namespace,
    deadline: Deadline,
    delta: Callable[[int], int],
    what: str,
) -> tuple[dict[str, Any], dict[str, int]]:
    """Increment every counter once by `delta`; the figures, and the values acknowledged."""
    cpu_before, began = processes.cpu_seconds(), time.monotonic()
    chunks = chunked(range(args.counters))
    values = asyncio.run(run_batches(urls, chunks, delta, args.clients, deadline, what))
    seconds = time.monotonic() - began
    cpu_s = processes.cpu_seconds() - cpu_before
    figures = {
        "seconds": seconds,
        "ops_per_s": args.counters / seconds,
        "cpu_us_per_op": cpu_s * 1e6 / args.counters,
    }
    return figures, values


def check_values(
    urls: list[str],
    acknowledged: dict[str, int],
    indexes: Sequence[int],
    args: argparse.Namespace,
    deadline: Deadline,
) -> dict[str, Any]:
    """Read these counters back in batches of gets: which differ from what was acknowledged
    (every counter was acknowledged, so each must read exactly its acknowledged value)."""
    found = asyncio.run(
        run_batches(urls, chunked(indexes), None, args.clients, deadline, "the check")
    )
    names = [name_of(i) for i in indexes]
    wrong = [(n, found.get(n), acknowledged[n]) for n in names if found.get(n) != acknowledged[n]]
    return {
        "checked": len(names),
        "wrong": len(wrong),
        "first_wrong": wrong[:5],
        "total_read": sum(found.get(n, 0) for n in names),
        "total_acknowledged": sum(acknowledged[n] for n in names),
    }
