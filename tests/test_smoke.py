"""The packages import from this repository, and the console script answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import crdt
import node
import ring

REPO = Path(__file__).resolve().parents[1]


def test_packages_come_from_this_repository():
    for package in (crdt, ring, node):
        assert package.__file__ is not None
        assert Path(package.__file__).resolve().parent == REPO / package.__name__


def test_console_script_reports_version_and_help():
    version = subprocess.run(
        [sys.executable, "-m", "node", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == f"counters {node.__version__}"
    usage = subprocess.run(
        [sys.executable, "-m", "node", "--help"], capture_output=True, text=True, check=True
    )
    assert "node" in usage.stdout and "up" in usage.stdout


def test_node_refuses_to_start_with_bad_config():
    result = subprocess.run(
        [sys.executable, "-m", "node", "node", "--node-id", "n1", "--replicas", "2",
         "--write-quorum", "3"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode != 0
    assert "write-quorum" in result.stderr
