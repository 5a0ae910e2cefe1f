"""The TF 1.15 graph path (npu.adapter npu_bridge) against the EMULATED npu_bridge (tests/emulated_npu),
which runs tf.compat.v1 sessions on TF 2 and enforces the adapter's documented contract
(tests/emulated_npu/npu_bridge/__init__.py says which rules, from which sources).

- the real launcher and worker on 1 and 2 emulated ranks, mixed precision with injected overflows:
  both ranks skip the same steps and 2 ranks with batch b end where 1 rank with batch 2b ends;
- one checkpoint format: a generator trained in a session is recovered by the TF2 CPU path with the
  same rows, and one trained by the TF2 path is recovered in a session with the same rows;
- a resumed graph run ends with the weights of an uninterrupted one;
- the project's session config passes the adapter's checks, and what the emulation refuses (no
  NpuOptimizer, remapping on, a "mean" all-reduce, HCCL queried before initialize_system) is refused.
  The 2-rank test fails too if the project drops NpuOptimizer, all-reduces with "mean" or stops
  exporting JOB_ID.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

from common.exits import EXIT_PREEMPTED
from csgm.ascend import resolve_adapter
from tests.jobutil import (REPO, checkpoint_arrays, free_port, job_env, launcher_cmd, relative_difference,
                           run_launcher, sets, stop, wait_for)
from tests.test_npu_emulated import EMULATION, SMALL, SPEC, _table

BRIDGE = ("--set", "npu.adapter=npu_bridge")


@pytest.mark.parametrize("choice, version, expected", [
    ("auto", "1.15.5", "npu_bridge"),
    ("auto", "2.6.5", "npu_device"),
    ("auto", None, "npu_device"),
    ("npu_bridge", "1.15.0", "npu_bridge"),
    ("npu_device", "2.18.1", "npu_device"),
    ("npu_bridge", "2.6.5", None),
    ("npu_device", "1.15.5", None),
    ("npu_bridge", None, "npu_bridge"),
])
def test_adapter_choice_follows_the_installed_tensorflow(choice: str, version: str, expected: str) -> None:
    adapter, why = resolve_adapter(choice, version)
    assert adapter == expected
    if expected is None:
        assert "Set npu.adapter auto" in why and version in why


def _run(tmp_path: Path, name: str, devices: List[int], batch: int, precision: str, *extra: str,
         **env: str) -> Tuple[Path, str]:
    table = tmp_path / f"{name}.json"
    table.write_text(json.dumps(_table(devices)))
    out = tmp_path / name
    args = sets(**dict(SMALL, output_dir=out, devices__count=len(devices), train__batch_size=batch,
                       train__precision=precision, recovery__precision=precision))
    result = run_launcher(SPEC, *args, *BRIDGE, *extra, "--rank-table", str(table), "--server-id", "127.0.0.1",
                          timeout=400, env=job_env(PYTHONPATH=f"{EMULATION}:{REPO}",
                                                   EMULATED_HCCL_PORT=str(free_port()), **env))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    logs = "".join(p.read_text() for p in sorted((out / "logs").glob("attempt_*/rank_*.log")))
    return out, logs


OVERFLOW = dict(EMULATED_NPU_OVERFLOW_AT="2,3")  # the 2nd and 3rd reads of the float status register


def test_two_graph_ranks_equal_one_rank_through_injected_overflows(tmp_path: Path) -> None:
    one_out, one_logs = _run(tmp_path, "one", [3], 48, "mixed", **OVERFLOW)
    assert "EMULATED NPU (npu_bridge): device 3 on chip 910A, rank 0 of 1" in one_logs
    two_out, two_logs = _run(tmp_path, "two", [7, 6], 24, "mixed", ASCEND_VISIBLE_DEVICES="6,7",
                             EMULATED_NPU_OVERFLOW_RANKS="1", **OVERFLOW)
    assert "device 7 on chip 910A, rank 0 of 2" in two_logs and "device 6 on chip 910A, rank 1 of 2" in two_logs
    assert "'precision_mode': b'allow_mix_precision'" in two_logs and "'use_off_line': True" in two_logs
    skipped = "loss scale: 2 overflowing step(s) skipped so far; scale now 8192"
    assert one_logs.count(skipped) == 1 and two_logs.count(skipped) == 2  # on both ranks
    one, two = checkpoint_arrays(one_out), checkpoint_arrays(two_out)
    assert one.keys() == two.keys() and len(one) == 14 * 3 + 1  # weights, Adam's m and v, its step
    assert all(np.isfinite(a).all() for a in two.values())
    assert max(relative_difference(two[k], one[k]) for k in two) < 1e-5


def test_two_graph_ranks_recover_the_rows_one_rank_recovers(tmp_path: Path) -> None:
    """End to end on the graph path (train, recover, report), then the same generator recovered by 2
    ranks, each its own share of the units: the rows equal the 1-rank run's."""
    short = RECOVERY[:-2] + ("--set", "recovery.iters=100")
    one, _ = _run(tmp_path, "one", [0], 32, "mixed", *short, "--set", "stages=[train,recover]")
    assert "# CSGM report" in (one / "report.md").read_text()
    two = tmp_path / "two"
    two.mkdir()
    subprocess.run(["cp", "-r", str(one / "checkpoints"), str(one / "best"), str(one / ".csgm-run"), str(two)],
                   check=True)
    two, logs = _run(tmp_path, "two", [0, 1], 32, "mixed", *short, "--set", "stages=[recover]",
                     "--set", f"name={json.loads((one / '.csgm-run').read_text())['job']}")
    assert "rank 1 of 2" in logs
    rows_one, rows_two = _unit_rows(one), _unit_rows(two)
    assert len(rows_one) == 6 and rows_two == rows_one


def _unit_rows(run_dir: Path) -> Dict[str, list]:
    return {p.name: json.loads(p.read_text())["rows"] for p in (run_dir / "recovery" / "units").glob("*.json")}


# Enough units for the comparison (3 methods x 2 m), few enough for a test: 2 images, 2 restarts,
# 300 steps (Sparse-Gen moves z and nu from the first step when there are at most 800).
RECOVERY = ("--set", "recovery.methods=[vae,vae_reg,sparse_gen]", "--set", "recovery.measurement=[gaussian]",
            "--set", "recovery.m=[25,100]", "--set", "recovery.restarts=2", "--set", "recovery.images=2",
            "--set", "recovery.iters=300")


def _recover_on_tf2(source: Path, target: Path) -> Path:
    """The TF2 CPU path recovers with ``source``'s generator (the trained folders copied)."""
    target.mkdir()
    for name in ("checkpoints", "best", "train_metrics.json", ".csgm-run"):
        if (source / name).is_dir():
            subprocess.run(["cp", "-r", str(source / name), str(target)], check=True)
        elif (source / name).exists():
            (target / name).write_bytes((source / name).read_bytes())
    job = json.loads((source / ".csgm-run").read_text())["job"]  # the folder is that job's
    result = run_launcher("configs/mnist_1p.yaml", *sets(**dict(SMALL, stages="[recover]", output_dir=target, name=job,
                                                                recovery__precision="fp32")),
                          *RECOVERY, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return target


def _assert_same_rows(a: Dict[str, list], b: Dict[str, list]) -> None:
    """Same images and steps; CSGM's errors to 1e-6 (measured 1.8e-7 at most), Sparse-Gen's to 3e-2
    (measured up to 1.2e-2). The cause, measured: the session turns grappler's remapping off, as the
    adapter requires, so MatMul + BiasAdd are not fused and round differently at 1e-7; the same graph
    with remapping on gives TF2's results bit for bit, and Sparse-Gen's clipped nu steps amplify
    the rounding far more than CSGM's (docs/ascend.md)."""
    common = sorted(set(a) & set(b))
    assert len(common) >= 6, (sorted(a), sorted(b))
    worst = {"csgm": 0.0, "sparse_gen": 0.0}
    for unit in common:
        for x, y in zip(a[unit], b[unit]):
            assert x["image"] == y["image"] and x["steps"] == y["steps"], unit
            kind = "sparse_gen" if x["method"] == "sparse_gen" else "csgm"
            worst[kind] = max(worst[kind], abs(x["mse"] - y["mse"]) / y["mse"])
    assert worst["csgm"] < 1e-6 and worst["sparse_gen"] < 3e-2, worst


def test_one_checkpoint_format_across_stacks(tmp_path: Path) -> None:
    """Graph-trained generator -> TF2 recovery gives the graph path's rows, and the reverse."""
    graph_out, _ = _run(tmp_path, "graph", [0], 32, "fp32", *RECOVERY, "--set", "stages=[train,recover]")
    _assert_same_rows(_unit_rows(graph_out), _unit_rows(_recover_on_tf2(graph_out, tmp_path / "tf2")))

    tf2_out = tmp_path / "tf2-trained"  # trains and recovers in one run
    result = run_launcher("configs/mnist_1p.yaml", *sets(**dict(SMALL, output_dir=tf2_out, train__batch_size=32,
                                                                train__precision="fp32", name="mnist-8p",
                                                                recovery__precision="fp32")),
                          *RECOVERY, "--set", "stages=[train,recover]", timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    recovered = tmp_path / "graph-recovers"
    recovered.mkdir()
    subprocess.run(["cp", "-r", str(tf2_out / "checkpoints"), str(tf2_out / "best"), str(tf2_out / ".csgm-run"),
                    str(recovered)], check=True)
    graph_rec, logs = _run(tmp_path, "graph-recovers", [0], 32, "fp32", *RECOVERY, "--set", "stages=[recover]")
    assert "EMULATED NPU (npu_bridge)" in logs
    _assert_same_rows(_unit_rows(graph_rec), _unit_rows(tf2_out))


def test_resumed_graph_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    whole, _ = _run(tmp_path, "whole", [0], 32, "mixed", "--set", "train.epochs=2", **OVERFLOW)
    part, _ = _run(tmp_path, "part", [0], 32, "mixed", "--set", "train.epochs=1", **OVERFLOW)
    # The resumed run trains epoch 1, where the uninterrupted run saw no injected overflow.
    part, logs = _run(tmp_path, "part", [0], 32, "mixed", "--set", "train.epochs=2")
    assert "resumed from" in logs and checkpoint_arrays(part, ("loss_scale",))  # the scale is in the checkpoint
    a, b = checkpoint_arrays(whole, ("model", "optimizer", "loss_scale")), checkpoint_arrays(
        part, ("model", "optimizer", "loss_scale"))
    assert a.keys() == b.keys()
    assert max(relative_difference(a[k], b[k]) for k in a) < 1e-6


CHECKS = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
import tensorflow as tf
from csgm.ascend import NpuOptions
from csgm.backends.npu_bridge import session_config
import npu_bridge  # the emulation: every Session is checked from here on
from npu_bridge.npu_init import RewriterConfig, hccl_ops, get_rank_id, npu_ops
tf.compat.v1.disable_eager_execution()

def refused(make, text):
    try:
        make()
    except (RuntimeError, ValueError) as e:
        assert text in str(e), (text, str(e))
        return
    raise AssertionError("not refused: " + text)

config = session_config("allow_mix_precision", NpuOptions(dump_path="/dump", profiling_options='{"output": "/p"}'))
params = {p.name: dict(p.parameter_map) for p in config.graph_options.rewrite_options.custom_optimizers}
assert set(params["NpuOptimizer"]) >= {"use_off_line", "precision_mode", "enable_dump", "dump_path", "profiling_mode"}
assert config.graph_options.rewrite_options.remapping == RewriterConfig.OFF
refused(lambda: tf.compat.v1.Session(), "without a config")
plain = tf.compat.v1.ConfigProto()
refused(lambda: tf.compat.v1.Session(config=plain), "without the NpuOptimizer")
remap = session_config("allow_mix_precision", NpuOptions())
remap.graph_options.rewrite_options.remapping = RewriterConfig.ON
refused(lambda: tf.compat.v1.Session(config=remap), "remapping must be")
refused(lambda: tf.compat.v1.Session(config=session_config("allow_mix_precision_bf16", NpuOptions())), "bfloat16")
refused(lambda: hccl_ops.allreduce(tf.constant([1.0]), "mean"), "not in list of allowed values")
refused(get_rank_id, "HCCL is not initialised")
session = tf.compat.v1.Session(config=config)
session.run(npu_ops.initialize_system())
assert get_rank_id() == 0
session.run(npu_ops.shutdown_system())
refused(get_rank_id, "HCCL is not initialised")
print("checks passed")
"""


def test_session_config_passes_and_the_emulation_refuses_what_the_adapter_would_not_run() -> None:
    """In a subprocess: the emulation patches tf.compat.v1.Session for the whole process."""
    result = subprocess.run([sys.executable, "-c", CHECKS, str(EMULATION)], cwd=REPO, env=job_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "checks passed" in result.stdout, result.stdout + result.stderr[-3000:]


def test_npu_bridge_on_tensorflow_2_is_refused_before_anything_opens(tmp_path: Path) -> None:
    """Without the emulation, the real TF 2 here: the worker refuses the adapter with the fix."""
    table = tmp_path / "t.json"
    table.write_text(json.dumps(_table([0])))
    result = run_launcher(SPEC, *sets(**dict(SMALL, output_dir=tmp_path / "out", devices__count=1)), *BRIDGE,
                          "--rank-table", str(table), "--server-id", "127.0.0.1", timeout=200)
    output = result.stdout + result.stderr
    assert "npu: adapter npu_bridge will be refused" in output  # the launcher's plan says so first
    assert result.returncode != 0 and "exit code:  2" in output, output[-3000:]  # the rank's bad-input code
    log = (tmp_path / "out" / "logs" / "attempt_0" / "rank_0.log").read_text()
    assert "error: job spec: npu.adapter: npu.adapter npu_bridge is CANN's adapter for TF 1.15" in log
    assert "EMULATED" not in log and "Session" not in log  # refused before any adapter opened


def test_sigterm_mid_epoch_on_the_graph_path_and_the_rerun_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    """A kill as Kubernetes sends it (SIGTERM): the session rank checkpoints the step it finished, the
    launcher exits 75; the rerun resumes inside the epoch and ends with the uninterrupted weights."""
    table = tmp_path / "t.json"
    table.write_text(json.dumps(_table([0])))
    env = job_env(PYTHONPATH=f"{EMULATION}:{REPO}")

    def args(run: Path) -> List[str]:
        return [*sets(**dict(SMALL, data__train_limit=2000, train__batch_size=20, train__log_every=5,
                             train__precision="fp32", recovery__precision="fp32", launch__grace_period_s=20,
                             devices__count=1, output_dir=run)), *BRIDGE,
                "--rank-table", str(table), "--server-id", "127.0.0.1"]

    whole = tmp_path / "whole"
    assert run_launcher(SPEC, *args(whole), timeout=300, env=env).returncode == 0
    run, console = tmp_path / "stopped", tmp_path / "console.txt"
    with console.open("w") as out:
        launcher = subprocess.Popen(launcher_cmd(SPEC, *args(run)), cwd=REPO, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "step 10," in console.read_text(), 240, "the rank to train 10 steps")
        launcher.send_signal(signal.SIGTERM)
        code = launcher.wait(timeout=60)
    finally:
        stop(launcher)
    assert code == EXIT_PREEMPTED, console.read_text()[-3000:]
    assert re.search(r"training stopped after step \d+ \(epoch 0, \d+ of 100 steps\); checkpoint \S+-step-",
                     console.read_text())
    rerun = run_launcher(SPEC, *args(run), timeout=300, env=env)
    assert rerun.returncode == 0 and "inside epoch 0 after" in rerun.stdout + rerun.stderr, rerun.stdout[-3000:]
    a, b = checkpoint_arrays(whole), checkpoint_arrays(run)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
