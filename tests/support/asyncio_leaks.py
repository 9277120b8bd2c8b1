"""A pytest plugin: a test fails when a task's or future's exception was never retrieved.

asyncio cannot raise such an exception anywhere: when the failed task or future is garbage
collected, it logs "Task exception was never retrieved" (or "Future …") at ERROR on the
`asyncio` logger, and the test that dropped it passes. This plugin listens on that logger for
the whole run and fails the phase (setup, call or teardown) in which the message appeared,
with the message and the traceback of the lost exception. Teardown collects garbage first,
so a failed future kept alive only by a reference cycle is found in the test that made it.

Messages logged outside any test (at collection, or while a module's fixtures are torn down)
fail the run at its end. A loop with its own exception handler (loop.set_exception_handler)
does not log, so this plugin cannot see what such a loop drops.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Generator

import pytest

NEVER_RETRIEVED = ("Task exception was never retrieved", "Future exception was never retrieved")


class _Unretrieved(logging.Handler):
    """Keeps the asyncio logger's never-retrieved records until a check takes them."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(NEVER_RETRIEVED):
            self.records.append(record)

    def take(self) -> list[str]:
        taken, self.records = self.records, []
        return [self._formatter.format(record) for record in taken]


_HANDLER = pytest.StashKey[_Unretrieved]()


def pytest_configure(config: pytest.Config) -> None:
    handler = config.stash[_HANDLER] = _Unretrieved()
    logging.getLogger("asyncio").addHandler(handler)


def pytest_unconfigure(config: pytest.Config) -> None:
    handler = config.stash.get(_HANDLER, None)
    if handler is not None:
        logging.getLogger("asyncio").removeHandler(handler)


def _fail_on(handler: _Unretrieved, where: str) -> None:
    found = handler.take()
    if found:
        pytest.fail(_report(found, where), pytrace=False)


def _report(found: list[str], where: str) -> str:
    count = "1 exception" if len(found) == 1 else f"{len(found)} exceptions"
    return (
        f"asyncio dropped {count} that nobody retrieved {where}: a task or future failed and "
        "was garbage-collected before anyone awaited it or called .exception(). Await it, "
        "gather it, or give it a done callback that reads the exception.\n\n" + "\n\n".join(found)
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    handler = item.config.stash[_HANDLER]
    _claim_strays(item.config)
    try:
        return (yield)
    finally:
        _fail_on(handler, "while this test's fixtures were set up")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    handler = item.config.stash[_HANDLER]
    try:
        return (yield)
    finally:
        _fail_on(handler, "during this test")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    handler = item.config.stash[_HANDLER]
    try:
        return (yield)
    finally:
        _collect_garbage()
        _fail_on(handler, "during this test (found at its teardown)")


def _collect_garbage() -> None:
    """Free what only reference cycles keep alive, so their never-retrieved exceptions are
    logged in the test that dropped them, not in a later one.

    A full collection walks every object of the run (~80 ms each, minutes per suite), so
    what survives it is frozen: the next collection walks only what later tests allocate.
    The price: an object alive now and freed later as part of a cycle (a module fixture torn
    down) is never collected, which a test run can afford.
    """
    gc.collect()
    gc.freeze()


_STRAYS = pytest.StashKey[list[str]]()


def _claim_strays(config: pytest.Config) -> None:
    """Keep what was logged between tests, to fail the run at its end."""
    config.stash.setdefault(_STRAYS, []).extend(config.stash[_HANDLER].take())


def pytest_sessionfinish(session: pytest.Session) -> None:
    gc.unfreeze()
    gc.collect()
    _claim_strays(session.config)
    strays = session.config.stash.get(_STRAYS, [])
    if strays:
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep(
                "=", "asyncio exceptions never retrieved, outside any test", red=True
            )
            reporter.write_line(_report(strays, "outside any test"))
