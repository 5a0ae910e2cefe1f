"""The job on a live cluster through the official ``kubernetes`` client: submit, status, logs, wait, delete.

Modelled on TorchX's Volcano scheduler (torchx/schedulers/kubernetes_scheduler.py): the Volcano Job is
a custom object (CustomObjectsApi, group batch.volcano.sh, version v1alpha1, plural jobs), its pods
carry the label ``volcano.sh/job-name`` (Volcano's job controller, createJobPod), the job's status
has ``state.phase``, ``retryCount``, ``version`` and ``taskStatusCount`` (Volcano's CRD,
config/crd/volcano/bases/batch.volcano.sh_jobs.yaml). Logs come from ``read_namespaced_pod_log``
with ``follow`` and ``_preload_content=False``, streamed line by line as ``kubectl logs -f`` does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

import rank_table
from job.spec import DNS_LABEL
from k8s import render as r

GROUP, VERSION, PLURAL = "batch.volcano.sh", "v1alpha1", "jobs"
JOB_LABEL = "volcano.sh/job-name"
TASK_INDEX_LABEL = "volcano.sh/task-index"  # label and annotation on every pod (job_controller_util.go)
# Final phases of a Volcano Job (CRD: state.phase) and the exit code each gives `wait`.
FINAL_PHASES = {"Completed": 0, "Failed": 1, "Aborted": 1, "Terminated": 1}


class ClusterError(Exception):
    """What the API server refused, with the fix; ``code`` is the process exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def explain(e: ApiException, what: str) -> ClusterError:
    """One message for an API error: 403 names the permission to ask for, 404 and 409 the object."""
    try:
        message = json.loads(e.body or "{}").get("message", e.reason)
    except ValueError:
        message = e.reason
    if e.status == 403:
        return ClusterError(f"{what}: forbidden ({message}). Ask the cluster admin for a Role that allows "
                            f"it in this namespace, or use --context/--namespace for one where you may")
    if e.status == 401:
        return ClusterError(f"{what}: not authenticated ({message}); check the credentials of your kubeconfig")
    return ClusterError(f"{what}: {e.status} {message}")


@dataclass
class Cluster:
    api: client.ApiClient
    namespace: str

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def networking(self) -> client.NetworkingV1Api:
        return client.NetworkingV1Api(self.api)

    # -----------------------------------------------------------------------------------------
    # submit

    def check_volcano(self) -> None:
        try:
            self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, limit=1)
        except ApiException as e:
            if e.status == 404:
                raise ClusterError(f"the cluster has no Volcano Job resource ({GROUP}/{VERSION} {PLURAL}): "
                                   f"install Volcano (https://volcano.sh, its CRDs and controllers) "
                                   f"before submitting") from None
            raise explain(e, f"list Volcano jobs in namespace {self.namespace}") from None

    def submit(self, objects: List[Dict[str, Any]], dry_run: bool = False,
               report: Callable[[str], None] = print) -> None:
        """Create the objects of one render, in the order the controllers need: claims (kept if they
        exist: they hold data), ConfigMaps (the rings-config one reset to initializing: the
        controller finds it by name when the job starts), the NetworkPolicy (replaced if it exists),
        then the Volcano Job."""
        self.check_volcano()
        extra = {"dry_run": "All"} if dry_run else {}
        suffix = " (server dry run)" if dry_run else ""
        order = {"PersistentVolumeClaim": 0, "ConfigMap": 1, "NetworkPolicy": 2, "Job": 3}
        for obj in sorted(objects, key=lambda o: order[o["kind"]]):
            kind, name = obj["kind"], obj["metadata"]["name"]
            obj = dict(obj, metadata=dict(obj["metadata"], namespace=self.namespace))
            try:
                if kind == "PersistentVolumeClaim":
                    self.core.create_namespaced_persistent_volume_claim(self.namespace, obj, **extra)
                elif kind == "ConfigMap":
                    self.core.create_namespaced_config_map(self.namespace, obj, **extra)
                elif kind == "NetworkPolicy":
                    self.networking.create_namespaced_network_policy(self.namespace, obj, **extra)
                else:
                    self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, obj,
                                                                **extra)
                report(f"{kind.lower()}/{name} created{suffix}")
            except ApiException as e:
                if e.status != 409:
                    raise explain(e, f"create {kind} {self.namespace}/{name}") from None
                if kind == "PersistentVolumeClaim":
                    report(f"{kind.lower()}/{name} exists: kept (its data stay)")
                elif kind in ("ConfigMap", "NetworkPolicy"):  # the render's: replaced by the new one
                    replace = (self.core.replace_namespaced_config_map if kind == "ConfigMap"
                               else self.networking.replace_namespaced_network_policy)
                    try:
                        replace(name, self.namespace, obj, **extra)
                    except ApiException as e2:
                        raise explain(e2, f"replace {kind} {self.namespace}/{name}") from None
                    report(f"{kind.lower()}/{name} replaced{suffix}")
                else:
                    raise ClusterError(f"Volcano job {self.namespace}/{name} already exists. Delete it first "
                                       f"(python -m k8s delete {name}), or rename the job (name: in the spec)"
                                       ) from None

    # -----------------------------------------------------------------------------------------
    # status

    def job(self, name: str) -> Dict[str, Any]:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                raise ClusterError(f"no Volcano job {name!r} in namespace {self.namespace}; list them with "
                                   f"kubectl get vcjob -n {self.namespace}") from None
            raise explain(e, f"get Volcano job {self.namespace}/{name}") from None

    def pods(self, name: str) -> List[client.V1Pod]:
        try:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"{JOB_LABEL}={name}").items
        except ApiException as e:
            raise explain(e, f"list the pods of {self.namespace}/{name}") from None
        return sorted(pods, key=lambda p: p.metadata.name)

    def table(self, name: str) -> Tuple[Optional[rank_table.RankTable], str]:
        """The job's rank table from its rings-config ConfigMap, and its state in words."""
        cm_name = r.RINGS_PREFIX + name
        try:
            cm = self.core.read_namespaced_config_map(cm_name, self.namespace)
        except ApiException as e:
            if e.status == 404:
                return None, f"no ConfigMap {cm_name} (a GPU job, or not submitted)"
            raise explain(e, f"read ConfigMap {self.namespace}/{cm_name}") from None
        text = (cm.data or {}).get("hccl.json", "")
        try:
            table = rank_table.parse(json.loads(text), f"configmap/{cm_name}")
        except rank_table.RankTableNotReady:
            return None, "initializing (the controller has not written it yet)"
        except (ValueError, rank_table.RankTableError) as e:
            return None, f"invalid: {e}"
        return table, f"completed: {len(table.servers)} server(s), {table.world_size} rank(s)"

    def status_lines(self, name: str) -> List[str]:
        job = self.job(name)
        status = job.get("status") or {}
        spec = job.get("spec") or {}
        lines = [f"job {self.namespace}/{name}: phase {(status.get('state') or {}).get('phase', 'Pending')}, "
                 f"retries {status.get('retryCount', 0)} of {max(int(spec.get('maxRetry', 3)) - 1, 0)} "
                 f"(maxRetry {spec.get('maxRetry', 3)}), version {status.get('version', 0)}"]
        for task, counts in sorted((status.get("taskStatusCount") or {}).items()):
            phases = ", ".join(f"{k} {v}" for k, v in sorted((counts.get("phase") or {}).items()))
            lines.append(f"task {task}: {phases or 'no pods'}")
        for pod in self.pods(name):
            annotations = pod.metadata.annotations or {}
            npus = annotations.get(r.NPU_RESOURCE, "-")
            lines.append(f"pod {pod.metadata.name}: {pod.status.phase}, node {pod.spec.node_name or '-'}, "
                         f"host IP {pod.status.host_ip or '-'}, pod IP {pod.status.pod_ip or '-'}, NPUs {npus}, "
                         f"job version {annotations.get(r.JOB_VERSION_ANNOTATION, '-')}")
        lines.append(f"rank table: {self.table(name)[1]}")
        return lines

    # -----------------------------------------------------------------------------------------
    # logs

    def _gpu_pod_of_rank(self, name: str, rank: int) -> Optional[str]:
        """A GPU job (no rings-config): pod i holds ranks i*n..i*n+n-1, n its nvidia.com/gpu limit, as
        k8s.gpu_table numbers them; pod i is the one Volcano labels volcano.sh/task-index=i."""
        task = (self.job(name).get("spec") or {}).get("tasks", [{}])[0]
        containers = ((task.get("template") or {}).get("spec") or {}).get("containers") or [{}]
        per_pod = int(((containers[0].get("resources") or {}).get("limits") or {}).get(r.GPU_RESOURCE, 0))
        if per_pod <= 0:
            return None
        replicas = int(task.get("replicas", 1))
        if not 0 <= rank < replicas * per_pod:
            raise ClusterError(f"rank {rank} is not in job {name} (ranks 0..{replicas * per_pod - 1})", code=2)
        index = str(rank // per_pod)
        for pod in self.pods(name):
            if (pod.metadata.labels or {}).get(TASK_INDEX_LABEL) == index:
                return pod.metadata.name
        raise ClusterError(f"rank {rank} runs in pod {index} of job {name}, which does not exist now; see "
                           f"python -m k8s status {name}")

    def pod_of_rank(self, name: str, rank: int) -> str:
        table, state = self.table(name)
        if table is None and state.startswith("no ConfigMap"):
            gpu_pod = self._gpu_pod_of_rank(name, rank)
            if gpu_pod is not None:
                return gpu_pod
        if table is None:
            raise ClusterError(f"cannot map rank {rank} to a pod: the rank table is {state}")
        server = next((s for s in table.servers if any(d.rank_id == rank for d in s.devices)), None)
        if server is None:
            raise ClusterError(f"rank {rank} is not in the rank table (ranks 0..{table.world_size - 1})", code=2)
        addresses = {server.server_id, server.host_ip, server.container_ip} - {None}
        for pod in self.pods(name):
            if {pod.status.host_ip, pod.status.pod_ip} & addresses:
                return pod.metadata.name
        raise ClusterError(f"rank {rank} is on server {server.server_id}, but no pod of job {name} runs there "
                           f"(a table from an earlier attempt?); see python -m k8s status {name}")

    def log_lines(self, name: str, rank: int, follow: bool) -> Iterator[str]:
        """The lines rank ``rank`` printed, from its pod's log (the launcher prefixes ``[rank r]``)."""
        pod = self.pod_of_rank(name, rank)
        try:
            response = self.core.read_namespaced_pod_log(pod, self.namespace, container="launcher", follow=follow,
                                                         _preload_content=False)
        except ApiException as e:
            raise explain(e, f"read the log of pod {self.namespace}/{pod}") from None
        prefix = f"[rank {rank}] "
        pending = b""
        try:
            for chunk in response.stream(4096):
                *lines, pending = (pending + chunk).split(b"\n")
                for raw in lines:
                    text = raw.decode("utf-8", errors="replace")
                    if text.startswith(prefix):
                        yield text[len(prefix):]
            if pending.decode("utf-8", errors="replace").startswith(prefix):
                yield pending.decode("utf-8", errors="replace")[len(prefix):]
        finally:
            response.release_conn()

    # -----------------------------------------------------------------------------------------
    # wait, delete

    def wait(self, name: str, timeout_s: Optional[float] = None,
             report: Callable[[str], None] = print) -> Tuple[str, int]:
        """Block until the job's phase is final; (phase, exit code: 0 Completed, 1 otherwise)."""
        job = self.job(name)
        phase = ((job.get("status") or {}).get("state") or {}).get("phase", "Pending")
        report(f"job {name}: {phase}")
        w = watch.Watch()
        while phase not in FINAL_PHASES:
            extra = {"timeout_seconds": int(timeout_s)} if timeout_s else {}
            seen = False
            try:
                for event in w.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                      PLURAL, field_selector=f"metadata.name={name}",
                                      resource_version=job["metadata"].get("resourceVersion"), **extra):
                    seen = True
                    obj = event["object"]
                    if event["type"] == "DELETED":
                        raise ClusterError(f"job {name} was deleted before it finished")
                    new = ((obj.get("status") or {}).get("state") or {}).get("phase", phase)
                    if new != phase:
                        phase = new
                        report(f"job {name}: {phase}")
                    if phase in FINAL_PHASES:
                        w.stop()
                        break
            except ApiException as e:
                raise explain(e, f"watch Volcano job {self.namespace}/{name}") from None
            if phase not in FINAL_PHASES and timeout_s:
                raise ClusterError(f"job {name} still {phase} after {timeout_s:g} s", code=1)
            if not seen and phase not in FINAL_PHASES:  # the watch ended quietly: read again
                job = self.job(name)
                phase = ((job.get("status") or {}).get("state") or {}).get("phase", phase)
        return phase, FINAL_PHASES[phase]

    def delete(self, name: str, purge: bool = False, report: Callable[[str], None] = print,
               ignore_not_found: bool = False) -> None:
        """Delete what is there; a missing Volcano job is an error after that (exit 1), as kubectl
        delete's NotFound, unless ``ignore_not_found``."""
        body = client.V1DeleteOptions(propagation_policy="Background")
        job = f"job/{name}"
        steps: List[Tuple[str, Callable[[], Any]]] = [
            (job, lambda: self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, body=body)),
        ]
        for cm in (r.RINGS_PREFIX + name, f"{name}-spec"):
            steps.append((f"configmap/{cm}", lambda cm=cm: self.core.delete_namespaced_config_map(cm, self.namespace)))
        policy = name + r.NETWORK_POLICY_SUFFIX  # rendered with --network-policy only: often absent
        steps.append((f"networkpolicy/{policy}", lambda: self.networking.delete_namespaced_network_policy(
            policy, self.namespace)))
        if purge:
            for claim in (f"{name}-data", f"{name}-output"):
                steps.append((f"persistentvolumeclaim/{claim}", lambda c=claim:
                              self.core.delete_namespaced_persistent_volume_claim(c, self.namespace)))
        missing = []
        for what, call in steps:
            try:
                call()
                report(f"{what} deleted")
            except ApiException as e:
                if e.status != 404:
                    raise explain(e, f"delete {what}") from None
                missing.append(what)
        if job in missing and not ignore_not_found:
            raise ClusterError(f"Volcano job {self.namespace}/{name} not found (NotFound); "
                               f"{len(steps) - len(missing)} other object(s) deleted. Check the name and "
                               "--namespace, or pass --ignore-not-found to exit 0", code=1)
        if not purge and job not in missing:
            report(f"claims {name}-output (and {name}-data) kept: delete --purge removes them")


def objects_of(files: Dict[str, str]) -> List[Dict[str, Any]]:
    return [o for text in files.values() for o in yaml.safe_load_all(text) if o]


def connect(kubeconfig: Optional[str], context: Optional[str], namespace: Optional[str]) -> Cluster:
    """An API client as kubectl would make one: in a pod (service account) when there is no kubeconfig
    to read, else from --kubeconfig / $KUBECONFIG / ~/.kube/config and --context; the namespace from
    --namespace, else the context's, else the pod's, else "default"."""
    try:
        if kubeconfig is None and context is None and "KUBERNETES_SERVICE_HOST" in os.environ:
            config.load_incluster_config()
            api = client.ApiClient()
            ns = namespace or _pod_namespace()
            return Cluster(api, ns or "default")
        api = config.new_client_from_config(config_file=kubeconfig, context=context)
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        if context is not None:
            contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
            active = next(c for c in contexts if c["name"] == context)
    except (config.ConfigException, OSError, StopIteration) as e:
        raise ClusterError(f"cannot load the Kubernetes configuration: {e}. Pass --kubeconfig FILE or "
                           f"--context NAME as for kubectl", code=2) from None
    ns = namespace or (active.get("context") or {}).get("namespace") or "default"
    return Cluster(api, ns)


def _pod_namespace() -> Optional[str]:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


def check_name(name: str) -> None:
    # fullmatch: with re.match, "$" also matches before a trailing newline ("mnist-8p\n" passed)
    if not DNS_LABEL.fullmatch(name):
        raise ClusterError(f"job name {name!r} is not a DNS-1123 label (the spec's name: field)", code=2)
