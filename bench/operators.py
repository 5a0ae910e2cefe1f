"""Every operator against the reference-style algorithm on the same digits, in one run.

    python -m bench.operators GENERATOR_RUN [--images 20] [--iters 1000]

GENERATOR_RUN is a trained run folder (``best/`` or ``checkpoints/``), e.g. the output of
``configs/mnist_long.yaml``. For Gaussian m = 100, super-resolution (factor 4) and inpainting
(14 x 14 hole), with the reference's row scaling, noise 0.1, VAE+Reg (z-prior 0.1, 10 restarts,
Adam 0.01): the same test digits, matrix, noise and initial latents go to this project's CSGM
solver and to ``bench/reference_tf1.py`` (the reference's TF1 loop: one session.run per step,
restarts one after another), and to Lasso. Prints MSE ± SEM per side and the difference in SEMs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from bench.common import save, table

OPERATORS = (("gaussian", dict(m=(100,))), ("superres", dict(superres_factor=4)), ("inpaint", dict(inpaint_size=14)))


def compare(generator: Path, images: int, iters: int) -> Dict[str, Any]:
    from bench.reference_tf1 import recover
    from csgm import measure
    from csgm.config import DataConfig, RecoveryConfig
    from csgm.data import Dataset, load_dataset
    from csgm.estimators import CsgmSolver, lasso
    from job.stages import load_generator

    model, generator_id = load_generator(generator)
    x = Dataset.as_float(load_dataset(DataConfig(heldout=images)).heldout)
    index = np.arange(images)
    decoder = [v.numpy() for layer in (model.dec1, model.dec2, model.dec_out) for v in (layer.w, layer.b)]
    solver = CsgmSolver(model)
    out: Dict[str, Any] = {"generator": generator_id, "images": images, "iters": iters, "operators": {}}
    for kind, settings in OPERATORS:
        rec = RecoveryConfig(measurement=(kind,), restarts=10, iters=iters, **settings)
        exp = measure.experiments(rec)[0]
        a, noise = measure.matrix(rec, exp), measure.noise(rec, exp, index)
        z0 = measure.initial_latents(rec, exp, index, model.latent_dim)
        y = x @ a + noise
        ours, _ = solver.solve(a, y, z0, rec.zprior_weight, iters, rec.learning_rate)
        reference, seconds = recover(x, a, noise, decoder, z0, iters, rec.learning_rate, rec.zprior_weight)
        out["operators"][exp.key] = {
            name: np.mean((x_hat - x) ** 2, axis=1).tolist()
            for name, x_hat in (("vae_reg", ours), ("vae_reg, reference style", reference),
                                ("lasso", lasso(a, y, rec.lasso_alpha)))}
        out["operators"][exp.key]["reference_seconds"] = seconds
    return out


def mean_sem(errors: List[float]) -> tuple:
    e = np.asarray(errors)
    return float(e.mean()), float(e.std(ddof=1) / np.sqrt(len(e)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("generator", type=Path, help="a trained run folder")
    parser.add_argument("--images", type=int, default=20, help="test digits (a multiple of 10)")
    parser.add_argument("--iters", type=int, default=1000)
    args = parser.parse_args()
    result = compare(args.generator, args.images, args.iters)
    rows = [["operator", "VAE+Reg (this project)", "VAE+Reg (reference style)", "difference / SEM", "Lasso"]]
    for key, sides in result["operators"].items():
        ours, ref, las = (mean_sem(sides[k]) for k in ("vae_reg", "vae_reg, reference style", "lasso"))
        rows.append([key, f"{ours[0]:.4f} ± {ours[1]:.4f}", f"{ref[0]:.4f} ± {ref[1]:.4f}",
                     f"{(ours[0] - ref[0]) / max(ref[1], 1e-12):+.2f}", f"{las[0]:.4f} ± {las[1]:.4f}"])
    print(f"generator {result['generator']}, first {args.images} test digits, {args.iters} steps, 10 restarts")
    print(table(rows))
    print(f"saved {save('operators', result)}")


if __name__ == "__main__":
    main()
