"""Every TensorFlow name a rank can use under TF 1.15 exists in TF 1.15.5's public API.

TF 1.15 needs Python 3.7, which the test machines lack, so nothing here imports it: the code is read
with ``ast`` and its TensorFlow names are looked up in tests/tf115/tf115_api.txt, the names TF 1.15.5's
wheel exports (tests/tf115/make_api_list.py made it; docs/ascend.md, "Two stacks", says how to remake
it). On TF 1.15 ``import tensorflow as tf`` is the v1 API, so ``tf.X`` is looked up as ``X`` (``tf.function``
exists, ``tf.summary.create_file_writer`` does not) and ``tf.compat.v1.X`` as ``compat.v1.X``.

A name is checked down to the first part that is not a module (``tf.compat.v1.Summary.Value`` checks
``compat.v1.Summary``): attributes of classes and objects, and argument names, are not in the list.
Code that only runs on TensorFlow 2 is exempt, by the (file, class or function) in TF2_ONLY.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

REPO = Path(__file__).resolve().parent.parent
API_FILE = REPO / "tests/tf115/tf115_api.txt"
PACKAGES = ("common", "rank_table", "csgm", "job", "launcher")  # what a rank runs (setup.py, the vermin lint)

# On TF 1.15 a rank runs only npu.adapter npu_bridge: job.backend._open builds a BridgeBackend, whose
# runner is csgm.runner.SessionRunner (the CPU/GPU backends and the plain Runner need TF 2 eager
# functions). These scopes never run there; "*" is the whole file. Keep this short: a scope here is
# not checked at all.
TF2_ONLY: Dict[Tuple[str, str], str] = {
    ("csgm/runner.py", "Runner"): "tf.function runner; SessionRunner replaces every method (checked below)",
    ("csgm/runner.py", "_stepped"): "Runner.function's compiled loop; SessionRunner loops on the host",
    ("csgm/runner.py", "ScalarLog"): "TF2 summary writer; GraphScalarLog replaces what uses it (checked below)",
    ("csgm/backends/npu.py", "*"): "npu_device, CANN's TF 2.6.5 adapter",
    ("csgm/backends/hccl.py", "HcclBackend"): "npu_device.distribute (TF 2.6.5 adapter)",
    ("csgm/backends/tf_collective.py", "*"): "MultiWorkerMirroredStrategy, devices.type cpu/gpu only",
    ("csgm/backends/horovod.py", "*"): "Horovod, devices.type cpu/gpu only",
}
# An exempt class and the class that takes its place on the graph path.
REPLACED_BY = {("csgm/runner.py", "Runner"): "SessionRunner", ("csgm/runner.py", "ScalarLog"): "GraphScalarLog"}


def load_api(path: Path = API_FILE) -> Tuple[Set[str], Set[str], Set[str]]:
    """(names, modules, opaque): every public name; the names that have members listed; the hooks
    whose members the list does not hold (the header's "Members not listed" line)."""
    names, opaque = set(), set()
    for line in path.read_text().splitlines():
        if line.startswith("# Members not listed"):
            opaque = set(line.split(":", 1)[1].split())
        elif line and not line.startswith("#"):
            names.add(line)
    modules = {n.rsplit(".", 1)[0] for n in names if "." in n}
    return names, modules, opaque


API = load_api()


def missing(name: str, api: Tuple[Set[str], Set[str], Set[str]] = API) -> Optional[str]:
    """Why ``name`` (dotted, relative to ``tensorflow``) is not TF 1.15 API, or None when it is."""
    names, modules, opaque = api
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if prefix not in names:
            return f"{prefix} is not in TF 1.15.5's API"
        if prefix in opaque and i < len(parts):
            return f"{prefix}'s members are not listed (extend tests/tf115/make_api_list.py)"
        if prefix not in modules:
            return None  # a class, function or constant: what follows is its attribute
    return None


class _Scan(ast.NodeVisitor):
    """Each use of a TensorFlow name: (line, code as written, name relative to tensorflow, scope)."""

    def __init__(self) -> None:
        self.aliases: Dict[str, str] = {}  # local name -> what it is, relative to tensorflow
        self.uses: List[Tuple[int, str, str, str]] = []
        self.scope: List[str] = []

    def _use(self, node: ast.AST, written: str, name: str) -> None:
        self.uses.append((node.lineno, written, name, ".".join(self.scope)))

    def _scoped(self, node: ast.AST) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _scoped

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            top, _, rest = alias.name.partition(".")
            if top != "tensorflow":
                continue
            if rest:
                self._use(node, alias.name, rest)
            if alias.asname:
                self.aliases[alias.asname] = rest
            else:
                self.aliases["tensorflow"] = ""  # `import tensorflow.x` binds `tensorflow`

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        top, _, rest = (node.module or "").partition(".")
        if top != "tensorflow" or node.level:
            return
        for alias in node.names:
            name = f"{rest}.{alias.name}" if rest else alias.name
            self._use(node, f"from {node.module} import {alias.name}", name)
            self.aliases[alias.asname or alias.name] = name

    def visit_Attribute(self, node: ast.Attribute) -> None:
        parts, inner = [], node
        while isinstance(inner, ast.Attribute):
            parts.append(inner.attr)
            inner = inner.value
        if isinstance(inner, ast.Name) and inner.id in self.aliases:
            base = self.aliases[inner.id]
            name = ".".join(([base] if base else []) + parts[::-1])
            self._use(node, ".".join([inner.id] + parts[::-1]), name)
        else:
            self.generic_visit(node)


def scan(source: str) -> List[Tuple[int, str, str, str]]:
    visitor = _Scan()
    tree = ast.parse(source)
    for node in ast.walk(tree):  # the aliases first: a function-local `import tensorflow as tf` counts
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            visitor.visit(node)
    visitor.uses.clear()
    visitor.visit(tree)
    return visitor.uses


def _exempt(file: str, scope: str) -> Optional[Tuple[str, str]]:
    for key in ((file, "*"), (file, scope.split(".")[0])):
        if key in TF2_ONLY:
            return key
    return None


def rank_files() -> List[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


@functools.cache
def rank_problems() -> Tuple[List[str], Set[Tuple[str, str]]]:
    return problems(rank_files())


def problems(files: List[Path]) -> Tuple[List[str], Set[Tuple[str, str]]]:
    """('file:line: code: why', ...) for names TF 1.15 lacks, and the TF2_ONLY keys that exempted a use."""
    found, used = [], set()
    for path in files:
        file = path.relative_to(REPO).as_posix()
        source = path.read_text()
        if "tensorflow" not in source:  # no import, no alias, nothing to check (and a fast scan)
            continue
        for line, written, name, scope in scan(source):
            key = _exempt(file, scope)
            if key:
                used.add(key)
                continue
            why = missing(name)
            if why:
                found.append(f"{file}:{line}: {written}: {why}")
    return found, used


def test_the_list_is_tf115s_v1_api() -> None:
    header = [ln for ln in API_FILE.read_text().splitlines() if ln.startswith("#")]
    assert any("sha256 " in ln for ln in header) and any("pip download" in ln for ln in header)
    body = [ln for ln in API_FILE.read_text().splitlines() if ln and not ln.startswith("#")]
    assert body == sorted(set(body))
    # The v1 root: TF1 names at the top (the TF2 summary writer is tensorboard's compat.v2.summary).
    for name in ("compat.v1.placeholder", "Session", "function", "nn.relu", "train.Checkpoint",
                 "compat.v2.function", "raw_ops.ResourceApplyAdam"):
        assert missing(name) is None, name
    for name in ("summary.create_file_writer", "experimental.numpy", "compat.v1.summary.create_file_writer"):
        assert missing(name), name


def test_the_scan_reads_every_form_of_tensorflow_name() -> None:
    source = """
import tensorflow as tf
import tensorflow.compat.v1 as tf1
from tensorflow import nn
from tensorflow.python.ops import math_ops

def f():
    tf.compat.v1.Summary.Value(tag="x")      # ok: Summary is a class, Value its attribute
    tf.shape(x)[0].numpy                      # ok
    tf1.placeholder(tf.float32)               # ok
    nn.relu(x)                                # ok
    tf.experimental.numpy.foo(1)              # no experimental.numpy in 1.15
    tf1.summary.create_file_writer("d")       # compat.v1.summary is TF1's
    tf.keras.layers.Dense                     # a hook this list does not hold
"""
    whys = [(written, missing(name)) for _, written, name, _ in scan(source)]
    bad = {written: why for written, why in whys if why}
    assert set(bad) == {"from tensorflow.python.ops import math_ops", "tf.experimental.numpy.foo",
                        "tf1.summary.create_file_writer", "tf.keras.layers.Dense"}, whys
    assert "python is not in" in bad["from tensorflow.python.ops import math_ops"]
    assert "experimental.numpy is not in" in bad["tf.experimental.numpy.foo"]


def test_rank_code_uses_only_tf115_names() -> None:
    found, _ = rank_problems()
    assert not found, "TensorFlow names that TF 1.15.5 lacks (the graph path, npu_bridge, runs there):\n" + \
        "\n".join(found)


def test_every_exemption_is_needed_and_replaced() -> None:
    _, used = rank_problems()
    assert used == set(TF2_ONLY), f"TF2_ONLY entries that exempt nothing: {set(TF2_ONLY) - used}"
    for (file, cls), replacement in REPLACED_BY.items():
        tree = ast.parse((REPO / file).read_text())
        methods = {n.name: {m.name for m in n.body if isinstance(m, ast.FunctionDef)}
                   for n in tree.body if isinstance(n, ast.ClassDef)}
        with_tf = {scope.split(".")[1] for _, _, _, scope in scan((REPO / file).read_text())
                   if scope.startswith(cls + ".")}
        inherited = with_tf - methods[replacement]
        assert not inherited, f"{file}: {replacement} inherits {inherited} from TF2-only {cls}: override them"
