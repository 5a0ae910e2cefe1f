"""Data-parallel training throughput on this machine, one run:

    python -m bench.scaling [--epochs 15]

One rank with one thread against two ranks with one thread each, for the tf and horovod backends,
in fp32 and mixed precision; aggregate examples/s (all ranks), the scaling ratio, and the share of
each step spent in the gradient all-reduce: timed alone by bench.allreduce_probe for every backend,
and inside the training loop from Horovod's timeline (reduction, and waiting for the other rank).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Dict, Optional

from bench.common import RESULTS, launch, save, table
from bench.horovod_timeline import activity_ms, read_events

SPEC = "configs/mnist_1p.yaml"


def train(name: str, backend: str, ranks: int, precision: str, epochs: int,
          env: Optional[Dict[str, str]] = None) -> Path:
    out = RESULTS / "scaling_work" / name
    shutil.rmtree(out, ignore_errors=True)  # a leftover run would resume and train nothing
    out.mkdir(parents=True)
    launch(SPEC, {"output_dir": out, "stages": "[train]", "train.epochs": epochs, "backend": backend,
                  "devices.count": ranks, "devices.threads": 1, "train.precision": precision,
                  "train.checkpoint_every": 1000, "train.log_every": 100}, "--console-ranks", "0", env=env)
    return out


def examples_per_sec(name: str, backend: str, ranks: int, precision: str, epochs: int) -> float:
    metrics = json.loads((train(name, backend, ranks, precision, epochs) / "train_metrics.json").read_text())
    return float(metrics["examples_per_sec"])


def horovod_in_step_ms(precision: str) -> Dict[str, float]:
    """Per-step all-reduce and wait inside a real 2-rank training run (a separate, shorter run:
    writing the timeline costs a little time itself)."""
    timeline = RESULTS / "scaling_work" / f"timeline_{precision}.json"
    train(f"timeline_{precision}", "horovod", 2, precision, 5, env={"HOROVOD_TIMELINE": str(timeline)})
    return activity_ms(read_events(timeline))


def allreduce_ms(backend: str) -> float:
    stdout = launch(SPEC, {"backend": backend, "devices.count": 2, "devices.threads": 1,
                           "output_dir": RESULTS / "scaling_work" / f"probe_{backend}"},
                    "--", sys.executable, "-m", "bench.allreduce_probe", timeout=600)
    times = [float(v) for v in re.findall(r"ALLREDUCE_MS ([\d.]+)", stdout)]
    if not times:
        raise RuntimeError(f"the all-reduce probe printed no time:\n{stdout[-2000:]}")
    return max(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    backends = ["tf"] + (["horovod"] if importlib.util.find_spec("horovod") else [])
    results: Dict[str, Dict[str, float]] = {}
    rows = [["backend", "precision", "1 rank ex/s", "2 ranks ex/s", "ratio", "step ms", "all-reduce alone ms",
             "in the step: all-reduce ms", "waiting ms", "share of step"]]
    for precision in ("fp32", "mixed"):
        one = examples_per_sec(f"one_{precision}", "local", 1, precision, args.epochs)
        for backend in backends:
            two = examples_per_sec(f"{backend}_{precision}", backend, 2, precision, args.epochs)
            reduce_ms = allreduce_ms(backend)
            step_ms = 1000.0 * 200 / two  # one step: 100 examples on each of 2 ranks
            row = {"one_rank": one, "two_ranks": two, "ratio": two / one, "step_ms": step_ms,
                   "allreduce_alone_ms": reduce_ms}
            if backend == "horovod":  # only Horovod writes a timeline of its collectives
                in_step = horovod_in_step_ms(precision)
                row.update(allreduce_in_step_ms=in_step.get("ALLREDUCE", float("nan")),
                           waiting_in_step_ms=in_step.get("NEGOTIATE_ALLREDUCE", float("nan")))
                share = (row["allreduce_in_step_ms"] + row["waiting_in_step_ms"]) / step_ms
                cells = [f"{row['allreduce_in_step_ms']:.1f}", f"{row['waiting_in_step_ms']:.1f}",
                         f"{100 * share:.0f}% (both)"]
            else:
                share = reduce_ms / step_ms
                cells = ["", "", f"{100 * share:.0f}% (alone)"]
            row["allreduce_share"] = share
            results[f"{backend}_{precision}"] = row
            rows.append([backend, precision, f"{one:.0f}", f"{two:.0f}", f"{two / one:.2f}x", f"{step_ms:.1f}",
                         f"{reduce_ms:.1f}", *cells])
    print(table(rows))
    best = max(results.values(), key=lambda r: r["ratio"])
    print(f"best two-rank scaling: {best['ratio']:.2f}x (target >= 1.7x); saved {save('scaling', results)}")


if __name__ == "__main__":
    main()
