"""Listing pages read each shard's names in sorted order (node/storage/name_order.py): what a
page answers must be what a pass over every name would, whatever arrived, whichever shard
was dropped and came back, and the orders kept stay within their bound."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from node.storage.name_order import NameOrder
from node.storage.store import CounterStore

NAMES = st.text(alphabet="ab:/", min_size=1, max_size=4)


def expected(shards: dict[int, dict[str, bytes]], prefix: str, after: str, limit: int):
    names = sorted(
        (name, shard)
        for shard, held in shards.items()
        for name in held
        if name > after and name.startswith(prefix)
    )
    return names[:limit]


step = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 3), st.lists(NAMES, max_size=12)),
    st.tuples(st.just("drop"), st.integers(0, 3), st.just([])),  # a new dict when it returns
    st.tuples(st.just("page"), st.text(alphabet="ab:", max_size=2), NAMES, st.integers(1, 6)),
)


@settings(max_examples=300)
@given(st.lists(step, max_size=30), st.integers(1, 40))
def test_a_page_is_what_a_pass_over_every_name_finds(steps, max_names: int) -> None:
    order = NameOrder(max_names=max_names)
    shards: dict[int, dict[str, bytes]] = {}
    for kind, a, b, *rest in steps:
        if kind == "add":
            held = shards.setdefault(a, {})
            for name in b:
                held[name] = b""
        elif kind == "drop":
            shards.pop(a, None)
        else:
            (limit,) = rest
            asked = {s: held for s, held in shards.items() if held}
            assert order.page("t", "ns", asked, a, b, limit) == expected(asked, a, b, limit)
            other = order.page("t", "other", {0: {"zz": b""}}, "", "", 5)  # another space
            assert other == [("zz", 0)]
            assert order.held <= max(max_names, sum(map(len, asked.values())) + 1)


def test_the_store_lists_names_added_after_a_page_and_after_a_shard_came_back() -> None:
    store = CounterStore(lambda key: sum(map(ord, key[2])) % 4, 60_000)
    every = {0, 1, 2, 3}

    def page(after: str = "", limit: int = 3) -> list[tuple[str, int]]:
        return [
            (name, state.value()) for name, state in store.scan("t", "ns", "c", after, limit, every)
        ]

    for i in range(40):
        store.increment(("t", "ns", f"c{i:02d}"), "n1:1", i + 1)
    assert page() == [("c00", 1), ("c01", 2), ("c02", 3)]
    store.increment(("t", "ns", "c0"), "n1:1", 9)  # new since the last page, first in order
    store.increment(("t", "ns", "c01"), "n1:1", 5)
    assert page() == [("c0", 9), ("c00", 1), ("c01", 7)]
    assert page("c38", 5) == [("c39", 40)]
    shard = sum(map(ord, "c00")) % 4
    store.drop_shard(shard)
    assert ("c00", 1) not in page(limit=50) and len(page(limit=50)) < 41
    store.increment(("t", "ns", "c00"), "n1:1", 2)  # the shard again, a new dict
    assert ("c00", 2) in page(limit=50)
