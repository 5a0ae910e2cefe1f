"""``--dry-run``: what a multi-rank launch would do, as text or one JSON object; starts nothing.

On a host that is one of the table's servers it shows that server's ranks and checks the data
files; from any other host (a laptop planning a cluster job) it shows every server's ranks. A
missing data folder is only a warning unless this host found itself in the table (with
--server-id it may be planning for another machine): the data lives on the servers.
"""

from __future__ import annotations

import json
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from common.schema import to_data
from csgm.data import DataError, check_data
from job.plan import check_sizes, describe_plan
from job.spec import JobSpec, spec_to_yaml
from launcher import env as rank_environment
from launcher.errors import LaunchError
from launcher.slots import Layout, Slot
from launcher.supervise import WorkerSpec

Plans = Dict[Optional[str], Tuple[List[Slot], List[WorkerSpec]]]


def dry_run(spec: JobSpec, layout: Layout, plans: Plans, base_env: Dict[str, str], as_json: bool,
            elsewhere: Optional[str], data_here: bool, source: str, network: Sequence[str] = ()) -> int:
    """``elsewhere``: why this host is not one of the servers (then ``plans`` holds every server).
    ``data_here``: this host found itself in the table, so the data must be here. ``source``: the spec
    file, named when the data found here cannot satisfy it (as the ranks would). ``network``: what
    listens where (launcher.multi.network_plan)."""
    warnings: List[str] = []
    try:
        data = check_data(spec.data)
        check_sizes(spec, source, layout.world_size)
    except DataError as e:
        if data_here:
            raise LaunchError(str(e)) from None
        data = "not found on this host"
        warnings.append(f"{e} (checked on this host; the servers need it)")
    plan = describe_plan(spec) + [f"data: {data}"]
    if elsewhere is not None:
        plan.append(f"this host is not one of the rank table's servers ({elsewhere}); "
                    "showing the ranks of every server")
    plan.append(f"start: {layout.source}")
    plan.extend(network)
    servers = [_server(slots[0].server_id if server is None else server, slots, workers, base_env)
               for server, (slots, workers) in plans.items()]
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if as_json:
        print(json.dumps({"spec": to_data(spec), "plan": plan, "mode": "ranks", "warnings": warnings,
                          "start": "cm" if layout.cm is not None else "rank-table",
                          "rank_table": None if layout.table_file is None else str(layout.table_file),
                          "cm": None if layout.cm is None else dict(layout.cm.environment()),
                          "world_size": layout.world_size,
                          "this_server": None if elsewhere is not None else servers[0]["server_id"],
                          "servers": servers}, indent=2))
        return 0
    print(spec_to_yaml(spec), end="")
    for line in plan:
        print("# " + line)
    for server in servers:
        _print_server(server, layout)
    return 0


def _server(server: str, slots: Sequence[Slot], workers: Sequence[WorkerSpec],
            base_env: Dict[str, str]) -> Dict[str, object]:
    """Each rank's command and environment; on NPUs also the device it opens: the table names a
    physical id, npu_device opens the logical id ASCEND_DEVICE_ID (launcher.env)."""
    ranks: List[Dict[str, object]] = []
    for s, w in zip(slots, workers):
        rank: Dict[str, object] = {"rank": w.rank, "local_rank": s.local_rank, "device_id": s.device_id,
                                   "command": list(w.cmd), "env": rank_environment.job_env_keys(w.env, base_env)}
        if "ASCEND_DEVICE_ID" in w.env:
            rank["logical_device_id"] = int(w.env["ASCEND_DEVICE_ID"])
            rank["visibility"] = rank_environment.visibility(base_env)
        ranks.append(rank)
    return {"server_id": server, "ranks": ranks}


def _print_server(server: Dict[str, object], layout: Layout) -> None:
    ranks = server["ranks"]
    print(f"# server {server['server_id']}: ranks {ranks[0]['rank']}..{ranks[-1]['rank']} of {layout.world_size} "
          f"({layout.server_count} server(s)); {layout.source}")
    named_by = "CM_LOCAL_WORKER index" if layout.cm is not None else "rank table"
    for rank in ranks:
        print(f"[rank {rank['rank']}] command: {' '.join(rank['command'])}")
        if "logical_device_id" in rank:
            print(f"[rank {rank['rank']}] device: physical {rank['device_id']} ({named_by}), logical "
                  f"{rank['logical_device_id']} (opened by npu_device; {rank['visibility']})")
        for key, value in rank["env"].items():
            print(f"[rank {rank['rank']}]   {key}={value}")
