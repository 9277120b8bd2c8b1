"""The history's last value of a counter is its value, whatever node died: a coordinator
killed between two history turns leaves changes it had not recorded, which its replicas saw
but dropped as not theirs to record (history/recorder.py). The replica that takes the shard
over records every counter of it once."""

from __future__ import annotations

import time

from node.coordination.ops import Op, OpKind
from tests.inprocess.cluster import InProcessCluster, eventually


async def test_the_last_value_is_recorded_when_the_recorder_dies_between_turns(
    inproc: InProcessCluster,
):
    nodes = await inproc.start(3, history_flush_interval_s=3600)  # turns are driven here
    by_id = {node.node_id: node for node in nodes}
    key = inproc.key_where(lambda replicas: replicas[0] == "n1")
    first = by_id["n1"]
    others = [by_id[n] for n in inproc.replicas(key)[1:]]
    shard = first.cluster.shard_of(key)
    for delta in (5, 10):
        (written,) = await first.coordinator.run([Op(OpKind.INCREMENT, key, delta)], "all")
        assert written.ok, written
        if delta == 5:  # the first value is recorded by n1; the second, never by it
            for node in nodes:
                await node.parts.history.flush()
    for node in others:  # their turns: not the recorder of the shard, they drop it
        await node.parts.history.flush()

    await inproc.kill(first)  # kill -9 before n1's next turn
    successor = others[0]
    await eventually(
        lambda: successor.cluster.coordinator(shard) == successor.node_id, "a new recorder", 10
    )
    await successor.parts.history.flush()

    now = int(time.time())
    rows = await successor.history.compact(*key, "minute", now - 3600, now + 120)
    assert rows and rows[-1][2] == 15, rows  # (name, bucket, value, recorded at)
