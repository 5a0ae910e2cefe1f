"""A job's plan in a few lines, for the console and for dry runs: what will run, how much of it."""

from __future__ import annotations

from typing import List, Optional, Tuple

from common.schema import SpecError
from csgm.ascend import installed_tensorflow, resolve_adapter
from csgm.data import SplitError, image_counts, split_sizes
from csgm.measure import experiments
from csgm.resume import CheckpointError, decide, training_inputs
from job.spec import JobSpec


def describe_plan(spec: JobSpec) -> List[str]:
    lines = [f"job {spec.name}: stages {', '.join(spec.stages)}; backend {spec.backend}; "
             f"outputs in {spec.run_dir}"]
    if spec.devices.type == "npu":
        lines.append(adapter_line(spec))
    if "train" in spec.stages:
        t = spec.train
        lines.append(f"train: {t.epochs} epochs, batch {t.batch_size} per device, lr {t.learning_rate}, "
                     f"precision {t.precision}, seed {t.seed}")
        lines.append(resume_line(spec))
    if "recover" in spec.stages:
        r = spec.recovery
        exps = experiments(r)
        batches = -(-r.images // r.batch_size)
        lines.append(f"recover: {r.images} images x {len(exps)} experiments "
                     f"({', '.join(e.key for e in exps)}) x methods {', '.join(r.methods)} = "
                     f"{len(exps) * len(r.methods) * batches} units; {r.restarts} restarts x {r.iters} iterations")
    return lines


def resume_line(spec: JobSpec) -> str:
    """Whether training will resume, start afresh or refuse (csgm.resume decides the same way)."""
    try:
        decision = decide(spec.run_dir / "checkpoints", training_inputs(spec.train, spec.data), spec.train.resume)
    except CheckpointError as e:
        return f"train: will refuse to start: {e}"
    return decision.describe(spec.train.epochs, spec.run_dir)


def adapter_line(spec: JobSpec) -> str:
    """Which CANN adapter the ranks will open (each rank checks again against its own TensorFlow)."""
    adapter, why = resolve_adapter(spec.npu.adapter, installed_tensorflow())
    if adapter is None:
        return f"npu: adapter {spec.npu.adapter} will be refused: {why}"
    style = "TF 1.15 graph sessions" if adapter == "npu_bridge" else "TF 2 functions"
    return f"npu: adapter {adapter} ({style}; {why})"


def check_sizes(spec: JobSpec, source: str, world: int, counts: Optional[Tuple[int, int]] = None) -> None:
    """What the ranks check once they have read the data, checked before anything starts (by the dry run
    too), naming ``source`` (the spec file): the split fits the data, recovery.images fits the held-out
    images, one global batch fits the training images. ``counts``: (training, test) images, read from the
    data's headers if not given (DataError if the files are missing)."""
    train_count, test_count = image_counts(spec.data) if counts is None else counts
    try:
        n_train, _, n_heldout = split_sizes(spec.data, train_count, test_count)
    except SplitError as e:
        raise SpecError(source, e.key, e.problem, e.fix) from None
    check_fits(spec, source, world, n_train, n_heldout)


def check_fits(spec: JobSpec, source: str, world: int, n_train: int, n_heldout: int) -> None:
    """recovery.images fits the held-out images and one global batch the training images."""
    problems = [("recovery.images", spec.recovery.images_problem(n_heldout) if "recover" in spec.stages else None),
                ("train.batch_size", spec.train.batch_problem(n_train, world) if "train" in spec.stages else None)]
    for key, problem in problems:
        if problem:
            raise SpecError(source, key, *problem)
