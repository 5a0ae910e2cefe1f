"""The launcher's command line as a user runs it: ``python -m launcher SPEC [options] [-- COMMAND]``.

Every test runs the real launcher in a subprocess. Nothing trains: multi-rank runs use the
``-- COMMAND`` mode with the tiny programs in tests/workers/cli_*.py, and the rest ``--dry-run``.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest
import yaml

import rank_table
from launcher.slots import this_host_names

REPO = Path(__file__).resolve().parent.parent
WORKERS = REPO / "tests" / "workers"
ECHO = [sys.executable, str(WORKERS / "cli_echo.py")]
FAIL = [sys.executable, str(WORKERS / "cli_fail.py")]
FLAKY = [sys.executable, str(WORKERS / "cli_flaky.py")]
TIMEOUT_S = 30.0

# Inherited variables that would change what the launcher does; each test sets what it needs.
_DROP = ("XDL_IP", "POD_NAME", "RANK_ID", "RANK_SIZE", "DEVICE_ID", "ASCEND_DEVICE_ID", "JOB_ID", "TF_CONFIG",
         "RANK_TABLE_FILE", "LOCAL_RANK", "CUDA_VISIBLE_DEVICES")


def _env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in _DROP and not k.startswith(("CM_", "HOROVOD_", "PYTEST_"))}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(extra)
    return env


def launch(*args: str, command: Sequence[str] = (), env: Optional[Dict[str, str]] = None,
           timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "launcher", *args]
    if command:
        argv += ["--", *command]
    return subprocess.run(argv, cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=timeout)


def start(*args: str, command: Sequence[str] = (), env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "launcher", *args]
    if command:
        argv += ["--", *command]
    return subprocess.Popen(argv, cwd=REPO, env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def rank_lines(stdout: str) -> Dict[int, List[str]]:
    """Console lines per rank: '[rank 2] RANK_ID=2' -> {2: ['RANK_ID=2', ...]}."""
    out: Dict[int, List[str]] = {}
    for match in re.finditer(r"^\[rank (\d+)\] (.*)$", stdout, re.M):
        out.setdefault(int(match.group(1)), []).append(match.group(2))
    return out


def echoed(lines: Sequence[str]) -> Dict[str, str]:
    return dict(line.split("=", 1) for line in lines if "=" in line)


def dry_run_env(stdout: str) -> Dict[int, Dict[str, str]]:
    """The '[rank r]   KEY=value' lines of a dry run, per rank."""
    out: Dict[int, Dict[str, str]] = {}
    for match in re.finditer(r"^\[rank (\d+)\]   ([A-Z_0-9]+)=(.*)$", stdout, re.M):
        out.setdefault(int(match.group(1)), {})[match.group(2)] = match.group(3)
    return out


def read_pids(pid_dir: Path, count: int, timeout: float = 15.0) -> List[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = sorted(pid_dir.glob("*.pid"))
        if len(files) >= count:
            return [int(f.read_text()) for f in files]
        time.sleep(0.05)
    raise AssertionError(f"only {len(list(pid_dir.glob('*.pid')))} of {count} workers wrote their pid")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_leftovers(pid_dir: Path) -> None:
    """Test clean-up only: SIGKILL workers this test started, if the launcher left any."""
    for f in pid_dir.glob("*.pid"):
        try:
            os.kill(int(f.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# --- dry runs -------------------------------------------------------------------------------------

NPU_KEYS = ("RANK_ID", "RANK_SIZE", "DEVICE_ID", "ASCEND_DEVICE_ID", "JOB_ID", "HCCL_CONNECT_TIMEOUT",
            "HCCL_EXEC_TIMEOUT", "RANK_TABLE_FILE")


def check_8p_dry_run(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    # the data lives on the Ascend server, not here: a warning, not an error
    assert result.stderr.startswith("warning: data.path: /datasets/mnist is not a folder"), result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "POD_NAME" not in result.stdout and "CM_CHIEF_IP" not in result.stdout
    assert (f"# server 10.0.0.1: ranks 0..7 of 8 (1 server(s)); rank table {REPO / 'configs/rank_table_8p.json'}"
            in result.stdout)
    envs = dry_run_env(result.stdout)
    assert sorted(envs) == list(range(8))
    table = str((REPO / "configs" / "rank_table_8p.json").resolve())
    for rank, env in envs.items():
        assert set(NPU_KEYS) <= set(env), env
        assert env["RANK_ID"] == str(rank)
        assert env["DEVICE_ID"] == str(rank) and env["ASCEND_DEVICE_ID"] == str(rank)
        assert env["RANK_SIZE"] == "8"
        assert env["JOB_ID"] == "mnist-8p"
        assert env["HCCL_CONNECT_TIMEOUT"] == "600" and env["HCCL_EXEC_TIMEOUT"] == "1800"
        assert env["RANK_TABLE_FILE"] == table
    commands = re.findall(r"^\[rank (\d+)\] command: (.*)$", result.stdout, re.M)
    assert [int(r) for r, _ in commands] == list(range(8))
    assert all(c.endswith("-m job.worker") for _, c in commands)
    # the resolved spec comes first and is YAML
    spec = yaml.safe_load(result.stdout.split("\n# ", 1)[0])
    assert spec["name"] == "mnist-8p" and spec["devices"] == {"type": "npu", "count": 8, "threads": 0}


def test_dry_run_8p_with_server_id(tmp_path: Path) -> None:
    runs = REPO / "runs" / "mnist-8p"
    existed = runs.exists()
    result = launch("configs/mnist_8p.yaml", "--server-id", "10.0.0.1", "--dry-run",
                    env=_env(POD_NAME="csgm-worker-0"))
    check_8p_dry_run(result)
    if not existed:
        assert not runs.exists(), "a dry run created the run folder"
    # the same with a run folder of our own: nothing at all is created
    out = tmp_path / "run"
    result = launch("configs/mnist_8p.yaml", "--server-id", "10.0.0.1", "--dry-run", "--set", f"output_dir={out}")
    assert result.returncode == 0, result.stderr
    assert not out.exists()


def _idx_folder(tmp_path: Path) -> Path:
    """The four files data.source idx needs, headers only (a dry run reads only the headers: MNIST's counts)."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for prefix, count in (("train", 60000), ("t10k", 10000)):
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(
            (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (count, 28, 28))))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(
            (0x801).to_bytes(4, "big") + count.to_bytes(4, "big")))
    return folder


def test_dry_run_8p_with_xdl_ip_checks_the_data_here(tmp_path: Path) -> None:
    """XDL_IP says this host is the server: its data must be here."""
    env = _env(XDL_IP="10.0.0.1", POD_NAME="csgm-worker-0")
    missing = launch("configs/mnist_8p.yaml", "--dry-run", env=env)
    assert_one_line_error(missing, "data.path: /datasets/mnist is not a folder", "README.md")
    result = launch("configs/mnist_8p.yaml", "--dry-run", "--set", f"data.path={_idx_folder(tmp_path)}", env=env)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert f"# data: {tmp_path / 'mnist'} (four IDX files)" in result.stdout
    check_8p_dry_run(launch("configs/mnist_8p.yaml", "--dry-run", "--server-id", "10.0.0.1"))


def test_dry_run_8p_from_another_host_shows_every_server() -> None:
    if "10.0.0.1" in this_host_names():
        pytest.skip("this host really is 10.0.0.1")
    result = launch("configs/mnist_8p.yaml", "--dry-run")
    check_8p_dry_run(result)
    assert "# this host is not one of the rank table's servers (cannot tell which server" in result.stdout
    loopback = launch("configs/cpu_2p_tf.yaml", "--dry-run", "--rank-table", "configs/rank_table_2x2_loopback.json")
    assert loopback.returncode == 0, loopback.stderr
    assert "# server 127.0.0.2: ranks 0..1 of 4 (2 server(s))" in loopback.stdout
    assert "# server 127.0.0.3: ranks 2..3 of 4 (2 server(s))" in loopback.stdout
    assert sorted(dry_run_env(loopback.stdout)) == [0, 1, 2, 3]


def test_dry_run_unknown_server_id() -> None:
    result = launch("configs/mnist_8p.yaml", "--server-id", "10.0.0.7", "--dry-run")
    assert_one_line_error(result, "rank_table_8p.json", "--server-id '10.0.0.7'", "10.0.0.1")


def test_dry_run_single_card() -> None:
    result = launch("configs/mnist_1p.yaml", "--dry-run")
    assert result.returncode == 0, result.stderr
    body, _, plan = result.stdout.partition("\n# ")
    spec = yaml.safe_load(body)
    assert spec["name"] == "mnist-1p" and spec["devices"]["count"] == 1 and spec["backend"] == "local"
    plan_lines = ("# " + plan).splitlines()
    assert all(line.startswith("# ") for line in plan_lines)
    assert any("single-card mode" in line for line in plan_lines)
    assert plan_lines[0].startswith("# job mnist-1p: stages train, recover")
    assert "[rank" not in result.stdout


# --- running COMMAND on every rank ----------------------------------------------------------------

def test_cpu_ranks_without_rank_table(tmp_path: Path) -> None:
    """torchrun's spelling: -np for the ranks, --output-dir, and its variables for COMMAND."""
    names = ["RANK_ID", "RANK_SIZE", "LOCAL_RANK", "CUDA_VISIBLE_DEVICES", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
             "MASTER_ADDR", "MASTER_PORT"]
    result = launch("configs/smoke.yaml", "-np", "3", "--output-dir", str(tmp_path), "--set", "launch.port=29871",
                    command=[*ECHO, *names])
    assert result.returncode == 0, result.stdout + result.stderr
    lines = rank_lines(result.stdout)
    assert sorted(lines) == [0, 1, 2]
    for rank in range(3):
        values = echoed(lines[rank])
        expected = {"RANK_ID": str(rank), "RANK_SIZE": "3", "LOCAL_RANK": str(rank), "CUDA_VISIBLE_DEVICES": "",
                    "RANK": str(rank), "WORLD_SIZE": "3", "LOCAL_WORLD_SIZE": "3", "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": "29871"}
        assert values == expected
        log = tmp_path / "logs" / "attempt_0" / f"rank_{rank}.log"
        assert log.read_text().splitlines() == [f"{k}={v}" for k, v in expected.items()] + ["echo done"]
    assert "launcher: all workers finished successfully (1 attempt" in result.stdout
    table = rank_table.load(tmp_path / "rank_table.json")
    assert table.world_size == 3 and table.server_ids == ("127.0.0.1",)
    assert yaml.safe_load((tmp_path / "spec.yaml").read_text())["devices"]["count"] == 3


def test_npu_ranks_see_their_environment_only(tmp_path: Path) -> None:
    """The 8-NPU spec with COMMAND instead of training: what the ranks really get, with a launcher
    environment polluted the way a pod's can be."""
    names = ["RANK_ID", "RANK_SIZE", "DEVICE_ID", "ASCEND_DEVICE_ID", "JOB_ID", "POD_NAME", "CM_CHIEF_IP",
             "TF_CONFIG", "HOROVOD_RANK", "HCCL_CONNECT_TIMEOUT"]
    # (A CM_* variable beside the table is refused, not scrubbed: tests/test_npu_emulated.py.)
    env = _env(POD_NAME="csgm-worker-0", TF_CONFIG="{}", HOROVOD_RANK="5", RANK_ID="42", DEVICE_ID="42")
    result = launch("configs/mnist_8p.yaml", "--server-id", "10.0.0.1", "--set", f"output_dir={tmp_path}",
                    command=[*ECHO, *names], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = rank_lines(result.stdout)
    assert sorted(lines) == list(range(8))
    for rank in range(8):
        assert echoed(lines[rank]) == {
            "RANK_ID": str(rank), "RANK_SIZE": "8", "DEVICE_ID": str(rank), "ASCEND_DEVICE_ID": str(rank),
            "JOB_ID": "mnist-8p", "POD_NAME": "<unset>", "CM_CHIEF_IP": "<unset>", "TF_CONFIG": "<unset>",
            "HOROVOD_RANK": "<unset>", "HCCL_CONNECT_TIMEOUT": "600"}


def test_two_servers_on_loopback(tmp_path: Path) -> None:
    common = ("configs/smoke.yaml", "--rank-table", "configs/rank_table_2x2_loopback.json",
              "--set", "devices.count=2", "--set", f"output_dir={tmp_path}")
    command = [*ECHO, "RANK_ID", "RANK_SIZE", "CROSS_RANK", "LOCAL_RANK"]
    a = start(*common, "--server-id", "127.0.0.2", command=command)
    b = start(*common, "--server-id", "127.0.0.3", command=command)
    try:
        out_a, err_a = a.communicate(timeout=TIMEOUT_S)
        out_b, err_b = b.communicate(timeout=TIMEOUT_S)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert a.returncode == 0, out_a + err_a
    assert b.returncode == 0, out_b + err_b
    lines_a, lines_b = rank_lines(out_a), rank_lines(out_b)
    assert sorted(lines_a) == [0, 1] and sorted(lines_b) == [2, 3]
    for lines, cross in ((lines_a, "0"), (lines_b, "1")):
        for rank, rank_out in lines.items():
            assert echoed(rank_out) == {"RANK_ID": str(rank), "RANK_SIZE": "4", "CROSS_RANK": cross,
                                        "LOCAL_RANK": str(rank % 2)}
    assert sorted(p.name for p in (tmp_path / "logs" / "attempt_0").glob("rank_*.log")) == [
        f"rank_{r}.log" for r in range(4)]


def test_one_failing_rank_stops_the_others(tmp_path: Path) -> None:
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    out = tmp_path / "run"
    began = time.monotonic()
    try:
        result = launch("configs/smoke.yaml", "--set", "devices.count=3", "--set", f"output_dir={out}",
                        "--set", "launch.grace_period_s=2", command=[*FAIL, str(pid_dir), "1", "3"])
    finally:
        kill_leftovers(pid_dir)
    elapsed = time.monotonic() - began
    assert result.returncode == 1, result.stdout + result.stderr
    assert elapsed < 10, f"the launcher took {elapsed:.1f} s to give up"
    log = out / "logs" / "attempt_0" / "rank_1.log"
    assert re.search(r"^  rank:\s+1$", result.stderr, re.M), result.stderr
    assert re.search(r"^  exit code:\s+3$", result.stderr, re.M), result.stderr
    assert re.search(rf"^  log:\s+{re.escape(str(log))}$", result.stderr, re.M), result.stderr
    assert "launcher: job FAILED after 1 attempt" in result.stderr
    assert "rank 1 failing on purpose with code 3" in log.read_text()
    error = json.loads((out / "logs" / "attempt_0" / "error_rank_1.json").read_text())
    assert error["rank"] == 1 and error["exitcode"] == 3
    pids = [int(f.read_text()) for f in pid_dir.glob("*.pid")]
    assert len(pids) == 3
    assert not [p for p in pids if alive(p)]


def test_max_restarts_recovers_from_a_first_failure(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    marker.mkdir()
    out = tmp_path / "run"
    result = launch("configs/smoke.yaml", "--set", "devices.count=2", "--set", f"output_dir={out}",
                    "--max-restarts", "1", command=[*FLAKY, str(marker)])
    assert result.returncode == 0, result.stdout + result.stderr
    attempts = sorted(p.name for p in (out / "logs").iterdir())
    assert attempts == ["attempt_0", "attempt_1"]
    assert re.search(r"^launcher: attempt 0 failed \(exited with code 4 on rank 0\); restarting all 2 workers "
                     r"\(attempt 1 of 2\)$", result.stdout, re.M), result.stdout
    assert "first attempt, failing" in (out / "logs" / "attempt_0" / "rank_0.log").read_text()
    assert "rank 0: ok" in (out / "logs" / "attempt_1" / "rank_0.log").read_text()
    assert "launcher: all workers finished successfully (2 attempts" in result.stdout


def test_console_ranks_filter(tmp_path: Path) -> None:
    result = launch("configs/smoke.yaml", "--set", "devices.count=2", "--set", f"output_dir={tmp_path}",
                    "--console-ranks", "1", command=ECHO)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = rank_lines(result.stdout)
    assert sorted(lines) == [1]
    assert lines[1] == ["RANK_ID=1", "RANK_SIZE=2", "LOCAL_RANK=1", "echo done"]
    for rank in (0, 1):
        log = tmp_path / "logs" / "attempt_0" / f"rank_{rank}.log"
        assert log.read_text().splitlines() == [f"RANK_ID={rank}", "RANK_SIZE=2", f"LOCAL_RANK={rank}", "echo done"]


def test_console_ranks_on_other_servers_are_named(tmp_path: Path) -> None:
    result = launch("configs/smoke.yaml", "--set", "devices.count=2", "--set", f"output_dir={tmp_path}",
                    "--console-ranks", "1,5", command=ECHO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--console-ranks: rank(s) 5 run on other servers; this server has ranks 0,1" in result.stderr + result.stdout
    assert sorted(rank_lines(result.stdout)) == [1]


def test_ctrl_c_stops_every_rank(tmp_path: Path) -> None:
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    grace = 2.0
    launcher = start("configs/smoke.yaml", "--set", "devices.count=2", "--set", f"output_dir={tmp_path / 'run'}",
                     "--set", f"launch.grace_period_s={grace}", command=[*FAIL, str(pid_dir), "-1"])
    try:
        pids = read_pids(pid_dir, 2)
        assert all(alive(p) for p in pids)
        sent = time.monotonic()
        os.kill(launcher.pid, signal.SIGINT)
        out, err = launcher.communicate(timeout=grace + 10)
        took = time.monotonic() - sent
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        kill_leftovers(pid_dir)
    assert launcher.returncode == 128 + signal.SIGINT, out + err
    assert took < grace + 3, f"{took:.1f} s to stop after SIGINT"
    assert "interrupted by signal 2" in err
    assert "Traceback" not in err
    assert not [p for p in pids if alive(p)]


# --- bad input: exit 2, one line 'error: ...', no traceback -----------------------------------------

def test_unknown_spec_key(tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("name: t\ntrain:\n  epochs: 1\n  epoch: 2\n")
    assert_one_line_error(launch(str(spec), "--dry-run"), "job.yaml", "train.epoch", "unknown key",
                          "Did you mean 'epochs'?")


def test_set_unknown_key() -> None:
    assert_one_line_error(launch("configs/smoke.yaml", "--set", "train.epoch=2", "--dry-run"),
                          "--set", "train.epoch", "unknown key")


def test_missing_spec_file() -> None:
    assert_one_line_error(launch("configs/nope.yaml", "--dry-run"), "configs/nope.yaml", "file not found")


def test_rank_table_not_json(tmp_path: Path) -> None:
    table = tmp_path / "hccl.json"
    table.write_text("{this is not json")
    result = launch("configs/smoke.yaml", "--rank-table", str(table), "--set", "devices.count=2",
                    "--set", "launch.rank_table_timeout_s=0", "--set", f"output_dir={tmp_path / 'run'}",
                    "--dry-run", command=ECHO)
    assert_one_line_error(result, str(table), "not valid JSON")


def test_rank_table_with_more_devices_than_devices_count(tmp_path: Path) -> None:
    table = tmp_path / "hccl.json"
    rank_table.write(rank_table.local_table(4), table)
    result = launch("configs/smoke.yaml", "--rank-table", str(table), "--set", "devices.count=2",
                    "--server-id", "127.0.0.1", "--set", f"output_dir={tmp_path / 'run'}", command=ECHO)
    assert_one_line_error(result, str(table), "devices.count=2", "lists 4 device(s)", "'127.0.0.1'",
                          "set devices.count=4")
    assert not (tmp_path / "run" / "logs").exists()


def test_backend_local_with_two_ranks_needs_a_collective_backend(tmp_path: Path) -> None:
    result = launch("configs/smoke.yaml", "--set", "devices.count=2", "--set", f"output_dir={tmp_path}")
    assert_one_line_error(result, "backend: local", "2 ranks", "tf", "horovod", "hccl")
    assert not (tmp_path / "logs").exists()


def test_backend_local_with_two_ranks_is_fine_for_recovery_only(tmp_path: Path) -> None:
    result = launch("configs/smoke.yaml", "--set", "devices.count=2", "--set", "stages=[recover]",
                    "--set", f"output_dir={tmp_path}", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert sorted(dry_run_env(result.stdout)) == [0, 1]
    assert not (tmp_path / "logs").exists()


def test_npu_without_rank_table(tmp_path: Path) -> None:
    result = launch("configs/smoke.yaml", "--set", "devices.type=npu", "--set", "devices.count=2",
                    "--set", f"output_dir={tmp_path}", command=ECHO)
    assert_one_line_error(result, "devices.type npu", "rank table", "--rank-table")
    assert not (tmp_path / "logs").exists()


def test_console_ranks_not_numbers(tmp_path: Path) -> None:
    result = launch("configs/smoke.yaml", "--set", "devices.count=2", "--set", f"output_dir={tmp_path}",
                    "--console-ranks", "x", command=ECHO)
    assert_one_line_error(result, "--console-ranks 'x'")
    assert not (tmp_path / "logs").exists()


def test_horovod_with_a_server_id_this_host_does_not_carry(tmp_path: Path) -> None:
    table = tmp_path / "hccl.json"
    rank_table.write(rank_table.local_table(2, first_ip="10.255.0.1"), table)
    result = launch("configs/cpu_2p_horovod.yaml", "--rank-table", str(table), "--server-id", "10.255.0.1",
                    "--set", f"output_dir={tmp_path / 'run'}", "--dry-run")
    assert_one_line_error(result, "10.255.0.1", "--server-id")
