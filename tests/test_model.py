"""Tests for csgm.model (the VAE), csgm.optim (Adam) and csgm.estimators (CSGM and Lasso).

References are written out in numpy so that the TensorFlow code is checked against the formulas
of the paper's reference code, not against itself.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Tuple

import numpy as np
import pytest
import tensorflow as tf

from csgm.estimators import CsgmSolver, lasso
from csgm.schedule import Schedule
from csgm.measure import Experiment, initial_latents, matrix, noise
from csgm.model import VAE, compute_dtype, vae_loss
from csgm.optim import BETA1, BETA2, EPSILON, Adam, adam_update
from csgm.config import RecoveryConfig

LAYERS = [  # name, fan_in, fan_out for the reference sizes 784-500-500-20
    ("enc1", 784, 500), ("enc2", 500, 500), ("enc_mean", 500, 20), ("enc_log_var", 500, 20),
    ("dec1", 20, 500), ("dec2", 500, 500), ("dec_out", 500, 784),
]


@pytest.fixture(scope="module")
def vae() -> VAE:
    return VAE(latent_dim=20, hidden=500, seed=0)


def pixels(n: int, seed: int = 0) -> np.ndarray:
    """Digit-like images: mostly 0, some strokes near 1, a few grey values."""
    rng = np.random.default_rng(seed)
    x = np.where(rng.random((n, 784)) < 0.2, rng.uniform(0.5, 1.0, (n, 784)), 0.0)
    return x.astype(np.float32)


# --------------------------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 3, 100])
def test_vae_shapes(vae: VAE, batch: int) -> None:
    mean, log_var = vae.encode(tf.constant(pixels(batch)))
    assert mean.shape == (batch, 20) and log_var.shape == (batch, 20)
    x = vae.decode(tf.constant(np.random.default_rng(1).standard_normal((batch, 20)), tf.float32)).numpy()
    assert x.shape == (batch, 784) and x.dtype == np.float32
    assert np.all((x > 0) & (x < 1))


@pytest.mark.parametrize("latent_dim, hidden", [(2, 8), (5, 32)])
def test_vae_custom_sizes(latent_dim: int, hidden: int) -> None:
    model = VAE(latent_dim=latent_dim, hidden=hidden, seed=0)
    mean, _ = model.encode(tf.constant(pixels(2)))
    assert mean.shape == (2, latent_dim)
    assert model.decode(mean).shape == (2, 784)
    assert model.enc1.w.shape == (784, hidden) and model.dec1.w.shape == (latent_dim, hidden)


@pytest.mark.parametrize("name, fan_in, fan_out", LAYERS, ids=[n for n, _, _ in LAYERS])
def test_xavier_uniform_init(vae: VAE, name: str, fan_in: int, fan_out: int) -> None:
    layer = getattr(vae, name)
    w, b = layer.w.numpy(), layer.b.numpy()
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    assert w.shape == (fan_in, fan_out) and w.dtype == np.float32
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.98 * limit                     # fills the range: not a narrower law
    assert abs(w.std() - limit / np.sqrt(3.0)) < 0.05 * limit  # std of U(-l, l) is l / sqrt(3)
    assert abs(w.mean()) < 0.05 * limit
    assert b.shape == (fan_out,) and not b.any()


def test_weights_order_and_count(vae: VAE) -> None:
    assert len(vae.weights) == 14
    shapes = [tuple(v.shape) for v in vae.weights]
    assert shapes[:2] == [(784, 500), (500,)] and shapes[-2:] == [(500, 784), (784,)]


def test_init_deterministic_per_seed() -> None:
    a, b, c = VAE(3, 16, seed=7), VAE(3, 16, seed=7), VAE(3, 16, seed=8)
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    assert not np.allclose(a.enc1.w.numpy(), c.enc1.w.numpy())


def _np_softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _np_vae_loss(model: VAE, x: np.ndarray, eps: np.ndarray) -> float:
    """The reference loss in float64 numpy with the model's own weights."""
    w = {name: (getattr(model, name).w.numpy().astype(np.float64), getattr(model, name).b.numpy().astype(np.float64))
         for name, _, _ in LAYERS}

    def dense(name: str, h: np.ndarray) -> np.ndarray:
        return h @ w[name][0] + w[name][1]

    x = x.astype(np.float64)
    h = _np_softplus(dense("enc2", _np_softplus(dense("enc1", x))))
    mean, log_var = dense("enc_mean", h), dense("enc_log_var", h)
    z = mean + np.exp(0.5 * log_var) * eps
    h = _np_softplus(dense("dec2", _np_softplus(dense("dec1", z))))
    p = 1.0 / (1.0 + np.exp(-dense("dec_out", h)))
    cross_entropy = -np.sum(x * np.log(p) + (1.0 - x) * np.log(1.0 - p), axis=1)
    kl = 0.5 * np.sum(np.exp(log_var) + mean ** 2 - 1.0 - log_var, axis=1)
    return float(np.mean(cross_entropy + kl))


@pytest.mark.parametrize("batch, seed", [(1, 0), (4, 1), (7, 2)])
def test_vae_loss_matches_numpy(batch: int, seed: int) -> None:
    model = VAE(latent_dim=20, hidden=500, seed=seed)
    x = pixels(batch, seed)
    eps = np.random.default_rng(seed + 100).standard_normal((batch, 20))
    got = float(vae_loss(model, tf.constant(x), tf.constant(eps, tf.float32)))
    assert got == pytest.approx(_np_vae_loss(model, x, eps), rel=1e-4)


def test_vae_loss_uses_eps(vae: VAE) -> None:
    x = tf.constant(pixels(3))
    zero = float(vae_loss(vae, x, tf.zeros((3, 20))))
    noisy = float(vae_loss(vae, x, tf.ones((3, 20)) * 3.0))
    assert zero != noisy


def test_vae_loss_is_batch_mean(vae: VAE) -> None:
    x = pixels(4)
    eps = np.random.default_rng(3).standard_normal((4, 20)).astype(np.float32)
    whole = float(vae_loss(vae, tf.constant(x), tf.constant(eps)))
    parts = [float(vae_loss(vae, tf.constant(x[i:i + 1]), tf.constant(eps[i:i + 1]))) for i in range(4)]
    assert whole == pytest.approx(np.mean(parts), rel=1e-5)


def test_mixed_precision_loss_close(vae: VAE) -> None:
    x = tf.constant(pixels(50))
    eps = tf.constant(np.random.default_rng(5).standard_normal((50, 20)), tf.float32)
    fp32 = float(vae_loss(vae, x, eps))
    mixed = vae_loss(vae, x, eps, compute_dtype("mixed"))
    assert mixed.dtype == tf.float32
    assert float(mixed) == pytest.approx(fp32, rel=0.02)
    assert float(mixed) != fp32   # the bfloat16 products are really used


@pytest.mark.parametrize("precision, dtype", [("fp32", tf.float32), ("mixed", tf.bfloat16)])
def test_compute_dtype(precision: str, dtype) -> None:
    assert compute_dtype(precision) == dtype


# --------------------------------------------------------------------------------------------
# Adam
# --------------------------------------------------------------------------------------------

def _np_adam(param: np.ndarray, grads, lr: float) -> np.ndarray:
    m = np.zeros_like(param)
    v = np.zeros_like(param)
    for t, g in enumerate(grads, 1):
        lr_t = lr * np.sqrt(1 - BETA2 ** t) / (1 - BETA1 ** t)
        m = BETA1 * m + (1 - BETA1) * g
        v = BETA2 * v + (1 - BETA2) * g * g
        param = param - lr_t * m / (np.sqrt(v) + EPSILON)
    return param


def _grads(shape: Tuple[int, ...], steps: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) * s for s in (1.0, 0.1, 3.0)[:steps]]


ADAM_CASES = [
    pytest.param((5,), 1e-3, id="vector-lr1e-3"),
    pytest.param((3, 4), 0.01, id="matrix-lr1e-2"),
    pytest.param((2, 2, 3), 0.5, id="rank3-lr0.5"),
]


@pytest.mark.parametrize("shape, lr", ADAM_CASES)
def test_adam_update_matches_numpy(shape, lr: float) -> None:
    start = np.random.default_rng(9).standard_normal(shape)
    grads = _grads(shape)
    param = tf.constant(start, tf.float32)
    m = v = tf.zeros(shape)
    for step, g in enumerate(grads, 1):
        param, m, v = adam_update(param, tf.constant(g, tf.float32), m, v, tf.constant(step), lr)
    # float32 tolerance: 1 - float32(0.999) is 0.00099998713, 1.3e-5 away from 0.001 relatively
    np.testing.assert_allclose(param.numpy(), _np_adam(start, grads, lr), rtol=1e-4, atol=2e-5)


def test_adam_first_step_moves_by_lr() -> None:
    """TF1 Adam's first step is lr * sign(g) (up to eps), whatever the size of g."""
    param, _, _ = adam_update(tf.zeros(3), tf.constant([5.0, -0.01, 100.0]), tf.zeros(3), tf.zeros(3),
                              tf.constant(1), 0.1)
    np.testing.assert_allclose(param.numpy(), [-0.1, 0.1, -0.1], rtol=1e-4)


@pytest.mark.parametrize("shape, lr", ADAM_CASES)
def test_fused_adam_matches_adam_update(shape, lr: float) -> None:
    start = np.random.default_rng(4).standard_normal(shape).astype(np.float32)
    grads = _grads(shape, seed=2)
    var = tf.Variable(start)
    opt = Adam([var], lr)
    param, m, v = tf.constant(start), tf.zeros(shape), tf.zeros(shape)
    for step, g in enumerate(grads, 1):
        g = tf.constant(g, tf.float32)
        opt.apply([g])
        param, m, v = adam_update(param, g, m, v, tf.constant(step), lr)
    assert int(opt.step.numpy()) == 3
    # the fused kernel takes (1 - beta2) in float32, adam_update in float64: 1.3e-5 apart
    np.testing.assert_allclose(var.numpy(), param.numpy(), rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(opt.m[0].numpy(), m.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(opt.v[0].numpy(), v.numpy(), rtol=1e-4, atol=1e-9)


def test_fused_adam_several_variables() -> None:
    a, b = tf.Variable(np.ones(3, np.float32)), tf.Variable(np.zeros((2, 2), np.float32))
    opt = Adam([a, b], 0.01)
    ga, gb = _grads((3,)), _grads((2, 2), seed=1)
    for i in range(3):
        opt.apply([tf.constant(ga[i], tf.float32), tf.constant(gb[i], tf.float32)])
    np.testing.assert_allclose(a.numpy(), _np_adam(np.ones(3), ga, 0.01), rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(b.numpy(), _np_adam(np.zeros((2, 2)), gb, 0.01), rtol=1e-4, atol=2e-6)


# --------------------------------------------------------------------------------------------
# CSGM
# --------------------------------------------------------------------------------------------

K = 4  # a small generator keeps the compiled loop fast


@pytest.fixture(scope="module")
def small_vae() -> VAE:
    return VAE(latent_dim=K, hidden=32, seed=3)


@pytest.fixture(scope="module")
def solver(small_vae: VAE) -> CsgmSolver:
    return CsgmSolver(small_vae)


def _target(model: VAE, n: int, seed: int = 11) -> Tuple[np.ndarray, np.ndarray]:
    z_star = np.random.default_rng(seed).standard_normal((n, K)).astype(np.float32)
    return z_star, model.decode(tf.constant(z_star)).numpy()


def test_project_recovers_generated_image(small_vae: VAE, solver: CsgmSolver) -> None:
    _, x_star = _target(small_vae, 3)
    a = matrix(RecoveryConfig(), Experiment("project", 784))
    z0 = np.random.default_rng(5).standard_normal((2, 3, K)).astype(np.float32)
    x_hat, loss = solver.solve(a, x_star @ a, z0, 0.0, 300, 0.05)
    assert x_hat.shape == (3, 784) and loss.shape == (3,)
    before = np.mean((small_vae.decode(tf.constant(z0[0])).numpy() - x_star) ** 2, axis=1)
    after = np.mean((x_hat - x_star) ** 2, axis=1)
    assert np.all(after < 0.1 * before), (before, after)
    np.testing.assert_allclose(loss, 784 * after, rtol=1e-3, atol=1e-6)   # A = 28 I, no prior: 784 x MSE


def test_gaussian_measurements_recover_generated_image(small_vae: VAE, solver: CsgmSolver) -> None:
    spec = RecoveryConfig(m=(20,), restarts=3)
    exp = Experiment("gaussian", 20)
    _, x_star = _target(small_vae, 2, seed=12)
    a = matrix(spec, exp)
    z0 = initial_latents(spec, exp, np.arange(2), K)
    x_hat, _ = solver.solve(a, x_star @ a, z0, 0.0, 300, 0.05)
    before = np.mean((small_vae.decode(tf.constant(z0[0])).numpy() - x_star) ** 2)
    assert np.mean((x_hat - x_star) ** 2) < 0.1 * before


@pytest.mark.parametrize("weight", [0.0, 0.1])
def test_zero_iterations_loss_formula(small_vae: VAE, solver: CsgmSolver, weight: float) -> None:
    """With no steps the result is the best starting point, and the loss is the reference formula."""
    spec = RecoveryConfig(m=(10,), restarts=3)
    exp = Experiment("gaussian", 10)
    a = matrix(spec, exp)
    y = np.random.default_rng(2).standard_normal((4, 10)).astype(np.float32)
    z0 = initial_latents(spec, exp, np.arange(4), K)
    x_hat, loss = solver.solve(a, y, z0, weight, 0, 0.01)
    g = np.stack([small_vae.decode(tf.constant(z)).numpy() for z in z0]).astype(np.float64)  # [R, B, 784]
    total = np.mean((y[None] - g @ a) ** 2, axis=-1) + weight * np.sum(z0.astype(np.float64) ** 2, axis=-1)
    best = np.argmin(total, axis=0)
    np.testing.assert_allclose(loss, total.min(axis=0), rtol=1e-4)
    np.testing.assert_allclose(x_hat, g[best, np.arange(4)], rtol=1e-5, atol=1e-6)


def _problem(n_images: int, restarts: int = 3):
    spec = RecoveryConfig(m=(25,), restarts=restarts, noise_std=0.1)
    exp = Experiment("gaussian", 25)
    a = matrix(spec, exp)
    x = np.random.default_rng(8).random((n_images, 784)).astype(np.float32)
    return spec, exp, a, x @ a


@pytest.mark.parametrize("part, whole", [
    pytest.param([0], [0, 1], id="a-of-ab"),
    pytest.param([1], [0, 1], id="b-of-ab"),
    pytest.param([2, 4], [0, 1, 2, 3, 4], id="two-of-five"),
    pytest.param([3], [4, 3], id="reordered"),
])
def test_result_independent_of_batch(solver: CsgmSolver, part, whole) -> None:
    spec, exp, a, y = _problem(5)
    part, whole = np.array(part), np.array(whole)

    def run(index):
        z0 = initial_latents(spec, exp, index, K)
        return solver.solve(a, y[index], z0, 0.1, 60, 0.05)

    x_part, loss_part = run(part)
    x_whole, loss_whole = run(whole)
    pos = [list(whole).index(i) for i in part]
    np.testing.assert_allclose(x_part, x_whole[pos], atol=1e-4)
    np.testing.assert_allclose(loss_part, loss_whole[pos], rtol=1e-4, atol=1e-6)


def test_lowest_loss_restart_is_picked(small_vae: VAE, solver: CsgmSolver) -> None:
    spec = RecoveryConfig(m=(25,), restarts=4, noise_std=0.1)
    exp = Experiment("gaussian", 25)
    a = matrix(spec, exp)
    z_star = np.random.default_rng(11).standard_normal((4, K)).astype(np.float32) * 1.5
    y = small_vae.decode(tf.constant(z_star)).numpy() @ a + noise(spec, exp, np.arange(4))
    z0 = initial_latents(spec, exp, np.arange(4), K)
    x_all, loss_all = solver.solve(a, y, z0, 0.1, 10, 0.05)
    singles = [solver.solve(a, y, z0[r:r + 1], 0.1, 10, 0.05) for r in range(4)]
    xs = np.stack([s[0] for s in singles])        # [R, B, 784]
    losses = np.stack([s[1] for s in singles])    # [R, B]
    best = np.argmin(losses, axis=0)
    ordered = np.sort(losses, axis=0)
    assert np.all(ordered[1] - ordered[0] > 1e-2 * ordered[0])   # a clear winner per image
    assert best.any()                                             # not always the first restart
    np.testing.assert_allclose(loss_all, losses.min(axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(x_all, xs[best, np.arange(4)], atol=1e-4)


def test_solver_mixed_precision_runs(small_vae: VAE) -> None:
    _, x_star = _target(small_vae, 2)
    a = matrix(RecoveryConfig(), Experiment("project", 784))
    z0 = np.zeros((1, 2, K), np.float32)
    x_fp32, _ = CsgmSolver(small_vae).solve(a, x_star @ a, z0, 0.0, 20, 0.05)
    x_mixed, loss = CsgmSolver(small_vae, precision="mixed").solve(a, x_star @ a, z0, 0.0, 20, 0.05)
    assert x_mixed.dtype == np.float32 and np.all(np.isfinite(loss))
    assert np.abs(x_mixed - x_fp32).max() < 0.05


# --------------------------------------------------------------------------------------------
# Lasso
# --------------------------------------------------------------------------------------------

def _sparse(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 784), np.float32)
    for row in x:
        row[rng.choice(784, k, replace=False)] = rng.uniform(0.5, 1.0, k)
    return x


def test_lasso_recovers_sparse_nonnegative() -> None:
    a = matrix(RecoveryConfig(m=(200,)), Experiment("gaussian", 200))
    x = _sparse(2, 10, seed=1)
    x_hat = lasso(a, x @ a, 0.1)
    assert x_hat.shape == (2, 784) and x_hat.dtype == np.float32
    assert np.mean((x_hat - x) ** 2) < 0.01 * np.mean(x ** 2) + 1e-4
    for row, row_hat in zip(x, x_hat):
        support = np.nonzero(row)[0]
        assert set(np.argsort(row_hat)[-10:]) == set(support)


def test_lasso_fails_with_too_few_measurements() -> None:
    """The contrast that makes the baseline meaningful: few measurements, poor recovery."""
    a = matrix(RecoveryConfig(m=(10,)), Experiment("gaussian", 10))
    x = _sparse(1, 40, seed=2)
    assert np.mean((lasso(a, x @ a, 0.1) - x) ** 2) > 0.1 * np.mean(x ** 2)


def test_lasso_clips_to_unit_interval() -> None:
    """Coefficients recovered above 1 or below 0 come back clipped to the pixel range."""
    a = matrix(RecoveryConfig(m=(300,)), Experiment("gaussian", 300))
    x = np.zeros((1, 784), np.float32)
    x[0, :4] = [3.0, 2.0, -2.0, -3.0]
    x[0, 4:8] = 0.5
    raw = lasso(a, x @ a, 0.01)
    assert raw.min() >= 0.0 and raw.max() <= 1.0
    np.testing.assert_array_equal(raw[0, :4], [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(raw[0, 4:8], 0.5, atol=0.05)


def test_scheduled_solve_prunes_and_stops_per_image(small_vae: VAE, solver: CsgmSolver) -> None:
    """Pruning and stopping: the same images give the same result alone as in a batch, the winner is
    the best kept restart, and finished images cost fewer steps than the budget."""
    spec, exp, a, y = _problem(5, restarts=4)
    plan = Schedule(120, prune_after=20, prune_keep=1, stop_window=20, stop_tol=1e-2)
    index = np.arange(5)
    z0 = initial_latents(spec, exp, index, K)
    x_all, out = solver.solve_scheduled(a, y, z0, 0.1, 0.05, plan)
    x_two, two = solver.solve_scheduled(a, y[[3, 1]], z0[:, [3, 1]], 0.1, 0.05, plan)
    np.testing.assert_allclose(x_two, x_all[[3, 1]], atol=1e-4)
    np.testing.assert_array_equal(two.steps, out.steps[[3, 1]])
    assert (out.restart_steps < 4 * 120).all() and out.steps.min() < 120
    np.testing.assert_allclose(out.loss, _loss_of(small_vae, a, y, out.state["z"], 0.1), rtol=1e-4)
    np.testing.assert_allclose(x_all, small_vae.decode(tf.constant(out.state["z"])).numpy(), atol=1e-6)


def _loss_of(model: VAE, a: np.ndarray, y: np.ndarray, z: np.ndarray, weight: float) -> np.ndarray:
    x = model.decode(tf.constant(z)).numpy().astype(np.float64)
    return np.mean((y - x @ a) ** 2, axis=-1) + weight * np.sum(z.astype(np.float64) ** 2, axis=-1)


def test_polish_lowers_the_winners_loss_per_image(small_vae: VAE, solver: CsgmSolver) -> None:
    """recovery.polish_steps: the winner of each image runs on at a falling rate after the schedule;
    its loss goes down, the count of steps says so, and an image's result still ignores its batch."""
    spec, exp, a, y = _problem(5, restarts=4)
    plan = Schedule(120, prune_after=20, prune_keep=1, stop_window=20, stop_tol=1e-2)
    polished = replace(plan, polish=40)
    z0 = initial_latents(spec, exp, np.arange(5), K)
    _, out = solver.solve_scheduled(a, y, z0, 0.1, 0.05, plan)
    x_all, pol = solver.solve_scheduled(a, y, z0, 0.1, 0.05, polished)
    assert polished.planned_restart_steps(4) == plan.planned_restart_steps(4) + 40
    np.testing.assert_array_equal(pol.steps, out.steps + 40)
    np.testing.assert_array_equal(pol.restart_steps, out.restart_steps + 40)
    assert (pol.loss <= out.loss * (1 + 1e-6)).all() and pol.loss.mean() < out.loss.mean(), (out.loss, pol.loss)
    np.testing.assert_allclose(pol.loss, _loss_of(small_vae, a, y, pol.state["z"], 0.1), rtol=1e-4)
    x_two, _ = solver.solve_scheduled(a, y[[3, 1]], z0[:, [3, 1]], 0.1, 0.05, polished)
    np.testing.assert_allclose(x_two, x_all[[3, 1]], atol=1e-4)
