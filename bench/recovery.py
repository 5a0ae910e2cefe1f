"""Recovery throughput and error: the reference-style TF1 loop against this project, one run.

    python -m bench.recovery [--images 100] [--reference-images 20] [--iters 1000]

Same generator, same images, same measurement matrix, noise and initial latents for every side
(m = 100 Gaussian measurements, noise 0.1, VAE+Reg, 10 restarts). Sides:
- reference: one session.run per Adam step, restarts one after another, batches of 10;
- this project, 1 rank (TensorFlow's default threads, i.e. the whole machine), and 1 rank with
  1 thread, and 2 ranks with 1 thread each (the recovery units split between them).
Throughput counts optimisation time only (process start-up excluded) and, for 2 ranks, the busier
rank's time. Errors: mean per-pixel MSE and SEM over the images each side recovered.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from bench.common import RESULTS, in_fresh_process, launch, save, table

SPEC = "configs/mnist_1p.yaml"


def recovery_sets(images: int, iters: int) -> Dict[str, Any]:
    return {"stages": "[recover]", "recovery.images": images, "recovery.batch_size": 50,
            "recovery.m": "[100]", "recovery.methods": "[vae_reg]", "recovery.restarts": 10,
            "recovery.iters": iters}


def train_generator(folder: Path, epochs: int) -> None:
    if (folder / "checkpoints").is_dir():
        return
    launch(SPEC, {"output_dir": folder, "stages": "[train]", "train.epochs": epochs})


def run_side(generator: Path, folder: Path, images: int, iters: int, ranks: int, threads: int) -> Dict[str, Any]:
    shutil.rmtree(folder, ignore_errors=True)
    for part in ("checkpoints", "best"):  # best/: the epoch chosen on validation, which recovery uses
        if (generator / part).is_dir():
            shutil.copytree(generator / part, folder / part)
    launch(SPEC, dict(recovery_sets(images, iters), output_dir=folder, **{"devices.count": ranks,
                                                                          "devices.threads": threads}))
    busy: Dict[int, float] = defaultdict(float)
    errors: Dict[int, float] = {}
    for unit in (folder / "recovery/units").glob("*.json"):
        record = json.loads(unit.read_text())
        busy[record["rank"]] += record["seconds"]
        errors.update({row["image"]: row["mse"] for row in record["rows"]})
    return {"images_per_sec": images / max(busy.values()), "errors": [errors[i] for i in sorted(errors)]}


def reference_side(generator: Path, images: int, iters: int) -> Dict[str, Any]:
    from bench.reference_tf1 import recover
    from csgm import measure
    from csgm.data import Dataset, load_dataset
    from csgm.config import DataConfig, RecoveryConfig
    from job.stages import load_generator

    model, _ = load_generator(generator)
    rec = RecoveryConfig(images=images, m=(100,), methods=("vae_reg",), restarts=10, iters=iters)
    exp = measure.experiments(rec)[0]
    index = np.arange(images)
    x = Dataset.as_float(load_dataset(DataConfig()).heldout[:images])
    decoder = [v.numpy() for layer in (model.dec1, model.dec2, model.dec_out) for v in (layer.w, layer.b)]
    x_hat, seconds = recover(x, measure.matrix(rec, exp), measure.noise(rec, exp, index), decoder,
                             measure.initial_latents(rec, exp, index, model.latent_dim), iters)
    return {"images_per_sec": images / seconds, "errors": np.mean((x_hat - x) ** 2, axis=1).tolist()}


def stats(errors: List[float]) -> str:
    e = np.asarray(errors)
    return f"{e.mean():.4f} ± {e.std(ddof=1) / np.sqrt(len(e)):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--reference-images", type=int, default=20)
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--generator-epochs", type=int, default=100)
    args = parser.parse_args()
    work = RESULTS / "recovery_work"
    generator = work / "generator"
    train_generator(generator, args.generator_epochs)
    sides = {"reference (TF1 loop)": in_fresh_process(reference_side, generator, args.reference_images,
                                                      args.iters)[0]}
    for name, ranks, threads in (("1 rank", 1, 0), ("1 rank, 1 thread", 1, 1), ("2 ranks, 1 thread each", 2, 1)):
        sides[name] = run_side(generator, work / name.replace(" ", "_").replace(",", ""), args.images,
                               args.iters, ranks, threads)
    ref = sides["reference (TF1 loop)"]
    n_ref = args.reference_images
    rows = [["side", "images", "images/s", "vs reference", "MSE ± SEM (own images)",
             f"MSE ± SEM (first {n_ref})"]]
    for name, side in sides.items():
        rows.append([name, str(len(side["errors"])), f"{side['images_per_sec']:.2f}",
                     f"{side['images_per_sec'] / ref['images_per_sec']:.2f}x", stats(side["errors"]),
                     stats(side["errors"][:n_ref])])
    print(table(rows))
    one, two = sides["1 rank, 1 thread"], sides["2 ranks, 1 thread each"]
    print(f"1 rank / reference: {sides['1 rank']['images_per_sec'] / ref['images_per_sec']:.2f}x (target >= 4x); "
          f"2 ranks / 1 rank (1 thread each): {two['images_per_sec'] / one['images_per_sec']:.2f}x (target >= 1.8x)")
    print(f"saved {save('recovery', {'args': vars(args), 'sides': sides})}")


if __name__ == "__main__":
    main()
