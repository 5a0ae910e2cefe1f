"""Measurement operators and their seeded randomness.

Every operator is a dense matrix A of shape [784, m] acting on row images: y = x A + noise. That
one form serves the CSGM loss and the Lasso baseline alike. Randomness is a pure function of
named parts, never of rank: A of (seed, experiment), or with ``fresh_matrix`` of (seed,
experiment, the batch's first image); an image's noise and its restarts' initial latents of
(seed, experiment, image index). So an image's result does not depend on how the work was split
between ranks (with ``fresh_matrix`` it depends on ``batch_size``, which is part of the spec).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

from csgm.config import RecoveryConfig

SIDE = 28
PIXELS = SIDE * SIDE
ROW_NORM = float(SIDE)  # sqrt(784): the norm the reference gives every row of A
KINDS = ("gaussian", "superres", "inpaint", "project")
_NOISE, _RESTARTS, _MATRIX, _INPUT = 1, 2, 3, 4  # stream ids: each kind of randomness its own stream


@dataclass(frozen=True)
class Experiment:
    measurement: str
    m: int

    @property
    def key(self) -> str:
        return f"{self.measurement}-m{self.m:03d}"


def experiments(spec: RecoveryConfig) -> List[Experiment]:
    """The experiments of a spec: Gaussian at each m; the other operators fix m themselves."""
    out: List[Experiment] = []
    for kind in spec.measurement:
        if kind == "gaussian":
            out.extend(Experiment(kind, m) for m in spec.m)
        elif kind == "superres":
            out.append(Experiment(kind, (SIDE // spec.superres_factor) ** 2))
        elif kind == "inpaint":
            out.append(Experiment(kind, PIXELS - spec.inpaint_size ** 2))
        else:
            out.append(Experiment(kind, PIXELS))
    return out


def _rng(spec: RecoveryConfig, exp: Experiment, *parts: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, KINDS.index(exp.measurement), exp.m, *parts])


def inpaint_mask(size: int) -> np.ndarray:
    """True for the pixels still seen: a centred size x size square is hidden."""
    mask = np.ones((SIDE, SIDE), bool)
    lo = (SIDE - size) // 2
    mask[lo:lo + size, lo:lo + size] = False
    return mask.reshape(PIXELS)


def matrix(spec: RecoveryConfig, exp: Experiment, first: int = 0) -> np.ndarray:
    """A [784, m] for the batch of images starting at index ``first`` (it matters only for a
    Gaussian A with ``fresh_matrix``: the reference draws one per batch). Every column (a row of
    the reference's A) of superres, inpaint and project has norm sqrt(784) = 28, the expected
    norm of an unscaled Gaussian one, as ``get_A_superres`` and ``get_A_inpaint`` (project:
    inpaint of size 0) scale them in AshishBora/csgm ``src/utils.py``: so every operator sees
    the same signal-to-noise against ``noise_std``."""
    if exp.measurement == "gaussian":
        parts = (_MATRIX, first) if spec.fresh_matrix else (_MATRIX,)
        a = _rng(spec, exp, *parts).standard_normal((PIXELS, exp.m))
        if spec.gaussian_scale == "paper":
            a /= exp.m
    elif exp.measurement == "superres":
        f = spec.superres_factor
        rows, cols = np.divmod(np.arange(PIXELS), SIDE)
        block = (rows // f) * (SIDE // f) + cols // f
        a = np.zeros((PIXELS, exp.m))
        a[np.arange(PIXELS), block] = ROW_NORM / f  # f*f entries: each measurement 28 f x block mean
    elif exp.measurement == "inpaint":
        a = ROW_NORM * np.eye(PIXELS)[:, inpaint_mask(spec.inpaint_size)]
    else:
        a = ROW_NORM * np.eye(PIXELS)
    return a.astype(np.float32)


def noise(spec: RecoveryConfig, exp: Experiment, images: np.ndarray) -> np.ndarray:
    """[len(images), m] measurement noise, one seeded draw per image index."""
    return np.stack([_rng(spec, exp, int(i), _NOISE).standard_normal(exp.m) * spec.noise_std
                     for i in images]).astype(np.float32)


def initial_latents(spec: RecoveryConfig, exp: Experiment, images: np.ndarray, latent_dim: int) -> np.ndarray:
    """[restarts, len(images), latent_dim] starting points z ~ N(0, I), one seeded draw per image."""
    per_image = [_rng(spec, exp, int(i), _RESTARTS).standard_normal((spec.restarts, latent_dim))
                 for i in images]
    return np.stack(per_image, axis=1).astype(np.float32)


def input_latents(spec: RecoveryConfig, images: np.ndarray, latent_dim: int) -> np.ndarray:
    """[len(images), latent_dim] latents of the images drawn from the generator (input 'generator'):
    one seeded draw per image index, the same for every experiment so every m sees the same images."""
    return np.stack([np.random.default_rng([spec.seed, _INPUT, int(i)]).standard_normal(latent_dim)
                     for i in images]).astype(np.float32)

