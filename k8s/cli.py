"""``python -m k8s render | validate | submit | status | logs | wait | delete``.

Exit codes: 0 ok, 1 a failed run or check (invalid manifests, an API error, a job that ended
Failed), 2 bad input (spec, options, kubeconfig).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from common.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from common.version import VERSION
from job.spec import SpecError
from k8s import render as r
from k8s import validate as v


def _version() -> str:
    try:
        from importlib.metadata import version  # noqa: PLC0415
        return version("csgm-cluster")
    except Exception:  # noqa: BLE001 (not installed: running from a checkout)
        return "0.1.0 (not installed)"


def _cluster_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", metavar="FILE",
                   help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config; in a pod: its service account)")
    p.add_argument("--context", metavar="NAME", help="kubeconfig context to use (default: the current one)")
    p.add_argument("-n", "--namespace", metavar="NS",
                   help="namespace (default: the context's namespace, else 'default')")


def _render_flags(render: argparse.ArgumentParser, namespace: bool = True) -> None:
    render.add_argument("spec", type=Path, help="job spec (YAML), e.g. configs/mnist_8p.yaml")
    render.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec key, as the launcher's --set (e.g. --set train.epochs=2)")
    render.add_argument("--nodes", type=int, default=1, metavar="N",
                        help="servers (one pod each) (default: 1)")
    render.add_argument("--image", default=None, metavar="IMAGE",
                        help=f"the job's image, as the nodes pull it (default: {r.IMAGE_NAME}:{VERSION}-<stack>, "
                             f"the stack npu.adapter needs: {r.IMAGE_STACK['npu_bridge']} for npu_bridge, "
                             f"{r.IMAGE_STACK['npu_device']} otherwise; {r.IMAGE_NAME}:{VERSION} for --target gpu)")
    if namespace:
        render.add_argument("--namespace", metavar="NS",
                            help="namespace of every object (default: none, i.e. kubectl's current one)")
    render.add_argument("--storage-class", metavar="CLASS",
                        help="storageClassName of the claims (default: the cluster's default class)")
    render.add_argument("--host-arch", default=r.HOST_ARCHES[0], choices=r.HOST_ARCHES,
                        help=f"the Ascend nodes' host-arch label (default: {r.HOST_ARCHES[0]})")
    render.add_argument("--target", default=r.TARGETS[0], choices=r.TARGETS,
                        help="ascend: Ascend 910 nodes, rank table from hccl-controller / Ascend Operator; "
                             "gpu: NVIDIA GPU nodes, rank table built in the pod (default: ascend)")
    render.add_argument("--operator", default=r.OPERATORS[0], choices=r.OPERATORS,
                        help="volcano: a Volcano Job, rank table from hccl-controller / Ascend Operator; "
                             "ascend: Ascend Operator's AscendJob, rank-table-free (CM_*) (default: volcano)")
    render.add_argument("--pull-policy", default=r.PULL_POLICIES[0], choices=r.PULL_POLICIES,
                        help=f"imagePullPolicy of the container (default: {r.PULL_POLICIES[0]})")
    render.add_argument("--queue", default=r.DEFAULT_QUEUE, metavar="QUEUE",
                        help=f"the Volcano queue of the job (default: {r.DEFAULT_QUEUE})")
    render.add_argument("--priority-class", metavar="CLASS",
                        help="priorityClassName of the job and its pods (default: the cluster's default)")
    render.add_argument("--restarts", type=int, default=r.RESTARTS, metavar="N",
                        help=f"whole-job restarts after a failed or evicted pod; maxRetry is N + 1 since "
                             f"Volcano counts the first run (default: {r.RESTARTS})")
    render.add_argument("--network-policy", action="store_true",
                        help="add a NetworkPolicy that admits to the job's pods only the job's own pods "
                             "(the collectives are unauthenticated; docs/security.md)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m k8s",
                                description="Kubernetes manifests for CSGM jobs (Volcano on Ascend or NVIDIA "
                                            "nodes), and the job on a live cluster. Exit codes: 0 ok, 1 failed "
                                            "run or check, 2 bad input.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    render = sub.add_parser("render", help="write the manifests for a job spec",
                            description="Write the ConfigMaps, PersistentVolumeClaims and Volcano Job "
                                        "for a job spec, after validating them offline.")
    _render_flags(render)
    out = render.add_mutually_exclusive_group()
    out.add_argument("--out", type=Path, default=r.PACKAGE_DIR, metavar="DIR",
                     help="folder to write the files to, '-' for standard output (default: the k8s folder)")
    out.add_argument("--check", action="store_true",
                     help="write nothing; exit 1 if the files in the k8s folder differ from the render")

    check = sub.add_parser("validate", help="check manifests offline",
                           description="Check manifests as the API server (and Volcano) would, offline: "
                                       f"Kubernetes {v.KUBERNETES_VERSION} strict schemas for core objects, "
                                       "the project's Volcano Job schema for Volcano Jobs, Ascend Operator's "
                                       "CRD schema for AscendJobs.")
    check.add_argument("paths", type=Path, nargs="*", default=[r.PACKAGE_DIR], metavar="PATH",
                       help="manifest files, or folders whose top-level .yaml/.yml/.json files are "
                            "checked as kubectl apply -f reads them (default: the k8s folder)")

    submit = sub.add_parser("submit", help="render, validate and create the job on the cluster",
                            description="Render and validate in memory, then create the claims (kept if "
                                        "they exist), the ConfigMaps (the rank table reset to initializing) "
                                        "and the Volcano Job, in that order.")
    _render_flags(submit, namespace=False)
    _cluster_flags(submit)
    submit.add_argument("--dry-run", action="store_true",
                        help="server-side dry run: the API server checks everything and stores nothing")

    for name, text in (("status", "the job's phase, retries, pods and rank table"),
                       ("wait", "block until the job ends; exit 0 if Completed, 1 if Failed/Aborted"),
                       ("delete", "delete the job and its ConfigMaps (--purge: also its claims)"),
                       ("logs", "one rank's output, from its pod through the rank table")):
        cmd = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        cmd.add_argument("job", help="the job's name (name: in the spec)")
        _cluster_flags(cmd)
        if name == "wait":
            cmd.add_argument("--timeout", type=float, metavar="SECONDS",
                             help="give up (exit 1) after this long (default: wait for ever)")
        if name == "delete":
            cmd.add_argument("--purge", action="store_true",
                             help="also delete the claims <job>-output and <job>-data, with their data")
            cmd.add_argument("--ignore-not-found", action="store_true",
                             help="exit 0 when the job does not exist (as kubectl delete --ignore-not-found)")
        if name == "logs":
            cmd.add_argument("--rank", type=int, required=True, metavar="R", help="global rank to show")
            cmd.add_argument("-f", "--follow", action="store_true",
                             help="keep streaming new lines until the pod ends, as kubectl logs -f")
    return p


def report(problems: Sequence[v.Problem]) -> None:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)


def render_options(args: argparse.Namespace) -> r.RenderOptions:
    return r.RenderOptions(nodes=args.nodes, image=args.image, namespace=getattr(args, "namespace", None),
                           storage_class=args.storage_class, host_arch=args.host_arch, target=args.target,
                           pull_policy=args.pull_policy, queue=args.queue, priority_class=args.priority_class,
                           restarts=args.restarts, operator=args.operator, network_policy=args.network_policy)


def run_render(args: argparse.Namespace) -> int:
    options = render_options(args)
    if options.operator != r.OPERATORS[0] and not args.check and args.out == r.PACKAGE_DIR:
        print(f"error: --operator {options.operator}: the k8s folder holds the Volcano Job's render (kubectl "
              "apply -f k8s/ would create both jobs). Render into a folder of your own: --out DIR", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        files = r.render_file(args.spec, options, args.overrides)
    except (SpecError, r.RenderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    problems: List[v.Problem] = []
    for name, text in files.items():
        problems += v.check_text(text, name)
    if problems:
        report(problems)
        print("error: the rendered manifests are invalid (a bug in k8s/render.py); nothing written",
              file=sys.stderr)
        return EXIT_FAILED
    if args.check:
        stale = r.differences(files, r.PACKAGE_DIR)
        if stale:
            print(f"error: {', '.join(stale)} in {r.PACKAGE_DIR} differ from the render; run "
                  f"`{options.command_line(r.display_path(args.spec))}`", file=sys.stderr)
            return EXIT_FAILED
        print(f"{r.display_path(r.PACKAGE_DIR)}: up to date")
        return EXIT_OK
    if str(args.out) == "-":
        sys.stdout.write("".join(files.values()))
        return EXIT_OK
    for path in r.write(files, args.out):
        print(f"wrote {path}")
    return EXIT_OK


def run_validate(args: argparse.Namespace) -> int:
    problems = v.check_paths(args.paths)
    if problems:
        report(problems)
        return EXIT_FAILED
    files = v.manifest_files(args.paths)
    print(f"ok: {len(files)} file(s) valid (Kubernetes {v.KUBERNETES_VERSION} strict schemas, "
          f"Volcano Job schema, AscendJob CRD schema)")
    return EXIT_OK


def run_cluster(args: argparse.Namespace) -> int:
    try:
        from k8s import cluster as c  # noqa: PLC0415 (render and validate do not need the client)
    except ImportError as e:  # a venv made before the project required the client
        print(f"error: {e.name or e}: the Kubernetes client is not installed. Install the project again "
              f"(make setup, or pip install -e .), which installs kubernetes>=25.3", file=sys.stderr)
        return EXIT_BAD_INPUT

    try:
        if args.command == "submit":
            if args.operator != r.OPERATORS[0]:
                print(f"error: submit --operator {args.operator}: submit creates Volcano Jobs only. Render the "
                      "AscendJob (python -m k8s render SPEC --operator ascend --out DIR) and kubectl apply -f DIR",
                      file=sys.stderr)
                return EXIT_BAD_INPUT
            k = c.connect(args.kubeconfig, args.context, args.namespace)
            options = dataclasses.replace(render_options(args), namespace=k.namespace)
            try:
                files = r.render_file(args.spec, options, args.overrides)
            except (SpecError, r.RenderError) as e:
                print(f"error: {e}", file=sys.stderr)
                return EXIT_BAD_INPUT
            problems = [p for name, text in files.items() for p in v.check_text(text, name)]
            if problems:
                report(problems)
                return EXIT_FAILED
            k.submit(c.objects_of(files), dry_run=args.dry_run)
            return EXIT_OK
        c.check_name(args.job)
        k = c.connect(args.kubeconfig, args.context, args.namespace)
        if args.command == "status":
            print("\n".join(k.status_lines(args.job)))
        elif args.command == "logs":
            for line in k.log_lines(args.job, args.rank, args.follow):
                print(line, flush=True)
        elif args.command == "wait":
            phase, code = k.wait(args.job, args.timeout)
            return code
        else:
            k.delete(args.job, args.purge, ignore_not_found=args.ignore_not_found)
        return EXIT_OK
    except c.ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "render":
        return run_render(args)
    if args.command == "validate":
        return run_validate(args)
    return run_cluster(args)
