"""A node whose data dir holds damaged files: it refuses to start when guessing could reuse
an actor id or misplace counters (the incarnation, a ring of another shard count), and it
starts and rejoins when the file is only a cache of what the cluster knows (ring.json).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cluster.harness import Cluster, Node, one_node

NS = "corrupt"
EXIT_TIMEOUT_S = 30.0


def _exit_code_and_output(node: Node) -> tuple[int, str]:
    """Wait (bounded) for a node that should refuse to start; its exit code and output."""
    assert node.process is not None
    try:
        code = node.process.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{node.node_id} kept running:\n{node.log_tail()}") from None
    return code, node.log_path.read_text()


@pytest.mark.parametrize(
    "content",
    [b"garbage\n", b"", b"-3\n", b"1_0\n", b"\xff\xfe\n"],
    ids=["text", "empty", "negative", "underscored", "not-utf8"],
)
def test_a_corrupt_incarnation_file_refuses_to_start_and_names_the_file(
    tmp_path: Path, content: bytes
):
    cluster = Cluster(tmp_path, None)
    node = cluster.add("n1")
    path = tmp_path / "n1" / "incarnation"
    path.parent.mkdir()
    path.write_bytes(content)
    node.start([])
    try:
        code, output = _exit_code_and_output(node)
    finally:
        cluster.close()
    assert code == 1, output
    assert f"counters node: {path} is corrupt; refusing to guess an incarnation" in output
    assert "Traceback" not in output, output  # a message for the operator, not a crash
    assert path.read_bytes() == content  # left as found, for whoever repairs it


def test_a_ring_file_of_another_shard_count_refuses_to_start(tmp_path: Path):
    with one_node(tmp_path, COUNTERS_SHARDS="64"):
        pass
    ring_file = tmp_path / "n1" / "ring.json"
    assert json.loads(ring_file.read_text())["current"]["q"] == 64
    cluster = Cluster(tmp_path, None)  # the same data dir, started with the default 256
    node = cluster.add("n1")
    node.start([])
    try:
        code, output = _exit_code_and_output(node)
    finally:
        cluster.close()
    assert code == 1, output
    assert (
        f"counters node: {ring_file} has 64 shards, not 256: the shard count never changes"
        in output
    )
    assert "Traceback" not in output, output
    assert json.loads(ring_file.read_text())["current"]["q"] == 64  # untouched


async def test_an_unreadable_ring_file_is_ignored_and_the_node_rejoins_its_cluster(
    cluster: Cluster,
):
    nodes = await cluster.start(3)
    n1, n2, _ = nodes
    for index, node in enumerate(nodes):
        status, body = await cluster.increment(node, NS, "kept", index + 1, consistency="all")
        assert status == 200, body
    before = await cluster.ring(n2)
    n1.kill()
    ring_file = cluster.root / "n1" / "ring.json"
    text = ring_file.read_text()
    ring_file.write_text(text[: len(text) // 2])  # torn: not valid JSON
    n1.start(cluster.seeds())
    await cluster.wait_ready(n1)
    for node in nodes:
        await cluster.wait_all_up(node, 3)
    log = n1.log_path.read_text()
    assert f"ignoring unreadable {ring_file}" in log, n1.log_tail()
    after_n1, after_n2 = await cluster.ring(n1), await cluster.ring(n2)
    # It took the cluster's ring back rather than inventing one: same epoch and placement.
    assert after_n1["epoch"] == after_n2["epoch"] == before["epoch"], (after_n1, before)
    assert after_n1["checksum"] == after_n2["checksum"] == before["checksum"]
    assert json.loads(ring_file.read_text())["current"]["epoch"] == before["epoch"]
    assert await cluster.value(n1, NS, "kept", "all") == 6
