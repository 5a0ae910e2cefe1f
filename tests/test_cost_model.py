"""bench.cost_model: the ring all-reduce formula and the gradient size it is fed."""

from __future__ import annotations

import pytest

from bench import cost_model
from csgm.model import VAE


def test_gradient_size_is_the_vaes() -> None:
    weights = VAE().weights
    assert cost_model.WEIGHTS == sum(int(w.shape.num_elements()) for w in weights)
    assert cost_model.TENSORS == len(weights)


def test_ring_formula() -> None:
    # 2 ranks: each sends and receives half the buffer twice (reduce-scatter, all-gather): S bytes.
    assert cost_model.ring_seconds(2, 1e9, 1e9, 0.0, 1) == pytest.approx(1.0)
    assert cost_model.ring_seconds(8, 8e9, 1e9, 0.0, 1) == pytest.approx(14.0)
    assert cost_model.ring_seconds(4, 0.0, 1e9, 1e-5, 14) == pytest.approx(14 * 6 * 1e-5)
    assert cost_model.ring_seconds(1, 1e9, 1e9, 1.0, 1) == 0.0
    # Across servers the slowest hop is RoCE, within one HCCS.
    assert cost_model.allreduce_seconds(16, 1e9, 0.0, 1) > cost_model.allreduce_seconds(8, 1e9, 0.0, 1)


def _points() -> tuple:
    sizes = [4.0 * (f // t) * t for f, t in cost_model.CHECK_POINTS]
    return sizes, [t for _, t in cost_model.CHECK_POINTS]


def test_fit_recovers_a_linear_form() -> None:
    # Synthetic times from known constants: 0.5 ms per call, 80 us per collective, 2 GB/s.
    sizes, collectives = _points()
    seconds = [5e-4 + 8e-5 * c + s / 2e9 for s, c in zip(sizes, collectives)]
    fit = cost_model.fit_form(sizes, collectives, seconds)
    assert fit["fixed_s"] == pytest.approx(5e-4, rel=1e-6)
    assert fit["per_collective_s"] == pytest.approx(8e-5, rel=1e-6)
    assert fit["bandwidth"] == pytest.approx(2e9, rel=1e-6)
    assert max(abs(r) for r in fit["residuals"]) < 1e-9
    assert fit["holds"]
    assert cost_model.predict_seconds(fit, 1e6, 3) == pytest.approx(5e-4 + 3 * 8e-5 + 5e-4)


def test_fit_rejects_a_quadratic_in_size() -> None:
    # Time growing with the square of the bytes: no line through these points is within tolerance.
    sizes, collectives = _points()
    seconds = [1e-3 + 1e-4 * c + 1e-4 * (s / 1e6) ** 2 for s, c in zip(sizes, collectives)]
    fit = cost_model.fit_form(sizes, collectives, seconds)
    assert not fit["holds"]
    assert max(abs(r) for r in fit["residuals"]) > cost_model.TOLERANCE


def test_fit_tolerates_noise_within_tolerance() -> None:
    # +-5% noise (a shared machine's) on a linear form still passes.
    sizes, collectives = _points()
    noise = [1.05, 0.95, 1.0, 1.03, 0.97, 1.05, 0.96]
    seconds = [(5e-4 + 8e-5 * c + s / 2e9) * k for s, c, k in zip(sizes, collectives, noise)]
    assert cost_model.fit_form(sizes, collectives, seconds)["holds"]


def test_fit_without_varied_collectives() -> None:
    # The tf backend concatenates a call's tensors: one collective everywhere, no c1 to fit.
    sizes = [4.0 * f for f, _ in cost_model.CHECK_POINTS]
    fit = cost_model.fit_form(sizes, [1] * len(sizes), [1e-3 + s / 1e9 for s in sizes])
    assert not fit["per_collective_fitted"]
    assert fit["bandwidth"] == pytest.approx(1e9, rel=1e-6)
    assert fit["holds"]
