"""The feed's pure parts: the per-node event log (retention, floor, reads per subject and
prefix), the event id codec, and coalescing per counter."""

from __future__ import annotations

import itertools
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.realtime.coalesce import Coalescer
from node.realtime.feed_log import (
    SEQ_BITS,
    BadPosition,
    EventLog,
    decode_position,
    encode_position,
    iso_ms,
)

T = "t"


def items(*names: str, ns: str = "ns") -> list[tuple[str, str, str, int, int, bool, int]]:
    return [(T, ns, name, i, 1, False, i) for i, name in enumerate(names)]


def test_sequence_numbers_grow_within_a_life_and_across_restarts() -> None:
    first = EventLog(incarnation=3)
    events = first.append(items("a", "b"), at_ms=1000)
    assert [e.seq for e in events] == [(3 << SEQ_BITS) + 1, (3 << SEQ_BITS) + 2]
    later = EventLog(incarnation=4)
    # a reader positioned in the earlier life is below the new floor: a gap, not a skip
    assert later.floor((T, "ns")) > events[-1].seq
    read = later.read((T, "ns"), "", events[-1].seq, 10)
    assert read.floor > events[-1].seq and read.events == []


def test_reads_see_only_their_subject_and_prefix_in_order() -> None:
    log = EventLog(1)
    log.append(items("video:1", "photo:1", "video:2"), 1000)
    log.append(items("video:1", ns="other"), 1000)
    log.append([("u", "ns", "video:1", 5, 5, False, 5)], 1000)  # another tenant
    read = log.read((T, "ns"), "video:", log.base, 10)
    assert [e.name for e in read.events] == ["video:1", "video:2"]
    assert read.upto == log.head((T, "ns"))  # it looked at everything there was
    # resuming after the first event yields the second only
    again = log.read((T, "ns"), "video:", read.events[0].seq, 10)
    assert [e.name for e in again.events] == ["video:2"]
    assert log.read((T, "ns"), "", -1, 10) == (log.base, log.head((T, "ns")), [])


def test_a_read_stops_at_its_limit_and_resumes_there() -> None:
    log = EventLog(1)
    log.append(items(*[f"c{i}" for i in range(10)]), 1000)
    first = log.read((T, "ns"), "", log.base, 4)
    assert len(first.events) == 4 and first.upto == first.events[-1].seq
    rest = log.read((T, "ns"), "", first.upto, 100)
    assert [e.name for e in first.events + rest.events] == [f"c{i}" for i in range(10)]


def test_retention_by_count_and_by_age_raises_the_floor() -> None:
    log = EventLog(1, max_events=3, retention_ms=10_000)
    events = log.append(items("a", "b", "c", "d", "e"), 1000)
    assert len(log) == 3 and log.floor((T, "ns")) == events[1].seq and log.trimmed == 2
    read = log.read((T, "ns"), "", events[0].seq, 10)
    assert read.floor > events[0].seq  # the reader can tell it missed "b"
    assert [e.name for e in read.events] == ["c", "d", "e"]
    log.trim(1000 + 10_001)
    assert len(log) == 0 and log.floor((T, "ns")) == events[-1].seq
    assert log.read((T, "ns"), "", events[-1].seq, 10).events == []


def test_each_subject_numbers_its_own_events() -> None:
    """Another tenant's writes move neither a subject's sequence nor its floor: an event id
    says nothing of them."""
    log = EventLog(1)
    (first,) = log.append(items("a"), 1000)
    log.append([("u", "ns", f"x{i}", i, 1, False, i) for i in range(50)], 1000)
    (second,) = log.append(items("b"), 1000)
    assert second.seq == first.seq + 1 == log.base + 2
    assert log.head(("u", "ns")) == log.base + 50 and log.floor((T, "ns")) == log.base


def test_a_busy_subject_trims_its_own_events_not_a_quiet_ones() -> None:
    log = EventLog(1, max_events=10)
    quiet = log.append(items("a", "b", "c", ns="quiet"), 1000)
    for i in range(20):
        log.append(items(*[f"n{i}-{j}" for j in range(5)], ns="busy"), 1000 + i)
    assert len(log) == 10 and log.trimmed == 93
    # the quiet subject's reader missed nothing; the busy one holds the other 7
    read = log.read((T, "quiet"), "", log.base, 10)
    assert read.floor == log.base and read.events == quiet
    busy = log.read((T, "busy"), "", log.base, 100)
    assert busy.floor == log.head((T, "busy")) - 7 and len(busy.events) == 7
    # two busy subjects are cut to one level, the largest at which the log fits
    log.append(items(*[f"m{j}" for j in range(30)], ns="busy2"), 2000)
    held = {ns: len(log.read((T, ns), "", log.base, 100).events) for ns in ("busy", "busy2")}
    assert held == {"busy": 3, "busy2": 3}
    assert len(log.read((T, "quiet"), "", log.base, 10).events) == 3


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 12), st.integers(0, 400)),
        max_size=40,
    ),
    st.integers(1, 20),
)
def test_every_subject_holds_an_unbroken_run_up_to_its_head_within_the_bounds(
    appends: list[tuple[str, int, int]], max_events: int
) -> None:
    log = EventLog(2, max_events=max_events, retention_ms=1000)
    now, issued = 0, dict.fromkeys("abcd", 0)
    for ns, count, step in appends:
        now += step
        log.append(items(*[f"{ns}{issued[ns] + i}" for i in range(count)], ns=ns), now)
        issued[ns] += count
        assert len(log) <= max_events
        held = 0
        for subject in "abcd":
            read = log.read((T, subject), "", log.base, 1000)
            seqs = [e.seq for e in read.events]
            assert seqs == list(range(read.floor + 1, log.head((T, subject)) + 1))
            assert log.head((T, subject)) == log.base + issued[subject]
            held += len(seqs)
        assert held == len(log)


def test_times_in_a_log_never_go_back() -> None:
    log = EventLog(1)
    log.append(items("a"), 2000)
    (event,) = log.append(items("b"), 1500)  # the wall clock stepped back
    assert event.at_ms == 2000


positions = st.dictionaries(
    st.from_regex(r"[A-Za-z0-9._-]{1,20}", fullmatch=True),
    st.integers(0, (1 << 63) - 1),
    min_size=1,
    max_size=8,
)


@given(positions)
def test_an_event_id_decodes_to_the_position_it_encodes(position: dict[str, int]) -> None:
    assert decode_position(encode_position(position)) == position


@pytest.mark.parametrize(
    "text",
    ["", "n1", "n1:", ":5", "n1:-1", "n1:1x", "n1:1,n1:2", "n 1:3", "n1:99999999999999999999",
     ",".join(f"n{i}:1" for i in range(257)), "n1:1;n2:2"],
)  # fmt: skip
def test_a_bad_event_id_is_refused(text: str) -> None:
    with pytest.raises(BadPosition):
        decode_position(text)


def test_iso_times_keep_milliseconds() -> None:
    assert iso_ms(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"


K1, K2 = (T, "ns", "a"), (T, "ns", "b")


def test_coalescing_emits_at_most_one_event_per_interval_with_the_net_change() -> None:
    co = Coalescer(min_interval_ms=100)
    co.add(K1, 0, 0, 5, 5)
    assert co.due(1000) == [(K1, 5, 5, 5)]
    co.add(K1, 0, 5, 7, 7)
    co.add(K1, 0, 7, 4, 10)  # changes within the interval wait, coalesced
    assert co.due(1050) == []
    assert co.due(1100) == [(K1, 4, -1, 10)]  # net change since the previous event, version


def test_a_counter_back_where_it_was_emits_nothing() -> None:
    co = Coalescer(min_interval_ms=100)
    co.add(K1, 0, 3, 5, 5)
    co.add(K1, 0, 5, 3, 7)
    co.add(K2, 0, 0, 1, 1)
    assert co.due(1000) == [(K2, 1, 1, 1)]
    assert len(co) == 0


@given(st.lists(st.tuples(st.sampled_from([K1, K2]), st.integers(-5, 5), st.integers(0, 250))))
def test_the_changes_of_a_counters_events_sum_to_its_change(
    steps: list[tuple[tuple[str, str, str], int, int]],
) -> None:
    """Model: a plain value per counter; whatever the timing, once everything is due the
    events' changes add up to each counter's net change, and no two events of a counter
    come closer than the interval."""
    co = Coalescer(min_interval_ms=100)
    value = {K1: 0, K2: 0}
    seen: dict[tuple[str, str, str], list[tuple[int, int]]] = {K1: [], K2: []}
    now = 0
    for key, delta, wait in steps:
        co.add(key, 0, value[key], value[key] + delta, 0)
        value[key] += delta
        now += wait
        for key_, _, change, _ in co.due(now):
            seen[key_].append((now, change))
    for key_, _, change, _ in co.due(now + 1000):
        seen[key_].append((now + 1000, change))
    for key in (K1, K2):
        assert sum(change for _, change in seen[key]) == value[key]
        times = [at for at, _ in seen[key]]
        assert all(b - a >= 100 for a, b in itertools.pairwise(times))


def _busy_item(tenant: str, namespace: str, name: str, value: int):
    return (tenant, namespace, name, value, 1, False, value)


def test_a_quiet_subject_does_not_pin_the_busy_subjects_trimmed_appends():
    """One quiet namespace's single event, young and within its share, sits at the head of
    the age queue; the (append, subject) entries behind it, whose events the fair trim
    dropped, must not stay until it ages out (300 s): memory is bounded by max_events, not
    by the rate of appends times the retention."""
    log = EventLog(1, max_events=1000, retention_ms=300_000)
    log.append([_busy_item("quiet", "ns", "rare", 1)], 0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1, 60_001):  # one publisher tick per ms for 60 s, one busy subject
            log.append([_busy_item("busy", "ns", f"c{i % 50}", i)], i)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(log) <= 1000
    assert len(log._appends) <= 2 * log.max_events and grown < 2_000_000, (
        f"the log holds {len(log)} events but {len(log._appends)} append entries, "
        f"{grown / 1e6:.1f} MB grown"
    )
