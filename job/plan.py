"""A job's plan in a few lines, for the console and for dry runs: what will run, how much of it."""

from __future__ import annotations

from typing import List

from csgm.ascend import installed_tensorflow, resolve_adapter
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
