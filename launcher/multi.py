"""Several ranks: read (or make) the rank table, find this server, start and supervise its ranks."""

from __future__ import annotations

import argparse
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
from job.plan import describe_plan
from job.spec import JobSpec, spec_to_yaml
from launcher import ascend
from launcher import env as rank_environment
from launcher import horovod_rendezvous, preempt
from launcher.errors import LaunchError
from launcher.progress import ProgressBoard
from launcher.stale import stale_check
from launcher.slots import Slot, SlotError, assign_slots, identify_server, this_host_names
from launcher.logs import attempt_root
from launcher.supervise import LauncherInterrupted, WorkerSpec, format_summary, run
from rank_table.devices import DeviceMapError, check_chip

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


def build_workers(spec: JobSpec, slots: Sequence[Slot], table: rank_table.RankTable, table_file: Path,
                  command: Sequence[str], base_env: Dict[str, str]) -> List[WorkerSpec]:
    spec_file = spec.run_dir / "spec.yaml"
    job_id = base_env.get("JOB_ID") or spec.name
    cmd = worker_command(command)
    bind = spec.devices.type == "npu" and spec.npu.bind_cores
    workers = []
    for s in slots:
        env = rank_environment.rank_env(s, spec, base_env, table, table_file, spec_file, job_id)
        if command:  # programs written for torchrun find their peers as it tells them
            env.update(rank_environment.torchrun_env(s, table, spec.launch.port))
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


def _server_workers(spec: JobSpec, table: rank_table.RankTable, table_file: Path, server: str,
                    command: Sequence[str], base_env: Dict[str, str]) -> Tuple[List[Slot], List[WorkerSpec]]:
    try:
        slots = assign_slots(table, server, spec.devices.count)
    except SlotError as e:
        raise LaunchError(f"{table_file}: {e}") from None
    try:
        return slots, build_workers(spec, slots, table, table_file, command, base_env)
    except ValueError as e:  # e.g. backend horovod: no network interface carries the server id
        raise LaunchError(str(e)) from None


def run_ranks(spec: JobSpec, args: argparse.Namespace, command: Sequence[str]) -> int:
    table_path = spec.launch.rank_table
    table, table_file = resolve_table(spec, table_path)
    console_ranks = parse_console_ranks(args.console_ranks)
    elsewhere_note: Optional[str] = None
    try:
        server: Optional[str] = identify_server(table, args.server_id, os.environ, this_host_names())
    except SlotError as e:
        if not args.dry_run or args.server_id is not None:
            raise LaunchError(f"{table_file}: {e}") from None
        server, elsewhere_note = None, str(e)  # planning from another host: show every server
    check_backend(spec, table.world_size, command)
    if spec.devices.type == "npu":
        try:
            check_chip(table, spec.npu.chip, str(table_file))
        except DeviceMapError as e:
            raise LaunchError(str(e)) from None
    base_env = dict(os.environ)
    if args.dry_run:
        from launcher.dry_run import dry_run

        servers = [server] if server is not None else list(table.server_ids)
        plans = {s: _server_workers(spec, table, table_file, s, command, base_env) for s in servers}
        return dry_run(spec, table, table_file, plans, base_env, args.json, elsewhere_note,
                       data_here=server is not None and args.server_id is None)
    slots, workers = _server_workers(spec, table, table_file, server, command, base_env)
    elsewhere = sorted(set(console_ranks or ()) - {s.rank for s in slots})
    if elsewhere:  # not an error: every server of a job usually gets the same command line
        log.warning("--console-ranks: rank(s) %s run on other servers; this server has ranks %s",
                    ",".join(map(str, elsewhere)), ",".join(str(s.rank) for s in slots))
    max_restarts = spec.launch.max_restarts
    if spec.devices.type == "npu" and spec.npu.smi_check:
        note = ascend.check_health([s.device_id for s in slots])
        if note:
            log.info("%s", note)
    if table_path is None:
        rank_table.write(table, table_file)
    atomic_write_text(spec.run_dir / "spec.yaml", spec_to_yaml(spec))
    for line in describe_plan(spec):
        log.info("%s", line)
    log.info("server %s: starting ranks %s of %d (%s devices); logs in %s", server,
             ",".join(str(s.rank) for s in slots), table.world_size, spec.devices.type,
             spec.run_dir / "logs")
    board = ProgressBoard(emit=lambda line: log.info("%s", line))
    began, started = time.monotonic(), time.time()
    rendezvous = None
    if spec.backend == "horovod" and horovod_rendezvous.needs_rendezvous(slots):
        try:
            rendezvous = horovod_rendezvous.Rendezvous(table, spec.launch.port)
        except OSError as e:
            raise LaunchError(str(e)) from None
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
    print(format_summary(result), file=sys.stdout if result.ok else sys.stderr)
    log.info("launcher: %s after %.0f s", "done" if result.ok else "failed", time.monotonic() - began)
    return 0 if result.ok else EXIT_FAILED
