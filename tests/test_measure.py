"""Tests for csgm.measure: experiments, measurement matrices and the seeded per-image randomness."""

from __future__ import annotations

import numpy as np
import pytest

from csgm.measure import Experiment, experiments, initial_latents, inpaint_mask, matrix, noise
from csgm.config import RecoveryConfig


def spec(**kw) -> RecoveryConfig:
    for key in ("measurement", "m"):
        if key in kw:
            kw[key] = tuple(kw[key])
    return RecoveryConfig(**kw)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 784)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# experiments
# --------------------------------------------------------------------------------------------

EXPERIMENTS = [
    pytest.param(dict(measurement=["gaussian"], m=[10, 25, 100]),
                 [("gaussian", 10), ("gaussian", 25), ("gaussian", 100)], id="gaussian-m-list"),
    pytest.param(dict(measurement=["superres"], superres_factor=4), [("superres", 49)], id="superres-4"),
    pytest.param(dict(measurement=["superres"], superres_factor=2), [("superres", 196)], id="superres-2"),
    pytest.param(dict(measurement=["superres"], superres_factor=7), [("superres", 16)], id="superres-7"),
    pytest.param(dict(measurement=["inpaint"], inpaint_size=14), [("inpaint", 588)], id="inpaint-14"),
    pytest.param(dict(measurement=["inpaint"], inpaint_size=1), [("inpaint", 783)], id="inpaint-1"),
    pytest.param(dict(measurement=["project"]), [("project", 784)], id="project"),
    pytest.param(dict(measurement=["superres", "gaussian", "project"], m=[50, 10]),
                 [("superres", 49), ("gaussian", 50), ("gaussian", 10), ("project", 784)], id="mixed-order-kept"),
    pytest.param(dict(measurement=["superres", "inpaint"], m=[50, 10]),
                 [("superres", 49), ("inpaint", 588)], id="m-ignored-without-gaussian"),
]


@pytest.mark.parametrize("kw, expected", EXPERIMENTS)
def test_experiments(kw, expected) -> None:
    got = experiments(spec(**kw))
    assert [(e.measurement, e.m) for e in got] == expected


def test_default_experiments() -> None:
    got = experiments(RecoveryConfig())
    assert [e.key for e in got] == ["gaussian-m010", "gaussian-m025", "gaussian-m050", "gaussian-m100",
                                    "gaussian-m200", "gaussian-m300", "gaussian-m400", "gaussian-m500",
                                    "gaussian-m750"]


@pytest.mark.parametrize("exp, key", [
    (Experiment("gaussian", 5), "gaussian-m005"),
    (Experiment("superres", 49), "superres-m049"),
    (Experiment("project", 784), "project-m784"),
])
def test_experiment_key(exp: Experiment, key: str) -> None:
    assert exp.key == key


# --------------------------------------------------------------------------------------------
# matrix
# --------------------------------------------------------------------------------------------

SHAPES = [
    (dict(), Experiment("gaussian", 25), (784, 25)),
    (dict(), Experiment("gaussian", 784), (784, 784)),
    (dict(superres_factor=4), Experiment("superres", 49), (784, 49)),
    (dict(superres_factor=2), Experiment("superres", 196), (784, 196)),
    (dict(superres_factor=7), Experiment("superres", 16), (784, 16)),
    (dict(inpaint_size=14), Experiment("inpaint", 588), (784, 588)),
    (dict(inpaint_size=10), Experiment("inpaint", 684), (784, 684)),
    (dict(), Experiment("project", 784), (784, 784)),
]


@pytest.mark.parametrize("kw, exp, shape", SHAPES, ids=[f"{e.key}" for _, e, _ in SHAPES])
def test_matrix_shape(kw, exp: Experiment, shape) -> None:
    a = matrix(spec(**kw), exp)
    assert a.shape == shape
    assert a.dtype == np.float32


def test_matrix_shapes_match_experiments() -> None:
    s = spec(measurement=["gaussian", "superres", "inpaint", "project"], m=[10, 300])
    for exp in experiments(s):
        assert matrix(s, exp).shape == (784, exp.m)


def test_gaussian_entries_standard_normal() -> None:
    a = matrix(spec(), Experiment("gaussian", 100)).astype(np.float64)
    # 78,400 entries: standard error of the mean 0.0036, of the std about 0.0025
    assert abs(a.mean()) < 0.02
    assert abs(a.std() - 1.0) < 0.02
    assert abs(np.mean(np.abs(a) < 1.0) - 0.6827) < 0.01   # shape, not only moments
    col_std = a.std(axis=0)
    assert np.all((col_std > 0.85) & (col_std < 1.15))


@pytest.mark.parametrize("m", [10, 100, 750])
def test_paper_scaling_divides_by_m(m: int) -> None:
    unscaled = matrix(spec(gaussian_scale="unscaled"), Experiment("gaussian", m))
    paper = matrix(spec(gaussian_scale="paper"), Experiment("gaussian", m))
    np.testing.assert_allclose(paper, unscaled / m, rtol=1e-6)


@pytest.mark.parametrize("kind, m, kw", [
    ("superres", 49, dict(superres_factor=4)), ("inpaint", 588, dict()), ("project", 784, dict()),
])
def test_paper_scaling_only_for_gaussian(kind: str, m: int, kw) -> None:
    exp = Experiment(kind, m)
    np.testing.assert_array_equal(matrix(spec(gaussian_scale="paper", **kw), exp), matrix(spec(**kw), exp))


def test_gaussian_deterministic() -> None:
    exp = Experiment("gaussian", 25)
    np.testing.assert_array_equal(matrix(spec(seed=3), exp), matrix(spec(seed=3), exp))


@pytest.mark.parametrize("change", ["m", "seed"])
def test_gaussian_differs(change: str) -> None:
    a = matrix(spec(seed=0), Experiment("gaussian", 25))
    if change == "m":
        b = matrix(spec(seed=0), Experiment("gaussian", 100))[:, :25]
    else:
        b = matrix(spec(seed=1), Experiment("gaussian", 25))
    assert not np.allclose(a, b)
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.05   # independent draws, not shifted copies


def test_gaussian_independent_of_other_settings() -> None:
    """A depends on (seed, experiment) only: not on noise, restarts, the m list or the images."""
    exp = Experiment("gaussian", 50)
    base = matrix(spec(), exp)
    other = spec(noise_std=0.5, restarts=3, m=[50, 10], measurement=["project", "gaussian"], iters=7)
    np.testing.assert_array_equal(matrix(other, exp), base)


def test_fresh_matrix_is_one_draw_per_batch() -> None:
    """fresh_matrix: a new Gaussian A per batch (by its first image), the same for a batch
    whatever else runs; off, the batch does not matter. Fixed operators never change."""
    exp = Experiment("gaussian", 50)
    fresh = spec(fresh_matrix=True)
    first, second = matrix(fresh, exp, 0), matrix(fresh, exp, 50)
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 0.05
    np.testing.assert_array_equal(matrix(fresh, exp, 50), second)
    np.testing.assert_array_equal(matrix(spec(), exp, 50), matrix(spec(), exp, 0))
    superres = Experiment("superres", 49)
    np.testing.assert_array_equal(matrix(fresh, superres, 50), matrix(spec(), superres, 0))


# The reference (AshishBora/csgm src/utils.py get_A_superres, get_A_inpaint; project is inpaint of
# size 0) scales every row of its A [m, 784], a column of ours, to squared norm n_input = 784.
ALL_KINDS = [("gaussian", 100, dict()), ("superres", 49, dict(superres_factor=4)),
             ("superres", 196, dict(superres_factor=2)), ("superres", 16, dict(superres_factor=7)),
             ("inpaint", 588, dict(inpaint_size=14)), ("inpaint", 783, dict(inpaint_size=1)),
             ("project", 784, dict())]


@pytest.mark.parametrize("kind, m, kw", ALL_KINDS, ids=[f"{k}-{m}" for k, m, _ in ALL_KINDS])
def test_row_norms_as_the_reference(kind: str, m: int, kw) -> None:
    norms = np.linalg.norm(matrix(spec(**kw), Experiment(kind, m)).astype(np.float64), axis=0)
    if kind == "gaussian":   # random rows: norm 28 on average (chi with 784 degrees of freedom)
        assert abs(norms.mean() - 28.0) < 0.3 and np.all(np.abs(norms - 28.0) < 4.0)
    else:                    # fixed rows: exactly 28
        np.testing.assert_allclose(norms, 28.0, rtol=1e-6)


@pytest.mark.parametrize("factor", [2, 4, 7])
def test_superres_measures_scaled_block_sums(factor: int) -> None:
    """A clean image's measurements, computed directly: each block's pixel sum times 28 / factor."""
    x = images(5)
    m = (28 // factor) ** 2
    a = matrix(spec(superres_factor=factor), Experiment("superres", m))
    side = 28 // factor
    direct = x.reshape(5, side, factor, side, factor).sum(axis=(2, 4)).reshape(5, m) * (28.0 / factor)
    np.testing.assert_allclose(x @ a, direct, rtol=1e-5, atol=1e-5)


def test_superres_constant_image() -> None:
    a = matrix(spec(superres_factor=4), Experiment("superres", 49))
    np.testing.assert_allclose(np.full((1, 784), 0.7, np.float32) @ a, 0.7 * 16 * 7, rtol=1e-5)
    np.testing.assert_allclose(a.sum(axis=1), 7.0)        # every pixel in exactly one block
    assert np.all((a > 0).sum(axis=0) == 16)


@pytest.mark.parametrize("size", [14, 10, 1, 27])
def test_inpaint_measures_unmasked_pixels(size: int) -> None:
    m = 784 - size * size
    a = matrix(spec(inpaint_size=size), Experiment("inpaint", m))
    x = images(3)
    keep = inpaint_mask(size)
    assert keep.sum() == m
    np.testing.assert_allclose(x @ a, 28.0 * x[:, keep], rtol=1e-6)   # direct: the seen pixels times 28
    assert set(np.unique(a)) <= {0.0, 28.0}
    assert np.all((a > 0).sum(axis=0) == 1)                # each measurement is one pixel
    np.testing.assert_array_equal((a > 0).sum(axis=1), keep)   # each seen pixel measured once, hidden never


@pytest.mark.parametrize("size", [14, 10, 2, 1, 27])
def test_inpaint_hides_centred_square(size: int) -> None:
    keep = inpaint_mask(size).reshape(28, 28)
    lo = (28 - size) // 2
    expected = np.ones((28, 28), bool)
    expected[lo:lo + size, lo:lo + size] = False
    np.testing.assert_array_equal(keep, expected)
    assert not keep[13, 13]                 # a centre pixel is always hidden
    assert keep[27, 27]                     # a corner is always seen


def test_inpaint_14_hides_the_middle_square() -> None:
    keep = inpaint_mask(14).reshape(28, 28)
    assert not keep[7:21, 7:21].any()
    assert keep.sum() == 588
    assert not inpaint_mask(14)[14 * 28 + 14]   # the centre pixel, in the flat layout


def test_project_is_scaled_identity() -> None:
    a = matrix(spec(), Experiment("project", 784))
    np.testing.assert_array_equal(a, 28.0 * np.eye(784, dtype=np.float32))
    x = images(2)
    np.testing.assert_allclose(x @ a, 28.0 * x, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# noise and initial latents
# --------------------------------------------------------------------------------------------

EXP = Experiment("gaussian", 100)


@pytest.mark.parametrize("noise_std", [0.1, 1.0, 0.01])
def test_noise_shape_and_std(noise_std: float) -> None:
    n = noise(spec(noise_std=noise_std), EXP, np.arange(200))
    assert n.shape == (200, 100) and n.dtype == np.float32
    assert abs(n.std() / noise_std - 1.0) < 0.02    # 20,000 draws
    assert abs(n.mean()) < 0.02 * noise_std


def test_noise_zero_std() -> None:
    assert not noise(spec(noise_std=0.0), EXP, np.arange(4)).any()


@pytest.mark.parametrize("exp", [EXP, Experiment("superres", 49), Experiment("project", 784)])
def test_noise_shape_per_experiment(exp: Experiment) -> None:
    assert noise(spec(), exp, np.array([0, 7])).shape == (2, exp.m)


def test_initial_latents_shape_and_std() -> None:
    z = initial_latents(spec(restarts=10), EXP, np.arange(100), 20)
    assert z.shape == (10, 100, 20) and z.dtype == np.float32
    assert abs(z.std() - 1.0) < 0.03 and abs(z.mean()) < 0.03


SHARDS = [
    pytest.param([3, 4, 5], list(range(10)), id="inside-0..9"),
    pytest.param([3, 4, 5], [5, 4, 3, 99, 0], id="reordered"),
    pytest.param([7], [7], id="alone"),
    pytest.param([7], [100, 7, 200], id="other-batch"),
]


def _positions(part, whole):
    return [list(whole).index(i) for i in part]


@pytest.mark.parametrize("part, whole", SHARDS)
def test_noise_sharding_invariant(part, whole) -> None:
    s = spec()
    alone = noise(s, EXP, np.array(part))
    inside = noise(s, EXP, np.array(whole))[_positions(part, whole)]
    np.testing.assert_array_equal(alone, inside)


@pytest.mark.parametrize("part, whole", SHARDS)
def test_initial_latents_sharding_invariant(part, whole) -> None:
    s = spec(restarts=4)
    alone = initial_latents(s, EXP, np.array(part), 20)
    inside = initial_latents(s, EXP, np.array(whole), 20)[:, _positions(part, whole)]
    np.testing.assert_array_equal(alone, inside)


def test_rows_differ_between_images() -> None:
    n = noise(spec(), EXP, np.arange(5))
    z = initial_latents(spec(restarts=3), EXP, np.arange(5), 8)
    assert len({r.tobytes() for r in n}) == 5
    assert len({z[r, i].tobytes() for r in range(3) for i in range(5)}) == 15   # restarts differ too


@pytest.mark.parametrize("other", [
    pytest.param(lambda: (spec(seed=1), EXP), id="seed"),
    pytest.param(lambda: (spec(), Experiment("gaussian", 50)), id="m"),
    pytest.param(lambda: (spec(), Experiment("superres", 100)), id="kind"),
])
def test_randomness_differs_across_seed_and_experiment(other) -> None:
    s2, e2 = other()
    idx = np.arange(4)
    assert not np.allclose(noise(spec(), EXP, idx)[:, :49], noise(s2, e2, idx)[:, :49])
    assert not np.allclose(initial_latents(spec(), EXP, idx, 20), initial_latents(s2, e2, idx, 20))


def test_streams_are_separate() -> None:
    """Noise, restarts and the matrix draw from different streams of the same (seed, experiment)."""
    s = spec(noise_std=1.0, restarts=1)
    n = noise(s, EXP, np.array([0]))[0, :20]
    z = initial_latents(s, EXP, np.array([0]), 20)[0, 0]
    a = matrix(s, EXP)[:20, 0]
    assert not np.allclose(n, z) and not np.allclose(n, a) and not np.allclose(z, a)


def test_restart_count_keeps_first_restarts() -> None:
    """More restarts only add draws: restarts are rows of one per-image stream."""
    few = initial_latents(spec(restarts=2), EXP, np.arange(3), 20)
    many = initial_latents(spec(restarts=5), EXP, np.arange(3), 20)
    np.testing.assert_array_equal(many[:2], few)


def test_noise_independent_of_noise_std_shape() -> None:
    """noise_std only scales: the same underlying draw at every noise level."""
    a = noise(spec(noise_std=0.1), EXP, np.arange(3))
    b = noise(spec(noise_std=0.2), EXP, np.arange(3))
    np.testing.assert_allclose(b, 2 * a, rtol=1e-6)

