"""python -m k8s submit | status | logs | wait | delete: the real `kubernetes` client over HTTP against
the API-server emulation of tests/fake_k8s_api.py (URLs, verbs, selectors and (de)serialisation run)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from k8s import cli
from k8s import render as r
from k8s.cluster import objects_of
from tests.fake_k8s_api import FakeApiServer, kubeconfig, pod

REPO = Path(__file__).resolve().parents[1]
SPEC = str(REPO / "configs" / "mnist_8p.yaml")
JOB = "mnist-8p"
NS = "ml"
Api = Tuple[FakeApiServer, List[str]]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with FakeApiServer() as server:
        config = tmp_path / "kubeconfig"
        config.write_text(kubeconfig(server, NS), encoding="utf-8")
        yield server, ["--kubeconfig", str(config)]


@functools.cache
def _rendered() -> str:
    return json.dumps(objects_of(r.render_file(Path(SPEC), r.RenderOptions(namespace=NS))))


def submitted(server: FakeApiServer, namespace: str = NS) -> None:
    """The objects `submit` creates, put straight into the server (for the tests of the other commands)."""
    plurals = {"ConfigMap": "configmaps", "PersistentVolumeClaim": "persistentvolumeclaims", "Job": "jobs"}
    for obj in json.loads(_rendered()):
        server.put(plurals[obj["kind"]], namespace, obj)


def k8s(api: Api, *args: str) -> int:
    command, *rest = args
    return cli.main([command, *rest, *api[1]])


def table(servers: List[Tuple[str, str]], per_server: int) -> str:
    """A completed table as Ascend Operator writes it (host_ip, container_ip)."""
    return json.dumps({"version": "1.0", "status": "completed", "server_count": str(len(servers)), "server_list": [
        {"server_id": host, "host_ip": host, "container_ip": pod_ip, "device": [
            {"device_id": str(d), "device_ip": f"192.168.{k}.{d + 1}", "rank_id": str(k * per_server + d)}
            for d in range(per_server)]} for k, (host, pod_ip) in enumerate(servers)]})


def test_submit_creates_claims_configmaps_then_the_job(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    server = api[0]
    assert k8s(api, "submit", SPEC, "--image", "registry.example.com/csgm:0.1") == 0
    assert server.verbs() == [
        "GET ml/jobs?limit=1",
        "POST ml/persistentvolumeclaims", "POST ml/persistentvolumeclaims",
        "POST ml/configmaps", "POST ml/configmaps", "POST ml/jobs"]
    assert server.get("configmaps", NS, "rings-config-" + JOB)["data"]["hccl.json"] == r.INITIALIZING_TABLE
    job = server.get("jobs", NS, JOB)
    assert job["metadata"]["namespace"] == NS and job["spec"]["maxRetry"] == r.RESTARTS + 1
    assert job["spec"]["tasks"][0]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/csgm:0.1"
    assert f"job/{JOB} created" in capsys.readouterr().out


def test_submit_again_resets_the_table_keeps_claims_and_refuses_the_job(api: Api,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    server = api[0]
    assert k8s(api, "submit", SPEC) == 0
    server.get("configmaps", NS, "rings-config-" + JOB)["data"]["hccl.json"] = table([("10.0.0.1", "")], 8)
    server.requests.clear()
    capsys.readouterr()
    assert k8s(api, "submit", SPEC) == 1
    assert "PUT ml/configmaps/rings-config-mnist-8p" in server.verbs()
    assert server.get("configmaps", NS, "rings-config-" + JOB)["data"]["hccl.json"] == r.INITIALIZING_TABLE
    out = capsys.readouterr()
    assert f"persistentvolumeclaim/{JOB}-output exists: kept" in out.out
    assert f"Volcano job ml/{JOB} already exists. Delete it first (python -m k8s delete {JOB})" in out.err


def test_submit_dry_run_stores_nothing(api: Api) -> None:
    server = api[0]
    assert k8s(api, "submit", SPEC, "--dry-run") == 0
    creates = [v for v in server.verbs() if v.startswith("POST")]
    assert len(creates) == 5 and all(v.endswith("?dryRun=All") for v in creates)
    assert server.objects == {}


def test_submit_without_volcano_says_so_and_creates_nothing(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    api[0].volcano_installed = False
    assert k8s(api, "submit", SPEC) == 1
    assert "the cluster has no Volcano Job resource (batch.volcano.sh/v1alpha1 jobs): install Volcano" in \
        capsys.readouterr().err
    assert api[0].objects == {}


def test_submit_forbidden_names_the_permission(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    api[0].forbidden.add(("POST", "jobs"))
    assert k8s(api, "submit", SPEC) == 1
    err = capsys.readouterr().err
    assert f"create Job ml/{JOB}: forbidden (jobs is forbidden: User \"dev\" cannot create" in err
    assert "Ask the cluster admin for a Role" in err


def test_submit_bad_spec_is_bad_input(api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\nbackend: tf\ndevices: {type: cpu, count: 2}\n", encoding="utf-8")
    assert k8s(api, "submit", str(spec)) == 2
    assert "devices.type is 'cpu'" in capsys.readouterr().err
    assert api[0].requests == []


def test_context_and_namespace_flags_as_kubectl(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    submitted(api[0], "default")
    submitted(api[0], "team-a")
    assert k8s(api, "status", JOB, "--context", "other") == 0  # a context without a namespace: default
    assert k8s(api, "status", JOB, "-n", "team-a") == 0
    assert k8s(api, "status", JOB) == 1  # the current context's namespace, ml, has no such job
    out = capsys.readouterr().out
    assert f"job default/{JOB}: phase Pending" in out and f"job team-a/{JOB}: phase Pending" in out


def test_missing_kubeconfig_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", JOB, "--kubeconfig", str(tmp_path / "none")]) == 2
    assert "cannot load the Kubernetes configuration" in capsys.readouterr().err


def running_job(server: FakeApiServer) -> None:
    """Play Volcano and Ascend Operator: two pods of the second attempt and the completed table."""
    job = server.get("jobs", NS, JOB)
    job["status"] = {"state": {"phase": "Running"}, "retryCount": 1, "version": 2,
                     "taskStatusCount": {"worker": {"phase": {"Running": 2}}}}
    for i, (host, pod_ip) in enumerate([("10.0.0.1", "172.16.0.5"), ("10.0.0.2", "172.16.1.7")]):
        server.put("pods", NS, pod(f"{JOB}-worker-{i}", JOB, i, f"node-{i}", host, pod_ip, "Ascend910-0,Ascend910-1,"
                                   "Ascend910-2,Ascend910-3", version=2))
    server.put("pods", NS, pod("other-worker-0", "other", 0, "node-9", "10.0.0.9", "172.16.9.9", "", 0))
    cm = server.get("configmaps", NS, "rings-config-" + JOB)
    cm["data"]["hccl.json"] = table([("10.0.0.1", "172.16.0.5"), ("10.0.0.2", "172.16.1.7")], 4)


def test_status_shows_phase_retries_pods_and_table(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    submitted(api[0])
    running_job(api[0])
    capsys.readouterr()
    assert k8s(api, "status", JOB) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"job ml/{JOB}: phase Running, retries 1 of {r.RESTARTS} (maxRetry {r.RESTARTS + 1}), version 2"
    assert "task worker: Running 2" in out
    assert (f"pod {JOB}-worker-1: Running, node node-1, host IP 10.0.0.2, pod IP 172.16.1.7, NPUs Ascend910-0,"
            f"Ascend910-1,Ascend910-2,Ascend910-3, job version 2") in out
    assert not any("other-worker" in line for line in out)  # the label selector reached the server
    assert out[-1] == "rank table: completed: 2 server(s), 8 rank(s)"
    assert "labelSelector=volcano.sh/job-name=mnist-8p" in " ".join(api[0].verbs())


def test_status_of_an_initializing_table_and_a_missing_job(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    submitted(api[0])
    capsys.readouterr()
    assert k8s(api, "status", JOB) == 0
    assert "rank table: initializing" in capsys.readouterr().out
    assert k8s(api, "status", "nope") == 1
    assert "no Volcano job 'nope' in namespace ml" in capsys.readouterr().err


def test_logs_of_a_rank_come_from_its_pod(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    server = api[0]
    submitted(api[0])
    running_job(server)
    server.logs[f"{JOB}-worker-1"] = ["launcher: server 10.0.0.2: starting ranks 4,5,6,7", "[rank 4] epoch 1",
                                      "[rank 5] epoch 1", "[rank 5] epoch 2"]
    server.log_delay_s = 0.05
    capsys.readouterr()
    assert k8s(api, "logs", JOB, "--rank", "5", "-f") == 0
    assert capsys.readouterr().out == "epoch 1\nepoch 2\n"
    assert f"GET ml/pods/{JOB}-worker-1/log?container=launcher&follow=true" in server.verbs()
    assert k8s(api, "logs", JOB, "--rank", "9") == 2
    assert "rank 9 is not in the rank table (ranks 0..7)" in capsys.readouterr().err


def test_logs_before_the_table_is_complete(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    submitted(api[0])
    capsys.readouterr()
    assert k8s(api, "logs", JOB, "--rank", "0") == 1
    assert "cannot map rank 0 to a pod: the rank table is initializing" in capsys.readouterr().err


@pytest.mark.parametrize("phases, code", [(["Running", "Restarting", "Pending", "Running", "Completed"], 0),
                                          (["Running", "Restarting", "Failed"], 1)])
def test_wait_follows_the_job_to_its_final_phase(api: Api, capsys: pytest.CaptureFixture[str],
                                                 phases: List[str], code: int) -> None:
    submitted(api[0])
    api[0].watch_phases = list(phases)
    capsys.readouterr()
    assert k8s(api, "wait", JOB) == code
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"job {JOB}: {phases[-1]}"
    assert any("watch=true" in v and "fieldSelector=metadata.name=mnist-8p" in v for v in api[0].verbs())


def test_delete_keeps_claims_unless_purged(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    server = api[0]
    submitted(api[0])
    assert k8s(api, "delete", JOB) == 0
    assert sorted(k[0] for k in server.objects) == ["persistentvolumeclaims", "persistentvolumeclaims"]
    assert k8s(api, "delete", JOB, "--purge") == 1  # the job is gone already: NotFound, as kubectl...
    assert server.objects == {}                            # ...but what was left is deleted
    assert f"error: Volcano job ml/{JOB} not found (NotFound); 2 other object(s) deleted" in capsys.readouterr().err
    server.forbidden.add(("DELETE", "jobs"))
    assert k8s(api, "delete", JOB) == 1
    assert "forbidden" in capsys.readouterr().err


def test_submit_and_delete_the_network_policy(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    assert k8s(api, "submit", SPEC, "--network-policy") == 0
    assert f"networkpolicy/{JOB}-peers created" in capsys.readouterr().out
    policy = api[0].get("networkpolicies", NS, f"{JOB}-peers")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    verbs = api[0].verbs()
    assert verbs.index(next(v for v in verbs if "networkpolicies" in v)) < verbs.index(
        next(v for v in verbs if v.startswith("POST") and "/jobs" in v))  # guarded before the pods start
    assert k8s(api, "delete", JOB) == 0
    assert f"networkpolicy/{JOB}-peers deleted" in capsys.readouterr().out
    assert api[0].get("networkpolicies", NS, f"{JOB}-peers") is None


def test_delete_of_a_missing_job_exits_1_unless_told_to_ignore_it(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    submitted(api[0], namespace="other")
    assert k8s(api, "delete", JOB) == 1  # the right job in the wrong namespace
    err = capsys.readouterr().err
    assert f"error: Volcano job ml/{JOB} not found (NotFound); 0 other object(s) deleted" in err
    assert "--ignore-not-found" in err
    assert k8s(api, "delete", "no-such-job", "--ignore-not-found") == 0
    assert "kept" not in capsys.readouterr().out  # nothing was there to keep
    assert len(api[0].objects) == 5  # namespace other untouched


def test_job_names_with_a_trailing_newline_are_refused(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("status", "delete", "wait"):
        assert k8s(api, command, f"{JOB}\n") == 2
        assert "is not a DNS-1123 label" in capsys.readouterr().err
    assert api[0].verbs() == []  # refused before any request


def test_logs_of_a_gpu_rank_come_from_the_pod_of_its_task_index(api: Api, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    server = api[0]
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: g\nbackend: tf\ndevices: {type: gpu, count: 4}\n", encoding="utf-8")
    (job,) = [o for o in objects_of(r.render_file(spec, r.RenderOptions(target="gpu", nodes=2)))
              if o["kind"] == "Job"]
    server.put("jobs", NS, job)
    for i in range(2):
        server.put("pods", NS, pod(f"g-worker-{i}", "g", i, f"node-{i}", f"10.0.0.{i + 1}", f"172.16.{i}.5", "", 0))
    server.logs["g-worker-1"] = ["[rank 6] loss 0.5", "[rank 5] loss 0.7"]
    assert k8s(api, "logs", "g", "--rank", "6") == 0
    assert capsys.readouterr().out == "loss 0.5\n"
    assert k8s(api, "logs", "g", "--rank", "8") == 2
    assert "rank 8 is not in job g (ranks 0..7)" in capsys.readouterr().err


def test_wait_gives_up_after_its_timeout(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    submitted(api[0])
    api[0].watch_phases = ["Running"]  # the watch ends (the server's timeout) with the job still running
    assert k8s(api, "wait", JOB, "--timeout", "1") == 1
    assert f"job {JOB} still Running after 1 s" in capsys.readouterr().err
    assert any("timeoutSeconds=1" in v for v in api[0].verbs())
