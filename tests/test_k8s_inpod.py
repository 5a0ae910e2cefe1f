"""The in-pod path on the CPU: the launcher started as the rendered Volcano Job starts it.

A temporary folder plays the pod's filesystem: every mount of the container (the job spec
ConfigMap, the rank table ConfigMap, the output claim, ...) is a folder under it, and the job spec
from the rendered ConfigMap has its paths moved there. The command and the environment come from
the rendered container (XDL_IP from status.hostIP is the "node's" address). A thread plays
hccl-controller: the rank table starts as the rendered ConfigMap's content (status "initializing")
and is replaced in place, atomically as the kubelet swaps ConfigMap files, by a completed table
for this one server. The ranks run ``-- COMMAND`` (print their rank) instead of the training job,
with devices.type cpu.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from k8s import render as r

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "configs" / "mnist_8p.yaml"
NODE_IP = "192.0.2.10"  # TEST-NET-1: no interface of this machine has it, so only XDL_IP can match it
POD_IP = "192.0.2.77"
RANKS = 2
COMPLETE_AFTER_S = 2.0
RANK_COMMAND = ["-c", "import os; print('rank', os.environ['RANK_ID'], 'of', os.environ['RANK_SIZE'], "
                      "'table', os.environ['RANK_TABLE_FILE'])"]


class Pod:
    """The rendered container's view of the world, rooted at a temporary folder."""

    def __init__(self, root: Path, timeout_s: float) -> None:
        files = r.render_file(SPEC)
        docs = [d for text in files.values() for d in yaml.safe_load_all(text) if d]
        by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
        job = next(d for d in docs if d["kind"] == "Job")
        self.container = job["spec"]["tasks"][0]["template"]["spec"]["containers"][0]
        self.root = root
        self.mounts = [m["mountPath"] for m in self.container["volumeMounts"]]
        for mount in self.mounts:
            self.path(mount).mkdir(parents=True)
        name = job["metadata"]["name"]
        self.initial_table = by_name[("ConfigMap", f"rings-config-{name}")]["data"]["hccl.json"]
        spec = yaml.safe_load(by_name[("ConfigMap", f"{name}-spec")]["data"]["job.yaml"])
        spec = self.moved(spec)
        spec["devices"] = {"type": "cpu", "count": RANKS}  # no NPU here; the ranks only print
        spec["launch"]["rank_table_timeout_s"] = timeout_s
        self.spec = spec
        self.path(r.SPEC_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
        self.table = self.path(r.RANK_TABLE_FILE)

    def path(self, pod_path: str) -> Path:
        return self.root / pod_path.lstrip("/")

    def moved(self, value: Any) -> Any:
        """Pod paths (strings under a mount) -> their folder under the root, in any structure."""
        if isinstance(value, dict):
            return {k: self.moved(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.moved(v) for v in value]
        if isinstance(value, str) and any(value == m or value.startswith(m + "/") for m in self.mounts):
            return str(self.path(value))
        return value

    def command(self, rank_command: Sequence[str] = tuple(RANK_COMMAND)) -> List[str]:
        shell, entrypoint, program, *args = self.container["command"]
        # k8s/image/entrypoint.sh sources CANN's environment, absent here; then the launcher.
        assert (shell, entrypoint, program) == ("/bin/bash", r.ENTRYPOINT, "python3")
        return [sys.executable] + [self.moved(a) for a in args] + ["--", sys.executable] + list(rank_command)

    def environment(self, node_ip: Optional[str], pod_ip: Optional[str] = POD_IP,
                    job_version: str = "0") -> Dict[str, str]:
        fields = {"status.hostIP": node_ip, "status.podIP": pod_ip,
                  f"metadata.annotations['{r.NPU_RESOURCE}']": "Ascend910-0,Ascend910-1",
                  f"metadata.annotations['{r.JOB_VERSION_ANNOTATION}']": job_version,
                  f"metadata.annotations['{r.RETRY_COUNT_ANNOTATION}']": job_version}
        env = {k: val for k, val in os.environ.items() if k != "XDL_IP"}
        env["PYTHONPATH"] = str(REPO)  # the image's PYTHONPATH=/opt/csgm
        for var in self.container["env"]:
            if "value" in var:
                env[var["name"]] = self.moved(var["value"])
            else:
                value = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]  # a new fieldRef needs a value here
                if value is not None:
                    env[var["name"]] = value
        return env

    def write_table(self, text: str) -> None:
        """Replace the table in one step, as the kubelet updates a mounted ConfigMap."""
        tmp = self.table.with_name(".hccl.json.new")
        tmp.write_text(text)
        os.replace(tmp, self.table)

    def run(self, node_ip: Optional[str] = NODE_IP, pod_ip: Optional[str] = POD_IP,
            job_version: str = "0") -> Tuple[subprocess.CompletedProcess, float]:
        began = time.monotonic()
        proc = subprocess.run(self.command(), env=self.environment(node_ip, pod_ip, job_version), cwd=self.root,
                              capture_output=True, text=True, timeout=120)
        return proc, time.monotonic() - began


def completed_table(server_id: str, ranks: int, first_device: int = 0) -> str:
    """hccl-controller's table for one server: all values strings, status completed."""
    devices = [{"device_id": str(first_device + i), "device_ip": f"192.168.100.{101 + i}", "rank_id": str(i)}
               for i in range(ranks)]
    return json.dumps({"version": "1.0", "server_count": "1", "status": "completed",
                       "server_list": [{"server_id": server_id, "host_nic_ip": "reserve", "device": devices}]})


def run_with_controller(pod: Pod) -> Tuple[int, str, float]:
    """Start the launcher; once it reports waiting for the table, complete the table a few seconds
    later (hccl-controller). Returns the exit code, the merged output and the seconds from the
    first wait report to the launcher's exit."""
    proc = subprocess.Popen(pod.command(), env=pod.environment(NODE_IP), cwd=pod.root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    controller: Optional[threading.Timer] = None
    lines: List[str] = []
    waiting_since = 0.0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if controller is None and "waiting for rank table" in line:
                waiting_since = time.monotonic()
                controller = threading.Timer(COMPLETE_AFTER_S, pod.write_table, [completed_table(NODE_IP, RANKS)])
                controller.start()
        code = proc.wait()
    finally:
        watchdog.cancel()
        if controller is not None:
            controller.cancel()
    return code, "".join(lines), time.monotonic() - waiting_since if waiting_since else 0.0


def test_launcher_waits_for_the_table_finds_its_server_and_runs_its_ranks(tmp_path: Path) -> None:
    pod = Pod(tmp_path, timeout_s=10)
    pod.write_table(pod.initial_table)
    code, out, waited = run_with_controller(pod)
    assert code == 0, out
    assert f"waiting for rank table {pod.table}: status is \"initializing\"" in out
    assert waited >= COMPLETE_AFTER_S
    assert f"server {NODE_IP}: starting ranks 0,1 of 2" in out
    for rank in range(RANKS):
        assert f"[rank {rank}] rank {rank} of {RANKS} table {pod.table}" in out
    assert (Path(pod.spec["output_dir"]) / "spec.yaml").is_file()  # the run folder is on the output claim


def test_launcher_gives_up_on_a_table_that_never_completes(tmp_path: Path) -> None:
    pod = Pod(tmp_path, timeout_s=2)
    pod.write_table(pod.initial_table)
    proc, elapsed = pod.run()
    assert proc.returncode != 0
    assert elapsed < 30
    assert str(pod.table) in proc.stderr
    assert "no completed rank table after" in proc.stderr
    assert "last seen: status is \"initializing\"" in proc.stderr
    assert "[rank" not in proc.stdout


def test_without_xdl_ip_the_launcher_cannot_tell_its_server(tmp_path: Path) -> None:
    pod = Pod(tmp_path, timeout_s=60)
    pod.write_table(completed_table(NODE_IP, RANKS))
    proc, _ = pod.run(node_ip=None, pod_ip=None)
    assert proc.returncode != 0
    assert "XDL_IP (not set)" in proc.stderr and NODE_IP in proc.stderr
    assert "[rank" not in proc.stdout


def test_a_stale_completed_table_is_waited_on(tmp_path: Path) -> None:
    """The previous attempt's table (another node), then one giving this node other NPUs, are waited on;
    the launcher starts once the controller writes this attempt's table."""
    pod = Pod(tmp_path, timeout_s=10)
    pod.write_table(completed_table("192.0.2.99", RANKS))
    steps = {"does not list this pod": completed_table(NODE_IP, RANKS, first_device=4),
             "are not this pod's NPUs": completed_table(NODE_IP, RANKS)}
    proc = subprocess.Popen(pod.command(), env=pod.environment(NODE_IP), cwd=pod.root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: List[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            for seen in [k for k in steps if k in line]:
                pod.write_table(steps.pop(seen))
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
    out = "".join(lines)
    assert code == 0, out
    assert "a completed table from an earlier attempt (it does not list this pod, XDL_IP=192.0.2.10" in out
    assert "its devices [4, 5] for this pod are not this pod's NPUs ASCEND_VISIBLE_DEVICES=Ascend910-0" in out
    assert f"[rank 1] rank 1 of {RANKS}" in out


def test_a_volcano_restart_keeps_the_failed_attempts_logs(tmp_path: Path) -> None:
    pod = Pod(tmp_path, timeout_s=10)
    pod.write_table(completed_table(NODE_IP, RANKS))
    fail = ["-c", "import os, sys; print('attempt one of rank', os.environ['RANK_ID']); sys.exit(3)"]
    first = subprocess.run(pod.command(fail), env=pod.environment(NODE_IP, job_version="0"), cwd=pod.root,
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 1, first.stderr
    second, _ = pod.run(job_version="2")  # Volcano bumps the version each time it kills the job
    assert second.returncode == 0, second.stderr
    logs = Path(pod.spec["output_dir"]) / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["volcano-v0", "volcano-v2"]
    old = logs / "volcano-v0" / "attempt_0"
    assert "attempt one of rank 0" in (old / "rank_0.log").read_text()
    assert json.loads((old / "error_rank_0.json").read_text())["exitcode"] == 3
    assert "rank 0 of 2" in (logs / "volcano-v2" / "attempt_0" / "rank_0.log").read_text()


def test_gpu_pod_builds_its_table_and_runs_the_launcher(tmp_path: Path) -> None:
    """The rendered GPU container's script (after the entrypoint): k8s.gpu_table from the svc plugin's
    hosts file and VC_TASK_INDEX, then the launcher finding its server by XDL_IP = the pod IP."""
    spec_text = "name: g\nbackend: tf\ndevices: {type: gpu, count: 2}\ndata: {source: sample}\n"
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec_text, encoding="utf-8")
    files = r.render_file(spec_file, r.RenderOptions(target="gpu"))
    docs = [d for text in files.values() for d in yaml.safe_load_all(text) if d]
    container = next(d for d in docs if d["kind"] == "Job")["spec"]["tasks"][0]["template"]["spec"]["containers"][0]
    shell, entrypoint, inner_shell, dash_c, script = container["command"]
    assert (shell, entrypoint, inner_shell, dash_c) == ("/bin/bash", r.ENTRYPOINT, "/bin/bash", "-c")
    pod_spec = yaml.safe_load(next(d for d in docs if d["metadata"]["name"] == "g-spec")["data"]["job.yaml"])
    pod_spec["devices"]["type"] = "cpu"  # no GPU here; the ranks only print
    pod_spec["output_dir"] = str(tmp_path / "output" / "g")
    pod_spec["launch"]["rank_table"] = str(tmp_path / "table.json")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(pod_spec), encoding="utf-8")
    (tmp_path / "worker.host").write_text("g-worker-0.g\n", encoding="utf-8")
    script = (script.replace(r.GPU_TABLE_FILE, str(tmp_path / "table.json"))
              .replace(r.SPEC_FILE, str(tmp_path / "job.yaml"))
              .replace("python3", sys.executable)
              .replace("-m k8s.gpu_table", f"-m k8s.gpu_table --hosts {tmp_path / 'worker.host'} "
                                           f"--spec {tmp_path / 'job.yaml'}"))
    script += " -- " + " ".join([sys.executable, "-c", "'import os; print(\"gpu rank\", os.environ[\"RANK_ID\"])'"])
    env = {k: val for k, val in os.environ.items() if k != "XDL_IP"}
    env.update(PYTHONPATH=str(REPO), VC_TASK_INDEX="0", CSGM_POD_IP=POD_IP)
    proc = subprocess.run(["/bin/bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"server {POD_IP}: starting ranks 0,1 of 2" in proc.stdout + proc.stderr
    assert "[rank 1] gpu rank 1" in proc.stdout
