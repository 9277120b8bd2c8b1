"""Listing a namespace page by page through next_cursor on a real 3-node cluster: every name
exactly once, in name order, with its value, whatever the page size and whichever node answers;
a prefix filter; cursors the API never returned are refused."""

from __future__ import annotations

import base64
from typing import Any

from tests.cluster.harness import Cluster, Node

NS = "pages"
OTHER_NS = "pages-other"
# 250 names over many shards, in two prefixes, with ASCII orders that differ from their
# insertion order (upper case and digits sort before lower case).
COUNTERS = {
    **{f"item-{i:03d}": i + 1 for i in range(200)},
    **{f"misc-{i:02d}": 1000 + i for i in range(40)},
    **{f"Z{i}": 5000 + i for i in range(10)},
}


async def _create(cluster: Cluster, node: Node, ns: str, values: dict[str, int]) -> None:
    ops = [{"op": "increment", "name": name, "delta": delta} for name, delta in values.items()]
    status, body = await cluster.request(
        "POST", node, f"/v1/namespaces/{ns}/batch?consistency=all", json={"ops": ops}
    )
    assert status == 200, body
    failed = [r for r in body["results"] if "value" not in r]
    assert not failed, failed[:3]


async def _pages(
    cluster: Cluster, node: Node, limit: int, prefix: str = ""
) -> list[list[dict[str, Any]]]:
    """Every page of the listing, following next_cursor until it is null."""
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    for _ in range(len(COUNTERS) + 2):  # more pages than that would be a loop
        path = f"/v1/namespaces/{NS}/counters?limit={limit}"
        if prefix:
            path += f"&prefix={prefix}"
        if cursor is not None:
            path += f"&cursor={cursor}"
        status, body = await cluster.get(node, path)
        assert status == 200, body
        assert body["namespace"] == NS
        pages.append(body["counters"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(body["counters"]) == limit, body  # a cursor only after a full page
    raise AssertionError(f"next_cursor never became null after {len(pages)} pages")


async def test_paging_through_next_cursor_lists_every_counter_once_in_order(cluster: Cluster):
    n1, n2, n3 = await cluster.start(3)
    await _create(cluster, n1, NS, COUNTERS)
    await _create(cluster, n1, OTHER_NS, {"item-000": 7, "aaa": 1})  # must not show up
    expected = [{"name": name, "value": COUNTERS[name]} for name in sorted(COUNTERS)]

    pages = await _pages(cluster, n2, 40)
    assert [len(page) for page in pages] == [40, 40, 40, 40, 40, 40, 10]
    assert [row for page in pages for row in page] == expected

    # A size that divides the total: the last full page still has a cursor, whose page is
    # empty and ends the listing.
    pages = await _pages(cluster, n3, 50)
    assert [len(page) for page in pages] == [50, 50, 50, 50, 50, 0]
    assert [row for page in pages for row in page] == expected

    pages = await _pages(cluster, n1, 1000)
    assert pages == [expected]


async def test_a_prefix_filter_pages_through_only_its_names(cluster: Cluster):
    n1, n2, _ = await cluster.start(3)
    await _create(cluster, n1, NS, COUNTERS)
    pages = await _pages(cluster, n2, 7, prefix="misc-")
    assert [len(page) for page in pages] == [7, 7, 7, 7, 7, 5]
    assert [row for page in pages for row in page] == [
        {"name": f"misc-{i:02d}", "value": 1000 + i} for i in range(40)
    ]
    pages = await _pages(cluster, n2, 10, prefix="nothing-")
    assert pages == [[]]


async def test_a_cursor_the_api_never_returned_answers_400(cluster: Cluster):
    [node] = await cluster.start(1)
    await _create(cluster, node, NS, {"a": 1, "b": 2})
    not_base64 = "!!!"
    not_utf8 = base64.urlsafe_b64encode(b"\xff\xfe").decode()
    not_a_name = base64.urlsafe_b64encode(b"a/b").decode()
    for cursor in (not_base64, not_utf8, not_a_name):
        status, body = await cluster.get(node, f"/v1/namespaces/{NS}/counters?cursor={cursor}")
        assert status == 400, (cursor, body)
        assert body["type"].endswith("/invalid-body"), body
        assert body["detail"] == "cursor is not one this API returned", body
    status, body = await cluster.get(node, f"/v1/namespaces/{NS}/counters?limit=1")
    assert (status, body["counters"]) == (200, [{"name": "a", "value": 1}]), body
    status, body = await cluster.get(
        node, f"/v1/namespaces/{NS}/counters?limit=1&cursor={body['next_cursor']}"
    )
    assert (status, body["counters"]) == (200, [{"name": "b", "value": 2}]), body
