"""The fault suite runs its long tests (marker faults_full) only under `make faults`
(FAULTS_FULL=1); plain `pytest` deselects them, and runs the short seeded ones. With
FAULTS_FULL=1 only the long ones run, whatever else was collected."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    full = os.environ.get("FAULTS_FULL") == "1"
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        long_run = item.get_closest_marker("faults_full") is not None
        (keep if long_run == full else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
