"""Training-time warps (csgm/augment.py): exact on warps with known answers, pure in (seed, epoch)."""

from __future__ import annotations

import numpy as np
import pytest

from csgm.augment import epoch_warps, warp

RNG = np.random.default_rng(3)
IMAGES = RNG.random((5, 784), dtype=np.float32)


def _affine(matrix, offset=(0.0, 0.0)) -> np.ndarray:
    w = np.zeros((len(IMAGES), 2, 3))
    w[:, :, :2], w[:, :, 2] = matrix, offset
    return w


def _grids(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, 28, 28)


@pytest.mark.parametrize("name, matrix, offset, expected", [
    ("identity", np.eye(2), (0, 0), lambda g: g),
    ("down by 2 rows", np.eye(2), (-2, 0), lambda g: np.pad(g[:, :-2], ((0, 0), (2, 0), (0, 0)))),
    ("left by 1 column", np.eye(2), (0, 1), lambda g: np.pad(g[:, :, 1:], ((0, 0), (0, 0), (0, 1)))),
    ("quarter turn", [[0, 1], [-1, 0]], (0, 0), lambda g: np.rot90(g, axes=(1, 2))),
    ("mirror", [[1, 0], [0, -1]], (0, 0), lambda g: g[:, :, ::-1]),
    ("far away", np.eye(2), (40, 0), lambda g: np.zeros_like(g)),
])
def test_warps_with_known_answers(name: str, matrix, offset, expected) -> None:
    out = warp(IMAGES, _affine(matrix, offset))
    np.testing.assert_allclose(_grids(out), expected(_grids(IMAGES)), atol=1e-6, err_msg=name)


def test_half_pixel_shift_is_the_mean_of_neighbours() -> None:
    out = _grids(warp(IMAGES, _affine(np.eye(2), (0, 0.5))))
    g = _grids(IMAGES)
    np.testing.assert_allclose(out[:, :, :-1], (g[:, :, :-1] + g[:, :, 1:]) / 2, atol=1e-6)
    np.testing.assert_allclose(out[:, :, -1], g[:, :, -1] / 2, atol=1e-6)  # the other half is background


def test_epoch_warps_are_pure_bounded_and_vary_by_epoch() -> None:
    a, b = epoch_warps(0, 4, 1000, 10.0, 0.1, 1.0), epoch_warps(0, 4, 1000, 10.0, 0.1, 1.0)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, epoch_warps(0, 5, 1000, 10.0, 0.1, 1.0))
    assert not np.allclose(a, epoch_warps(1, 4, 1000, 10.0, 0.1, 1.0))
    zoom = 1 / np.sqrt(np.linalg.det(a[:, :, :2]))       # the matrix is rotation / zoom
    angle = np.degrees(np.arctan2(a[:, 1, 0], a[:, 0, 0]))
    assert 1 / 1.1 - 1e-9 <= zoom.min() and zoom.max() <= 1.1 + 1e-9 and np.abs(angle).max() <= 10.0
    assert np.abs(a[:, :, 2]).max() <= 1.0
    assert np.abs(angle).max() > 9.0 and np.abs(a[:, :, 2]).max() > 0.95   # the whole range is used


def test_zero_magnitudes_leave_images_unchanged() -> None:
    np.testing.assert_array_equal(warp(IMAGES, epoch_warps(0, 0, len(IMAGES), 0.0, 0.0, 0.0)), IMAGES)


def test_epoch_examples_prefetch_gives_what_a_direct_warp_gives() -> None:
    from csgm.augment import EpochExamples

    pixels = (RNG.random((12, 784)) * 255).astype(np.uint8)
    order = {e: np.random.default_rng(e).permutation(12)[:8].reshape(2, 4) for e in range(3)}
    warps = {e: epoch_warps(0, e, 12, 10.0, 0.1, 1.0) for e in range(3)}
    examples = EpochExamples(pixels, order.__getitem__, warps.__getitem__)
    try:
        for epoch in range(3):   # epochs 1 and 2 come from the worker thread
            idx, got = examples(epoch, last=2)
            np.testing.assert_array_equal(idx, order[epoch])
            direct = warp(pixels[idx.ravel()].astype(np.float32) / 255, warps[epoch][idx.ravel()])
            np.testing.assert_array_equal(got, direct.reshape(2, 4, 784))
    finally:
        examples.close()
    _, plain = EpochExamples(pixels, order.__getitem__, None)(1, last=2)
    np.testing.assert_array_equal(plain, pixels[order[1]].astype(np.float32) / 255)
