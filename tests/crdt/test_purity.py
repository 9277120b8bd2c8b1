"""crdt/ is pure: no I/O, clocks, randomness or event loops, and no imports of node/ or ring/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CRDT_DIR = Path(__file__).resolve().parents[2] / "crdt"
FORBIDDEN = frozenset(
    {
        "asyncio",
        "aiohttp",
        "redis",
        "time",
        "random",
        "os",
        "socket",
        "node",
        "ring",
        # Other ways to reach I/O, clocks or randomness, and a way around this test.
        "asyncpg",
        "datetime",
        "importlib",
        "multiprocessing",
        "secrets",
        "selectors",
        "subprocess",
        "threading",
        "uvloop",
    }
)
MODULES = sorted(CRDT_DIR.glob("*.py"))


def imported_roots(tree: ast.AST) -> set[str]:
    """Top-level names of every module that `tree` imports (relative imports are refused)."""
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                roots.add(f"relative import from {'.' * node.level}{node.module or ''}")
            else:
                roots.add((node.module or "").partition(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            roots.add("__import__")
    return roots


def test_crdt_modules_exist() -> None:
    names = {path.name for path in MODULES}
    assert {"__init__.py", "errors.py", "gcounter.py", "pncounter.py", "codec.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_module_imports_nothing_impure(path: Path) -> None:
    roots = imported_roots(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    bad = {root for root in roots if root in FORBIDDEN or not root.isidentifier()}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_module_starts_with_a_docstring(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{path.name} has no module docstring"


def test_the_scanner_catches_forbidden_imports() -> None:
    source = "import os.path\nfrom time import monotonic\nfrom ..node import api\n__import__('x')"
    roots = imported_roots(ast.parse(source))
    assert {"os", "time", "__import__"} <= roots
    assert any(root.startswith("relative import") for root in roots)
