"""Which fault tests a run picks: plain `pytest` (and `make test`) runs the short seeded
ones and deselects those marked faults_full; `make faults` sets FAULTS_FULL=1, which
deselects those marked faults_short (the whole schedule supersedes them). Tests with neither
marker (the suite's own network and checker) run either way."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unwanted = "faults_short" if os.environ.get("FAULTS_FULL") == "1" else "faults_full"
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        (drop if item.get_closest_marker(unwanted) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
