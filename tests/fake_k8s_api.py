"""An emulation of the Kubernetes API server (core v1, Volcano's batch.volcano.sh/v1alpha1 jobs and
networking.k8s.io/v1 network policies) on 127.0.0.1, for tests of the real ``kubernetes`` client over HTTP.

It serves the response shapes of the real API server (kubernetes/kubernetes staging/src/k8s.io/apimachinery:
``metav1.Status`` for errors with ``reason`` AlreadyExists / NotFound / Forbidden and ``code``, ``<Kind>List``
with ``metadata.resourceVersion`` for collections, watch streams of one JSON ``{"type", "object"}`` event per
line, ``?follow=true`` pod logs streamed until the container ends) and enforces what the client relies on:
create answers 409 on an existing name, replace and get 404 on a missing one, ``dryRun=All`` stores nothing,
``labelSelector`` ``key=value`` and ``fieldSelector`` ``metadata.name=`` filter lists. What it does not do:
admission, schema validation (the manifests are checked offline by k8s.validate), controllers (the tests
play Volcano by scripting job phases and pods), authentication.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Set, Tuple
from urllib.parse import parse_qs, urlparse

CORE = "/api/v1"
VOLCANO = "/apis/batch.volcano.sh/v1alpha1"
NETWORKING = "/apis/networking.k8s.io/v1"
KINDS = {"configmaps": "ConfigMap", "persistentvolumeclaims": "PersistentVolumeClaim", "pods": "Pod",
         "jobs": "Job", "networkpolicies": "NetworkPolicy"}


def status(code: int, reason: str, message: str, name: str = "", kind: str = "") -> Dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": {"name": name, "kind": kind}, "code": code}


class FakeApiServer:
    """Objects by (plural, namespace, name); every request is recorded as (verb, path, query)."""

    def __init__(self) -> None:
        self.objects: Dict[Tuple[str, str, str], Dict[str, Any]] = {}
        self.requests: List[Tuple[str, str, Dict[str, List[str]]]] = []
        self.forbidden: Set[Tuple[str, str]] = set()  # (verb, plural) answered 403
        self.volcano_installed = True
        self.watch_phases: List[str] = []  # phases a job watch streams, then the stream ends
        self.logs: Dict[str, List[str]] = {}  # pod name -> lines of its container log
        self.log_delay_s = 0.0
        self._version = 100
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def put(self, plural: str, namespace: str, obj: Dict[str, Any]) -> Dict[str, Any]:
        with self._lock:
            self._version += 1
            meta = obj.setdefault("metadata", {})
            meta.update(namespace=namespace, resourceVersion=str(self._version),
                        uid=meta.get("uid") or f"uid-{self._version}",
                        creationTimestamp=meta.get("creationTimestamp") or "2026-12-02T12:00:00Z")
            self.objects[(plural, namespace, meta["name"])] = obj
            return obj

    def get(self, plural: str, namespace: str, name: str) -> Optional[Dict[str, Any]]:
        return self.objects.get((plural, namespace, name))

    def verbs(self) -> List[str]:
        """'VERB plural[/name][?query]' of every request except watches' reconnects, in order."""
        out = []
        for verb, path, query in self.requests:
            q = "&".join(f"{k}={v[0]}" for k, v in sorted(query.items()))
            out.append(f"{verb} {path.split('/namespaces/')[-1]}" + (f"?{q}" if q else ""))
        return out

    # -----------------------------------------------------------------------------------------

    def _handler(self) -> type:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self) -> Optional[Tuple[str, str, Optional[str], Optional[str], Dict[str, List[str]]]]:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                api.requests.append((self.command, url.path, query))
                for prefix in (CORE, VOLCANO, NETWORKING):
                    if url.path.startswith(prefix + "/namespaces/"):
                        if prefix == VOLCANO and not api.volcano_installed:
                            self._send(404, status(404, "NotFound", "the server could not find the requested "
                                                                    "resource"))
                            return None
                        parts = url.path[len(prefix + "/namespaces/"):].split("/")
                        ns, plural = parts[0], parts[1]
                        name = parts[2] if len(parts) > 2 else None
                        sub = parts[3] if len(parts) > 3 else None
                        if (self.command, plural) in api.forbidden:
                            verb = {"GET": "get", "POST": "create", "PUT": "update", "DELETE": "delete"}[self.command]
                            self._send(403, status(403, "Forbidden", f'{plural} is forbidden: User "dev" cannot '
                                                                     f'{verb} resource "{plural}" in API group '
                                                                     f'"" in the namespace "{ns}"',
                                                   name or "", plural))
                            return None
                        return ns, plural, name, sub, query
                self._send(404, status(404, "NotFound", "the server could not find the requested resource"))
                return None

            def _body(self) -> Dict[str, Any]:
                return json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                route = self._route()
                if route is None:
                    return
                ns, plural, name, sub, query = route
                if name is None:
                    if query.get("watch", ["false"])[0] == "true":
                        return self._watch(ns, plural, query)
                    items = [o for (p, n, _), o in sorted(api.objects.items()) if p == plural and n == ns
                             and _selected(o, query)]
                    group = "batch.volcano.sh/v1alpha1" if plural == "jobs" else "v1"
                    return self._send(200, {"kind": KINDS[plural] + "List", "apiVersion": group,
                                            "metadata": {"resourceVersion": str(api._version)}, "items": items})
                obj = api.get(plural, ns, name)
                if obj is None:
                    return self._send(404, status(404, "NotFound", f'{plural} "{name}" not found', name, plural))
                if sub == "log":
                    return self._log(name)
                self._send(200, obj)

            def _watch(self, ns: str, plural: str, query: Dict[str, List[str]]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                name = query.get("fieldSelector", [""])[0].replace("metadata.name=", "")
                while api.watch_phases:
                    phase = api.watch_phases.pop(0)
                    obj = api.get(plural, ns, name)
                    if obj is None:
                        break
                    obj.setdefault("status", {}).setdefault("state", {})["phase"] = phase
                    api.put(plural, ns, obj)
                    self.wfile.write(json.dumps({"type": "MODIFIED", "object": obj}).encode() + b"\n")
                    self.wfile.flush()
                    time.sleep(0.05)
                self.close_connection = True

            def _log(self, pod: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                for line in api.logs.get(pod, []):
                    self.wfile.write(line.encode() + b"\n")
                    self.wfile.flush()
                    time.sleep(api.log_delay_s)
                self.close_connection = True

            def do_POST(self) -> None:  # noqa: N802
                route = self._route()
                if route is None:
                    return
                ns, plural, _, _, query = route
                obj = self._body()
                name = obj["metadata"]["name"]
                if api.get(plural, ns, name) is not None:
                    return self._send(409, status(409, "AlreadyExists", f'{plural} "{name}" already exists',
                                                  name, plural))
                if query.get("dryRun") == ["All"]:
                    return self._send(201, obj)
                self._send(201, api.put(plural, ns, obj))

            def do_PUT(self) -> None:  # noqa: N802
                route = self._route()
                if route is None:
                    return
                ns, plural, name, _, query = route
                if name is None or api.get(plural, ns, name) is None:
                    return self._send(404, status(404, "NotFound", f'{plural} "{name}" not found', name or "",
                                                  plural))
                obj = self._body()
                self._send(200, obj if query.get("dryRun") == ["All"] else api.put(plural, ns, obj))

            def do_DELETE(self) -> None:  # noqa: N802
                route = self._route()
                if route is None:
                    return
                ns, plural, name, _, _ = route
                obj = api.objects.pop((plural, ns, name or ""), None)
                if obj is None:
                    return self._send(404, status(404, "NotFound", f'{plural} "{name}" not found', name or "",
                                                  plural))
                if plural == "persistentvolumeclaims":  # kubernetes.io/pvc-protection: the object, terminating
                    obj["metadata"].update(deletionTimestamp="2026-12-02T12:30:00Z",
                                           finalizers=["kubernetes.io/pvc-protection"])
                    return self._send(200, obj)
                self._send(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                 "details": {"name": name, "kind": plural}})

        return Handler


def _selected(obj: Dict[str, Any], query: Dict[str, List[str]]) -> bool:
    meta = obj.get("metadata", {})
    for term in filter(None, query.get("labelSelector", [""])[0].split(",")):
        key, _, value = term.partition("=")
        if (meta.get("labels") or {}).get(key) != value:
            return False
    for term in filter(None, query.get("fieldSelector", [""])[0].split(",")):
        key, _, value = term.partition("=")
        if key == "metadata.name" and meta.get("name") != value:
            return False
    return True


def kubeconfig(server: FakeApiServer, namespace: str = "ml") -> str:
    """A kubeconfig (YAML) whose current context points at ``server``."""
    return (f"apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server.url}\n"
            f"users:\n- name: dev\n  user:\n    token: not-a-secret\ncontexts:\n- name: fake\n  context:\n"
            f"    cluster: fake\n    user: dev\n    namespace: {namespace}\n- name: other\n  context:\n"
            f"    cluster: fake\n    user: dev\ncurrent-context: fake\n")


def pod(name: str, job: str, index: int, node: str, host_ip: str, pod_ip: str, npus: str,
        version: int, phase: str = "Running") -> Dict[str, Any]:
    """A pod as Volcano's job controller creates it (labels/annotations from createJobPod)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"volcano.sh/job-name": job, "volcano.sh/task-index": str(index)},
                         "annotations": {"volcano.sh/job-name": job, "volcano.sh/task-index": str(index),
                                         "volcano.sh/job-version": str(version),
                                         "volcano.sh/job-retry-count": str(version),
                                         "huawei.com/Ascend910": npus}},
            "spec": {"nodeName": node, "containers": [{"name": "launcher", "image": "csgm:latest"}]},
            "status": {"phase": phase, "hostIP": host_ip, "podIP": pod_ip}}
