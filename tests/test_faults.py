"""Fault injection into real runs: killed, frozen, interrupted and starved jobs lose nothing and
leave nothing running. Every test ends by checking that no process of its job survives."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest

from common.exits import EXIT_PREEMPTED
from tests.jobutil import (
    REPO,
    job_env,
    launcher_cmd,
    alive,
    job_pids,
    rank_pid,
    wait_for,
    checkpoint_arrays,
    free_port,
    popen_launcher,
    relative_difference,
    run_launcher,
    sets,
    stop,
)

SPEC = "configs/smoke.yaml"
TRAIN = dict(stages="[train]", data__train_limit=800, train__log_every=4, devices__threads=1,
             launch__grace_period_s=2, launch__collective_timeout_s=60)


def _assert_nothing_left(run: Path) -> None:
    wait_for(lambda: not job_pids(run), 10, f"every process of {run} to end")


def _checkpoint(run: Path, epoch: int) -> bool:
    return (run / "checkpoints" / f"epoch-{epoch:05d}" / "meta.json").is_file()


def test_ranks_die_with_a_sigkilled_launcher(tmp_path: Path) -> None:
    """SIGKILL cannot be forwarded; Linux's parent-death signal still takes every rank down."""
    pids = tmp_path / "pids"
    pids.mkdir()
    program = f"import os, time; open(os.path.join({str(pids)!r}, str(os.getpid())), 'w'); time.sleep(120)"
    launcher = popen_launcher(SPEC, *sets(devices__count=2, output_dir=tmp_path / "run"),
                              "--", sys.executable, "-c", program)
    try:
        wait_for(lambda: len(list(pids.iterdir())) == 2, 60, "both ranks to start")
        workers = [int(p.name) for p in pids.iterdir()]
    finally:
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
    wait_for(lambda: not any(alive(pid) for pid in workers), 10, "the ranks to die")


def _two_rank_training(run: Path, epochs: int, port: int, *extra: str) -> List[str]:
    return [*sets(**TRAIN, output_dir=run, backend="tf", devices__count=2, train__epochs=epochs,
                  launch__port=port), *extra]


def test_killed_rank_restart_resumes_and_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    port = free_port()
    whole = tmp_path / "whole"
    result = run_launcher(SPEC, *_two_rank_training(whole, 8, port), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    run = tmp_path / "killed"
    launcher = popen_launcher(SPEC, *_two_rank_training(run, 8, port, "--max-restarts", "1"))
    try:
        wait_for(lambda: _checkpoint(run, 2), 180, "the checkpoint of epoch 2")
        os.kill(rank_pid(run, 1), signal.SIGKILL)
        assert launcher.wait(timeout=300) == 0
    finally:
        stop(launcher)
    output = launcher.stdout.read()
    assert re.search(r"attempt 0 failed \(killed by SIGKILL on rank 1\); restarting all 2 workers", output), output
    assert (run / "logs/attempt_1/rank_1.log").is_file()
    assert "resumed from" in (run / "logs/attempt_1/rank_0.log").read_text()
    a, b = checkpoint_arrays(whole), checkpoint_arrays(run)
    assert max(relative_difference(a[k], b[k]) for k in a) < 1e-6
    _assert_nothing_left(run)


def test_killed_rank_without_restarts_fails_cleanly(tmp_path: Path) -> None:
    run = tmp_path / "run"
    launcher = popen_launcher(SPEC, *_two_rank_training(run, 200, free_port()))
    try:
        log = run / "logs/attempt_0/rank_1.log"
        wait_for(lambda: log.is_file() and "step " in log.read_text(), 180, "rank 1 to train")
        os.kill(rank_pid(run, 1), signal.SIGKILL)
        code = launcher.wait(timeout=60)
    finally:
        stop(launcher)
    output = launcher.stdout.read()
    assert code == 1
    assert "root cause" in output and re.search(r"rank:\s+1\b", output) and "SIGKILL" in output, output
    assert json.loads((run / "logs/attempt_0/error_rank_1.json").read_text())["signal_name"] == "SIGKILL"
    _assert_nothing_left(run)


def test_half_written_checkpoint_is_never_loaded(tmp_path: Path) -> None:
    """What a crash between writing and renaming leaves: a temporary folder (and, in the worst
    case, a final-looking folder without meta.json). The rerun resumes from the last good one."""
    run = tmp_path / "run"
    args = sets(**dict(TRAIN, devices__threads=0), output_dir=run)
    assert run_launcher(SPEC, *args, "--set", "train.epochs=2").returncode == 0
    partial = run / "checkpoints" / ".tmp-epoch-00002-12345"
    shutil.copytree(run / "checkpoints" / "epoch-00001", partial)
    (partial / "meta.json").unlink()
    (partial / "ckpt.index").write_bytes(b"\0" * 10)  # torn file
    torn = run / "checkpoints" / "epoch-00002"
    torn.mkdir()
    (torn / "ckpt.index").write_bytes(b"garbage")
    result = run_launcher(SPEC, *args, "--set", "train.epochs=3")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "resumed from" in result.stdout and "epoch-00001" in result.stdout
    assert "epoch 2 done" in result.stdout
    assert (run / "checkpoints" / "epoch-00002" / "meta.json").is_file()  # rewritten, complete


def test_frozen_rank_is_named_by_the_heartbeat(tmp_path: Path) -> None:
    """A rank that stops without dying (SIGSTOP): its peer waits in a collective, still beating;
    the frozen one stops beating and is named after launch.stall_timeout_s."""
    run = tmp_path / "run"
    launcher = popen_launcher(SPEC, *_two_rank_training(run, 500, free_port()),
                              "--set", "launch.stall_timeout_s=6")
    try:
        log = run / "logs/attempt_0/rank_1.log"
        wait_for(lambda: log.is_file() and "step " in log.read_text(), 180, "rank 1 to train")
        frozen = rank_pid(run, 1)
        os.kill(frozen, signal.SIGSTOP)
        code = launcher.wait(timeout=60)
    finally:
        stop(launcher)
    output = launcher.stdout.read()
    assert code == 1
    assert re.search(r"rank:\s+1\b", output) and "made no progress for 6 s (no output, no heartbeat)" in output
    _assert_nothing_left(run)


@pytest.mark.parametrize("stage", ["train", "recover"])
def test_ctrl_c_stops_everything_and_the_rerun_completes(tmp_path: Path, stage: str) -> None:
    run = tmp_path / "run"
    args = sets(**dict(TRAIN, stages="[train,recover]"), output_dir=run, backend="tf", devices__count=2,
                train__epochs=6, recovery__images=16, recovery__batch_size=4, recovery__m="[25]",
                recovery__methods="[vae_reg]", recovery__restarts=2, recovery__iters=300, launch__port=free_port())
    launcher = popen_launcher(SPEC, *args)
    try:
        if stage == "train":
            wait_for(lambda: _checkpoint(run, 1), 180, "a first checkpoint")
        else:
            wait_for(lambda: len(list((run / "recovery/units").glob("*.json"))) >= 1
                      if (run / "recovery/units").is_dir() else False, 240, "a first recovery unit")
        launcher.send_signal(signal.SIGINT)
        code = launcher.wait(timeout=30)
    finally:
        stop(launcher)
    assert code == 128 + signal.SIGINT
    _assert_nothing_left(run)
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept, "finished checkpoints were lost"
    rerun = run_launcher(SPEC, *args, timeout=400)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert "resumed from" in rerun.stdout
    if stage == "recover":
        assert "units already done" in rerun.stdout
    assert (run / "report.json").is_file()


PREEMPT = dict(stages="[train]", data__train_limit=4000, train__epochs=1, train__batch_size=20,
               train__log_every=5, devices__threads=1, launch__grace_period_s=20, launch__collective_timeout_s=60)


# (backend horovod passes too, in 92 s on this machine: left out to keep `make test` under 15 minutes;
# the stop logic is the engines' all-reduce, which tests/test_distributed.py covers for both.)
@pytest.mark.parametrize("ranks, backend", [(1, "local"), (2, "tf")], ids=["1-rank", "2-ranks-tf"])
def test_sigterm_mid_epoch_checkpoints_and_the_rerun_equals_an_uninterrupted_run(tmp_path: Path, ranks: int,
                                                                                 backend: str) -> None:
    """A Volcano eviction as the launcher sees it: SIGTERM mid-epoch (one epoch of 200 / 100 steps).
    Every rank finishes its step, rank 0 writes a mid-epoch checkpoint, the launcher exits 75 within
    the grace period naming step and checkpoint; the rerun resumes there and its final weights equal
    an uninterrupted run's bit for bit. 1 rank is single-card mode (the launcher is the rank)."""
    port = free_port()

    def args(run: Path) -> List[str]:
        extra = dict(backend=backend, launch__port=port) if ranks > 1 else {}
        return sets(**PREEMPT, **extra, output_dir=run, devices__count=ranks)

    whole = tmp_path / "whole"
    result = run_launcher(SPEC, *args(whole), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    run = tmp_path / "stopped"
    console = tmp_path / "console.txt"
    with console.open("w") as out:  # a file, not a pipe: read while the launcher runs
        launcher = subprocess.Popen(launcher_cmd(SPEC, *args(run)), cwd=REPO, env=job_env(), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "step 10," in console.read_text(), 240, "rank 0 to train 10 steps")
        began = time.monotonic()
        launcher.send_signal(signal.SIGTERM)
        code = launcher.wait(timeout=60)
        took = time.monotonic() - began
    finally:
        stop(launcher)
    output = console.read_text()
    assert code == EXIT_PREEMPTED, output[-3000:]
    assert took < PREEMPT["launch__grace_period_s"], f"{took:.1f} s"
    match = re.search(r"launcher: preempted \(SIGTERM\): .*training stopped after step (\d+) \(epoch 0, (\d+) of "
                      r"(\d+) steps\); checkpoint (\S+)\. Run the same command again", output)
    assert match, output[-3000:]
    step, done, per_epoch, saved = int(match[1]), int(match[2]), int(match[3]), Path(match[4])
    assert 0 < done < per_epoch == 200 // ranks and step == done
    assert saved.name == f"epoch-00000-step-{step:09d}" and (saved / "meta.json").is_file()
    _assert_nothing_left(run)
    rerun = run_launcher(SPEC, *args(run), timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-2000:]
    assert f"inside epoch 0 after {step * 20 * ranks} of its examples" in rerun.stdout + rerun.stderr
    a, b = checkpoint_arrays(whole), checkpoint_arrays(run)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), \
        [k for k in a if not np.array_equal(a[k], b[k])]


def _mount_tmpfs(mount: Path, options: str) -> None:
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.decode().strip()})")


@pytest.fixture()
def tiny_disk(tmp_path: Path):
    mount = tmp_path / "disk"
    _mount_tmpfs(mount, "size=3m")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture()
def read_only_disk(tmp_path: Path):
    mount = tmp_path / "ro"
    _mount_tmpfs(mount, "size=1m,ro")  # read-only even for root, unlike chmod
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_read_only_output_gives_a_clear_error(read_only_disk: Path) -> None:
    result = run_launcher(SPEC, *sets(**dict(TRAIN, devices__threads=0), output_dir=read_only_disk / "run",
                                      train__epochs=1))
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr and "output_dir is writable" in result.stderr
    assert "Traceback" not in result.stderr


def test_full_disk_gives_a_clear_error_and_no_corrupt_file(tiny_disk: Path) -> None:
    """Checkpoints (about 15 MB with Adam's moments) cannot fit in 3 MB."""
    run = tiny_disk / "run"
    result = run_launcher(SPEC, *sets(**dict(TRAIN, devices__threads=0), output_dir=run, train__epochs=2))
    assert result.returncode != 0
    assert "No space left on device" in result.stderr and "output_dir" in result.stderr
    assert "Traceback" not in result.stderr
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith("epoch-")]
    assert not list(run.rglob("*.tmp"))
