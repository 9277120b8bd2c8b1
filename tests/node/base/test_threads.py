"""in_thread: a cancelled caller still waits for its thread, so a lock it holds is never
released while the blocking call runs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from node.base.threads import in_thread


async def test_a_cancelled_caller_waits_for_its_thread_before_releasing_the_lock():
    lock = asyncio.Lock()
    started, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def blocking() -> None:
        started.set()
        release.wait(5)
        finished.append("thread")

    async def caller() -> None:
        async with lock:
            await in_thread(blocking)

    task = asyncio.create_task(caller())
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done() and lock.locked()  # the thread still runs: the lock is held
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == ["thread"] and not lock.locked()


async def test_results_and_errors_come_back_as_they_are():
    assert await in_thread(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        await in_thread(lambda: 1 / 0)


async def test_a_cancellation_is_not_lost_when_the_thread_fails():
    started, release = threading.Event(), threading.Event()

    def failing() -> None:
        started.set()
        release.wait(5)
        raise OSError("disk full")

    task = asyncio.create_task(in_thread(failing))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    await asyncio.sleep(0.05)
    release.set()
    with pytest.raises(asyncio.CancelledError):  # not the OSError: the stop must go on
        await task
