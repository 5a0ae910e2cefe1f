"""Several ranks: read (or make) the rank table, find this server, start and supervise its ranks."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import rank_table
from common.exits import EXIT_BAD_INPUT, EXIT_FAILED
from common.files import atomic_write_text
from csgm.cm_mode import CmCluster
from csgm.data import DataError
from job.plan import check_sizes, describe_plan
from job.run_folder import claim_output_dir
from job.spec import JobSpec, spec_to_yaml
from launcher import ascend
from launcher import env as rank_environment
from launcher import horovod_rendezvous, preempt
from launcher.errors import LaunchError
from launcher.progress import ProgressBoard
from launcher.stale import stale_check
from launcher.slots import Layout, Slot, SlotError, assign_slots, cm_slots, identify_server, this_host_names
from launcher.logs import attempt_root
from launcher.netns import NamespaceError, PrivateNetwork, is_loopback
from launcher.nodes import Nodes
from launcher.nodes import rendezvous as nodes_rendezvous
from launcher.supervise import LauncherInterrupted, WorkerSpec, format_summary, run
from rank_table.devices import DeviceMapError, check_chip, physical_id

log = logging.getLogger("launcher")


def resolve_table(spec: JobSpec, table_path: Optional[str]) -> Tuple[rank_table.RankTable, Path]:
    """The rank table (waiting while it is 'initializing'), or a loopback one for CPU/GPU ranks."""
    if table_path is None:
        if spec.devices.type == "npu":
            raise LaunchError(f"devices.type npu with devices.count {spec.devices.count} needs an HCCL "
                              "rank table. Set launch.rank_table or pass --rank-table FILE "
                              "(python -m rank_table generate writes one from /etc/hccn.conf)")
        # Written (by run_ranks) only once the job really starts: a dry run leaves no trace.
        return rank_table.local_table(spec.devices.count), spec.run_dir / "rank_table.json"
    try:
        table = rank_table.wait_until_completed(
            table_path, timeout_s=spec.launch.rank_table_timeout_s,
            poll_s=min(5.0, max(0.5, spec.launch.rank_table_timeout_s / 10)),
            report=lambda line: log.info("%s", line), stale=stale_check(os.environ),
            timeout_knob="--set launch.rank_table_timeout_s=SECONDS")
    except rank_table.RankTableError as e:
        raise LaunchError(str(e)) from None
    return table, Path(table_path)


def check_backend(spec: JobSpec, world_size: int, command: Sequence[str]) -> None:
    if command:
        return
    if world_size > 1 and spec.backend == "local" and "train" in spec.stages:
        ranks = (f"the rank table's {world_size} ranks" if spec.launch.rank_table
                 else f"{world_size} ranks (devices.count: {world_size})")
        raise LaunchError(f"backend: local has no collectives to train {ranks}. Add --set backend=tf "
                          "(or horovod) on CPUs and GPUs, hccl on Ascend (configs/cpu_2p_tf.yaml is such a "
                          "spec), or use devices.count: 1 (a recovery-only job, stages: [recover], may use "
                          "local on any number of ranks)")
    if spec.backend == "horovod" and importlib.util.find_spec("horovod") is None:
        raise LaunchError("backend: horovod needs Horovod, which is not installed. Run make horovod (it "
                          "builds Horovod against the installed TensorFlow, 2-4 min) or use --set backend=tf")
    if spec.backend == "hccl" and spec.devices.type != "npu":
        raise LaunchError("backend: hccl needs devices.type: npu (HCCL runs on Ascend devices). "
                          "Use backend tf or horovod on CPUs and GPUs")
    if spec.devices.type == "npu" and spec.backend in ("tf", "horovod"):
        raise LaunchError(f"backend: {spec.backend} does not run on Ascend NPUs. Use backend hccl")


def worker_command(command: Sequence[str]) -> List[str]:
    return list(command) if command else [sys.executable, "-m", "job.worker"]


def build_workers(spec: JobSpec, slots: Sequence[Slot], layout: Layout, command: Sequence[str],
                  base_env: Dict[str, str], rendezvous_secret: Optional[str] = None) -> List[WorkerSpec]:
    spec_file = spec.run_dir / "spec.yaml"
    job_id = base_env.get("JOB_ID") or spec.name
    cmd = worker_command(command)
    bind = spec.devices.type == "npu" and spec.npu.bind_cores
    workers = []
    for s in slots:
        env = rank_environment.rank_env(s, spec, base_env, layout.table, layout.table_file, spec_file, job_id,
                                        layout.cm, rendezvous_secret)
        if command:  # programs written for torchrun find their peers as it tells them
            env.update(rank_environment.torchrun_env(s, layout.master, spec.launch.port))
        prefix = ascend.taskset_prefix(s.local_rank, s.local_world_size) if bind else []
        workers.append(WorkerSpec(rank=s.rank, cmd=prefix + cmd, env=env,
                                  heartbeat=rank_environment.heartbeat_file(spec, s.rank)))
    return workers


def parse_console_ranks(text: Optional[str]) -> Optional[List[int]]:
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise LaunchError(f"--console-ranks {text!r}: expected rank numbers like 0 or 0,3") from None


def _server_workers(spec: JobSpec, layout: Layout, server: Optional[str], command: Sequence[str],
                    base_env: Dict[str, str], secret: Optional[str] = None) -> Tuple[List[Slot], List[WorkerSpec]]:
    try:
        if layout.cm is not None:
            slots = cm_slots(layout.cm, spec.devices.count, lambda i: physical_id(i, base_env))
        else:
            assert layout.table is not None and server is not None
            slots = assign_slots(layout.table, server, spec.devices.count)
    except SlotError as e:
        raise LaunchError(f"{layout.table_file or 'CM_*'}: {e}") from None
    except DeviceMapError as e:
        raise LaunchError(str(e)) from None
    try:
        return slots, build_workers(spec, slots, layout, command, base_env, secret)
    except ValueError as e:  # e.g. backend horovod: no network interface carries the server id
        raise LaunchError(str(e)) from None


def cm_layout(spec: JobSpec, cm: CmCluster) -> Layout:
    """The rank-table-free start, refused before anything opens where it cannot apply."""
    if spec.launch.rank_table:
        raise LaunchError(f"the CM_* variables are set (the rank-table-free start) and so is a rank table "
                          f"({spec.launch.rank_table}, from launch.rank_table, --rank-table or RANK_TABLE_FILE). "
                          "HCCL accepts one scheme: unset the CM_* variables, or drop the rank table (--set "
                          "launch.rank_table=null, and unset RANK_TABLE_FILE)")
    if spec.devices.type != "npu" or spec.backend != "hccl":
        raise LaunchError(f"the CM_* variables (HCCL's rank-table-free start) are set, but the spec has "
                          f"devices.type {spec.devices.type} with backend {spec.backend}. They apply to "
                          "devices.type npu with backend hccl; unset them for other jobs")
    return Layout(None, None, cm)


def node_layout(spec: JobSpec, nodes: Nodes, dry_run: bool) -> Layout:
    """The rank table the nodes agree on at the rendezvous; a dry run assumes every node has
    devices.count ranks and names the others by their node rank."""
    if dry_run:
        everyone = [(f"node-{r}", spec.devices.count) for r in range(nodes.nnodes)]
        everyone[nodes.node_rank] = (nodes.local_addr or f"node-{nodes.node_rank}", spec.devices.count)
    else:
        everyone = nodes_rendezvous(nodes, spec.name, spec.devices.count, spec.launch.rank_table_timeout_s,
                                    report=lambda line: log.info("%s", line))
    try:
        table = rank_table.node_table(everyone, f"<rendezvous at {nodes.master_addr}:{nodes.master_port}>")
    except rank_table.RankTableError as e:
        raise LaunchError(str(e)) from None
    return Layout(table, spec.run_dir / "rank_table.json", nodes=nodes)


def table_layout(spec: JobSpec) -> Layout:
    table, table_file = resolve_table(spec, spec.launch.rank_table)
    if spec.devices.type == "npu":
        try:
            check_chip(table, spec.npu.chip, str(table_file))
        except DeviceMapError as e:
            raise LaunchError(str(e)) from None
    return Layout(table, table_file)


def private_network_wanted(spec: JobSpec, table: Optional[rank_table.RankTable], command: Sequence[str]) -> bool:
    """TensorFlow's gRPC servers listen on every interface (launcher.netns): the job's own CPU ranks
    of a loopback table, all under this launcher, get a network namespace of their own instead."""
    return (spec.backend == "tf" and spec.devices.type == "cpu" and not command and table is not None
            and len(table.servers) == 1 and all(is_loopback(s.server_id) for s in table.servers))


def network_plan(spec: JobSpec, table: Optional[rank_table.RankTable], command: Sequence[str],
                 secret: Optional[str]) -> List[str]:
    """What listens where, for the plan (docs/security.md)."""
    if table is None or table.world_size < 2:
        return []
    port = spec.launch.port
    if spec.backend == "horovod":
        guard = ("per-job secret" if secret is not None else
                 f"UNAUTHENTICATED: set {horovod_rendezvous.SECRET_ENV} alike on every server")
        return [f"network: Horovod's rendezvous on {table.servers[0].server_id}:{port} ({guard}); Gloo on "
                "each server's address"]
    if spec.backend == "tf":
        where = ("in a network namespace of their own (loopback only) where the system allows one"
                 if private_network_wanted(spec, table, command) else "on every interface of each server")
        return [f"network: TensorFlow's gRPC servers, ports {port}..{port + table.world_size - 1}, {where}"]
    return []


def run_ranks(spec: JobSpec, args: argparse.Namespace, command: Sequence[str],
              cm: Optional[CmCluster] = None, nodes: Optional[Nodes] = None) -> int:
    table_path = spec.launch.rank_table
    if cm is not None:
        layout = cm_layout(spec, cm)
    elif nodes is not None:
        check_backend(spec, nodes.nnodes * spec.devices.count, command)  # before waiting for anyone
        layout = node_layout(spec, nodes, args.dry_run)
    else:
        layout = table_layout(spec)
    table, table_file = layout.table, layout.table_file
    console_ranks = parse_console_ranks(args.console_ranks)
    elsewhere_note: Optional[str] = None
    server: Optional[str] = None
    if layout.nodes is not None:
        server = layout.table.servers[layout.nodes.node_rank].server_id  # type: ignore[union-attr]
    elif table is not None:
        try:
            server = identify_server(table, args.server_id, os.environ, this_host_names())
        except SlotError as e:
            if not args.dry_run or args.server_id is not None:
                raise LaunchError(f"{table_file}: {e}") from None
            elsewhere_note = str(e)  # planning from another host: show every server
    check_backend(spec, layout.world_size, command)
    base_env = dict(os.environ)
    secret = None
    if spec.backend == "horovod" and table is not None:
        secret = horovod_rendezvous.rendezvous_secret(base_env, whole_job_here=len(table.servers) == 1)
    network = network_plan(spec, table, command, secret)
    if args.dry_run:
        from launcher.dry_run import dry_run

        servers = ([server] if server is not None or table is None else list(table.server_ids))
        shown = None if secret is None else "SECRET"  # never printed
        plans = {s: _server_workers(spec, layout, s, command, base_env, shown) for s in servers}
        return dry_run(spec, layout, plans, base_env, args.json, elsewhere_note,
                       data_here=(server is not None or table is None) and args.server_id is None,
                       source=getattr(args, "source", args.spec), network=network)
    slots, workers = _server_workers(spec, layout, server, command, base_env, secret)
    elsewhere = sorted(set(console_ranks or ()) - {s.rank for s in slots})
    if elsewhere:  # not an error: every server of a job usually gets the same command line
        log.warning("--console-ranks: rank(s) %s run on other servers; this server has ranks %s",
                    ",".join(map(str, elsewhere)), ",".join(str(s.rank) for s in slots))
    max_restarts = spec.launch.max_restarts
    if spec.devices.type == "npu" and spec.npu.smi_check:
        note = ascend.check_health([s.device_id for s in slots])
        if note:
            log.info("%s", note)
    if not command:  # the ranks' own checks, before anything starts (a COMMAND may not read the data)
        try:
            check_sizes(spec, getattr(args, "source", args.spec), layout.world_size)
        except DataError as e:
            raise LaunchError(str(e)) from None
    claim_output_dir(spec)  # before the run writes anything into it
    if table_path is None and table is not None:
        assert table_file is not None
        rank_table.write(table, table_file)
    atomic_write_text(spec.run_dir / "spec.yaml", spec_to_yaml(spec))
    for line in describe_plan(spec) + network:
        log.info("%s", line)
    log.info("server %s: starting ranks %s of %d (%s devices; %s); logs in %s", slots[0].server_id,
             ",".join(str(s.rank) for s in slots), layout.world_size, spec.devices.type, layout.source,
             spec.run_dir / "logs")
    board = ProgressBoard(emit=lambda line: log.info("%s", line))
    began, started = time.monotonic(), time.time()
    rendezvous = private = None
    if spec.backend == "horovod" and table is not None and horovod_rendezvous.needs_rendezvous(slots):
        try:
            rendezvous = horovod_rendezvous.Rendezvous(table, spec.launch.port, secret)
        except OSError as e:
            raise LaunchError(str(e)) from None
    if private_network_wanted(spec, table, command):
        try:
            private = PrivateNetwork()
        except NamespaceError as e:
            log.warning("cannot give the ranks a network namespace of their own (%s): their gRPC ports "
                        "listen on every interface of this host (docs/security.md)", e)
        else:
            workers = [dataclasses.replace(w, namespaces=tuple(private.paths)) for w in workers]
    try:
        result = run(workers, attempt_root(spec.run_dir / "logs", os.environ), max_restarts=max_restarts,
                     grace_s=spec.launch.grace_period_s, console_ranks=console_ranks,
                     stall_timeout_s=spec.launch.stall_timeout_s, on_line=board.on_line)
    except LauncherInterrupted as e:
        code, message = preempt.outcome(e.signum, e.exit_codes, spec.run_dir, started)
        print(message, file=sys.stderr)
        return code
    except OSError as e:  # the worker program could not be started
        print(f"error: cannot start {' '.join(workers[0].cmd)}: {e.strerror or e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if rendezvous is not None:
            rendezvous.close()
        if private is not None:
            private.close()
    print(format_summary(result), file=sys.stdout if result.ok else sys.stderr)
    log.info("launcher: %s after %.0f s", "done" if result.ok else "failed", time.monotonic() - began)
    return 0 if result.ok else EXIT_FAILED
