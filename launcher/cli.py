"""``python -m launcher SPEC``: read the job spec, then run the job (single-card mode: in this process)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from job.spec import JobSpec, SpecError, load_spec, spec_to_yaml

log = logging.getLogger("launcher")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m launcher",
        description="Run a CSGM job: train the VAE, then recover images from random measurements.")
    p.add_argument("spec", help="job spec (YAML), e.g. configs/mnist_1p.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec key, e.g. --set train.epochs=2 --set recovery.m=[25,100]")
    p.add_argument("--dry-run", action="store_true", help="print the resolved spec and the plan; run nothing")
    return p


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stdout)


def describe_plan(spec: JobSpec) -> List[str]:
    from csgm.measure import experiments

    lines = [f"job {spec.name}: stages {', '.join(spec.stages)}; outputs in {spec.run_dir}"]
    if "train" in spec.stages:
        t = spec.train
        lines.append(f"train: {t.epochs} epochs, batch {t.batch_size} per device, lr {t.learning_rate}, "
                     f"precision {t.precision}, seed {t.seed}")
    if "recover" in spec.stages:
        r = spec.recovery
        exps = experiments(r)
        batches = -(-r.images // r.batch_size)
        lines.append(f"recover: {r.images} images x {len(exps)} experiments "
                     f"({', '.join(e.key for e in exps)}) x methods {', '.join(r.methods)} = "
                     f"{len(exps) * len(r.methods) * batches} units; {r.restarts} restarts x {r.iters} iterations")
    return lines


def run_single(spec: JobSpec) -> None:
    from job.files import atomic_write_text
    from job.stages import run_stages

    atomic_write_text(spec.run_dir / "spec.yaml", spec_to_yaml(spec))
    run_stages(spec)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        spec = load_spec(args.spec, args.overrides)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(spec_to_yaml(spec), end="")
        print("\n".join("# " + line for line in describe_plan(spec)))
        return 0
    for line in describe_plan(spec):
        log.info("%s", line)
    from csgm.checkpoint import CheckpointError
    from csgm.data import DataError
    from csgm.report import MissingUnits

    try:
        run_single(spec)
    except (DataError, CheckpointError, MissingUnits, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log.info("done: %s", spec.run_dir / "report.md" if "recover" in spec.stages else spec.run_dir)
    return 0
