"""The launcher's Ascend side without TensorFlow: device ids in --dry-run, refusals before any rank
starts (device not visible, device id out of the chip's range, precision modes that cannot share a
process), the npu-smi health check (a stand-in npu-smi on PATH) and taskset binding."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Dict

import pytest

from launcher.ascend import check_health, cpu_share
from launcher.cli import main
from launcher.errors import LaunchError
from tests.jobutil import REPO

SPEC = "configs/mnist_8p.yaml"
DRY = ("--server-id", "10.0.0.1", "--dry-run")

FAKE_NPU_SMI = """#!/bin/sh
# stand-in for `npu-smi info -t health -i <id>`: device 5 is in alarm
if [ "$5" = "5" ]; then status=Alarm; else status=OK; fi
printf '\\tHealth Status                  : %s\\n' "$status"
"""


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture()
def launch(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """The launcher's main() in this process (a dry run starts nothing), with extra environment."""
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("ASCEND_VISIBLE_DEVICES", raising=False)

    def run(*args: str, env: Dict[str, str] = {}) -> Result:  # noqa: B006 (read only)
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            code = main([SPEC, *args])
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return run


def _table(tmp_path: Path, devices: list) -> Path:
    path = tmp_path / "hccl.json"
    path.write_text(json.dumps({"version": "1.0", "status": "completed", "server_list": [
        {"server_id": "10.0.0.1", "device": [{"device_id": str(d), "rank_id": str(r)}
                                             for r, d in enumerate(devices)]}]}))
    return path


def test_dry_run_shows_physical_and_logical_ids(tmp_path: Path, launch) -> None:
    table = _table(tmp_path, [4, 5, 7, 6])
    args = ("--rank-table", str(table), "--set", "devices.count=4", *DRY)
    bare = launch(*args)
    assert bare.returncode == 0, bare.stderr
    assert "[rank 2] device: physical 7 (rank table), logical 7 (opened by npu_device; bare metal" in bare.stdout
    boxed = launch(*args, env={"ASCEND_VISIBLE_DEVICES": "4,5,6,7"})
    assert "[rank 2] device: physical 7 (rank table), logical 3 (opened by npu_device; container, " \
           "ASCEND_VISIBLE_DEVICES=4,5,6,7)" in boxed.stdout
    assert "[rank 2]   ASCEND_DEVICE_ID=3" in boxed.stdout and "[rank 2]   DEVICE_ID=3" in boxed.stdout


@pytest.mark.parametrize("sets, env, message", [
    (("devices.count=4",), {"ASCEND_VISIBLE_DEVICES": "4,5,6"},
     "the rank table names device 7, but this container sees only ASCEND_VISIBLE_DEVICES=4,5,6"),
    (("recovery.precision=fp32",), {}, "recovery.precision: is fp32 but train.precision is mixed; on an NPU"),
])
def test_refused_before_any_rank_starts(tmp_path: Path, launch, sets: tuple, env: Dict[str, str],
                                        message: str) -> None:
    table = _table(tmp_path, [4, 5, 7, 6])
    extra = [a for s in sets for a in ("--set", s)]
    result = launch("--rank-table", str(table), "--set", "devices.count=4", *extra, *DRY, env=env)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_device_ids_above_7_refused_on_910a(tmp_path: Path, launch) -> None:
    table = _table(tmp_path, [8, 9])
    result = launch("--rank-table", str(table), "--set", "devices.count=2", *DRY)
    assert result.returncode == 2 and "HCCL accepts device ids 0..7 on an Ascend 910A" in result.stderr
    ok = launch("--rank-table", str(table), "--set", "devices.count=2", "--set", "npu.chip=910B", *DRY)
    assert ok.returncode == 0, ok.stderr


def test_bind_cores_runs_each_rank_under_taskset(tmp_path: Path, launch) -> None:
    table = _table(tmp_path, [0, 1])
    result = launch("--rank-table", str(table), "--set", "devices.count=2", "--set", "npu.bind_cores=true", *DRY)
    assert result.returncode == 0, result.stderr
    assert "taskset -c" in result.stdout.split("[rank 0] command: ")[1].splitlines()[0]


def test_cpu_share() -> None:
    assert cpu_share(0, 2, range(8)) == [0, 1, 2, 3] and cpu_share(1, 2, range(8)) == [4, 5, 6, 7]
    assert cpu_share(3, 8, range(2)) == [1]  # fewer cores than ranks: share one


def test_npu_smi_health(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "npu-smi-absent not found: device health not checked" in check_health([0], tool="npu-smi-absent")
    tool = tmp_path / "npu-smi"
    tool.write_text(FAKE_NPU_SMI)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert check_health([0, 1, 4]) is None
    with pytest.raises(LaunchError, match=r"npu-smi reports device 5 health Alarm"):
        check_health([4, 5])
