"""Operations and their results, as typed values, and their form in a forwarded request.

An `Op` is one operation of a client request; a request runs a list of them and gets one
`OpResult` per op, in order. A node that is not the shard's coordinator forwards ops to it
in a FORWARD message (`forward_to_wire`, `ops_from_wire`) and gets their results back in the
JSON shape the batch API answers (`OpResult.to_json`, `results_from_wire`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from node.base.errors import CountersError
from node.base.keys import Key
from node.cluster.wire import ProtocolError, key_from_wire

CONSISTENCY_LEVELS = ("one", "quorum", "all")


class OpKind(StrEnum):
    INCREMENT = "increment"
    GET = "get"
    RESET = "reset"
    CLAIM = "claim"  # take an idempotency key for a whole batch, on a counter of its own


@dataclass(frozen=True, slots=True)
class Op:
    """One operation; `delta` for increments; `idem`, the op's idempotency key, if any."""

    kind: OpKind
    key: Key
    delta: int = 0
    idem: str = ""


@dataclass(frozen=True, slots=True)
class OpResult:
    """An op's outcome: the counter's value after it, or the error as problem+json.
    `replayed`: answered from an idempotency receipt, applying nothing. `saturated`: the
    exact value lies outside int64 and `value` is the nearest bound (crdt/pncounter.py).
    `hinted`: kept by a node that reached no replica (hints.py); `value` is its view."""

    value: int | None = None
    problem: dict[str, Any] | None = None
    replayed: bool = False
    saturated: bool = False
    hinted: bool = False  # kept by a node cut off from every replica (hints.py)

    @classmethod
    def failed(cls, error: CountersError) -> OpResult:
        return cls(problem=error.to_problem())

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict[str, Any]:
        """The op's part of an answer: {"value": v} (and "replayed", "saturated" when
        true), or {"error": problem}."""
        if self.problem is not None:
            return {"error": self.problem}
        answer: dict[str, Any] = {"value": self.value}
        if self.replayed:
            answer["replayed"] = True
        if self.saturated:
            answer["saturated"] = True
        if self.hinted:
            answer["hinted"] = True
        return answer


class RemoteError(CountersError):
    """An error an op met, possibly on the node that ran it, passed on as it was."""

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(str(problem.get("detail", "remote error")))
        self.status = int(problem.get("status", 502))
        self.problem = problem

    def to_problem(self) -> dict[str, Any]:
        return self.problem

    def headers(self) -> dict[str, str]:
        retry = self.problem.get("retry_after_s")  # an in-doubt answer (errors.InDoubt)
        return {"Retry-After": str(retry)} if type(retry) is int and retry > 0 else {}


def forward_to_wire(ops: list[Op], consistency: str, hops: int, fingerprint: str) -> Any:
    return {
        "ops": [[op.kind.value, list(op.key), op.delta, op.idem] for op in ops],
        "consistency": consistency,
        "hops": hops,
        "fingerprint": fingerprint,
    }


def forward_from_wire(body: Any) -> tuple[list[Op], str, int, str]:
    """(ops, consistency, hops, fingerprint) of a FORWARD body; ProtocolError if malformed."""
    if not isinstance(body, dict):
        raise ProtocolError("forward body must be a map")
    consistency, hops, raw_ops = body.get("consistency"), body.get("hops"), body.get("ops")
    if consistency not in CONSISTENCY_LEVELS or type(hops) is not int or hops < 1:
        raise ProtocolError("bad forward header")
    fingerprint = body.get("fingerprint", "")
    if type(fingerprint) is not str:
        raise ProtocolError("bad fingerprint")
    return ops_from_wire(raw_ops), consistency, hops, fingerprint


def ops_from_wire(raw_ops: Any) -> list[Op]:
    if not isinstance(raw_ops, list):
        raise ProtocolError("ops must be a list")
    ops = []
    for raw in raw_ops:
        if not isinstance(raw, list) or len(raw) != 4 or raw[0] not in OpKind._value2member_map_:
            raise ProtocolError("bad forwarded op")
        kind, key, delta, idem = raw
        if type(delta) is not int or type(idem) is not str:
            raise ProtocolError("bad forwarded delta or idempotency key")
        if kind == OpKind.CLAIM and not idem:
            raise ProtocolError("a forwarded claim needs its idempotency key")
        ops.append(Op(OpKind(kind), key_from_wire(key), delta, idem))
    return ops


def results_from_wire(raw: Any, expected: int) -> list[OpResult]:
    """The results a coordinator sent back for `expected` forwarded ops."""
    if not isinstance(raw, list) or len(raw) != expected:
        raise ProtocolError("a forward reply has one result per op")
    results = []
    for item in raw:
        if isinstance(item, dict) and type(item.get("value")) is int:
            replayed, saturated = item.get("replayed") is True, item.get("saturated") is True
            results.append(OpResult(item["value"], replayed=replayed, saturated=saturated))
        elif isinstance(item, dict) and _is_problem(item.get("error")):
            results.append(OpResult(problem=item["error"]))
        else:
            raise ProtocolError("a result is {value} or {error: problem}")
    return results


def _is_problem(problem: Any) -> bool:
    return (
        isinstance(problem, dict)
        and isinstance(problem.get("type"), str)
        and type(problem.get("status")) is int
        and 400 <= problem["status"] < 600
    )
