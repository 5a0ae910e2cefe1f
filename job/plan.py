"""A job's plan in a few lines, for the console and for dry runs: what will run, how much of it."""

from __future__ import annotations

from typing import List

from csgm.measure import experiments
from job.spec import JobSpec


def describe_plan(spec: JobSpec) -> List[str]:
    lines = [f"job {spec.name}: stages {', '.join(spec.stages)}; backend {spec.backend}; "
             f"outputs in {spec.run_dir}"]
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
