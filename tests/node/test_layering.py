"""node/ is layered: each subpackage imports only those below it, and no import cycle exists.

The layers, top to bottom (node/__init__.py draws them): the root (composition), http,
coordination and realtime side by side, then cluster and history side by side, storage, then
obs and base. A module may import its own subpackage and any lower layer. Lazy imports
inside functions count; imports under `if TYPE_CHECKING:` do not, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

NODE = Path(__file__).resolve().parents[2] / "node"
# Rank of each subpackage: a module may import ranks strictly below its own (or its own
# subpackage). Equal ranks (coordination, realtime; cluster, history; obs, base) may not
# import each other, except obs, which may use base.
RANK = {
    "": 6,  # the root: app, cli, local_cluster
    "http": 5,
    "coordination": 4,
    "realtime": 4,
    "cluster": 3,
    "history": 3,
    "storage": 2,
    "obs": 1,
    "base": 0,
}
ALSO_ALLOWED = {("obs", "base")}


def module_name(path: Path) -> str:
    parts = path.relative_to(NODE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else ""


def runtime_imports(source: str, module: str, is_package: bool) -> set[str]:
    """Modules of `node` that `source` imports when it runs (TYPE_CHECKING blocks aside)."""
    tree = ast.parse(source)
    skipped = {
        id(inner)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for statement in branch.body
        for inner in ast.walk(statement)
    }
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for statement in ast.walk(tree):
        if id(statement) in skipped:
            continue
        if isinstance(statement, ast.Import):
            found.update(alias.name for alias in statement.names)
        elif isinstance(statement, ast.ImportFrom):
            base = statement.module or ""
            if statement.level:
                anchor = package.split(".")[: len(package.split(".")) - statement.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in statement.names)
    return {name for name in found if name == "node" or name.startswith("node.")}


def import_graph(root: Path = NODE) -> dict[str, set[str]]:
    paths = {module_name(path): path for path in root.rglob("*.py")}
    graph = {}
    for module, path in paths.items():
        imported = runtime_imports(path.read_text(), module, path.name == "__init__.py")
        imported = {name for name in imported if name in paths and name != module}
        # `from node.http import auth` names the package and its module: count the module.
        graph[module] = {n for n in imported if not any(o.startswith(n + ".") for o in imported)}
    return graph


def back_imports(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, imported in sorted(graph.items()):
        mine = layer_of(module)
        for target in sorted(imported):
            theirs = layer_of(target)
            if target == "node" or (mine, theirs) in ALSO_ALLOWED:
                continue
            if theirs != mine and RANK[theirs] >= RANK[mine]:
                wrong.append(f"{module} imports {target} ({mine or 'root'} -> {theirs or 'root'})")
    return wrong


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """A cycle through each module that lies on one, each reported once."""
    found: list[list[str]] = []
    on_cycle: set[str] = set()

    def path_back(start: str, current: str, path: list[str], seen: set[str]) -> list[str] | None:
        for target in sorted(graph[current]):
            if target == start:
                return path
            if target not in seen:
                seen.add(target)
                route = path_back(start, target, [*path, target], seen)
                if route:
                    return route
        return None

    for module in sorted(graph):
        if module in on_cycle:
            continue
        route = path_back(module, module, [module], {module})
        if route:
            on_cycle.update(route)
            found.append(route)
    return found


def test_every_subpackage_has_a_docstring_saying_what_it_may_import() -> None:
    for layer in RANK:
        if not layer:
            continue
        init = NODE / layer / "__init__.py"
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring and "import" in docstring, f"{init} needs its docstring"


def test_the_root_only_composes() -> None:
    root_modules = {path.stem for path in NODE.glob("*.py")}
    assert root_modules <= {"__init__", "__main__", "app", "cli", "local_cluster"}


def test_no_module_imports_a_layer_above_it() -> None:
    assert back_imports(import_graph()) == []


def test_node_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_no_module_grows_past_450_lines() -> None:
    long = {
        str(path.relative_to(NODE)): n
        for path in NODE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 450
    }
    assert long == {}


# -- the checks catch what they should -----------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "node"
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root


def _graph(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    global NODE
    saved, NODE = NODE, _tree(tmp_path, files)
    try:
        return import_graph(NODE)
    finally:
        NODE = saved


@pytest.mark.parametrize(
    "source",
    [
        "from node.http import auth\n",
        "import node.http.auth\n",
        "def late():\n    from node.http.auth import mint\n",
        "from ..http import auth\n",
    ],
    ids=["from", "import", "lazy", "relative"],
)
def test_a_back_import_is_caught(tmp_path: Path, source: str) -> None:
    files = {
        "__init__.py": "",
        "http/__init__.py": "",
        "http/auth.py": "",
        "storage/__init__.py": "",
        "storage/store.py": source,
    }
    assert back_imports(_graph(tmp_path, files)) == [
        "node.storage.store imports node.http.auth (storage -> http)"
    ]


def test_neighbours_of_one_rank_may_not_import_each_other(tmp_path: Path) -> None:
    files = {
        "__init__.py": "",
        "cluster/__init__.py": "",
        "cluster/gossip.py": "from node.history.recorder import Recorder\n",
        "history/__init__.py": "",
        "history/recorder.py": "",
    }
    assert back_imports(_graph(tmp_path, files)) == [
        "node.cluster.gossip imports node.history.recorder (cluster -> history)"
    ]


def test_a_type_checking_import_is_not_a_back_import(tmp_path: Path) -> None:
    files = {
        "__init__.py": "",
        "http/__init__.py": "",
        "http/auth.py": "",
        "storage/__init__.py": "",
        "storage/store.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from node.http import auth\n"
        ),
    }
    assert back_imports(_graph(tmp_path, files)) == []


def test_a_cycle_is_caught(tmp_path: Path) -> None:
    files = {
        "__init__.py": "",
        "storage/__init__.py": "",
        "storage/a.py": "from node.storage import b\n",
        "storage/b.py": "def late():\n    from node.storage import a\n",
    }
    assert cycles(_graph(tmp_path, files)) == [["node.storage.a", "node.storage.b"]]
