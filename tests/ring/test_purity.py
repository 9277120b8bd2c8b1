"""ring/ stays pure: no I/O, clocks, randomness or service code, and no hash() in placement."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

RING = Path(__file__).resolve().parents[2] / "ring"
FORBIDDEN = {"asyncio", "aiohttp", "redis", "time", "random", "socket", "os", "node", "crdt"}
# Placement must agree across processes; the built-in hash() is salted per process.
PLACEMENT = {"hashing.py", "ring.py", "claim.py", "plan.py"}


def imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def calls_builtin_hash(tree: ast.AST) -> bool:
    return any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hash"
        for node in ast.walk(tree)
    )


MODULES = sorted(RING.glob("*.py"))


def test_the_scan_sees_the_modules() -> None:
    assert {path.name for path in MODULES} >= PLACEMENT | {"membership.py", "detector.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_module_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert not imported_roots(tree) & FORBIDDEN
    if path.name in PLACEMENT:
        assert not calls_builtin_hash(tree)


def test_the_scan_catches_a_forbidden_import() -> None:
    tree = ast.parse("import os.path\nfrom time import monotonic\nx = hash('a')\n")
    assert imported_roots(tree) == {"os", "time"}
    assert calls_builtin_hash(tree)


def test_the_package_exports_its_public_names() -> None:
    # A subprocess with the repo first on sys.path imports ring/__init__.py itself, whatever
    # an editable install of the package maps `ring` to.
    probe = (
        "import ring; missing = [n for n in ring.__all__ if not hasattr(ring, n)]; print(missing)"
    )
    env = {**os.environ, "PYTHONPATH": str(RING.parent)}
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
