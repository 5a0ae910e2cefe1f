"""``python -m k8s.gpu_table``: the rank table of a GPU pod, built inside the pod.

On NVIDIA nodes no controller writes a rank table. Volcano's plugins give every pod what it needs
(volcano-sh/volcano pkg/controllers/job/plugins): ``svc`` mounts ``/etc/volcano/<task>.host``, one
``<job>-<task>-<i>.<job>`` line per pod in task-index order, and creates the headless service that
makes those names resolve; ``env`` sets ``VC_TASK_INDEX``. Server ``i`` of the table is pod ``i``, by
its IP (this pod's own from the downward API, the others from DNS, waited for while their pods start),
holding ``devices.count`` ranks. Needs no API token and no RBAC.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import rank_table
from common.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from job.spec import SpecError, load_spec
from k8s import render as r

HOSTS_FILE = f"/etc/volcano/{r.TASK_NAME}.host"
Resolver = Callable[[str], str]


class GpuTableError(ValueError):
    """The pod's environment cannot give a rank table; the message says what to fix."""


def resolve_ipv4(name: str) -> str:
    return socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]


def read_hosts(path: Path) -> List[str]:
    try:
        hosts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as e:
        raise GpuTableError(f"{path}: cannot read ({e.strerror or e}); the Volcano Job needs the svc "
                            f"plugin (spec.plugins: {{svc: []}}), as `python -m k8s render --target gpu` "
                            f"writes it") from None
    if not hosts:
        raise GpuTableError(f"{path}: no hosts listed; the job's task {r.TASK_NAME!r} has no replicas?")
    return hosts


def build_table(hosts: Sequence[str], index: int, own_ip: str, per_pod: int, resolve: Resolver = resolve_ipv4,
                timeout_s: float = 300.0, poll_s: float = 2.0,
                sleep: Callable[[float], None] = time.sleep) -> rank_table.RankTable:
    """Server k = pod k by IP, ``per_pod`` devices each; waits for the other pods' names to resolve."""
    if not 0 <= index < len(hosts):
        raise GpuTableError(f"VC_TASK_INDEX={index} is outside the {len(hosts)} host(s) of {HOSTS_FILE}")
    deadline = time.monotonic() + timeout_s
    addresses: List[str] = []
    for k, host in enumerate(hosts):
        if k == index:
            addresses.append(own_ip)
            continue
        while True:
            try:
                addresses.append(resolve(host))
                break
            except OSError as e:
                if time.monotonic() >= deadline:
                    raise GpuTableError(f"{host} (pod {k} of the job) does not resolve after {timeout_s:g} s "
                                        f"({e}); is its pod running and the job's svc plugin on?") from None
                sleep(poll_s)
    # GPUs have no HCCL device NIC: device_ip stays empty, as in rank_table.local_table (HCCL's rule
    # that device addresses are unique would otherwise refuse several GPUs behind one pod IP).
    data = {"version": "1.0", "status": "completed", "server_count": str(len(hosts)), "server_list": [
        {"server_id": ip, "container_ip": ip, "device": [
            {"device_id": str(d), "device_ip": "", "rank_id": str(k * per_pod + d)} for d in range(per_pod)]}
        for k, ip in enumerate(addresses)]}
    return rank_table.parse(data, f"<{HOSTS_FILE}>")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m k8s.gpu_table", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(r.GPU_TABLE_FILE), metavar="FILE",
                   help=f"where to write the table (default: {r.GPU_TABLE_FILE})")
    p.add_argument("--hosts", type=Path, default=Path(HOSTS_FILE), metavar="FILE",
                   help=f"the svc plugin's hosts file (default: {HOSTS_FILE})")
    p.add_argument("--spec", type=Path, default=Path(r.SPEC_FILE), metavar="FILE",
                   help=f"job spec whose devices.count is the GPUs per pod (default: {r.SPEC_FILE})")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="how long to wait for the other pods' names to resolve (default: 300)")
    return p


def main(argv: Optional[Sequence[str]] = None, environ: Optional[dict] = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        spec = load_spec(args.spec)
        index_text, own_ip = env.get("VC_TASK_INDEX", ""), env.get(r.POD_IP_ENV, "")
        if not index_text.isdigit() or not own_ip:
            raise GpuTableError(f"need VC_TASK_INDEX (Volcano's env plugin) and {r.POD_IP_ENV} (downward API "
                                f"status.podIP); got {index_text!r} and {own_ip!r}")
        table = build_table(read_hosts(args.hosts), int(index_text), own_ip, spec.devices.count,
                            timeout_s=args.timeout)
    except (SpecError, GpuTableError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED if "does not resolve" in str(e) else EXIT_BAD_INPUT
    rank_table.write(table, args.out)
    print(f"wrote {args.out}: {len(table.servers)} server(s), {table.world_size} rank(s)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
