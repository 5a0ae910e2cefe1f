"""k8s.render: Volcano's retry counting, the render options, the GPU target and its in-pod rank table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

from job.spec import load_spec
from k8s import cli, gpu_table
from k8s import render as r
from k8s import validate as v

GPU_SPEC = "name: g\nbackend: tf\ndevices: {type: gpu, count: 4}\n"


def volcano_runs(max_retry: int) -> int:
    """How many times Volcano starts a job whose every run fails (PodFailed -> RestartJob).

    Mirrors volcano-sh/volcano pkg/controllers/job/state: running.go on RestartJobAction does
    RetryCount++ and moves to Restarting; restarting.go's restartingUpdateStatus fails the job when
    RetryCount >= maxRetry, else moves to Pending (and the pods are created again).
    """
    phase, retry_count, runs = "Running", 0, 1
    while phase != "Failed":
        if phase == "Running":  # every pod of this run fails
            retry_count += 1
            phase = "Restarting"
        elif phase == "Restarting":
            phase = "Failed" if retry_count >= max_retry else "Pending"
        else:  # Pending: the gang is scheduled again
            phase, runs = "Running", runs + 1
    return runs


@pytest.mark.parametrize("restarts", [0, 1, 3])
def test_max_retry_gives_the_promised_restarts(restarts: int) -> None:
    spec = load_spec(Path(__file__).resolve().parents[1] / "configs" / "mnist_8p.yaml")
    job = r.volcano_job(spec, r.RenderOptions(restarts=restarts))
    assert volcano_runs(job["spec"]["maxRetry"]) == restarts + 1


def test_volcano_counts_the_first_run() -> None:
    assert volcano_runs(3) == 3  # maxRetry 3 is two restarts, not three


def rendered(tmp_path: Path, text: str, options: r.RenderOptions) -> Dict[str, Dict[str, Any]]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text, encoding="utf-8")
    files = r.render_file(spec, options)
    problems = [p for name, t in files.items() for p in v.check_text(t, name)]
    assert not problems, problems
    return {f"{o['kind']}/{o['metadata']['name']}": o
            for t in files.values() for o in yaml.safe_load_all(t) if o}


def test_render_options_reach_the_job(tmp_path: Path) -> None:
    opts = r.RenderOptions(image="registry.example.com/csgm:0.1", pull_policy="Always", queue="train",
                           priority_class="high", namespace="ml", storage_class="nfs")
    objs = rendered(tmp_path, "name: t\nbackend: hccl\ndevices: {type: npu, count: 8}\n", opts)
    job = objs["Job/t"]["spec"]
    pod = job["tasks"][0]["template"]["spec"]
    assert job["queue"] == "train" and job["priorityClassName"] == pod["priorityClassName"] == "high"
    assert pod["containers"][0]["image"] == "registry.example.com/csgm:0.1"
    assert pod["containers"][0]["imagePullPolicy"] == "Always"
    assert objs["PersistentVolumeClaim/t-output"]["spec"]["storageClassName"] == "nfs"
    assert objs["ConfigMap/rings-config-t"]["data"]["hccl.json"] == r.INITIALIZING_TABLE


def test_gpu_target_is_the_same_gang_on_nvidia_gpus(tmp_path: Path) -> None:
    objs = rendered(tmp_path, GPU_SPEC, r.RenderOptions(target="gpu", nodes=2))
    assert sorted(objs) == ["ConfigMap/g-spec", "Job/g", "PersistentVolumeClaim/g-output"]  # no rings-config
    job = objs["Job/g"]
    assert r.RING_LABEL not in job["metadata"]["labels"]
    js = job["spec"]
    assert js["minAvailable"] == 2 and js["plugins"] == {"svc": [], "env": []}
    pod = js["tasks"][0]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["resources"]["requests"]["nvidia.com/gpu"] == c["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert r.NPU_RESOURCE not in c["resources"]["limits"] and "nodeSelector" not in pod
    assert {"name": "shm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    assert {"name": "shm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    env = {e["name"] for e in c["env"]}
    assert "ASCEND_VISIBLE_DEVICES" not in env and "CSGM_POD_IP" in env
    assert "k8s.gpu_table" in c["command"][-1]
    pod_spec = yaml.safe_load(objs["ConfigMap/g-spec"]["data"]["job.yaml"])
    assert pod_spec["launch"]["rank_table"] == r.GPU_TABLE_FILE


def test_gpu_target_refuses_an_npu_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\nbackend: hccl\ndevices: {type: npu, count: 8}\n", encoding="utf-8")
    assert cli.main(["render", str(spec), "--target", "gpu", "--out", str(tmp_path / "out")]) == 2
    assert "devices.type is 'npu', but --target gpu" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_gpu_table_from_the_svc_hosts_and_the_task_index(tmp_path: Path) -> None:
    hosts = tmp_path / "worker.host"
    hosts.write_text("g-worker-0.g\ng-worker-1.g\n", encoding="utf-8")
    spec = tmp_path / "spec.yaml"
    spec.write_text(GPU_SPEC, encoding="utf-8")
    names = {"g-worker-0.g": "10.1.0.5"}
    seen = []

    def resolve(name: str) -> str:
        seen.append(name)
        if len(seen) == 1:
            raise OSError("Name or service not known")  # the peer pod is not up yet: waited for
        return names[name]

    table = gpu_table.build_table(gpu_table.read_hosts(hosts), 1, "10.1.0.9", 4, resolve=resolve,
                                  sleep=lambda s: None)
    assert table.server_ids == ("10.1.0.5", "10.1.0.9") and table.world_size == 8
    assert [d.rank_id for d in table.servers[1].devices] == [4, 5, 6, 7]
    out = tmp_path / "table.json"
    assert gpu_table.main(["--out", str(out), "--hosts", str(tmp_path / "none"), "--spec", str(spec)],
                          {"VC_TASK_INDEX": "0", "CSGM_POD_IP": "10.1.0.5"}) == 2


def test_gpu_table_single_pod_needs_no_dns(tmp_path: Path) -> None:
    hosts = tmp_path / "worker.host"
    hosts.write_text("g-worker-0.g\n", encoding="utf-8")
    spec = tmp_path / "spec.yaml"
    spec.write_text(GPU_SPEC, encoding="utf-8")
    out = tmp_path / "t" / "table.json"
    assert gpu_table.main(["--out", str(out), "--hosts", str(hosts), "--spec", str(spec)],
                          {"VC_TASK_INDEX": "0", "CSGM_POD_IP": "10.1.0.5"}) == 0
    data = json.loads(out.read_text())
    assert data["status"] == "completed" and data["server_list"][0]["server_id"] == "10.1.0.5"


def test_version_and_help_on_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("python -m k8s ")
    missing = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    walk(child, f"{name} {sub}")
            elif not action.help:
                missing.append(f"{name} {action.option_strings or action.dest}")

    walk(cli.build_parser(), "k8s")
    walk(gpu_table.build_parser(), "k8s.gpu_table")
    assert missing == []
