"""Training throughput and memory: this project against the reference-style TF1 loop, one run.

    python -m bench.training [--steps 600] [--rounds 3]

Each measurement runs in a fresh process; the two sides alternate round by round so that both
see the same machine. Also: peak memory of one training process on a full-size data set (the
60,000 Fashion-MNIST training images of Debian's dataset-fashion-mnist), target < 1.5 GB.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Dict

from bench.common import in_fresh_process, save, table

FASHION = Path("/usr/share/datasets/fashion-mnist")


def reference_rate(steps: int) -> float:
    from bench.reference_tf1 import train_examples_per_sec
    from csgm.data import load_dataset
    from csgm.config import DataConfig

    return train_examples_per_sec(load_dataset(DataConfig()).train, steps)


def project_rate(steps: int, precision: str, source: str = "sample") -> float:
    """Examples/s of csgm.train.Trainer on one process, after the first (compiling) call."""
    import tempfile

    from csgm.backends import Backend
    from csgm.data import load_dataset
    from csgm.model import use_xla
    from csgm.train import Trainer, steps_per_epoch
    from csgm.config import DataConfig, TrainConfig

    data_spec = DataConfig() if source == "sample" else DataConfig(source="idx", path=str(FASHION))
    data = load_dataset(data_spec)
    per_epoch = steps_per_epoch(len(data.train), 100, 1)
    epochs = max(2, -(-steps // per_epoch) + 1)
    spec = TrainConfig(epochs=epochs, precision=precision, log_every=min(per_epoch, 200),
                     checkpoint_every=10_000)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(spec, data, Path(tmp), Backend(), {}, xla=use_xla("cpu", precision))
        result = trainer.fit()
    return result.examples_per_sec or 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: Dict[str, list] = {"reference": [], "fp32": [], "mixed": []}
    peaks: Dict[str, float] = {}
    for _ in range(args.rounds):
        for name in rates:
            value, peak = (in_fresh_process(reference_rate, args.steps) if name == "reference"
                           else in_fresh_process(project_rate, args.steps, name))
            rates[name].append(value)
            peaks[name] = max(peaks.get(name, 0.0), peak)
    median = {k: statistics.median(v) for k, v in rates.items()}
    full = None
    if FASHION.is_dir():
        rate, full_peak = in_fresh_process(project_rate, 300, "fp32", "idx")
        full = {"examples_per_sec": rate, "peak_rss_mib": full_peak}
    rows = [["run", "examples/s (median)", "all rounds", "vs reference", "peak RSS MiB"]]
    for name in rates:
        rows.append([name if name == "reference" else f"this project, {name}", f"{median[name]:.0f}",
                     ", ".join(f"{v:.0f}" for v in rates[name]), f"{median[name] / median['reference']:.2f}x",
                     f"{peaks[name]:.0f}"])
    print(table(rows))
    if full:
        print(f"full-size data (60,000 Fashion-MNIST images), fp32: {full['examples_per_sec']:.0f} examples/s, "
              f"peak RSS {full['peak_rss_mib']:.0f} MiB (target < 1536)")
    path = save("training", {"steps": args.steps, "rounds": rates, "median": median, "peak_rss_mib": peaks,
                             "ratio_fp32": median["fp32"] / median["reference"],
                             "ratio_mixed": median["mixed"] / median["reference"], "full_size": full})
    print(f"ratio (fp32 / reference): {median['fp32'] / median['reference']:.2f}x (target >= 1.5x); saved {path}")


if __name__ == "__main__":
    main()
