"""Value indexes (node/realtime/index.py): aggregates and top-k under any prefix equal a
plain model of name -> value, after any sequence of sets, built in one go or one by one."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from node.realtime.index import (
    INDEX_IDLE_MS,
    LEARNED,
    NamespaceIndex,
    ValueIndex,
    top_by_value,
)

names = st.sampled_from(["a", "a:1", "a:2", "a:10", "a:1:x", "b", "b/c", "ba", "c:\U0010ffff"])
sets = st.lists(st.tuples(names, st.integers(-(2**63), 2**63 - 1) | st.integers(-3, 3)))
prefixes = st.sampled_from(["", "a", "a:", "a:1", "a:1:", "b", "b/", "c:", "c:\U0010ffff", "z:"])


def model_top(model: dict[str, int], prefix: str, k: int) -> list[tuple[str, int]]:
    chosen = [(n, v) for n, v in model.items() if n.startswith(prefix)]
    return sorted(chosen, key=lambda item: (-item[1], item[0]))[:k]


@given(sets, prefixes, st.integers(1, 5))
@example([("a:1", 5), ("a:1", 2)], "a:", 1)
def test_aggregate_and_top_equal_the_model(
    updates: list[tuple[str, int]], prefix: str, k: int
) -> None:
    index = NamespaceIndex()
    model: dict[str, int] = {}
    for name, value in updates:
        index.set(name, value)
        model[name] = value
    chosen = [v for n, v in model.items() if n.startswith(prefix)]
    assert index.aggregate(prefix) == (len(chosen), sum(chosen))
    built = NamespaceIndex.build(model.items())
    assert built.aggregate(prefix) == (len(chosen), sum(chosen))
    expected = model_top(model, prefix, k)
    for one in (index, built):
        assert [(n, v) for n, v, _ in top_by_value([one], prefix, k)] == expected


@given(sets, sets, prefixes, st.integers(1, 6))
def test_top_across_indexes_is_the_top_of_their_union(
    first: list[tuple[str, int]], second: list[tuple[str, int]], prefix: str, k: int
) -> None:
    left, right = NamespaceIndex(), NamespaceIndex()
    model: dict[str, int] = {}
    for name, value in first:
        left.set("L" + name, value)
        model["L" + name] = value
    for name, value in second:
        right.set("R" + name, value)
        model["R" + name] = value
    prefix_both = ("L" + prefix) if prefix else ""
    top = top_by_value([left, right], prefix_both, k)
    assert [(n, v) for n, v, _ in top] == model_top(model, prefix_both, k)
    assert all(n.startswith("LR"[position]) for n, _, position in top)


def test_a_large_prefix_run_filters_the_value_order() -> None:
    index = NamespaceIndex.build((f"p:{i:05d}", i % 977) for i in range(10_000))
    index.set("q", 10**6)
    top = top_by_value([index], "p:", 3)
    assert [v for _, v, _ in top] == [976] * 3
    assert [n for n, _, _ in top] == sorted(n for n, _, _ in top)
    assert index.aggregate("p:0") == (10_000, sum(i % 977 for i in range(10_000)))


def test_value_index_keeps_totals_always_and_indexes_while_asked() -> None:
    values = ValueIndex()
    values.change(1, "t", "ns", "a", 0, 1)
    values.change(1, "t", "ns", "a", 1, 2)
    values.change(1, "u", "ns", "a", 0, 3)
    assert (values.total(1, "t", "ns"), values.total(1, "u", "ns")) == (2, 3)
    assert values.indexed() == 0  # nothing per counter until a query needs it
    store = {"a": 2, "b": 5}
    index = values.index(1, ("t", "ns"), lambda: store.items(), now_ms=0)
    assert index.aggregate("") == (2, 7) and values.indexed() == 2
    values.change(1, "t", "ns", "b", 5, 9)  # kept as counters change
    assert values.index(1, ("t", "ns"), dict, now_ms=1).aggregate("b") == (1, 9)
    values.reset(1, {("t", "ns"): 40}, lambda space: [("c", 40)])  # loads, arrivals, drops
    assert values.total(1, "t", "ns") == 40 and values.total(1, "u", "ns") == 0
    assert values.index(1, ("t", "ns"), dict, now_ms=2).aggregate("") == (1, 40)
    values.forget_idle(2 + INDEX_IDLE_MS)
    assert values.indexed() == 1
    values.forget_idle(3 + INDEX_IDLE_MS)
    assert values.indexed() == 0


steps = st.lists(
    st.one_of(
        st.tuples(st.just("set"), names, st.integers(-3, 3) | st.integers(-(2**63), 2**63 - 1)),
        st.tuples(
            st.just("ask"), prefixes | st.sampled_from(["a:1", "b", "ba"]), st.integers(1, 4)
        ),
    ),
    max_size=40,
)


@given(steps)
@example([("ask", "a", 3), ("set", "a:1", 2), ("ask", "a", 3)])
@example([("set", "a:1", 1), ("ask", "a", 1), ("set", "a:2", 5), ("ask", "a", 1)])
def test_learned_prefixes_follow_the_sets_between_queries(
    steps: list[tuple[str, str, int]],
) -> None:
    """Prefixes learned by a query (their sums and sorted runs) answer later queries as the
    model does, whatever sets came between."""
    index = NamespaceIndex()
    model: dict[str, int] = {}
    for step, name, number in steps:
        if step == "set":
            index.set(name, number)
            model[name] = number
        else:
            chosen = [v for n, v in model.items() if n.startswith(name)]
            assert index.aggregate(name) == (len(chosen), sum(chosen))
            top = [(n, v) for n, v, _ in top_by_value([index], name, number)]
            assert top == model_top(model, name, number)


def test_learned_prefixes_are_bounded() -> None:
    index = NamespaceIndex.build((f"p{i:03d}", i) for i in range(500))
    for i in range(3 * LEARNED):
        index.aggregate(f"p{i:02d}")
        top_by_value([index], f"p{i:02d}", 1)
    assert len(index.sums) == LEARNED and len(index.runs) == LEARNED
    assert top_by_value([index], "p", 1)[0][:2] == ("p499", 499)  # 500 names: never learned
    assert "p" not in index.runs
