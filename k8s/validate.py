"""Offline validation of manifests: what `kubectl apply -f k8s/` would send, checked without a cluster.

- Core objects (ConfigMap, PersistentVolumeClaim, Pod, ...) go through kubernetes-validate's Python
  API in strict mode: unknown fields are errors, as with the strict field validation kubectl (1.27
  and later) asks the API server for. An object with no bundled schema is an error here, not the
  warning the kubernetes-validate command line prints and exits 0 on.
- Volcano Jobs go through ``schemas/volcano-job.json``, written for this project from Volcano's Job
  CRD. Each task's pod template is checked against Kubernetes' strict PodTemplateSpec schema (by
  wrapping it in a core/v1 PodTemplate) and each volumeClaim as a PersistentVolumeClaim spec. Then
  the rules Volcano's admission webhook applies across fields (minAvailable against replicas,
  event xor exitCode, ...).
- Ascend Operator's AscendJobs go through the CRD's own openAPIV3Schema (``schemas/ascendjob-v1.openapi.json``,
  copied unchanged from Ascend/mind-cluster, source and commit in ``ascendjob-v1.source.json``), read
  as the API server reads a structural schema with strict field validation: a field the schema does
  not list is an error unless the schema preserves unknown fields there. Each replica's pod template
  is checked as a Volcano task's is, then the operator's own rules (a container named ``ascend``,
  the framework label, TensorFlow's Chief and Worker replicas).
- For every pod spec, the API server's own cross-field checks that JSON schemas cannot express:
  mounts name declared volumes, resource quantities are well formed, extended resources (NPUs)
  are whole numbers with requests equal to limits.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

import jsonschema
import kubernetes_validate
import yaml

# Pinned, not "latest": the schemas bundled with kubernetes-validate change with each release, and the
# tests must not start failing (or passing) because a dependency was upgraded. 1.25 is the oldest
# version kubernetes-validate 1.37 bundles. Ascend clusters often lag behind upstream Kubernetes
# (hccl-controller asks for 1.16 or later), so a field added after 1.25 should fail here rather than
# on an operator's cluster. Every field the manifests use is older than 1.25 and still served.
KUBERNETES_VERSION = "1.25"

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
VOLCANO_JOB = ("batch.volcano.sh/v1alpha1", "Job")
ASCEND_JOB = ("mindxdl.gitee.com/v1", "AscendJob")
# Ascend/mind-cluster component/ascend-common/api: DefaultContainerName, and the frameworks and
# TensorFlow replica types of apis/batch/v1/constants.go.
ASCEND_CONTAINER = "ascend"
ASCEND_FRAMEWORKS = ("mindspore", "pytorch", "tensorflow")
TF_REPLICA_TYPES = ("Chief", "Worker")
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")  # what kubectl apply -f DIR reads

# Kubernetes' resource.Quantity, as in the CRDs' int-or-string pattern.
QUANTITY = re.compile(r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
                      r"([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
NATIVE_RESOURCE_PREFIXES = ("kubernetes.io/", "requests.", "hugepages-")


@dataclass(frozen=True)
class Problem:
    """One reason the cluster would reject a manifest."""

    where: str
    """The file and object, e.g. 'k8s/20-volcanojob.yaml: Job/mnist-8p'."""
    path: str
    """The field, e.g. 'spec.tasks[0].template.spec.containers[0].imagePullPolicy'."""
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.path or '(top level)'}: {self.message}"


def field_path(parts: Iterable[Any], prefix: str = "") -> str:
    out = prefix
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(error: jsonschema.ValidationError) -> str:
    """jsonschema's message, plus the nearest known field for an unknown one."""
    message = error.message
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted((error.schema.get("properties") or {}).keys())
        unknown = [k for k in error.instance if k not in known]
        hints = []
        for key in unknown:
            near = difflib.get_close_matches(str(key), known, n=1)
            if near:
                hints.append(f"{near[0]!r} (not {key!r})")
        if hints:
            message += f"; did you mean {', '.join(hints)}?"
    return message


# ---------------------------------------------------------------------------------------------
# Core objects


def _core(obj: Mapping[str, Any], where: str, prefix: str = "") -> List[Problem]:
    """Strict kubernetes-validate; ``prefix`` maps a wrapped object's paths back to its host."""
    group = str(obj.get("apiVersion")).rpartition("/")[0]
    if "." in group and not group.endswith(".k8s.io"):
        # kubernetes-validate drops the domain of a group: batch.volcano.sh/v1 would be read as batch/v1.
        return [_no_schema(obj, where)]
    try:
        kubernetes_validate.validate(dict(obj), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        parts = list(e.path)
        if prefix:
            parts = parts[1:]  # drop the wrapper's own field ("template" or "spec")
        return [Problem(where, field_path(parts, prefix), _describe(e))]
    except kubernetes_validate.SchemaNotFoundError:
        return [_no_schema(obj, where)]
    return []


def _no_schema(obj: Mapping[str, Any], where: str) -> Problem:
    return Problem(where, "", f"no schema for kind {obj.get('kind')} of apiVersion {obj.get('apiVersion')} "
                              f"in Kubernetes {KUBERNETES_VERSION} or this project: a misspelt kind or "
                              f"apiVersion, or a custom resource that cannot be checked offline")


# ---------------------------------------------------------------------------------------------
# Volcano Job


@functools.cache
def volcano_schema() -> Dict[str, Any]:
    with open(SCHEMA_DIR / "volcano-job.json", encoding="utf-8") as f:
        return json.load(f)


def _schema_problems(validator: Any, obj: Mapping[str, Any], where: str) -> List[Problem]:
    return [Problem(where, field_path(e.path), _describe(e))
            for e in sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.path])]


def _template(template: Any, name: str, where: str, path: str) -> List[Problem]:
    """A pod template against Kubernetes' strict PodTemplateSpec (wrapped in a core/v1 PodTemplate)."""
    if not isinstance(template, dict):
        return []
    wrapper = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}
    return _core(wrapper, where, path)


def _volcano(job: Mapping[str, Any], where: str) -> List[Problem]:
    problems = _schema_problems(jsonschema.Draft202012Validator(volcano_schema()), job, where)
    spec = job.get("spec")
    if not isinstance(spec, dict):
        return problems
    tasks = [t for t in spec.get("tasks") or [] if isinstance(t, dict)]
    for i, task in enumerate(tasks):
        problems += _template(task.get("template"), str(task.get("name") or "task"), where,
                              f"spec.tasks[{i}].template")
    for i, volume in enumerate(spec.get("volumes") or []):
        if isinstance(volume, dict) and isinstance(volume.get("volumeClaim"), dict):
            wrapper = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": "claim"}, "spec": volume["volumeClaim"]}
            problems += _core(wrapper, where, f"spec.volumes[{i}].volumeClaim")
    if problems:
        return problems  # the cross-field rules below assume the types are right
    return _volcano_rules(job, where)


def _volcano_rules(job: Mapping[str, Any], where: str) -> List[Problem]:
    """What Volcano's admission webhook checks across fields."""
    spec = job["spec"]
    out: List[Problem] = []
    tasks = spec["tasks"]
    total = sum(t["replicas"] for t in tasks)
    if spec.get("minAvailable", 0) > total:
        out.append(Problem(where, "spec.minAvailable", f"{spec['minAvailable']} is more than the {total} "
                                                       f"pod(s) of all tasks: the job could never start"))
    for name, n in Counter(t["name"] for t in tasks).items():
        if n > 1:
            out.append(Problem(where, "spec.tasks", f"task name {name!r} is used {n} times"))
    for i, task in enumerate(tasks):
        if task.get("minAvailable", 0) > task["replicas"]:
            out.append(Problem(where, f"spec.tasks[{i}].minAvailable",
                               f"{task['minAvailable']} is more than the task's {task['replicas']} replicas"))
        pod = f"{job['metadata']['name']}-{task['name']}-{max(task['replicas'] - 1, 0)}"
        if len(pod) > 63:
            out.append(Problem(where, f"spec.tasks[{i}].name", f"pod names such as {pod!r} would be "
                                                              f"longer than 63 characters"))
        out += _policy_rules(task.get("policies") or [], f"spec.tasks[{i}].policies", where)
    out += _policy_rules(spec.get("policies") or [], "spec.policies", where)
    mounts = Counter(v["mountPath"] for v in spec.get("volumes") or [])
    for i, volume in enumerate(spec.get("volumes") or []):
        if mounts[volume["mountPath"]] > 1:
            out.append(Problem(where, f"spec.volumes[{i}].mountPath", f"{volume['mountPath']!r} is used twice"))
        if ("volumeClaim" in volume) == ("volumeClaimName" in volume):
            out.append(Problem(where, f"spec.volumes[{i}]", "give exactly one of volumeClaim (a new claim) "
                                                            "and volumeClaimName (an existing one)"))
    for i, task in enumerate(tasks):
        template_spec = task["template"].get("spec")
        if isinstance(template_spec, dict):
            out += _pod_rules(template_spec, f"spec.tasks[{i}].template.spec", where)
    return out


@functools.cache
def ascendjob_schema() -> Dict[str, Any]:
    with open(SCHEMA_DIR / "ascendjob-v1.openapi.json", encoding="utf-8") as f:
        return _structural(json.load(f))


def _structural(schema: Any) -> Any:
    """An OpenAPI v3 structural schema as the API server applies it with strict field validation:
    an object's unlisted fields are errors, except under x-kubernetes-preserve-unknown-fields."""
    if isinstance(schema, list):
        return [_structural(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (_structural(v) if k in ("items", "additionalProperties", "anyOf", "allOf", "oneOf") else v)
           for k, v in schema.items()}
    if "properties" in schema:
        out["properties"] = {k: _structural(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


def _ascend_job(job: Mapping[str, Any], where: str) -> List[Problem]:
    problems = _schema_problems(jsonschema.Draft4Validator(ascendjob_schema()), job, where)
    spec = job.get("spec")
    replicas = spec.get("replicaSpecs") if isinstance(spec, dict) else None
    if not isinstance(replicas, dict):
        return problems
    for kind, replica in replicas.items():
        if isinstance(replica, dict):
            problems += _template(replica.get("template"), str(kind).lower(), where,
                                  f"spec.replicaSpecs.{kind}.template")
    return problems or _ascend_job_rules(job, where)


def _ascend_job_rules(job: Mapping[str, Any], where: str) -> List[Problem]:
    """What Ascend Operator needs beyond its schema (its defaults.go, env.go, pod.go)."""
    out: List[Problem] = []
    framework = (job["metadata"].get("labels") or {}).get("framework")
    if framework not in ASCEND_FRAMEWORKS:
        out.append(Problem(where, "metadata.labels.framework", f"{framework!r}: the operator runs "
                                                               f"{', '.join(ASCEND_FRAMEWORKS)} jobs"))
    replicas = job["spec"]["replicaSpecs"]
    if framework == "tensorflow":
        for kind in replicas:
            if kind not in TF_REPLICA_TYPES:
                out.append(Problem(where, f"spec.replicaSpecs.{kind}", "a TensorFlow job has replica types "
                                                                       f"{' and '.join(TF_REPLICA_TYPES)}"))
        if replicas.get("Chief", {}).get("replicas", 1) != 1:
            out.append(Problem(where, "spec.replicaSpecs.Chief.replicas", "a TensorFlow job has one Chief"))
    total = sum(r.get("replicas", 1) for r in replicas.values())
    policy = (job["spec"].get("runPolicy") or {}).get("schedulingPolicy") or {}
    if policy.get("minAvailable", 0) > total:
        out.append(Problem(where, "spec.runPolicy.schedulingPolicy.minAvailable",
                           f"{policy['minAvailable']} is more than the {total} pod(s): the job could never start"))
    for kind, replica in replicas.items():
        path = f"spec.replicaSpecs.{kind}.template.spec"
        pod = (replica.get("template") or {}).get("spec") or {}
        if ASCEND_CONTAINER not in [c.get("name") for c in pod.get("containers") or []]:
            out.append(Problem(where, f"{path}.containers", f"no container named {ASCEND_CONTAINER!r}: the "
                                                            "operator sets its environment (CM_*) only there"))
        out += _pod_rules(pod, path, where)
    return out


def _policy_rules(policies: Sequence[Mapping[str, Any]], path: str, where: str) -> List[Problem]:
    out: List[Problem] = []
    seen_events: Dict[str, int] = {}
    seen_codes: Dict[int, int] = {}
    for i, policy in enumerate(policies):
        events = ([policy["event"]] if "event" in policy else []) + list(policy.get("events") or [])
        if events and "exitCode" in policy:
            out.append(Problem(where, f"{path}[{i}]", "give event(s) or exitCode, not both"))
        elif not events and "exitCode" not in policy:
            out.append(Problem(where, f"{path}[{i}]", "give an event (or events) or an exitCode"))
        for event in dict.fromkeys(events):
            if event in seen_events:
                out.append(Problem(where, f"{path}[{i}]", f"event {event!r} is already handled by "
                                                          f"{path}[{seen_events[event]}]"))
            seen_events.setdefault(event, i)
        code = policy.get("exitCode")
        if code is not None:
            if code in seen_codes:
                out.append(Problem(where, f"{path}[{i}].exitCode", f"exit code {code} is already handled "
                                                                   f"by {path}[{seen_codes[code]}]"))
            seen_codes.setdefault(code, i)
    if "*" in seen_events and len(seen_events) > 1:
        out.append(Problem(where, path, "event '*' covers every event: it cannot be combined with others"))
    return out


# ---------------------------------------------------------------------------------------------
# Pod specs: the API server's cross-field checks


def _pod_specs(obj: Mapping[str, Any]) -> List[Tuple[str, Mapping[str, Any]]]:
    if obj.get("kind") == "Pod":
        candidates = [("spec", obj.get("spec"))]
    elif obj.get("kind") == "PodTemplate":
        candidates = [("template.spec", (obj.get("template") or {}).get("spec"))]
    else:  # workloads: Deployment, Job, StatefulSet, ...
        spec = obj.get("spec")
        template = spec.get("template") if isinstance(spec, dict) else None
        candidates = [("spec.template.spec", template.get("spec") if isinstance(template, dict) else None)]
    return [(path, spec) for path, spec in candidates if isinstance(spec, dict)]


def _pod_rules(pod: Mapping[str, Any], path: str, where: str) -> List[Problem]:
    out: List[Problem] = []
    volumes = [v.get("name") for v in pod.get("volumes") or []]
    for name, n in Counter(volumes).items():
        if n > 1:
            out.append(Problem(where, f"{path}.volumes", f"volume name {name!r} is used {n} times"))
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(pod.get(kind) or []):
            cpath = f"{path}.{kind}[{i}]"
            for j, mount in enumerate(c.get("volumeMounts") or []):
                if mount.get("name") not in volumes:
                    near = difflib.get_close_matches(str(mount.get("name")), [str(v) for v in volumes], n=1)
                    hint = f"; did you mean {near[0]!r}?" if near else ""
                    out.append(Problem(where, f"{cpath}.volumeMounts[{j}].name",
                                       f"no volume named {mount.get('name')!r} in {path}.volumes{hint}"))
            out += _resource_rules(c.get("resources") or {}, f"{cpath}.resources", where)
    return out


def _resource_rules(resources: Mapping[str, Any], path: str, where: str) -> List[Problem]:
    out: List[Problem] = []
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for section, values in (("requests", requests), ("limits", limits)):
        for name, value in values.items():
            if isinstance(value, bool) or not (isinstance(value, (int, float)) or
                                               (isinstance(value, str) and QUANTITY.match(value))):
                out.append(Problem(where, f"{path}.{section}.{name}",
                                   f"{value!r} is not a quantity (e.g. 8, 500m, 64Gi)"))
    for name in sorted(set(requests) | set(limits)):
        if "/" not in name or name.startswith(NATIVE_RESOURCE_PREFIXES):
            continue
        for section, values in (("requests", requests), ("limits", limits)):
            value = values.get(name)
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool)
                                          or isinstance(value, str) and value.isdigit()):
                out.append(Problem(where, f"{path}.{section}.{name}",
                                   f"extended resource {name} must be a whole number, got {value!r}"))
        if name not in limits:
            out.append(Problem(where, f"{path}.limits", f"extended resource {name} is requested but has "
                                                        f"no limit; set limits.{name} equal to the request"))
        elif name in requests and str(requests[name]) != str(limits[name]):
            out.append(Problem(where, f"{path}.requests.{name}", f"extended resource {name}: request "
                                                                 f"{requests[name]!r} differs from limit "
                                                                 f"{limits[name]!r}; they must be equal"))
    return out


# ---------------------------------------------------------------------------------------------
# Entry points


def check_object(obj: Any, where: str = "<object>") -> List[Problem]:
    """Every problem with one manifest object (empty: it would be accepted)."""
    if not isinstance(obj, dict):
        return [Problem(where, "", f"expected a mapping (an object), got {type(obj).__name__}")]
    api, kind = obj.get("apiVersion"), obj.get("kind")
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    where = f"{where}: {kind}/{name}" if name else f"{where}: {kind}"
    if not isinstance(api, str) or not isinstance(kind, str):
        return [Problem(where, "", "apiVersion and kind must both be set (strings)")]
    if not isinstance(name, str) or not name:
        return [Problem(where, "metadata.name", "every object needs a name")]
    if (api, kind) == VOLCANO_JOB:
        return _volcano(obj, where)
    if (api, kind) == ASCEND_JOB:
        return _ascend_job(obj, where)
    problems = _core(obj, where)
    if not problems:
        for path, pod in _pod_specs(obj):
            problems += _pod_rules(pod, path, where)
        if kind == "PersistentVolumeClaim":
            spec = obj.get("spec") or {}
            problems += _resource_rules(spec.get("resources") or {}, "spec.resources", where)
    return problems


def load_documents(text: str, source: str) -> Tuple[List[Any], List[Problem]]:
    """The non-empty YAML documents of ``text`` (kubectl skips empty ones), or the syntax error."""
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None], []
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return [], [Problem(source, where, f"not valid YAML: {getattr(e, 'problem', None) or e}")]


def check_text(text: str, source: str = "<text>") -> List[Problem]:
    documents, problems = load_documents(text, source)
    for document in documents:
        problems += check_object(document, source)
    return problems


def manifest_files(paths: Sequence[Path]) -> List[Path]:
    """Files named directly, and the manifests at the top of named folders (as kubectl apply -f)."""
    out: List[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.is_file() and p.suffix in MANIFEST_SUFFIXES)
        else:
            out.append(path)
    return out


def check_paths(paths: Sequence[Path]) -> List[Problem]:
    problems: List[Problem] = []
    files = manifest_files(paths)
    if not files:
        return [Problem(", ".join(map(str, paths)), "", "no .yaml, .yml or .json files to check")]
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            problems.append(Problem(str(path), "", f"cannot read: {e.strerror or e}"))
            continue
        problems += check_text(text, str(path))
    return problems
