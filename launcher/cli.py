"""``python -m launcher SPEC``: read the job spec and the rank table, start and supervise the ranks.

One rank with no rank table runs in this very process (single-card mode, for debugging). Otherwise
the launcher finds its server in the rank table, starts one process per local device with the
environment of launcher.env, and supervises them (launcher.supervise): logs per rank, fail fast,
signals forwarded, restarts.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional, Sequence, Tuple

from common.exits import EXIT_BAD_INPUT
from common.logs import setup_logging
from job.plan import describe_plan
from job.spec import JobSpec, SpecError, load_spec, spec_to_yaml
from launcher.errors import LaunchError

log = logging.getLogger("launcher")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m launcher",
        usage="python -m launcher SPEC [options] [-- COMMAND ...]",
        description="Run a CSGM job: one process per device, training the VAE data-parallel, then "
                    "sharing the compressed-sensing recovery. After '--', run COMMAND on every rank "
                    "instead, with the same environment and supervision.")
    p.add_argument("spec", help="job spec (YAML), e.g. configs/mnist_1p.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key, e.g. --set train.epochs=2 --set recovery.m=[25,100]")
    p.add_argument("--rank-table", metavar="FILE", help="HCCL rank table (overrides launch.rank_table)")
    p.add_argument("--server-id", metavar="ID",
                   help="this server's server_id in the rank table (default: $XDL_IP, then this host's addresses)")
    p.add_argument("--max-restarts", type=int, metavar="N",
                   help="restart all local ranks up to N times after a failure (overrides launch.max_restarts)")
    p.add_argument("--console-ranks", metavar="LIST",
                   help="ranks whose output reaches the console, e.g. 0 or 0,3 (default: all; logs keep everything)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved spec, this server's ranks, their environment and command; start nothing")
    return p


def split_command(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def is_single_card(spec: JobSpec, table_path: Optional[str], command: Sequence[str]) -> bool:
    return spec.devices.count == 1 and table_path is None and not command


def main(argv: Optional[Sequence[str]] = None) -> int:
    own, command = split_command(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(own)
    setup_logging()
    try:
        spec = load_spec(args.spec, args.overrides)
        table_path = args.rank_table or spec.launch.rank_table
        if is_single_card(spec, table_path, command):
            return run_single(spec, args.dry_run)
        from launcher.multi import run_ranks

        return run_ranks(spec, args, command, table_path)
    except (SpecError, LaunchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


def run_single(spec: JobSpec, dry_run: bool) -> int:
    """Single-card mode: every stage in this process, one device, no collectives."""
    if dry_run:
        print(spec_to_yaml(spec), end="")
        print("\n".join("# " + line for line in describe_plan(spec) + ["single-card mode: one process"]))
        return 0
    if spec.backend != "local":
        log.info("single-card mode: one rank, so backend %s is not needed; running locally", spec.backend)
    for line in describe_plan(spec):
        log.info("%s", line)
    from common.files import atomic_write_text
    from job.stages import report_errors, run_stages

    def run() -> None:
        atomic_write_text(spec.run_dir / "spec.yaml", spec_to_yaml(spec))
        run_stages(spec)

    code = report_errors(run, spec.run_dir)
    if code:
        return code
    log.info("done: %s", spec.run_dir / ("report.md" if "recover" in spec.stages else ""))
    return 0

