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
