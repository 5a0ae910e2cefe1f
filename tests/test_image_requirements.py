"""The job image installs everything the job imports: k8s/image/requirements.txt against the imports
of the packages the image runs (every import statement, also those inside functions)."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from typing import Dict, Set

REPO = Path(__file__).resolve().parent.parent
IMAGE_PACKAGES = ("common", "rank_table", "csgm", "job", "launcher")
# Import name -> distribution name, where they differ.
DISTRIBUTION = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn"}
# Third-party imports the image need not install, and why.
NOT_FROM_REQUIREMENTS = {
    "tensorflow": "CANN's TensorFlow 2.6.5 base image",
    "numpy": "the base image (kept at its version for its TensorFlow)",
    "npu_device": "CANN's TensorFlow adapter in the base image",
    "horovod": "backend horovod (CPU/GPU) only; the image runs backend hccl",
    "psutil": "imported only with backend horovod (launcher.horovod_rendezvous)",
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


def requirements() -> Set[str]:
    lines = (REPO / "k8s/image/requirements.txt").read_text().splitlines()
    return {re.split(r"[=<>!~\[; ]", line.strip())[0].lower() for line in lines
            if line.strip() and not line.strip().startswith("#")}


def test_image_requirements_cover_the_imports() -> None:
    imports = third_party_imports()
    assert {"PIL", "matplotlib", "yaml", "sklearn", "tensorflow"} <= set(imports)  # the scan sees them
    missing = {name: sorted(files) for name, files in imports.items()
               if name not in NOT_FROM_REQUIREMENTS and DISTRIBUTION.get(name, name).lower() not in requirements()}
    assert not missing, f"k8s/image/requirements.txt lacks what these files import: {missing}"
