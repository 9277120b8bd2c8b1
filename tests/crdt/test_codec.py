"""The msgpack codec: round trips, canonical bytes, and refusing every kind of bad frame."""

from __future__ import annotations

import array
from collections.abc import Callable

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from crdt.codec import (
    MAX_ACTOR_BYTES,
    MAX_ACTORS,
    MAX_BATCH_ENTRIES,
    MAX_FRAME_BYTES,
    MAX_KEY_PART_BYTES,
    TAG_BATCH,
    TAG_GCOUNTER,
    TAG_PNCOUNTER,
    VERSION,
    decode,
    decode_batch,
    encode,
    encode_batch,
    key_from_wire,
    key_to_wire,
    pn_from_wire,
    pn_to_wire,
)
from crdt.errors import CodecError
from crdt.gcounter import UINT64_MAX, GCounter
from crdt.pncounter import PNCounter
from tests.crdt.strategies import batches, counter_keys, gcounters, pncounters, wire_actors

Batch = list[tuple[tuple[str, str, str], PNCounter]]


def frame(tag: int, body: object, version: int = VERSION) -> bytes:
    return bytes((tag, version)) + msgpack.packb(body, use_bin_type=True)


# --- round trips and canonical form ---------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(gcounters(max_count=UINT64_MAX, actor_ids=wire_actors))
@example(GCounter({"é" * 128: UINT64_MAX, "\U0001f600" * 64: 1}))  # exactly 256 UTF-8 bytes
def test_gcounter_round_trips(g: GCounter) -> None:
    data = encode(g)
    assert data[:2] == bytes((TAG_GCOUNTER, VERSION))
    assert decode(data) == g


@settings(max_examples=200, deadline=None)
@given(pncounters(actor_ids=wire_actors))
def test_pncounter_round_trips(pn: PNCounter) -> None:
    data = encode(pn)
    assert data[:2] == bytes((TAG_PNCOUNTER, VERSION))
    assert decode(data) == pn
    assert pn_from_wire(pn_to_wire(pn)) == pn


@settings(max_examples=100, deadline=None)
@given(pncounters(max_count=UINT64_MAX))
@example(PNCounter(GCounter({"a": UINT64_MAX}), GCounter.empty()))
@example(PNCounter(GCounter.empty(), GCounter({"a": UINT64_MAX, "b": UINT64_MAX})))
def test_pncounter_round_trips_even_when_its_value_leaves_int64(pn: PNCounter) -> None:
    assert decode(encode(pn)) == pn
    assert decode_batch(encode_batch([(("t", "n", "c"), pn)])) == [(("t", "n", "c"), pn)]


def test_a_single_slot_delta_past_int64_still_replicates() -> None:
    """The value stays in int64 at every step, but the replicated p slot does not."""
    limit = 2**63 - 1
    before = PNCounter.empty().increment("a", limit).increment("a", -limit)
    after = before.increment("a", limit)
    delta = after.delta_since(before)
    assert after.value() == limit
    assert delta.value() == 2 * limit
    [(_, received)] = decode_batch(encode_batch([(("t", "n", "c"), delta)]))
    assert before.merge(received) == after


@settings(max_examples=100, deadline=None)
@given(batches())
def test_batch_round_trips_in_order(entries: Batch) -> None:
    data = encode_batch(entries)
    assert data[:2] == bytes((TAG_BATCH, VERSION))
    assert decode_batch(data) == entries
    assert decode_batch(encode_batch(iter(entries))) == entries


@given(counter_keys)
def test_key_round_trips(key: tuple[str, str, str]) -> None:
    assert key_from_wire(key_to_wire(key)) == key


def test_decoded_states_are_the_shared_empties_when_empty() -> None:
    assert decode(encode(GCounter.empty())) is GCounter.empty()
    assert decode(encode(PNCounter.empty())) is PNCounter.empty()
    assert decode_batch(encode_batch([])) == []


def test_state_embedded_in_a_foreign_message_decodes() -> None:
    pn = PNCounter.empty().increment("a", 4).increment("b", -1)
    message = msgpack.packb({"op": "sync", "state": pn_to_wire(pn)}, use_bin_type=True)
    assert pn_from_wire(msgpack.unpackb(message)["state"]) == pn


increments = st.lists(st.tuples(st.sampled_from(["x", "y", "zz", "é"]), st.integers(-99, 99)))


@settings(max_examples=100, deadline=None)
@given(increments, st.data())
def test_equal_states_encode_to_equal_bytes(
    ops: list[tuple[str, int]], data: st.DataObject
) -> None:
    reordered = data.draw(st.permutations(ops))
    one = two = PNCounter.empty()
    for actor, delta in ops:
        one = one.increment(actor, delta)
    for actor, delta in reordered:
        two = two.increment(actor, delta)
    # A third replica learns the same state through merges of single-operation states.
    three = PNCounter.empty()
    for actor, delta in reversed(ops):
        three = three.merge(PNCounter.empty().increment(actor, delta).merge(one.delta_since(three)))
    assert one == two == three
    assert encode(one) == encode(two) == encode(three)
    assert encode_batch([(("t", "n", "c"), one)]) == encode_batch([(("t", "n", "c"), two)])


def test_encoding_is_the_documented_wire_form() -> None:
    pn = PNCounter(GCounter({"b": 2, "a": 1}), GCounter({"c": 3}))
    assert encode(pn) == frame(TAG_PNCOUNTER, [[["a", 1], ["b", 2]], [["c", 3]]])
    assert encode(pn.p) == frame(TAG_GCOUNTER, [["a", 1], ["b", 2]])
    key = ("t", "ns", "c")
    assert encode_batch([(key, pn)]) == frame(TAG_BATCH, [[list(key), pn_to_wire(pn)]])


def test_encode_refuses_other_types() -> None:
    with pytest.raises(TypeError):
        encode({"a": 1})  # type: ignore[arg-type]


def test_encode_batch_refuses_more_entries_than_decode_accepts() -> None:
    entry = (("t", "n", "c"), PNCounter.empty())
    with pytest.raises(CodecError):
        encode_batch([entry] * (MAX_BATCH_ENTRIES + 1))


# --- hand-written bad frames ------------------------------------------------------------------

OK_PN = [[["a", 1]], []]
BAD_SINGLE_FRAMES: dict[str, bytes] = {
    "empty": b"",
    "header only tag": bytes((TAG_PNCOUNTER,)),
    "header without body": bytes((TAG_PNCOUNTER, VERSION)),
    "unknown tag": frame(99, OK_PN),
    "batch tag": frame(TAG_BATCH, []),
    "zero tag": frame(0, OK_PN),
    "future version": frame(TAG_PNCOUNTER, OK_PN, version=VERSION + 1),
    "version zero": frame(TAG_PNCOUNTER, OK_PN, version=0),
    "trailing bytes": frame(TAG_PNCOUNTER, OK_PN) + b"\x00",
    "two bodies": frame(TAG_PNCOUNTER, OK_PN) + msgpack.packb(OK_PN),
    "truncated": frame(TAG_PNCOUNTER, OK_PN)[:-1],
    "bool count": frame(TAG_GCOUNTER, [["a", True]]),
    "zero count": frame(TAG_GCOUNTER, [["a", 0]]),
    "negative count": frame(TAG_GCOUNTER, [["a", -1]]),
    "float count": frame(TAG_GCOUNTER, [["a", 1.0]]),
    "string count": frame(TAG_GCOUNTER, [["a", "1"]]),
    "nil count": frame(TAG_GCOUNTER, [["a", None]]),
    "unsorted actors": frame(TAG_GCOUNTER, [["b", 1], ["a", 1]]),
    "duplicate actors": frame(TAG_GCOUNTER, [["a", 1], ["a", 2]]),
    "empty actor": frame(TAG_GCOUNTER, [["", 1]]),
    "bytes actor": frame(TAG_GCOUNTER, [[b"a", 1]]),
    "int actor": frame(TAG_GCOUNTER, [[1, 1]]),
    "actor too long": frame(TAG_GCOUNTER, [["a" * (MAX_ACTOR_BYTES + 1), 1]]),
    "actor too long in bytes": frame(TAG_GCOUNTER, [["é" * (MAX_ACTOR_BYTES // 2 + 1), 1]]),
    "invalid utf-8 actor": bytes((TAG_GCOUNTER, VERSION)) + b"\x91\x92\xa1\xff\x01",
    "pair of three": frame(TAG_GCOUNTER, [["a", 1, 2]]),
    "pair of one": frame(TAG_GCOUNTER, [["a"]]),
    "pair as map": frame(TAG_GCOUNTER, [{"a": 1}]),
    "body is a map": frame(TAG_GCOUNTER, {"a": 1}),
    "body is an int": frame(TAG_GCOUNTER, 1),
    "body is nil": frame(TAG_PNCOUNTER, None),
    "pn of one half": frame(TAG_PNCOUNTER, [[["a", 1]]]),
    "pn of three halves": frame(TAG_PNCOUNTER, [[], [], []]),
    "pn half is a pair": frame(TAG_PNCOUNTER, [["a", 1], []]),
    "int64 min count": bytes((TAG_GCOUNTER, VERSION)) + b"\x91\x92\xa1a\xd3\x80" + bytes(7),
    "non-minimal zero count": bytes((TAG_GCOUNTER, VERSION)) + b"\x91\x92\xa1a\xcf" + bytes(8),
    "too many actors": frame(TAG_GCOUNTER, [[f"{i:05}", 1] for i in range(MAX_ACTORS + 1)]),
    "ext value": bytes((TAG_GCOUNTER, VERSION)) + b"\x91\x92\xa1a\xd4\x01\x01",
    "bin body": bytes((TAG_GCOUNTER, VERSION)) + b"\xc4\x01a",
    # Headers that announce far more elements or bytes than the frame holds.
    "huge array32 header": bytes((TAG_PNCOUNTER, VERSION)) + b"\xdd\xff\xff\xff\xff",
    "huge array16 header": bytes((TAG_GCOUNTER, VERSION)) + b"\xdc\xff\xff",
    "huge nested array headers": bytes((TAG_PNCOUNTER, VERSION)) + b"\xdd\x00\x01\x00\x00" * 64,
    "huge str32 header": bytes((TAG_GCOUNTER, VERSION)) + b"\x91\x92\xdb\xff\xff\xff\xff",
    "huge map32 header": bytes((TAG_GCOUNTER, VERSION)) + b"\xdf\xff\xff\xff\xff",
    "deep nesting": bytes((TAG_PNCOUNTER, VERSION)) + b"\x91" * 100_000,
    "reserved byte": bytes((TAG_GCOUNTER, VERSION)) + b"\xc1",
}


@pytest.mark.parametrize("data", BAD_SINGLE_FRAMES.values(), ids=BAD_SINGLE_FRAMES.keys())
def test_bad_frame_raises_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode(data)


def _entry(key: object = ("t", "n", "c"), state: object = OK_PN) -> list[object]:
    return [key, state]


BAD_BATCH_FRAMES: dict[str, bytes] = {
    "single-counter tag": frame(TAG_PNCOUNTER, OK_PN),
    "future version": frame(TAG_BATCH, [], version=VERSION + 1),
    "body is a map": frame(TAG_BATCH, {"a": 1}),
    "entry is not a pair": frame(TAG_BATCH, [["t", "n", "c"]]),
    "entry of three": frame(TAG_BATCH, [[*_entry(), 1]]),
    "key of two parts": frame(TAG_BATCH, [_entry(key=["t", "n"])]),
    "key of four parts": frame(TAG_BATCH, [_entry(key=["t", "n", "c", "d"])]),
    "key is a string": frame(TAG_BATCH, [_entry(key="t/n/c")]),
    "empty key part": frame(TAG_BATCH, [_entry(key=["t", "", "c"])]),
    "bytes key part": frame(TAG_BATCH, [_entry(key=["t", b"n", "c"])]),
    "long key part": frame(TAG_BATCH, [_entry(key=["t", "n", "c" * (MAX_KEY_PART_BYTES + 1)])]),
    "long key part in bytes": frame(TAG_BATCH, [_entry(key=["t", "n", "€" * 86])]),
    "bad state": frame(TAG_BATCH, [_entry(), _entry(state=[[["a", 0]], []])]),
    "trailing bytes": frame(TAG_BATCH, [_entry()]) + b"\xc0",
    "truncated": frame(TAG_BATCH, [_entry()])[:-2],
    "huge array header": bytes((TAG_BATCH, VERSION)) + b"\xdd\x7f\xff\xff\xff",
    "too many entries": frame(TAG_BATCH, [_entry()] * (MAX_BATCH_ENTRIES + 1)),
}


@pytest.mark.parametrize("data", BAD_BATCH_FRAMES.values(), ids=BAD_BATCH_FRAMES.keys())
def test_bad_batch_frame_raises_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_batch(data)


@pytest.mark.parametrize("data", ["a string", None, 12, [1, 2]])
def test_non_bytes_raises_codec_error(data: object) -> None:
    with pytest.raises(CodecError):
        decode(data)  # type: ignore[arg-type]
    with pytest.raises(CodecError):
        decode_batch(data)  # type: ignore[arg-type]


def test_frame_over_the_size_limit_is_refused_before_unpacking() -> None:
    with pytest.raises(CodecError, match="exceeds"):
        decode_batch(bytes((TAG_BATCH, VERSION)) + bytes(MAX_FRAME_BYTES))


def test_bytearray_and_memoryview_frames_decode() -> None:
    pn = PNCounter.empty().increment("a", -3)
    data = encode(pn)
    assert decode(bytearray(data)) == pn
    assert decode(memoryview(b"xx" + data)[2:]) == pn
    with pytest.raises(CodecError):
        decode(memoryview(array.array("i", [TAG_PNCOUNTER, VERSION, 0x90, 0x90])))
    with pytest.raises(CodecError):
        decode(memoryview(data)[::2])


@pytest.mark.parametrize(
    "obj",
    [
        [[("a", UINT64_MAX + 1)], []],  # only Python objects can hold more than uint64
        [[("a", -1)], []],
        [(("a", 1),), ["b"]],
        (("a" * 300, 1),),
        [[("\ud800" * 70, 1)], []],  # a lone surrogate cannot be UTF-8
        "ab",
        None,
    ],
)
def test_pn_from_wire_refuses_bad_python_objects(obj: object) -> None:
    with pytest.raises(CodecError):
        pn_from_wire(obj)


@pytest.mark.parametrize(
    "obj", [None, "t/n/c", ("t", "n"), ("t", "n", 3), ("\ud800" * 70, "n", "c")]
)
def test_key_from_wire_refuses_bad_keys(obj: object) -> None:
    with pytest.raises(CodecError):
        key_from_wire(obj)


# --- fuzzing: any bytes decode to a valid state or raise CodecError, nothing else ---------------


def _decodes_or_codec_error(decoder: Callable[[bytes], object], data: bytes) -> None:
    """Decoding must give a valid value (one that round-trips) or raise CodecError."""
    try:
        value = decoder(data)
    except CodecError:
        return
    if isinstance(value, list):
        assert decode_batch(encode_batch(value)) == value
    else:
        assert isinstance(value, GCounter | PNCounter)
        assert decode(encode(value)) == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_codec_error(data: bytes) -> None:
    _decodes_or_codec_error(decode, data)
    _decodes_or_codec_error(decode_batch, data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([TAG_GCOUNTER, TAG_PNCOUNTER, TAG_BATCH]), st.binary(max_size=64))
def test_random_bodies_behind_valid_headers_raise_only_codec_error(tag: int, body: bytes) -> None:
    data = bytes((tag, VERSION)) + body
    _decodes_or_codec_error(decode, data)
    _decodes_or_codec_error(decode_batch, data)


mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete", "set", "truncate"]),
        st.integers(0, 10_000),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)


def _mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    buffer = bytearray(data)
    for op, position, byte in ops:
        at = position % (len(buffer) + 1)
        if op == "insert":
            buffer.insert(at, byte)
        elif op == "truncate":
            del buffer[at:]
        elif at < len(buffer):
            if op == "flip":
                buffer[at] ^= 1 << (byte % 8)
            elif op == "set":
                buffer[at] = byte
            else:
                del buffer[at]
    return bytes(buffer)


valid_frames = st.one_of(
    gcounters(max_count=UINT64_MAX, actor_ids=wire_actors).map(encode),
    pncounters(actor_ids=wire_actors).map(encode),
    batches().map(encode_batch),
)


@settings(max_examples=300, deadline=None)
@given(valid_frames, mutations)
def test_mutated_frames_raise_only_codec_error(
    data: bytes, ops: list[tuple[str, int, int]]
) -> None:
    mutated = _mutate(data, ops)
    _decodes_or_codec_error(decode, mutated)
    _decodes_or_codec_error(decode_batch, mutated)
