"""The job image, per stack: k8s/image/requirements-<stack>.txt against the imports of the packages a
rank runs (every import statement, also those inside functions), and the Dockerfile's base check.
Whether the pins resolve to cp37 wheels on aarch64 and x86_64 asks PyPI: `make image-check`."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path
from typing import Dict, Set

import pytest

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "k8s/image"
sys.path.insert(0, str(IMAGE))
import check_base  # noqa: E402  (k8s/image/check_base.py, a script of the image build)
import check_wheels  # noqa: E402  (k8s/image/check_wheels.py, `make image-check`)

IMAGE_PACKAGES = ("common", "rank_table", "csgm", "job", "launcher")
STACKS = tuple(check_base.STACK_TENSORFLOW)
# Import name -> distribution name, where they differ.
DISTRIBUTION = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn"}
# Third-party imports the image need not install, and why.
BOTH = {
    "tensorflow": "the CANN base image",
    "numpy": "the base image (kept at its version for its TensorFlow)",
    "pkg_resources": "setuptools, in the base image (used on Python 3.7 only, csgm/ascend.py)",
    "horovod": "backend horovod (CPU/GPU) only; the image runs backend hccl",
    "psutil": "imported only with backend horovod (launcher.horovod_rendezvous)",
}
NOT_FROM_REQUIREMENTS = {
    "tf1.15": {**BOTH, "npu_bridge": "CANN's TF 1.15 plugin in the base", "hccl": "CANN's TF 1.15 plugin",
               "npu_device": "the TF 2 adapter: refused on TF 1.15 before it is imported"},
    "tf2.6.5": {**BOTH, "npu_device": "CANN's TF 2.6.5 plugin in the base",
                "npu_bridge": "the TF 1.15 adapter: refused on TF 2 before it is imported",
                "hccl": "imported only with npu.adapter npu_bridge"},
}


def third_party_imports() -> Dict[str, Set[str]]:
    found: Dict[str, Set[str]] = {}
    for package in IMAGE_PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in IMAGE_PACKAGES and _third_party(top):
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _third_party(module: str) -> bool:
    """Installed into site-packages (or not installed here at all, like npu_device): not the stdlib."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin in (None, "built-in", "frozen"):
        return spec is None
    return "site-packages" in spec.origin or "dist-packages" in spec.origin


def pins(path: Path) -> Dict[str, str]:
    """name -> version of a requirements file, following its -r includes."""
    out: Dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            out.update(pins(path.parent / line[3:].strip()))
        elif line:
            match = re.fullmatch(r"([A-Za-z0-9._-]+)==([0-9][A-Za-z0-9.]*)", line)
            assert match, f"{path.name}: {line!r} is not an exact pin (the image installs with --no-deps)"
            out[match.group(1).lower()] = match.group(2)
    return out


@pytest.mark.parametrize("stack", STACKS)
def test_each_stack_installs_what_a_rank_imports(stack: str) -> None:
    imports = third_party_imports()
    assert {"PIL", "matplotlib", "yaml", "sklearn", "tensorflow", "npu_bridge", "npu_device"} <= set(imports)
    installed = pins(IMAGE / f"requirements-{stack}.txt")
    missing = {name: sorted(files) for name, files in imports.items()
               if name not in NOT_FROM_REQUIREMENTS[stack] and DISTRIBUTION.get(name, name).lower() not in installed}
    assert not missing, f"k8s/image/requirements-{stack}.txt lacks what these files import: {missing}"
    assert "numpy" not in installed and "tensorflow" not in installed  # the base's, never replaced


def test_the_stacks_agree_across_the_image_files() -> None:
    dockerfile = (IMAGE / "Dockerfile").read_text()
    assert set(check_wheels.BASE) == set(STACKS)
    for stack in STACKS:
        assert (IMAGE / f"requirements-{stack}.txt").is_file()
        assert f"STACK={stack}" in dockerfile
    assert '--no-deps -r "/tmp/csgm-requirements/requirements-${STACK}.txt"' in dockerfile
    assert 'check_base.py "${STACK}"' in dockerfile


@pytest.mark.parametrize("stack, python, tensorflow, fits", [
    ("tf1.15", (3, 7), "1.15.5", True),
    ("tf1.15", (3, 7), "2.6.5", False),
    ("tf2.6.5", (3, 7), "2.6.5", True),
    ("tf2.6.5", (3, 9), "2.6.5", True),
    ("tf2.6.5", (3, 7), "1.15.0", False),
    ("tf2.6.5", (3, 7), "2.16.1", False),   # the TF2 adapter is built for 2.6.5
    ("tf2.6.5", (3, 6), "2.6.5", False),
    ("tf2.6.5", (3, 7), None, False),
    ("tf3", (3, 7), "2.6.5", False),
])
def test_the_base_check_of_the_image_build(stack: str, python, tensorflow, fits: bool) -> None:
    found = check_base.problem(stack, python, tensorflow)
    assert (found is None) == fits, found
