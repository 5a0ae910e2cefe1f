"""Helpers for tests that run the real launcher and real TensorFlow ranks as subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def job_env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def sets(**values: object) -> List[str]:
    """--set arguments from keyword arguments: sets(train__epochs=2) -> ['--set', 'train.epochs=2']."""
    out: List[str] = []
    for key, value in values.items():
        out += ["--set", f"{key.replace('__', '.')}={value}"]
    return out


def launcher_cmd(spec: str, *args: str) -> List[str]:
    return [sys.executable, "-m", "launcher", spec, *args]


def run_launcher(spec: str, *args: str, timeout: float = 600, env: Optional[Dict[str, str]] = None
                 ) -> subprocess.CompletedProcess:
    return subprocess.run(launcher_cmd(spec, *args), cwd=REPO, env=env or job_env(), text=True,
                          capture_output=True, timeout=timeout)


def popen_launcher(spec: str, *args: str, env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    return subprocess.Popen(launcher_cmd(spec, *args), cwd=REPO, env=env or job_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def free_port(span: int = 8) -> int:
    """A base port with ``span`` free ports after it (the tf backend uses port + local rank)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + span < 65000 and all(_free(base + i) for i in range(span)):
            return base
    raise RuntimeError("no free port range")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("", port))
            return True
        except OSError:
            return False


def latest_checkpoint(run_dir: Path) -> Path:
    from csgm.resume import complete_checkpoints

    found = complete_checkpoints(run_dir / "checkpoints")
    assert found, f"no checkpoint in {run_dir}"
    return found[-1] / "ckpt"


def checkpoint_arrays(run_dir: Path, contains: Sequence[str] = ("model", "optimizer")) -> Dict[str, np.ndarray]:
    """Every saved tensor of the latest checkpoint whose name has one of ``contains``."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(latest_checkpoint(run_dir)))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if any(c in name for c in contains) and "OPTIMIZER_SLOT" not in name}


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / max(np.linalg.norm(b.astype(np.float64)), 1e-30))


def stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """Stop a launcher started with popen_launcher as a user would: SIGTERM (it stops its ranks),
    then SIGKILL of its group if it does not exit in time."""
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def alive(pid: int) -> bool:
    """Running and not a zombie (this sandbox's init reaps orphans slowly)."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def job_pids(run: Path) -> List[int]:
    """Every live process whose environment names this run's spec (its ranks)."""
    marker = f"CSGM_SPEC_FILE={run / 'spec.yaml'}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0") and alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def rank_pid(run: Path, rank: int) -> int:
    marker = f"RANK_ID={rank}".encode()
    for pid in job_pids(run):
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                return pid
        except OSError:
            continue
    raise LookupError(f"rank {rank} is not running")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
