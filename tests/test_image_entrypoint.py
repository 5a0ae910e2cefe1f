"""k8s/image/entrypoint.sh against a stand-in CANN install: it sources the toolkit's and the TF
plugin's set_env.sh (which prepend to PYTHONPATH, as CANN's do), keeps the project on PYTHONPATH,
and stops with exit 2 and a message when CANN is missing."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Dict

from tests.jobutil import REPO

ENTRYPOINT = REPO / "k8s" / "image" / "entrypoint.sh"
SET_ENV = 'export PYTHONPATH={site}:$PYTHONPATH\nexport {var}=1\n'


def _run(env: Dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(ENTRYPOINT), "sh", "-c", 'echo "PYTHONPATH=$PYTHONPATH"; env | sort'],
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60)


def _cann(root: Path) -> Path:
    for sub, var in (("ascend-toolkit", "TOOLKIT_SOURCED"), ("tfplugin", "TFPLUGIN_SOURCED")):
        (root / sub).mkdir(parents=True)
        (root / sub / "set_env.sh").write_text(SET_ENV.format(site=root / sub / "site-packages", var=var))
    return root


def test_sources_cann_and_keeps_the_project_on_pythonpath(tmp_path: Path) -> None:
    root = _cann(tmp_path / "Ascend")
    done = _run({"ASCEND_HOME": str(root), "PYTHONPATH": "/opt/csgm"})
    assert done.returncode == 0, done.stderr
    path = next(line for line in done.stdout.splitlines() if line.startswith("PYTHONPATH=")).split("=", 1)[1]
    assert path.split(":") == [f"{root}/tfplugin/site-packages", f"{root}/ascend-toolkit/site-packages", "/opt/csgm"]
    assert "TOOLKIT_SOURCED=1" in done.stdout and "TFPLUGIN_SOURCED=1" in done.stdout
    assert f"LD_LIBRARY_PATH={root}/driver/lib64/common:{root}/driver/lib64/driver" in done.stdout


def test_missing_cann_is_a_clear_error(tmp_path: Path) -> None:
    done = _run({"ASCEND_HOME": str(tmp_path / "none")})
    assert done.returncode == 2
    assert f"{tmp_path}/none/ascend-toolkit/set_env.sh not found" in done.stderr
    skipped = _run({"ASCEND_HOME": str(tmp_path / "none"), "CSGM_SKIP_CANN_ENV": "1"})
    assert skipped.returncode == 0 and "PYTHONPATH=/opt/csgm" in skipped.stdout
