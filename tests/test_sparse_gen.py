"""Sparse-Gen (csgm.sparse_gen) and the generator-free baselines (csgm.baselines)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf

from csgm import baselines, sparse_gen
from csgm.config import RecoveryConfig
from csgm.estimators import CsgmSolver, lasso
from csgm.measure import Experiment, matrix
from csgm.model import VAE
from csgm.schedule import Schedule

K = 4


@pytest.fixture(scope="module")
def small_vae() -> VAE:
    return VAE(latent_dim=K, hidden=32, seed=3)


@pytest.fixture(scope="module")
def solver(small_vae: VAE) -> sparse_gen.SparseGenSolver:
    return sparse_gen.SparseGenSolver(small_vae)


def _generated(model: VAE, n: int, seed: int) -> np.ndarray:
    z = np.random.default_rng(seed).standard_normal((n, K)).astype(np.float32)
    return model.decode(tf.constant(z)).numpy()


@pytest.mark.parametrize("m, expected", [
    (10, (0.5, 0.1, 1500)), (100, (0.5, 0.1, 1500)), (200, (0.1, 0.1, 1500)), (400, (0.1, 0.1, 1500)),
    (500, (0.01, 0.0, 3000)), (750, (0.01, 0.0, 3000)),
])
def test_authors_settings_per_m(m: int, expected) -> None:
    s = sparse_gen.settings_for(m)
    assert (s.weight, s.zprior_weight, s.iters) == expected


def test_without_nu_it_is_csgm(small_vae: VAE, solver: sparse_gen.SparseGenSolver) -> None:
    """Weight 0 keeps nu at 0: the same Adam trajectory on z as the CSGM solver."""
    exp = Experiment("gaussian", 30)
    a = matrix(RecoveryConfig(), exp)
    y = _generated(small_vae, 3, seed=1) @ a
    z0 = np.random.default_rng(2).standard_normal((2, 3, K)).astype(np.float32)
    x_csgm, loss_csgm = CsgmSolver(small_vae).solve(a, y, z0, 0.1, 60, 0.05)
    x_sg, loss_sg = solver.solve(a, y, z0, 0.0, 0.1, 60, 0.05)
    np.testing.assert_allclose(x_sg, x_csgm, atol=1e-4)
    np.testing.assert_allclose(loss_sg, loss_csgm, rtol=1e-4)


def test_sparse_deviation_from_the_range_is_recovered(small_vae: VAE, solver: sparse_gen.SparseGenSolver) -> None:
    """A generated image with a few pixels changed: outside the generator's range, so CSGM keeps an
    error that Sparse-Gen's nu removes; the estimate stays in [0, 1]."""
    rng = np.random.default_rng(4)
    x = _generated(small_vae, 2, seed=5)
    for row in x:
        row[rng.choice(784, 20, replace=False)] = 1.0
    a = matrix(RecoveryConfig(), Experiment("project", 784))
    z0 = rng.standard_normal((2, 2, K)).astype(np.float32)
    x_csgm, _ = CsgmSolver(small_vae).solve(a, x @ a, z0, 0.0, 400, 0.05)
    x_sg, _ = solver.solve(a, x @ a, z0, 0.01, 0.0, 1000, 0.05)   # 800 steps z alone, then z and nu
    err_csgm = np.mean((x_csgm - x) ** 2, axis=1)
    err_sg = np.mean((x_sg - x) ** 2, axis=1)
    assert np.all(err_sg < 0.2 * err_csgm), (err_sg, err_csgm)
    assert x_sg.min() >= 0.0 and x_sg.max() <= 1.0


def test_scheduled_sparse_gen_prunes_in_the_z_phase_and_stops_only_after_nu_moves(
        small_vae: VAE, solver: sparse_gen.SparseGenSolver) -> None:
    """The spec's schedule over the authors' budget: restarts are pruned while z moves alone, no
    image is retired before nu has started (step 800), and the result stays in [0, 1]."""
    exp = Experiment("gaussian", 50)
    a = matrix(RecoveryConfig(), exp)
    y = _generated(small_vae, 3, seed=6) @ a
    z0 = np.random.default_rng(7).standard_normal((4, 3, K)).astype(np.float32)
    plan = RecoveryConfig(prune_after=50, prune_keep=2, stop_window=50, stop_tol=0.5).schedule(1000)
    x, outcome = solver.solve_scheduled(a, y, z0, 0.5, 0.1, 0.05, plan)
    assert (outcome.steps >= 850).all()            # tolerance 0.5 would stop everything at step 100
    assert (outcome.restart_steps < 4 * 1000).all()  # 4 -> 2 restarts from step 50
    assert x.shape == (3, 784) and x.min() >= 0.0 and x.max() <= 1.0
    full_x, full_loss = solver.solve(a, y, z0, 0.5, 0.1, 1000, 0.05)
    assert np.isfinite(full_loss).all() and full_x.shape == x.shape


def test_polish_runs_the_sparse_gen_winner_on_in_the_nu_phase(small_vae: VAE,
                                                               solver: sparse_gen.SparseGenSolver) -> None:
    """Schedule.polish for Sparse-Gen: after the schedule each image's winner (z and nu) runs on at a
    falling rate; its total loss goes down, the step counts say so, x stays in [0, 1], and an image's
    result still ignores its batch."""
    exp = Experiment("gaussian", 50)
    a = matrix(RecoveryConfig(), exp)
    y = _generated(small_vae, 3, seed=8) @ a
    z0 = np.random.default_rng(9).standard_normal((4, 3, K)).astype(np.float32)
    plan = Schedule(900, prune_after=50, prune_keep=2)       # 800 steps z alone, then z and nu
    polished = replace(plan, polish=60)
    _, out = solver.solve_scheduled(a, y, z0, 0.5, 0.1, 0.05, plan)
    x, pol = solver.solve_scheduled(a, y, z0, 0.5, 0.1, 0.05, polished)
    np.testing.assert_array_equal(pol.steps, out.steps + 60)
    np.testing.assert_array_equal(pol.restart_steps, out.restart_steps + 60)
    assert (pol.loss <= out.loss * (1 + 1e-6)).all() and pol.loss.mean() < out.loss.mean(), (out.loss, pol.loss)
    assert np.abs(pol.state["nu"]).sum() > 0 and x.min() >= 0.0 and x.max() <= 1.0
    x_one, _ = solver.solve_scheduled(a, y[[2]], z0[:, [2]], 0.5, 0.1, 0.05, polished)
    np.testing.assert_allclose(x_one, x[[2]], atol=1e-4)


def test_dct_basis_is_orthonormal() -> None:
    psi = baselines.dct_basis()
    np.testing.assert_allclose(psi @ psi.T, np.eye(784), atol=1e-10)
    np.testing.assert_allclose(psi[0], 1.0 / 28)   # the constant image comes first


def test_lasso_dct_beats_pixel_lasso_on_a_smooth_image() -> None:
    """An image with 10 DCT coefficients is dense in pixels: the DCT basis recovers it far better."""
    rng = np.random.default_rng(6)
    coefs = np.zeros((2, 784))
    for row in coefs:
        row[rng.choice(40, 10, replace=False)] = rng.uniform(1.0, 3.0, 10)
    x = np.clip(coefs @ baselines.dct_basis() + 0.3, 0, 1).astype(np.float32)
    a = matrix(RecoveryConfig(), Experiment("gaussian", 150))
    y = x @ a
    err_dct = np.mean((baselines.lasso_dct(a, y, 0.1) - x) ** 2)
    err_pixel = np.mean((lasso(a, y, 0.1) - x) ** 2)
    assert err_dct < 0.2 * err_pixel, (err_dct, err_pixel)


def test_omp_recovers_a_sparse_image_exactly() -> None:
    rng = np.random.default_rng(7)
    x = np.zeros((2, 784), np.float32)
    for row in x:
        row[rng.choice(784, 8, replace=False)] = rng.uniform(0.3, 1.0, 8)
    a = matrix(RecoveryConfig(), Experiment("gaussian", 60))
    x_hat = baselines.omp(a, x @ a, k=8)
    np.testing.assert_allclose(x_hat, x, atol=1e-4)
    assert baselines.omp(a, x @ a, k=80).shape == (2, 784)   # k above m: at most m non-zeros


def test_generator_input_images_are_seeded_per_image(small_vae: VAE) -> None:
    """input 'generator': image i is G(z_i) with z_i a pure function of (seed, i), for every m."""
    from csgm.measure import input_latents
    from csgm.recovery import RecoveryRunner

    spec = RecoveryConfig(input="generator", seed=4)
    runner = RecoveryRunner(spec, data=None, solver=CsgmSolver(small_vae), store=None)
    first, again = runner.originals(np.arange(5)), runner.originals(np.arange(3, 5))
    np.testing.assert_allclose(again, first[3:], atol=1e-6)
    z = input_latents(spec, np.arange(5), K)
    np.testing.assert_allclose(first, small_vae.decode(tf.constant(z)).numpy(), atol=1e-6)
    assert not np.allclose(input_latents(RecoveryConfig(input="generator", seed=5), np.arange(5), K), z)


STOPPING = dict(stop_tol=3e-4, prune_keep_small_m=3)  # a spec that stops early and prunes below small_m


LATE = dict(prune_after_large_m=200)  # from m = large_m (150) on, vae and vae_reg prune from step 200


@pytest.mark.parametrize("overrides, method, m, expected", [
    # (iters, restarts kept, stop_tol, polish steps, prune_after)
    ({}, "vae", 100, (1000, 2, 0.0, 400, 50)),
    ({}, "vae", 74, (1000, 10, 0.0, 0, 50)),        # few measurements: no pruning, no polish (recovery.small_m)
    ({}, "vae_reg_l1", 10, (1000, 10, 0.0, 0, 50)),
    ({}, "vae_reg", 75, (1000, 2, 0.0, 400, 50)),
    ({}, "sparse_gen", 25, (1500, 10, 0.0, 0, 50)),
    ({}, "sparse_gen", 100, (1500, 3, 0.0, 0, 50)),   # the authors' budget, 3 restarts into the nu phase
    ({}, "sparse_gen", 200, (1500, 3, 0.0, 0, 50)),   # Sparse-Gen polishes from m = 500 on only
    ({}, "sparse_gen", 500, (3000, 3, 0.0, 400, 50)),
    (dict(sparse_gen_polish_m=100, polish_steps=50), "sparse_gen", 100, (1500, 3, 0.0, 50, 50)),
    (STOPPING, "vae", 100, (1000, 2, 3e-4, 400, 50)),
    (STOPPING, "vae", 74, (1000, 3, 3e-4, 0, 50)),
    (STOPPING, "sparse_gen", 100, (1500, 3, 0.0, 0, 50)),  # Sparse-Gen never stops early
    (STOPPING, "sparse_gen", 25, (1500, 3, 0.0, 0, 50)),
    (LATE, "vae", 149, (1000, 2, 0.0, 400, 50)),
    (LATE, "vae", 150, (1000, 2, 0.0, 400, 200)),     # recovery.large_m: later pruning, where speed does not bind
    (LATE, "vae_reg", 500, (1000, 2, 0.0, 400, 200)),
    (LATE, "sparse_gen", 500, (3000, 3, 0.0, 400, 50)),  # Sparse-Gen keeps its own schedule
    (dict(LATE, large_m=50), "vae", 60, (1000, 10, 0.0, 0, 200)),  # below small_m still no pruning
    (dict(LATE, prune_after=0), "vae_reg", 500, (1000, 2, 0.0, 400, 0)),  # prune_after 0: no pruning at any m
])
def test_each_method_follows_its_schedule(overrides, method: str, m: int, expected) -> None:
    from csgm.recovery import method_schedule

    plan = method_schedule(RecoveryConfig(**overrides), method, m)
    assert (plan.iters, plan.prune_keep, plan.stop_tol, plan.polish, plan.prune_after) == expected


def test_sparse_gen_runs_in_the_csgm_solvers_graph_precision(small_vae: VAE) -> None:
    """On an NPU csgm's own graph is fp32 whatever recovery.precision says (csgm.ascend.graph_precision:
    Ascend 910 has no bfloat16); Sparse-Gen must follow the CSGM solver, not the spec."""
    from csgm.ascend import graph_precision
    from csgm.recovery import RecoveryRunner, Unit

    spec = RecoveryConfig(precision="mixed", restarts=2, prune_after=0, stop_tol=0.0)
    runner = RecoveryRunner(spec, data=None, solver=CsgmSolver(small_vae, graph_precision("mixed", "npu")),
                            store=None)
    a = matrix(spec, Experiment("gaussian", 10))
    z0 = np.random.default_rng(8).standard_normal((2, 1, K)).astype(np.float32)
    x_hat, _, _ = runner._generative(Unit("gaussian", 10, "sparse_gen", 0, 1), a, _generated(small_vae, 1, 9) @ a, z0)
    assert runner._sparse is not None and runner._sparse.dtype == tf.float32
    assert x_hat.shape == (1, 784)


@pytest.mark.parametrize("method, m", [("vae_reg", 100), ("vae", 10), ("sparse_gen", 100)])
def test_streams_recover_what_one_call_recovers(small_vae: VAE, method: str, m: int) -> None:
    """recovery.streams splits a unit's images into parts solved at once in threads and joins them in
    image order: each part's results are exactly its own one-call solve, and, every decision being per
    image, close to those of one call over all images (the CSGM losses are smooth; Sparse-Gen's L1
    terms let the rounding of differently shaped products grow over its 1,500 steps, as between ranks).
    The schedule prunes, stops (vae_reg) and polishes here."""
    from csgm.recovery import RecoveryRunner, Unit

    spec = RecoveryConfig(restarts=4, iters=120, prune_after=20, stop_tol=0.05, stop_window=20, polish_steps=30,
                          small_m=50)
    a = matrix(spec, Experiment("gaussian", m))
    n = 7  # parts of 3, 2 and 2 images
    y = _generated(small_vae, n, 11) @ a
    z0 = np.random.default_rng(12).standard_normal((4, n, K)).astype(np.float32)
    one = RecoveryRunner(spec, None, CsgmSolver(small_vae), None)
    three = RecoveryRunner(spec, None, CsgmSolver(small_vae), None, streams=3)._generative(
        Unit("gaussian", m, method, 0, n), a, y, z0)
    parts = [one._generative(Unit("gaussian", m, method, lo, hi), a, y[lo:hi], z0[:, lo:hi])
             for lo, hi in ((0, 3), (3, 5), (5, 7))]
    np.testing.assert_allclose(three[0], np.concatenate([p[0] for p in parts]), atol=1e-6)
    np.testing.assert_allclose(three[1], np.concatenate([p[1] for p in parts]), rtol=1e-6)
    assert three[2] == [w for p in parts for w in p[2]]
    if method != "sparse_gen":
        whole = one._generative(Unit("gaussian", m, method, 0, n), a, y, z0)
        np.testing.assert_allclose(three[0], whole[0], atol=2e-4)
        np.testing.assert_allclose(three[1], whole[1], rtol=1e-3, atol=1e-6)
        assert three[2] == whole[2]
    assert method != "vae_reg" or len({w["steps"] for w in three[2]}) > 1  # some images stopped earlier


@pytest.mark.parametrize("setting, device, threads, cores, expected", [
    (0, "cpu", 0, 2, 2),      # one stream per core of the machine
    (0, "cpu", 1, 2, 1),      # a rank given one thread: one stream
    (0, "cpu", 4, 2, 4),
    (3, "cpu", 1, 2, 3),      # set explicitly
    (0, "npu", 0, 2, 1),      # accelerators run one call at a time
    (4, "gpu", 0, 2, 1),
])
def test_stream_count(monkeypatch: pytest.MonkeyPatch, setting: int, device: str, threads: int, cores: int,
                      expected: int) -> None:
    from csgm import recovery

    monkeypatch.setattr(recovery.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert recovery.stream_count(setting, device, threads) == expected
