"""``python -m launcher SPEC``: read the job spec and the rank table, start and supervise the ranks.

One rank with no rank table runs in this very process (single-card mode, for debugging). Otherwise
the launcher finds its server in the rank table, starts one process per local device with the
environment of launcher.env, and supervises them (launcher.supervise): logs per rank, fail fast,
signals forwarded, restarts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import List, Mapping, Optional, Sequence, Tuple

from common.exits import EXIT_BAD_INPUT
from common.logs import setup_logging
from common.schema import to_data
from common.version import VERSION
from csgm import cm_mode
from job.plan import check_sizes, describe_plan
from job.run_folder import check_output_dir
from job.spec import JobSpec, SpecError, load_spec, spec_source, spec_to_yaml
from launcher.errors import LaunchError
from launcher.nodes import DEFAULT_PORT as DEFAULT_NODE_PORT
from launcher.nodes import Nodes

log = logging.getLogger("launcher")

EXIT_CODES = ("exit codes: 0 done; 1 the run failed (a rank died, a disk filled); 2 bad input (spec, "
              "rank table, data, flags), with one line naming the fix; 75 preempted: SIGTERM stopped "
              "every rank after a checkpoint, rerun to resume; 128+N stopped by signal N")
# Flags that only a multi-rank run uses: single-card mode runs in this process, with no table.
MULTI_RANK_FLAGS = (("max_restarts", "--max-restarts"), ("console_ranks", "--console-ranks"),
                    ("server_id", "--server-id"))


def _count(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {least}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m launcher",
        usage="python -m launcher SPEC [options] [-- COMMAND ...]",
        description="Run a CSGM job: one process per device, training the VAE data-parallel, then "
                    "sharing the compressed-sensing recovery. After '--', run COMMAND on every rank "
                    "instead, with the same environment and supervision.",
        epilog=EXIT_CODES)
    p.add_argument("spec", help="job spec (YAML), e.g. configs/mnist_1p.yaml; its relative paths are "
                                "read from the spec file's folder")
    p.add_argument("--version", action="version", version=f"%(prog)s {VERSION}",
                   help="print the version and exit")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key, e.g. --set train.epochs=2 --set recovery.m=[25,100]")
    p.add_argument("-np", "--nproc-per-node", type=lambda t: _count(t, 1), metavar="N",
                   help="ranks (devices) per server: the same as --set devices.count=N")
    p.add_argument("--output-dir", metavar="DIR", help="run folder: the same as --set output_dir=DIR")
    p.add_argument("--rank-table", metavar="FILE",
                   help="HCCL rank table (default: $RANK_TABLE_FILE as Ascend scripts set it, then "
                        "launch.rank_table)")
    p.add_argument("--server-id", metavar="ID",
                   help="this server's server_id in the rank table (default: $XDL_IP, then this host's addresses)")
    nodes = p.add_argument_group("several nodes without a rank table (torchrun-style; backends tf, horovod)")
    nodes.add_argument("--nnodes", type=lambda t: _count(t, 1), metavar="N", help="nodes in the job")
    nodes.add_argument("--node-rank", type=lambda t: _count(t, 0), metavar="R", help="this node's rank, 0..N-1; "
                       "node 0 hosts the rendezvous")
    nodes.add_argument("--master-addr", metavar="ADDR", help="node 0's address (default: $MASTER_ADDR)")
    nodes.add_argument("--master-port", type=lambda t: _count(t, 1), metavar="PORT",
                       help=f"node 0's rendezvous port (default: $MASTER_PORT, then {DEFAULT_NODE_PORT}); "
                            "not launch.port")
    nodes.add_argument("--local-addr", metavar="ADDR", help="the address this node's ranks are reached at "
                       "(default: the one it reaches the master from)")
    p.add_argument("--max-restarts", type=lambda t: _count(t, 0), metavar="N",
                   help="restart all local ranks up to N times after a failure (the same as --set "
                        "launch.max_restarts=N)")
    p.add_argument("--console-ranks", metavar="LIST",
                   help="ranks whose output reaches the console, e.g. 0 or 0,3 (default: all; logs keep everything)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved spec, the plan (whether training resumes), each rank's "
                        "environment and command, check the data files; start nothing")
    p.add_argument("--json", action="store_true", help="with --dry-run: print all of it as one JSON object")
    return p


def split_command(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def flag_overrides(args: argparse.Namespace, environ: Mapping[str, str]) -> List[str]:
    """The flags that stand for spec keys, as --set overrides, so the resolved spec shows them."""
    extra = []
    table = args.rank_table or environ.get("RANK_TABLE_FILE") or None
    if table:
        extra.append(f"launch.rank_table={json.dumps(table)}")
    if args.max_restarts is not None:
        extra.append(f"launch.max_restarts={args.max_restarts}")
    if args.nproc_per_node is not None:
        extra.append(f"devices.count={args.nproc_per_node}")
    if args.output_dir is not None:
        extra.append(f"output_dir={json.dumps(args.output_dir)}")
    return list(args.overrides) + extra


def node_args(args: argparse.Namespace, environ: Mapping[str, str], spec: JobSpec) -> Optional[Nodes]:
    """The torchrun-style flags as one record, or None without --nnodes (or with --nnodes 1)."""
    given = [f for f, v in (("--node-rank", args.node_rank), ("--master-addr", args.master_addr),
                            ("--master-port", args.master_port), ("--local-addr", args.local_addr)) if v is not None]
    if not args.nnodes or args.nnodes == 1:
        if given and args.nnodes is None:
            raise LaunchError(f"{', '.join(given)} without --nnodes: add --nnodes N (the number of nodes)")
        return None
    if args.node_rank is None or args.node_rank >= args.nnodes:
        raise LaunchError(f"--nnodes {args.nnodes} needs --node-rank 0..{args.nnodes - 1} (this node's rank)")
    master = args.master_addr or environ.get("MASTER_ADDR")
    if not master:
        raise LaunchError("--nnodes needs --master-addr ADDR (or MASTER_ADDR): node 0's address")
    try:
        port = args.master_port or int(environ.get("MASTER_PORT") or DEFAULT_NODE_PORT)
    except ValueError:
        raise LaunchError(f"MASTER_PORT={environ['MASTER_PORT']!r} is not a port number") from None
    if spec.launch.rank_table:
        raise LaunchError(f"--nnodes and a rank table ({spec.launch.rank_table}) both say where the ranks are: "
                          "use one (--set launch.rank_table=null, and unset RANK_TABLE_FILE)")
    if spec.devices.type == "npu":
        raise LaunchError("--nnodes does not start NPU ranks: HCCL needs a rank table or the CM_* start "
                          "(docs/ascend.md). Use it with devices.type cpu or gpu (backend tf or horovod)")
    if port == spec.launch.port:
        raise LaunchError(f"--master-port {port} is launch.port, the collectives' first port: choose another "
                          f"(default {DEFAULT_NODE_PORT})")
    return Nodes(args.nnodes, args.node_rank, master, port, args.local_addr)


def is_single_card(spec: JobSpec, command: Sequence[str]) -> bool:
    return spec.devices.count == 1 and spec.launch.rank_table is None and not command


def main(argv: Optional[Sequence[str]] = None) -> int:
    own, command = split_command(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(own)
    if args.json and not args.dry_run:
        parser.error("--json needs --dry-run")
    setup_logging()
    try:
        overrides = flag_overrides(args, os.environ)
        spec = load_spec(args.spec, overrides)
        args.source = spec_source(args.spec, overrides)  # named by the checks against the data
        check_output_dir(spec)  # a folder csgm did not make is refused by the dry run too
        # HCCL's rank-table-free start (Ascend Operator's CM_* variables): checked before anything opens.
        cm = cm_mode.detect(os.environ, launcher=True)
        nodes = node_args(args, os.environ, spec)
        if cm is not None and nodes is not None:
            raise LaunchError("--nnodes and the CM_* variables are two ways to start a job: use one")
        if cm is None and nodes is None and is_single_card(spec, command):
            return run_single(spec, args)
        from launcher.multi import run_ranks

        return run_ranks(spec, args, command, cm, nodes)
    except (SpecError, LaunchError, cm_mode.CmModeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


def run_single(spec: JobSpec, args: argparse.Namespace) -> int:
    """Single-card mode: every stage in this process, one device, no collectives."""
    ignored = [flag for name, flag in MULTI_RANK_FLAGS if getattr(args, name) is not None]
    warnings = [f"{', '.join(ignored)}: no effect in single-card mode (one process in the launcher itself, "
                "no rank table); they apply with devices.count > 1 or a rank table"] if ignored else []
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if args.dry_run:
        return dry_run_single(spec, args.json, warnings, args.source)
    from csgm.data import DataError

    try:  # the checks the run makes once it has read the data, before TensorFlow is even imported
        check_sizes(spec, args.source, 1)
    except DataError as e:
        raise LaunchError(str(e)) from None
    if spec.backend != "local":
        log.info("single-card mode: one rank, so backend %s is not needed; running locally", spec.backend)
    for line in describe_plan(spec):
        log.info("%s", line)
    import signal
    import time

    from common.exits import EXIT_PREEMPTED
    from common.files import atomic_write_text
    from csgm.preemption import StopRequest
    from job.run_folder import claim_output_dir
    from job.stages import report_errors, run_stages
    from launcher.preempt import outcome

    stop, started = StopRequest().install(), time.time()

    def run() -> None:
        claim_output_dir(spec)
        atomic_write_text(spec.run_dir / "spec.yaml", spec_to_yaml(spec))
        run_stages(spec, stop=stop, source=args.source)

    code = report_errors(run, spec.run_dir)
    if code == EXIT_PREEMPTED:  # this process is rank 0
        print(outcome(signal.SIGTERM, {0: code}, spec.run_dir, started)[1], file=sys.stderr)
    if code:
        return code
    log.info("done: %s", spec.run_dir / ("report.md" if "recover" in spec.stages else ""))
    return 0


def dry_run_single(spec: JobSpec, as_json: bool, warnings: List[str], source: str) -> int:
    from csgm.data import DataError, check_data

    try:
        data = check_data(spec.data)
        check_sizes(spec, source, 1)
    except DataError as e:
        raise LaunchError(str(e)) from None
    plan = describe_plan(spec) + [f"data: {data}", "single-card mode: one process"]
    if as_json:
        print(json.dumps({"spec": to_data(spec), "plan": plan, "mode": "single-card", "warnings": warnings},
                         indent=2))
    else:
        print(spec_to_yaml(spec), end="")
        print("\n".join("# " + line for line in plan))
    return 0
