"""The shared test helpers do what the suite relies on: asyncio leaks fail the test that made
them, and a spawned child dies with the process that spawned it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.integration.servers import wait_until

REPO = Path(__file__).resolve().parents[1]
LEAKS_PLUGIN = "tests.support.asyncio_leaks"

INNER_TESTS = """
import asyncio
import gc

import pytest


def test_drops_a_failed_future():
    loop = asyncio.new_event_loop()
    future = loop.create_future()
    future.set_exception(RuntimeError("nobody looked"))
    loop.close()  # the future goes with this frame, its exception unread


@pytest.fixture
def no_automatic_gc():
    gc.disable()
    yield
    gc.enable()


def test_hides_a_failed_task_in_a_reference_cycle(no_automatic_gc):
    async def fail():
        raise ValueError("lost in a cycle")

    loop = asyncio.new_event_loop()
    task = loop.create_task(fail())
    loop.run_until_complete(asyncio.wait([task]))
    loop.close()
    cycle = [task]
    cycle.append(cycle)  # only the garbage collector frees it, after the test


def test_reads_the_exception_it_caused():
    loop = asyncio.new_event_loop()
    future = loop.create_future()
    future.set_exception(RuntimeError("seen"))
    assert isinstance(future.exception(), RuntimeError)
    loop.close()
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A directory holding INNER_TESTS, where pytest can import this repository's tests."""
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), path])))
    # Only pytest and the plugin under test: the installed plugins take seconds to import.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(test_inner=INNER_TESTS)
    return pytester


def test_an_unretrieved_asyncio_exception_fails_the_test_that_dropped_it(inner: pytest.Pytester):
    result = inner.runpytest_subprocess("-p", LEAKS_PLUGIN, "-p", "no:cacheprovider")
    # the cycle's test passes its call and errs at teardown, where the garbage is collected
    result.assert_outcomes(passed=2, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_drops_a_failed_future _*",
            "*asyncio dropped 1 exception that nobody retrieved during this test*",
            "*Future exception was never retrieved*",
            "*RuntimeError: nobody looked",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ ERROR at teardown of test_hides_a_failed_task_in_a_reference_cycle _*",
            "*asyncio dropped 1 exception that nobody retrieved during this test (found at its "
            "teardown)*",
            "*Task exception was never retrieved*",
            "*ValueError: lost in a cycle",
        ]
    )
    result.stdout.no_fnmatch_line("*test_reads_the_exception_it_caused*FAILED*")


def test_without_the_plugin_the_same_tests_pass(inner: pytest.Pytester):
    """The control: what the plugin catches, plain pytest lets through."""
    result = inner.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


SPAWNER = """
import sys
import time

from tests.support import spawn

child = spawn([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def test_a_spawned_child_leads_its_session_and_dies_when_its_parent_is_killed():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SPAWNER)], env=env, stdout=subprocess.PIPE
    ) as parent:
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline() or 0)
            assert child, "the parent did not spawn its child"
            assert os.getsid(child) == child and os.getpgid(child) == child
            parent.send_signal(signal.SIGKILL)  # no teardown, no atexit: only the kernel
        finally:
            parent.kill()
    assert wait_until(lambda: _gone(child), 10), f"the orphaned child {child} outlived its parent"


def _gone(pid: int) -> bool:
    """Whether `pid` no longer runs; a zombie waiting for its new parent to reap it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"
