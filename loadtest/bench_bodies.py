"""CPU per op of a 100-op batch body on the HTTP path, without HTTP: decode and check it,
build its ops, encode its reply (and one increment's body and reply); the Struct path
(node/http/bodies.py) against the field-by-field checks with json.loads and json.dumps
(the path before msgspec, and still the fallback that names a refused body's mistake).

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


INCREMENT = b'{"delta":1}'
COUNTER = {"namespace": "bench", "name": "k1", "value": 42, "consistency": "quorum"}


def increment_fields(raw: bytes) -> web.Response:
    body = validation.parse_object(raw, empty_ok=True)
    validation.only_fields(body, {"delta"})
    validation.delta(body.get("delta", 1))
    return web.json_response({**COUNTER, "durability": "async", "replicas": 2})


def increment_struct(raw: bytes) -> web.Response:
    bodies.increment_delta(raw)
    return bodies.json_response({**COUNTER, "durability": "async", "replicas": 2})


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
    cases: list[tuple[str, Callable[[Any], object], Any, int]] = [
        ("decode+check, json.loads + field checks", decode_fields, raw, BATCH),
        ("decode+check, msgspec Structs", bodies.batch, raw, BATCH),
        ("reply, web.json_response (json.dumps)", encode_stdlib, reply, BATCH),
        ("reply, bodies.json_response (msgspec)", bodies.json_response, reply, BATCH),
        ("whole: field checks + json.dumps", fields_path, raw, BATCH),
        ("whole: Structs + msgspec", struct_path, raw, BATCH),
        ("1 increment: field checks + json.dumps", increment_fields, INCREMENT, 1),
        ("1 increment: Structs + msgspec", increment_struct, INCREMENT, 1),
    ]
    print(f"batch of {BATCH} increments, {len(raw)} bytes; CPU µs per op, median of {args.repeats}")
    for label, work, arg, ops in cases:
        runs = [cpu_us_per_op(work, arg, args.rounds, ops) for _ in range(args.repeats)]
        print(f"  {label:42s} {statistics.median(runs):6.2f}")


if __name__ == "__main__":
    main()
