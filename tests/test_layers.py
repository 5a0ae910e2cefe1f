"""The floors of the house read one way: every import points down (or sideways within a package),
and no modules import each other, directly or through a loop. Read from the source with ``ast``,
lazy imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

REPO = Path(__file__).resolve().parent.parent
# What each package may import from the project, besides itself: ground first.
ALLOWED = {
    "common": set(),
    "rank_table": {"common"},
    "csgm": {"common", "rank_table"},
    "job": {"common", "rank_table", "csgm"},
    "launcher": {"common", "rank_table", "csgm", "job"},
    "k8s": {"common", "rank_table", "csgm", "job"},
    "bench": {"common", "rank_table", "csgm", "job", "launcher", "k8s"},
}


def module_files() -> Dict[str, Path]:
    out = {}
    for package in ALLOWED:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: Set[str]) -> Set[str]:
    """The project modules ``name`` imports explicitly (a package's __init__ counts only when named)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> Dict[str, Set[str]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def test_every_import_points_down_the_floors():
    wrong = [f"{name} imports {target}"
             for name, targets in import_graph().items() for target in sorted(targets)
             if target.split(".")[0] != name.split(".")[0]
             and target.split(".")[0] not in ALLOWED[name.split(".")[0]]]
    assert not wrong, "imports against the floors (docs/architecture.md):\n" + "\n".join(wrong)


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_no_module_imports_itself_through_a_loop():
    cycle = find_cycle(import_graph())
    assert not cycle, "import loop: " + " -> ".join(cycle)


@pytest.mark.parametrize("graph, loop", [
    ({"a": {"b"}, "b": set()}, False),
    ({"a": {"b"}, "b": {"a"}}, True),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, False),
])
def test_find_cycle(graph, loop):
    assert bool(find_cycle(graph)) is loop


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    (tmp_path / "pkg").mkdir()
    source = "from .sib import x\n\ndef f():\n    from job.spec import JobSpec\n"
    (tmp_path / "pkg" / "mod.py").write_text(source)
    modules = {"pkg", "pkg.mod", "pkg.sib", "job", "job.spec"}
    assert imports_of("pkg.mod", tmp_path / "pkg" / "mod.py", modules) == {"pkg.sib", "job.spec"}


def test_the_library_example_in_the_architecture_doc_runs(tmp_path, monkeypatch):
    """csgm is usable without job or launcher: docs/architecture.md's example, executed as written."""
    text = (REPO / "docs" / "architecture.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    namespace: Dict[str, object] = {}
    exec(compile(block, "docs/architecture.md", "exec"), namespace)  # noqa: S102 - our own doc
    assert (tmp_path / "runs" / "library-example" / "checkpoints").is_dir()
    assert 0.0 < namespace["x_hat"].min() + 1e-9 and namespace["x_hat"].max() <= 1.0  # type: ignore[union-attr]
