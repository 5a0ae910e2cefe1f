"""Random small affine warps of the training digits (``train.augment: affine``).

On the 4,700 sample digits the VAE overfits after about 7,000 steps (docs/science.md: the
validation error bottoms at epoch 149 of the reference's 1,277), so the generator's range, the
floor of every CSGM method's error, stays that of an early epoch. Warping each example a little
differently in every epoch (rotation, scale, shift: the variation between writers) gives the
generator more distinct digits to learn from without any data beyond the embedded ones.

A warp is a pure function of (seed, epoch, example index), like the order and the VAE's noise
(csgm/train.py), so N ranks see exactly what one process sees and a resumed run continues as an
uninterrupted one would. Only training examples are warped: validation and test digits never are.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from csgm.data import Dataset

SIDE = 28
CENTRE = (SIDE - 1) / 2.0


def epoch_warps(seed: int, epoch: int, n: int, rotate_deg: float, scale: float, shift: float) -> np.ndarray:
    """Row i is example i's warp in this epoch: [n, 2, 3] maps an output pixel (row, col, 1),
    centred on the image, to where it is sampled in the original digit."""
    rng = np.random.default_rng([seed, epoch, 2])
    angle = np.deg2rad(rng.uniform(-rotate_deg, rotate_deg, n))
    zoom = np.exp(rng.uniform(-np.log1p(scale), np.log1p(scale), n))  # 1/(1+scale)..1+scale: shrink as often as grow
    offset = rng.uniform(-shift, shift, (n, 2))
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    warps = np.empty((n, 2, 3), np.float64)
    warps[:, 0, 0], warps[:, 0, 1], warps[:, 0, 2] = cos, -sin, offset[:, 0]
    warps[:, 1, 0], warps[:, 1, 1], warps[:, 1, 2] = sin, cos, offset[:, 1]
    return warps


_ROWS, _COLS = (g.reshape(1, -1).astype(np.float32) - CENTRE
                for g in np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij"))
PADDED = SIDE + 3  # one zero row/column before the image, two after: every neighbour read is inside


def warp(images: np.ndarray, warps: np.ndarray) -> np.ndarray:
    """float32 [k, 784] images warped by [k, 2, 3] (bilinear; outside the image is 0, the
    background). The identity warp returns the images unchanged."""
    k = len(images)
    padded = np.zeros((k, PADDED, PADDED), np.float32)
    padded[:, 1:SIDE + 1, 1:SIDE + 1] = images.reshape(k, SIDE, SIDE)
    w = warps.astype(np.float32)[:, :, :, None]  # [k, 2, 3, 1] against pixels [1, 784]
    index = np.arange(k, dtype=np.int32)[:, None] * (PADDED * PADDED)
    fractions = []
    for axis, stride in ((0, PADDED), (1, 1)):
        src = w[:, axis, 0] * _ROWS + w[:, axis, 1] * _COLS + (w[:, axis, 2] + CENTRE)
        # Clamping to [-1, SIDE] only moves samples that read zeros anyway onto other zeros.
        np.clip(src, -1.0, float(SIDE), out=src)
        base = np.floor(src)
        fractions.append(src - base)
        index = index + (base.astype(np.int32) + 1) * stride
    fr, fc = fractions
    flat = padded.reshape(-1)
    top = np.take(flat, index) * (1 - fc) + np.take(flat, index + 1) * fc
    bottom = np.take(flat, index + PADDED) * (1 - fc) + np.take(flat, index + PADDED + 1) * fc
    return top * (1 - fr) + bottom * fr


class EpochExamples:
    """One rank's training examples of each epoch, in step order: their indices [steps, batch] and
    the images as float32 [steps, batch, 784], warped when augmenting. While an epoch trains, the
    next one's are prepared on a worker thread (numpy's array work releases the GIL): on a host
    with cores to spare, as an Ascend server's, the warps cost no step time; on this 2-core
    machine they partly overlap the step."""

    def __init__(self, images: np.ndarray, indices: Callable[[int], np.ndarray],
                 warps: Optional[Callable[[int], np.ndarray]]):
        self._images, self._indices, self._warps = images, indices, warps
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="augment") if warps else None
        self._ahead: Dict[int, Future] = {}

    def _prepare(self, epoch: int) -> Tuple[np.ndarray, np.ndarray]:
        idx = self._indices(epoch)
        examples = Dataset.as_float(self._images[idx])
        if self._warps is None:
            return idx, examples
        flat = examples.reshape(idx.size, -1)
        return idx, warp(flat, self._warps(epoch)[idx.ravel()]).reshape(examples.shape)

    def __call__(self, epoch: int, last: int) -> Tuple[np.ndarray, np.ndarray]:
        """Epoch ``epoch``'s (indices, images); starts preparing the next one unless ``epoch`` is ``last``."""
        if self._pool is None:
            return self._prepare(epoch)
        pending = self._ahead.pop(epoch, None) or self._pool.submit(self._prepare, epoch)
        if epoch < last:
            self._ahead[epoch + 1] = self._pool.submit(self._prepare, epoch + 1)
        return pending.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._ahead.clear()
