"""The estimators: CSGM (optimise the generator's latent code) and the Lasso baseline.

CSGM runs all restarts of all images of a batch as one tensor inside one compiled loop: per
(restart, image) the loss is mean_j (y_j - (G(z) A)_j)^2 + w ||z||^2 and the optimiser sees the
sum of those, so every restart follows exactly its own Adam trajectory whatever else is in the
batch. Per image the restart with the lowest final total loss wins, as in the reference code.
"""

from __future__ import annotations

import warnings
from typing import Tuple

import numpy as np
import tensorflow as tf

from csgm.model import VAE, compute_dtype
from csgm.optim import adam_update


class CsgmSolver:
    def __init__(self, model: VAE, precision: str = "fp32", xla: bool = False):
        self.model = model
        self.dtype = compute_dtype(precision)
        k = model.latent_dim
        self._solve = tf.function(self._solve_graph, jit_compile=xla, input_signature=[
            tf.TensorSpec([784, None], tf.float32),     # A
            tf.TensorSpec([None, None], tf.float32),    # y [B, m]
            tf.TensorSpec([None, None, k], tf.float32),  # z0 [R, B, k]
            tf.TensorSpec([], tf.float32),              # zprior weight
            tf.TensorSpec([], tf.int32),                # iterations
            tf.TensorSpec([], tf.float32),              # learning rate
            tf.TensorSpec([], tf.float32),              # early-stop tolerance, 0: off
        ])

    def _losses(self, a: tf.Tensor, y: tf.Tensor, z: tf.Tensor, weight: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        """Per (restart, image) total loss [R, B] and the generated images [R, B, 784]."""
        r, b, k = tf.shape(z)[0], tf.shape(z)[1], tf.shape(z)[2]
        x = self.model.decode(tf.reshape(z, [r * b, k]), self.dtype)
        y_hat = tf.reshape(tf.matmul(x, a), [r, b, -1])
        m_loss = tf.reduce_mean(tf.square(y[None] - y_hat), axis=-1)
        return m_loss + weight * tf.reduce_sum(tf.square(z), axis=-1), tf.reshape(x, [r, b, 784])

    def _solve_graph(self, a, y, z0, weight, iters, lr, tol):
        def step(i, z, m, v, previous, _change):
            with tf.GradientTape() as tape:
                tape.watch(z)
                losses = self._losses(a, y, z, weight)[0]
                total = tf.reduce_sum(losses)
            grad = tape.gradient(total, z)
            z, m, v = adam_update(z, grad, m, v, i + 1, lr)
            # The largest relative change of any restart's loss: the early stop's criterion.
            change = tf.reduce_max(tf.abs(losses - previous) / (tf.abs(previous) + 1e-12))
            return i + 1, z, m, v, losses, change

        def going(i, *state):
            return tf.logical_and(i < iters, tf.logical_or(tol <= 0.0, state[-1] >= tol))

        zeros = tf.zeros_like(z0)
        start = (tf.constant(0), z0, zeros, zeros, tf.fill(tf.shape(z0)[:2], np.float32(1e30)),  # finite: no inf/inf
                 tf.constant(np.inf, tf.float32))
        _, z, _, _, _, _ = tf.while_loop(going, step, start)
        losses, x = self._losses(a, y, z, weight)
        best = tf.argmin(losses, axis=0, output_type=tf.int32)           # [B]
        pick = tf.stack([best, tf.range(tf.shape(best)[0])], axis=1)
        return tf.gather_nd(x, pick), tf.gather_nd(losses, pick)

    def solve(self, a: np.ndarray, y: np.ndarray, z0: np.ndarray, zprior_weight: float, iters: int,
              learning_rate: float, early_stop_tol: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
        """x_hat [B, 784] and its total loss [B] for measurements y [B, m] = x A + noise.

        With ``early_stop_tol`` > 0 the loop ends before ``iters`` once no restart's loss changed
        by more than that fraction in one step. It stops the whole batch together, so results
        then depend on which images share a batch: off by default."""
        x, loss = self._solve(tf.constant(a), tf.constant(y), tf.constant(z0),
                              tf.constant(zprior_weight, tf.float32), tf.constant(iters, tf.int32),
                              tf.constant(learning_rate, tf.float32), tf.constant(early_stop_tol, tf.float32))
        return x.numpy(), loss.numpy()


def lasso(a: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """The reference baseline: scikit-learn Lasso in the pixel basis per image, clipped to [0, 1]."""
    return np.clip(lasso_coefficients(a, y, alpha), 0.0, 1.0).astype(np.float32)


def lasso_coefficients(a: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Per image c minimising ||y - c A||^2 / (2 m) + alpha ||c||_1 (scikit-learn's Lasso), unclipped."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    out = np.zeros((len(y), a.shape[0]))
    for i, y_i in enumerate(y):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # as the reference: take what it has
            out[i] = Lasso(alpha=alpha).fit(a.T.astype(np.float64), y_i.astype(np.float64)).coef_
    return out
