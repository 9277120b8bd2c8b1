"""QuorumWait: satisfied by enough successes, lost at once when they cannot come, 504 on time."""

from __future__ import annotations

import asyncio

import pytest

from node.base.errors import QuorumTimeout, QuorumUnavailable
from node.coordination.quorum import QuorumWait


def _futures(count: int) -> list[asyncio.Future[int]]:
    loop = asyncio.get_running_loop()
    return [loop.create_future() for _ in range(count)]


async def test_resolves_when_every_group_has_enough_successes():
    wait, seen = QuorumWait("increment"), []
    first, second = _futures(2), _futures(2)
    wait.add(first, 1, seen.append)
    wait.add(second, 2, seen.append)
    first[0].set_result(1)
    second[0].set_result(2)
    second[1].set_result(3)
    await wait.wait(1.0)
    assert sorted(seen) == [1, 2, 3]


async def test_lost_as_soon_as_failures_make_the_quorum_impossible():
    wait = QuorumWait("increment")
    futures = _futures(2)
    wait.add(futures, 2, lambda _: None)
    futures[0].set_exception(ConnectionError("peer gone"))
    with pytest.raises(QuorumUnavailable) as caught:
        await wait.wait(5.0)
    assert caught.value.extra["may_have_applied"] is True


async def test_a_spare_is_asked_when_a_replica_fails():
    wait, seen = QuorumWait("read"), []
    futures, spare = _futures(1), _futures(1)
    wait.add(futures, 1, seen.append, spares=[lambda: spare[0]])
    futures[0].set_exception(ConnectionError("peer gone"))
    spare[0].set_result(42)
    await wait.wait(1.0)
    assert seen == [42]


async def test_times_out_with_504_saying_the_write_may_apply():
    wait = QuorumWait("increment")
    wait.add(_futures(1), 1, lambda _: None)
    with pytest.raises(QuorumTimeout, match="may still apply"):
        await wait.wait(0.05)


async def test_nothing_needed_resolves_at_once_and_still_delivers_late_results():
    wait, seen = QuorumWait("increment"), []
    futures = _futures(1)
    wait.add(futures, 0, seen.append)
    await wait.wait(0.01)
    futures[0].set_result(9)
    await asyncio.sleep(0)
    assert seen == [9]


def test_too_few_replicas_up_front_is_lost_without_waiting():
    async def scenario() -> None:
        wait = QuorumWait("read")
        wait.add([], 1, lambda _: None)
        with pytest.raises(QuorumUnavailable):
            await wait.wait(5.0)

    asyncio.run(scenario())
