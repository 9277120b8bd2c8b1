"""Value indexes (node/realtime/index.py): aggregates and top-k under any prefix equal a
plain model of name -> value, after any sequence of sets, built in one go or one by one."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from node.realtime.index import NamespaceIndex, ValueIndex, top_by_value

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


def test_value_index_counts_rebuilds_and_drops_per_shard() -> None:
    values = ValueIndex()
    values.set(1, "t", "ns", "a", 1)
    values.set(1, "t", "ns", "a", 2)
    values.set(1, "u", "ns", "a", 3)
    assert values.count(1) == 2 and len(values) == 2
    values.rebuild(2, [(("t", "ns", "b"), 4), (("t", "other", "b"), 5)])
    assert values.count(2) == 2
    index = values.get(2, "t", "ns")
    assert index is not None and index.aggregate("") == (1, 4)
    values.drop_shard(1)
    assert values.count(1) == 0 and values.get(1, "t", "ns") is None
