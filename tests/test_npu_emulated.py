"""The NPU path against the EMULATED npu_device (tests/emulated_npu): what cannot run here, checked
against an emulation of the documented contract (docs/ascend.md says what it covers).

- device mapping: a 4-rank table on devices 4,5,7,6 opens the device each entry names, on bare
  metal and in a container with ASCEND_VISIBLE_DEVICES=4,5,6,7; the old mapping (ASCEND_DEVICE_ID =
  local rank) fails the emulated HCCL check;
- bf16 on a 910A profile is refused: as a precision mode, and as the old bfloat16 cast of ``mixed``;
- the real launcher and worker on 1 and 2 emulated NPUs (backend hccl, configs/mnist_8p.yaml with a
  small budget, mixed precision): overflows injected on one rank are skipped by every rank while the
  loss scale halves, and 2 ranks end where 1 rank with the double batch ends.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np
import pytest

from job.spec import DevicesSpec, JobSpec
from launcher.env import rank_env
from launcher.slots import assign_slots
from rank_table import parse
from tests.jobutil import REPO, checkpoint_arrays, free_port, job_env, relative_difference, run_launcher, sets

EMULATION = REPO / "tests" / "emulated_npu"
SPEC = "configs/mnist_8p.yaml"
SMALL = dict(data__source="sample", data__train_limit=192, stages="[train]", train__epochs=1,
             train__log_every=2, devices__threads=1, launch__grace_period_s=2)


def _table(devices: List[int], server: str = "127.0.0.1") -> Dict[str, object]:
    return {"version": "1.0", "status": "completed", "server_count": "1", "server_list": [
        {"server_id": server, "device": [{"device_id": str(d), "rank_id": str(r)} for r, d in enumerate(devices)]}]}


@pytest.fixture()
def emulated_npu() -> Iterator[object]:
    sys.path.insert(0, str(EMULATION))
    try:
        import npu_device

        assert npu_device.EMULATED
        yield npu_device
        npu_device.reset()
    finally:
        sys.path.remove(str(EMULATION))
        for name in [m for m in sys.modules if m == "npu_device" or m.startswith("npu_device.")]:
            del sys.modules[name]


@pytest.mark.parametrize("base", [{}, {"ASCEND_VISIBLE_DEVICES": "4,5,6,7"}], ids=["bare-metal", "container"])
def test_four_ranks_on_4576_open_their_devices(tmp_path: Path, emulated_npu: object, base: Dict[str, str]) -> None:
    table_file = tmp_path / "hccl.json"
    table_file.write_text(json.dumps(_table([4, 5, 7, 6])))
    table = parse(json.loads(table_file.read_text()))
    spec = JobSpec(backend="hccl", devices=DevicesSpec(type="npu", count=4))
    for slot in assign_slots(table, "127.0.0.1", 4):
        env = rank_env(slot, spec, base, table, table_file, tmp_path / "spec.yaml", "job")
        opened = emulated_npu.physical_device(int(env["ASCEND_DEVICE_ID"]), env)
        assert opened == slot.device_id == [4, 5, 7, 6][slot.rank]
        emulated_npu.hccl_device_check(opened, env)  # HCCL's check passes
        old = dict(env, ASCEND_DEVICE_ID=str(slot.local_rank))  # the mapping before issue 12
        old_opened = emulated_npu.physical_device(slot.local_rank, old)
        if old_opened != slot.device_id:
            with pytest.raises(RuntimeError, match=r"ranktable config devId\[\d\],but local devId\[\d\]"):
                emulated_npu.hccl_device_check(old_opened, old)
        assert slot.rank < 2 or old_opened != slot.device_id  # ranks 2, 3 (devices 7, 6) went wrong


def test_bfloat16_refused_on_a_910a_profile(emulated_npu: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    from csgm.ascend import graph_precision
    from csgm.model import VAE, compute_dtype, vae_loss

    monkeypatch.delenv("RANK_SIZE", raising=False)
    emulated_npu.global_options().precision_mode = "allow_mix_precision_bf16"
    with pytest.raises(RuntimeError, match="needs bfloat16, which the Ascend 910A does not have"):
        emulated_npu.open()
    emulated_npu.global_options().precision_mode = "allow_mix_precision"
    emulated_npu.open().as_default()
    with pytest.raises(RuntimeError, match="set after open"):
        emulated_npu.global_options().precision_mode = "must_keep_origin_dtype"
    model, x, eps = VAE(4, 8), tf.zeros([2, 784]), tf.zeros([2, 4])
    with pytest.raises(TypeError, match="no bfloat16 on this chip"):  # the old meaning of mixed
        vae_loss(model, x, eps, compute_dtype("mixed"))
    vae_loss(model, x, eps, compute_dtype(graph_precision("mixed", "npu")))  # now: float32 graph, CANN casts


def test_spec_keys_reach_the_adapters_options(emulated_npu: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from csgm.ascend import NpuOptions
    from csgm.backends.npu import open_npu

    monkeypatch.delenv("RANK_SIZE", raising=False)
    open_npu("allow_mix_precision", NpuOptions(dump_path="/dump", dump_step="0|5", dump_mode="all",
                                               exception_dump=True, profiling_options='{"output": "/prof"}'))
    assert emulated_npu.global_options().as_dict() == {
        "precision_mode": "allow_mix_precision", "enable_exception_dump": 1, "enable_dump": True,
        "dump_path": "/dump", "dump_step": "0|5", "dump_mode": "all", "enable_profiling": True,
        "profiling_options": '{"output": "/prof"}'}


def _train(tmp_path: Path, name: str, devices: List[int], batch: int, precision: str,
           **env: str) -> Tuple[Path, str]:
    table = tmp_path / f"{name}.json"
    table.write_text(json.dumps(_table(devices)))
    out = tmp_path / name
    args = sets(**SMALL, output_dir=out, devices__count=len(devices), train__batch_size=batch,
                train__precision=precision, recovery__precision=precision)
    result = run_launcher(SPEC, *args, "--rank-table", str(table), "--server-id", "127.0.0.1", timeout=400,
                          env=job_env(PYTHONPATH=f"{EMULATION}:{REPO}", EMULATED_HCCL_PORT=str(free_port()),
                                      **env))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    logs = "".join(p.read_text() for p in sorted((out / "logs").glob("attempt_0/rank_*.log")))
    return out, logs


OVERFLOW = dict(EMULATED_NPU_OVERFLOW_AT="2,3")  # the 2nd and 3rd reads of the float status register


def test_two_mixed_ranks_equal_one_rank_through_injected_overflows(tmp_path: Path) -> None:
    """One card on device 3, bare metal (before issue 12 it silently ran on device 0), against two
    ranks on devices 7,6 in a container that sees 6,7, with the overflows injected on rank 1 only:
    every rank skips the same two steps, the scale halves twice, and the weights, Adam moments and
    step agree with the single rank's to 1e-5."""
    one_out, one_logs = _train(tmp_path, "one", [3], 48, "mixed", **OVERFLOW)
    assert "EMULATED NPU: opened logical device 3 = physical 3" in one_logs
    two_out, two_logs = _train(tmp_path, "two", [7, 6], 24, "mixed", ASCEND_VISIBLE_DEVICES="6,7",
                               EMULATED_NPU_OVERFLOW_RANKS="1", **OVERFLOW)
    assert "opened logical device 1 = physical 7" in two_logs and "opened logical device 0 = physical 6" in two_logs
    assert "'precision_mode': 'allow_mix_precision'" in two_logs
    skipped = "loss scale: 2 overflowing step(s) skipped so far; scale now 8192"
    assert one_logs.count(skipped) == 1 and two_logs.count(skipped) == 2  # on both ranks
    one, two = checkpoint_arrays(one_out), checkpoint_arrays(two_out)
    assert one.keys() == two.keys()
    assert all(np.isfinite(a).all() for a in two.values())
    assert max(relative_difference(two[k], one[k]) for k in two) < 1e-5


def _cm_env(port: int, **extra: str) -> Dict[str, str]:
    """What Ascend Operator gives the one pod of a 2-NPU TensorFlow AscendJob (env.go setTensorflowEnv)."""
    return dict({"CM_CHIEF_IP": "127.0.0.1", "CM_CHIEF_PORT": str(port), "CM_CHIEF_DEVICE": "0",
                 "CM_WORKER_SIZE": "2", "CM_WORKER_IP": "127.0.0.1", "CM_RANK": "0", "CM_LOCAL_WORKER": "2"},
                **extra)


def test_cm_mode_two_ranks_without_a_table_equal_one_rank_with_double_batch(tmp_path: Path) -> None:
    """The rank-table-free start: no table, no RANK_*; the emulated HCCL numbers the devices at the
    chief's port, the worker shards by that rank (checked against CM_RANK * CM_LOCAL_WORKER + i)."""
    one_out, _ = _train(tmp_path, "one", [0], 48, "fp32")
    out = tmp_path / "cm"
    args = sets(**SMALL, output_dir=out, devices__count=2, train__batch_size=24, train__precision="fp32",
                recovery__precision="fp32", launch__rank_table="null")
    env = job_env(PYTHONPATH=f"{EMULATION}:{REPO}", **_cm_env(free_port()))
    env.pop("RANK_TABLE_FILE", None)
    result = run_launcher(SPEC, *args, timeout=400, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rank-table-free (CM_*): chief 127.0.0.1" in result.stdout + result.stderr
    logs = [(out / f"logs/attempt_0/rank_{r}.log").read_text() for r in (0, 1)]
    assert "opened logical device 0 = physical 0 on chip 910A, rank 0 of 2" in logs[0]
    assert "opened logical device 1 = physical 1 on chip 910A, rank 1 of 2" in logs[1]
    one, two = checkpoint_arrays(one_out), checkpoint_arrays(out)
    assert max(relative_difference(two[k], one[k]) for k in two) < 1e-5


def test_cm_mode_dry_run_exports_no_rank_variables(tmp_path: Path) -> None:
    env = job_env(**_cm_env(29900, CM_RANK="1", CM_WORKER_SIZE="4", ASCEND_VISIBLE_DEVICES="4,5"))
    env.pop("RANK_TABLE_FILE", None)
    result = run_launcher(SPEC, *sets(data__source="sample", launch__rank_table="null", output_dir=tmp_path / "r"),
                          "-np", "2", "--dry-run", "--json", env=env)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["start"] == "cm" and plan["rank_table"] is None and plan["world_size"] == 4
    ranks = plan["servers"][0]["ranks"]
    assert [r["rank"] for r in ranks] == [2, 3]                       # CM_RANK 1 x 2 + i
    assert [(r["device_id"], r["logical_device_id"]) for r in ranks] == [(4, 0), (5, 1)]
    for r in ranks:
        assert not {"RANK_ID", "RANK_SIZE", "RANK_TABLE_FILE"} & set(r["env"])
        assert r["env"]["ASCEND_DEVICE_ID"] == r["env"]["DEVICE_ID"] == str(r["local_rank"])


@pytest.mark.parametrize("extra, says", [
    ({"RANK_SIZE": "2"}, "CM_WORKER_IP, CM_RANK, CM_LOCAL_WORKER (the rank-table-free start) and RANK_SIZE "
                         "(the rank-table start) are both set"),
    ({"RANK_TABLE_FILE": "/x/hccl.json"}, "and RANK_TABLE_FILE (the rank-table start) are both set"),
    ({"CM_CHIEF_PORT": ""}, "CM_CHIEF_PORT not"),
    ({"CM_LOCAL_WORKER": "4"}, "puts this pod's last device at rank 3, but CM_WORKER_SIZE=2"),
    ({"CM_CHIEF_PORT": "70000"}, "CM_CHIEF_PORT='70000' must be an integer 0..65520"),
])
def test_cm_mode_mixed_or_incomplete_is_refused_before_anything_starts(tmp_path: Path, extra: Dict[str, str],
                                                                       says: str) -> None:
    env = job_env(**_cm_env(29900, **extra))
    if "RANK_TABLE_FILE" not in extra:
        env.pop("RANK_TABLE_FILE", None)
    result = run_launcher(SPEC, "-np", "2", "--set", "launch.rank_table=null", "--set", "data.source=sample",
                          "--output-dir", str(tmp_path / "r"), env=env)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and says in line, line
    assert not (tmp_path / "r").exists()


def test_emulated_adapter_refuses_the_mix_and_check_rank(emulated_npu: object,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from csgm.cm_mode import CmModeError, check_rank, detect

    for key, value in _cm_env(29900).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RANK_SIZE", "2")
    with pytest.raises(ValueError, match="RANK_SIZE and CM_WORK_SIZE cannot be configured at the same time"):
        emulated_npu.open()
    monkeypatch.delenv("RANK_SIZE")
    monkeypatch.setenv("RANK_TABLE_FILE", "/x/hccl.json")
    with pytest.raises(RuntimeError, match="CM_CHIEF_IP and RANK_TABLE_FILE cannot be configured"):
        emulated_npu.open()
    monkeypatch.delenv("RANK_TABLE_FILE")
    cluster = detect(dict(_cm_env(29900, CM_RANK="1", CM_WORKER_SIZE="4")), launcher=True)
    check_rank(cluster, 3, 4, 1)
    with pytest.raises(CmModeError, match=r"HCCL gave this device rank 2, but CM_RANK=1 x CM_LOCAL_WORKER=2 "
                                          r"\+ local device 1 = 3"):
        check_rank(cluster, 2, 4, 1)
    with pytest.raises(CmModeError, match="communicator of 2 devices, but CM_WORKER_SIZE=4"):
        check_rank(cluster, 1, 2, 1)
