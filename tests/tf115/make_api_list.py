"""Write tests/tf115/tf115_api.txt: every public dotted name of TensorFlow 1.15.5's Python API.

TF 1.15 needs Python <= 3.7, which this machine lacks, so the API is read from the wheel's generated
API modules instead of from an import. In the wheel, ``import tensorflow`` forwards to
``tensorflow_core`` (tensorflow/__init__.py), whose ``__init__.py`` is the generated v1 root (the same
file as ``tensorflow_core/_api/v1/v1.py``): on TF 1.15 ``tf.X`` is the v1 API. Every other public
module is ``tensorflow_core/_api/v1/<a>/<b>/__init__.py`` = ``tf.a.b`` (``compat/v1`` is
``tf.compat.v1``, ``compat/v2`` is ``tf.compat.v2``). Each of those files binds its names with
``from tensorflow.python... import X [as Y]`` lines, submodules with ``from tensorflow._api.v1.a
import b``, and a few by hand (``setattr(_current_module, "flags", flags)``, ``contrib = LazyLoader``).

The keras, estimator and tensorboard hooks are recorded as names only: their contents come from
other trees or other packages, and the project uses none of them (tests/test_tf115_api.py refuses
a name below them, since this list cannot vouch for it).

Usage (Python 3.9+, no TensorFlow needed):
    python tests/tf115/make_api_list.py                  # downloads the wheel with pip into a temp dir
    python tests/tf115/make_api_list.py --wheel PATH.whl
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable, List, Set

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from common.files import atomic_write_text  # noqa: E402
from common.records import sha256_file  # noqa: E402

OUT = HERE / "tf115_api.txt"
VERSION = "1.15.5"
WHEEL = f"tensorflow-{VERSION}-cp37-cp37m-manylinux2010_x86_64.whl"
DOWNLOAD = ["pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.7", "--abi", "cp37m",
            "--platform", "manylinux2010_x86_64", f"tensorflow=={VERSION}"]
ROOT = "tensorflow_core/__init__.py"
API = "tensorflow_core/_api/v1/"
# Modules bound by a hook whose members this list does not hold.
OPAQUE = ("keras", "estimator", "compat.v1.keras", "compat.v1.estimator", "compat.v2.keras",
          "compat.v2.estimator", "compat.v2.summary", "contrib", "flags", "app.flags", "compat.v1.flags",
          "compat.v1.app.flags")


def module_of(member: str) -> str:
    """The dotted module a generated ``__init__.py`` in the wheel defines ("" for the root)."""
    if member == ROOT:
        return ""
    return member[len(API):-len("/__init__.py")].replace("/", ".")


def public(name: str) -> bool:
    # The root exports a few dunders on purpose (``_names_with_underscore``: __version__, ...).
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__") and name != "__path__")


def names_in(source: str) -> Set[str]:
    """The public names one generated API module binds (relative to that module)."""
    names: Set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                "tensorflow", "tensorflow_estimator", "tensorboard"):
            names.update(a.asname or a.name for a in node.names if public(a.asname or a.name))
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and not target.id.startswith("_"):
                    names.add(target.id)  # contrib = LazyLoader(...), losses = keras.losses
                chain = _chain(target)    # _current_module.app.flags = flags
                if len(chain) > 1 and chain[0] == "_current_module":
                    names.add(".".join(chain[1:]))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr"
              and len(node.args) == 3 and _chain(node.args[0]) == ["_current_module"]
              and isinstance(node.args[1], ast.Constant)):
            names.add(node.args[1].value)  # setattr(_current_module, "flags", flags)
    return names


def _chain(node: ast.AST) -> List[str]:
    parts: List[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id] + parts[::-1] if isinstance(node, ast.Name) else []


def api_names(wheel: Path) -> List[str]:
    out: Set[str] = set()
    with zipfile.ZipFile(wheel) as z:
        members = [m for m in z.namelist() if m == ROOT or (m.startswith(API) and m.endswith("/__init__.py"))]
        for member in members:
            module = module_of(member)
            prefix = module + "." if module else ""
            out.update(prefix + n for n in names_in(z.read(member).decode("utf-8")))
            # A package directory is a module of its parent even if the parent forgot to import it.
            if module:
                out.add(module)
    missing = [m for m in OPAQUE if m not in out]
    if missing:
        raise SystemExit(f"error: {wheel}: hooks {missing} not found; is this the {VERSION} wheel?")
    return sorted(out)


def render(names: Iterable[str], digest: str) -> str:
    names = list(names)
    header = [
        f"# TensorFlow {VERSION}'s public Python API: one dotted name per line, relative to `tensorflow`",
        "# (which on TF 1.15 is the v1 API; compat.v1.* and compat.v2.* as TF 1.15 has them).",
        f"# From {WHEEL}",
        f"#   sha256 {digest}",
        f"#   {' '.join(DOWNLOAD)}",
        "# by tests/tf115/make_api_list.py (read its docstring); do not edit by hand.",
        f"# Members not listed (hooks to other trees or packages): {' '.join(OPAQUE)}",
        f"# {len(names)} names",
    ]
    return "\n".join(header + names) + "\n"


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help=f"{WHEEL} (default: download it with pip)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel
        if wheel is None:
            subprocess.run([sys.executable, "-m"] + DOWNLOAD + ["--dest", tmp], check=True)
            wheel = Path(tmp) / WHEEL
        if not wheel.is_file():
            print(f"error: {wheel}: not a file; pass --wheel PATH to {WHEEL}", file=sys.stderr)
            return 2
        names = api_names(wheel)
        text = render(names, sha256_file(wheel))
    atomic_write_text(args.out, text)
    print(f"{args.out}: {len(names)} names, {len(text.encode()) // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
