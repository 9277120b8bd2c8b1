"""CPU per op of a 100-op batch body on the HTTP path, without HTTP: decode and check it,
build its ops, encode its reply; the Struct path (node/http/bodies.py) against the
field-by-field checks with json.loads and json.dumps (the path before msgspec, and still
the fallback that names a refused body's mistake).

    PYTHONPATH=. .venv/bin/python loadtest/bench_bodies.py

Prints the median of --repeats runs of CPU µs per op (time.process_time), so other load on
the machine moves it little.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from node.coordination.ops import Op, OpKind
from node.http import bodies, validation

BATCH = 100


def batch_body(size: int) -> bytes:
    ops = [
        {"op": "increment", "name": f"bench-key-{i * 7919 % 10_000}", "delta": 1}
        for i in range(size)
    ]
    return json.dumps({"ops": ops}, separators=(",", ":")).encode()


def reply_for(ops: list[Op]) -> dict[str, Any]:
    results = [{"op": op.kind, "name": op.key[2], "value": 12345 + i} for i, op in enumerate(ops)]
    return {
        "namespace": "bench",
        "consistency": "quorum",
        "results": results,
        "durability": "async",
    }


def ops_of(batch: bodies.Batch) -> list[Op]:
    return [Op(OpKind.INCREMENT, ("t", "bench", op.name), 1) for op in batch.ops]


def fields_path(raw: bytes) -> web.Response:
    batch = bodies.checked_batch(validation.parse_object(raw, empty_ok=False))
    return web.json_response(reply_for(ops_of(batch)))


def struct_path(raw: bytes) -> web.Response:
    return bodies.json_response(reply_for(ops_of(bodies.batch(raw))))


def decode_fields(raw: bytes) -> object:
    return bodies.checked_batch(validation.parse_object(raw, empty_ok=False))


def encode_stdlib(reply: dict[str, Any]) -> web.Response:
    return web.json_response(reply)


def cpu_us_per_op(work: Callable[[Any], object], arg: Any, rounds: int, ops: int) -> float:
    started = time.process_time()
    for _ in range(rounds):
        work(arg)
    return (time.process_time() - started) * 1e6 / (rounds * ops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000, help="bodies per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs; the median is printed")
    args = parser.parse_args()
    raw = batch_body(BATCH)
    reply = reply_for(ops_of(bodies.batch(raw)))
    cases: list[tuple[str, Callable[[Any], object], Any]] = [
        ("decode+check, json.loads + field checks", decode_fields, raw),
        ("decode+check, msgspec Structs", bodies.batch, raw),
        ("reply, web.json_response (json.dumps)", encode_stdlib, reply),
        ("reply, bodies.json_response (msgspec)", bodies.json_response, reply),
        ("whole: field checks + json.dumps", fields_path, raw),
        ("whole: Structs + msgspec", struct_path, raw),
    ]
    print(f"batch of {BATCH} increments, {len(raw)} bytes; CPU µs per op, median of {args.repeats}")
    for label, work, arg in cases:
        runs = [cpu_us_per_op(work, arg, args.rounds, BATCH) for _ in range(args.repeats)]
        print(f"  {label:42s} {statistics.median(runs):6.2f}")


if __name__ == "__main__":
    main()
