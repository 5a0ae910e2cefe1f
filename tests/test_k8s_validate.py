"""k8s.validate: every object in k8s/ is valid offline, and a misspelt field or a wrong type is caught."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable, Dict, List

import jsonschema
import pytest
import yaml

from k8s import cli
from k8s import render as r
from k8s import validate as v

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"


def manifests() -> Dict[str, Dict[str, Any]]:
    """kind -> first object of that kind in k8s/ (Job is the Volcano Job)."""
    out: Dict[str, Dict[str, Any]] = {}
    for name in r.FILES:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc:
                out.setdefault(doc["kind"], doc)
    return out


def pod(job: Dict[str, Any]) -> Dict[str, Any]:
    return job["spec"]["tasks"][0]["template"]["spec"]


def container(job: Dict[str, Any]) -> Dict[str, Any]:
    return pod(job)["containers"][0]


# ---------------------------------------------------------------------------------------------
# The manifests in k8s/


def test_every_object_in_k8s_is_valid() -> None:
    files = v.manifest_files([K8S])
    assert sorted(p.name for p in files) == sorted(r.FILES)
    assert v.check_paths([K8S]) == []
    kinds = sorted(d["kind"] for p in files for d in yaml.safe_load_all(p.read_text()) if d)
    assert kinds.count("ConfigMap") == 2 and kinds.count("Job") == 1 and "PersistentVolumeClaim" in kinds


def test_validate_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["validate"]) == 0
    assert "ok: 3 file(s) valid" in capsys.readouterr().out
    broken = tmp_path / "job.yaml"
    broken.write_text((K8S / r.FILES[2]).read_text().replace("imagePullPolicy", "imagePullPolcy"))
    assert cli.main(["validate", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "spec.tasks[0].template.spec.containers[0]" in err and "'imagePullPolicy' (not 'imagePullPolcy')" in err


def test_volcano_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(v.volcano_schema())


def test_strict_mode_and_pinned_version_are_what_catch_unknown_fields() -> None:
    cm = manifests()["ConfigMap"]
    cm = dict(cm, dat={"x": "y"})
    import kubernetes_validate

    kubernetes_validate.validate(cm, v.KUBERNETES_VERSION, strict=False)  # lenient mode lets it through
    assert [p.path for p in v.check_object(cm)] == [""]


# ---------------------------------------------------------------------------------------------
# Broken manifests must fail: (object kind, how to break it, expected field path, words of the message)

Breaker = Callable[[Dict[str, Any]], None]


def _set(path: List[Any], value: Any) -> Breaker:
    def apply(obj: Dict[str, Any]) -> None:
        node = obj
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return apply


def _rename(path: List[Any], old: str, new: str) -> Breaker:
    def apply(obj: Dict[str, Any]) -> None:
        node = obj
        for key in path:
            node = node[key]
        node[new] = node.pop(old)
    return apply


TASK = ["spec", "tasks", 0]
POD = TASK + ["template", "spec"]
CONTAINER = POD + ["containers", 0]

BROKEN = [
    # Volcano Job: its own schema
    ("Job", _rename(["spec"], "minAvailable", "minAvaliable"), "spec", "'minAvailable' (not 'minAvaliable')"),
    ("Job", _set(TASK + ["replicas"], "1"), "spec.tasks[0].replicas", "not of type 'integer'"),
    ("Job", _set(["spec", "maxRetry"], -1), "spec.maxRetry", "less than the minimum of 0"),
    ("Job", _set(["spec", "policies", 0, "event"], "PodFailure"), "spec.policies[0].event", "is not one of"),
    ("Job", _set(["spec", "policies", 0, "action"], "RestartJobs"), "spec.policies[0].action", "is not one of"),
    ("Job", _set(["spec", "plugins"], {"svcs": []}), "spec.plugins", "is not one of"),
    ("Job", _set(["status"], {"state": {"phase": "Running"}}), "", "'status' was unexpected"),
    ("Job", _rename(["metadata"], "labels", "lables"), "metadata", "'labels' (not 'lables')"),
    ("Job", _set(["metadata", "name"], "MNIST_8p"), "metadata.name", "does not match"),
    ("Job", _set(["apiVersion"], "batch.volcano.sh/v1"), "", "no schema for kind Job"),
    # Volcano Job: its pod template, against Kubernetes' strict schema
    ("Job", _rename(CONTAINER, "imagePullPolicy", "imagePullPolcy"), "spec.tasks[0].template.spec.containers[0]",
     "'imagePullPolicy' (not 'imagePullPolcy')"),
    ("Job", _set(CONTAINER + ["command"], "python3 -m launcher"), "spec.tasks[0].template.spec.containers[0].command",
     "not of type 'array'"),
    ("Job", _set(POD + ["terminationGracePeriodSeconds"], "35"),
     "spec.tasks[0].template.spec.terminationGracePeriodSeconds", "not of type 'integer'"),
    ("Job", _rename(POD, "nodeSelector", "nodeSelecter"), "spec.tasks[0].template.spec", "'nodeSelector'"),
    ("Job", _set(POD + ["volumes", 2, "hostPath", "readOnly"], True), "spec.tasks[0].template.spec.volumes[2].hostPath",
     "'readOnly' was unexpected"),
    ("Job", _set(CONTAINER + ["resizePolicy"], [{"resourceName": "cpu", "restartPolicy": "NotRequired"}]),
     "spec.tasks[0].template.spec.containers[0]", "'resizePolicy' was unexpected"),  # newer than the pinned 1.25
    # Volcano Job: rules across fields (webhook, API server)
    ("Job", _set(["spec", "minAvailable"], 2), "spec.minAvailable", "could never start"),
    ("Job", _set(["spec", "policies", 1], {"event": "PodFailed", "action": "AbortJob"}), "spec.policies[1]",
     "already handled by spec.policies[0]"),
    ("Job", _set(["spec", "policies", 0, "exitCode"], 3), "spec.policies[0]", "not both"),
    ("Job", _set(CONTAINER + ["volumeMounts", 0, "name"], "ascend-910-confg"),
     "spec.tasks[0].template.spec.containers[0].volumeMounts[0].name", "did you mean 'ascend-910-config'"),
    ("Job", _set(CONTAINER + ["resources", "limits", r.NPU_RESOURCE], 4),
     f"spec.tasks[0].template.spec.containers[0].resources.requests.{r.NPU_RESOURCE}", "must be equal"),
    ("Job", _set(CONTAINER + ["resources", "requests", r.NPU_RESOURCE], "0.5"),
     f"spec.tasks[0].template.spec.containers[0].resources.requests.{r.NPU_RESOURCE}", "whole number"),
    ("Job", _set(CONTAINER + ["resources", "requests", "memory"], "64GB"),
     "spec.tasks[0].template.spec.containers[0].resources.requests.memory", "not a quantity"),
    # ConfigMap
    ("ConfigMap", _set(["data", "hccl.json"], 1), "data.hccl.json", "not of type 'string', 'null'"),
    ("ConfigMap", _rename([], "data", "dat"), "", "'dat' was unexpected"),
    ("ConfigMap", _set(["metadata", "labels"], ["ring-controller.atlas"]), "metadata.labels", "not of type"),
    ("ConfigMap", _set(["kind"], "Configmap"), "kind", "'Configmap' is not one of ['ConfigMap']"),
    ("ConfigMap", _set(["apiVersion"], "v2"), "", "no schema for kind ConfigMap of apiVersion v2"),
    ("ConfigMap", _set(["metadata"], {}), "metadata.name", "needs a name"),
    # PersistentVolumeClaim
    ("PersistentVolumeClaim", _rename(["spec"], "accessModes", "accesModes"), "spec",
     "'accessModes' (not 'accesModes')"),
    ("PersistentVolumeClaim", _set(["spec", "accessModes"], "ReadWriteMany"), "spec.accessModes", "not of type"),
    ("PersistentVolumeClaim", _set(["spec", "resources", "requests", "storage"], "10 GiB"),
     "spec.resources.requests.storage", "not a quantity"),
]


@pytest.mark.parametrize("kind, breaker, path, words", BROKEN,
                         ids=[f"{k}-{p or 'top'}-{w[:24]}" for k, _, p, w in BROKEN])
def test_broken_manifest_fails(kind: str, breaker: Breaker, path: str, words: str) -> None:
    obj = copy.deepcopy(manifests()[kind])
    assert v.check_object(obj) == []
    breaker(obj)
    problems = v.check_object(obj, "f.yaml")
    assert problems, "the broken manifest passed"
    assert any(p.path == path and words in p.message for p in problems), "\n".join(map(str, problems))


def test_problem_names_file_object_and_field(tmp_path: Path) -> None:
    text = (K8S / r.FILES[1]).read_text().replace("  resources:\n", "  resourcez:\n", 1)
    path = tmp_path / "pvcs.yaml"
    path.write_text(text)
    (problem,) = v.check_paths([path])
    assert str(problem).startswith(f"{path}: PersistentVolumeClaim/")
    assert ": spec: Additional properties are not allowed ('resourcez' was unexpected)" in str(problem)


def test_yaml_syntax_error_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\n")
    (problem,) = v.check_paths([path])
    assert "not valid YAML" in problem.message and problem.path.startswith("line ")


def test_folder_is_read_as_kubectl_reads_it(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not a manifest")
    assert [p.message for p in v.check_paths([tmp_path])] == ["no .yaml, .yml or .json files to check"]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.yaml").write_text("kind: Nonsense\n")  # kubectl apply -f DIR does not recurse
    (tmp_path / "cm.json").write_text('{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}')
    assert v.check_paths([tmp_path]) == []


# -- Ascend Operator's AscendJob (--operator ascend), against the CRD's own schema ---------------

def _ascend_job(nodes: int = 2) -> Dict[str, Any]:
    from job.spec import load_spec

    spec = load_spec(Path(r.REPO_ROOT) / "configs/mnist_8p.yaml")
    return r.ascend_job(spec, r.RenderOptions(nodes=nodes, operator="ascend"))


def test_the_ascendjob_render_validates_against_the_crd_schema() -> None:
    job = _ascend_job()
    assert v.check_object(job, "acjob") == []
    assert set(job["spec"]["replicaSpecs"]) == {"Chief", "Worker"}
    container = job["spec"]["replicaSpecs"]["Chief"]["template"]["spec"]["containers"][0]
    assert container["name"] == "ascend" and container["ports"] == [{"containerPort": 2222, "name": "ascendjob-port"}]
    assert "volumeMounts" in container and all(m["name"] != "ascend-910-config" for m in container["volumeMounts"])
    source = json.loads((Path(r.REPO_ROOT) / "k8s/schemas/ascendjob-v1.source.json").read_text())
    assert source["repository"] == "https://github.com/Ascend/mind-cluster" and len(source["commit"]) == 40


@pytest.mark.parametrize("change, path, says", [
    (lambda j: j["spec"].update(replicaSpec=j["spec"].pop("replicaSpecs")), "spec", "replicaSpecs"),
    (lambda j: j["spec"]["runPolicy"].update(backoffLimit="3"), "spec.runPolicy.backoffLimit", "is not of type"),
    (lambda j: j["spec"]["runPolicy"]["schedulingPolicy"].update(minAvailable=3),
     "spec.runPolicy.schedulingPolicy.minAvailable", "more than the 2 pod(s)"),
    (lambda j: j["spec"]["replicaSpecs"]["Chief"].update(replica=1), "spec.replicaSpecs.Chief",
     "Additional properties"),
    (lambda j: j["spec"]["replicaSpecs"]["Chief"]["template"]["spec"]["containers"][0].update(name="main"),
     "spec.replicaSpecs.Chief.template.spec.containers", "no container named 'ascend'"),
    (lambda j: j["spec"]["replicaSpecs"]["Worker"]["template"]["spec"]["containers"][0].update(imagePullPolcy="Always"),
     "spec.replicaSpecs.Worker.template", "imagePullPolcy"),
    (lambda j: j["metadata"]["labels"].update(framework="tf"), "metadata.labels.framework", "'tf'"),
    (lambda j: j["spec"]["replicaSpecs"].update(PS=j["spec"]["replicaSpecs"]["Worker"]), "spec.replicaSpecs.PS",
     "replica types Chief and Worker"),
])
def test_a_broken_ascendjob_is_refused(change: Any, path: str, says: str) -> None:
    job = _ascend_job()
    change(job)
    problems = v.check_object(job, "acjob")
    assert any(p.path.startswith(path) and says in p.message for p in problems), [str(p) for p in problems]
