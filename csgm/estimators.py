"""The estimators: CSGM (optimise the generator's latent code) and the Lasso baseline.

CSGM runs all restarts of all images of a batch as one tensor inside one compiled loop: per
(restart, image) the loss is mean_j (y_j - (G(z) A)_j)^2 + w ||z||^2 and the optimiser sees the
sum of those, so every restart follows exactly its own Adam trajectory whatever else is in the
batch. Per image the restart with the lowest final total loss wins, as in the reference code.
The loop runs in chunks between which ``csgm.schedule`` prunes restarts and retires converged
images (per image, from its own losses); the full budget is the schedule that does neither. With
``Schedule.polish`` each image's winner then runs that many more steps at a falling rate.
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional, Tuple

import numpy as np
import tensorflow as tf

from csgm import schedule
from csgm.model import VAE, compute_dtype
from csgm.optim import adam_update, annealed_rate
from csgm.runner import Runner


def decoder(runner: Runner, model: VAE, dtype: tf.DType = tf.float32) -> Callable[[np.ndarray], np.ndarray]:
    """G on the host: latent codes [N, k] to images [N, 784], products in ``dtype``."""
    return runner.function(lambda z: model.decode(z, dtype), [tf.TensorSpec([None, model.latent_dim], tf.float32)])


class CsgmSolver:
    def __init__(self, model: VAE, precision: str = "fp32", xla: bool = False, runner: Optional[Runner] = None):
        self.model = model
        self.precision = precision  # the graph's precision (on NPUs fp32: csgm.ascend.graph_precision)
        self.dtype = compute_dtype(precision)
        self.runner = runner or Runner()
        k = model.latent_dim
        self.decode = decoder(self.runner, model, self.dtype)
        # One trace for every shape; with XLA one compilation per (restarts, images, m) met,
        # which the schedule keeps to a few sizes.
        self._advance = self.runner.function(self._advance_graph, jit_compile=xla, signature=[
            tf.TensorSpec([784, None], tf.float32),     # A
            tf.TensorSpec([None, None], tf.float32),    # y [B, m]
            tf.TensorSpec([None, None, k], tf.float32),  # z [R, B, k]
            tf.TensorSpec([None, None, k], tf.float32),  # Adam's m
            tf.TensorSpec([None, None, k], tf.float32),  # Adam's v
            tf.TensorSpec([], tf.float32),              # zprior weight
            tf.TensorSpec([None], tf.int32),            # steps each image has taken [B]
            tf.TensorSpec([], tf.int32),                # steps to take
            tf.TensorSpec([], tf.float32),              # learning rate
            tf.TensorSpec([], tf.float32),              # anneal: 0 constant rate, 1 falling to lr / steps
        ])

    def _losses(self, a: tf.Tensor, y: tf.Tensor, z: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
        """Per (restart, image) total loss [R, B]."""
        r, b, k = tf.shape(z)[0], tf.shape(z)[1], tf.shape(z)[2]
        x = self.model.decode(tf.reshape(z, [r * b, k]), self.dtype)
        y_hat = tf.reshape(tf.matmul(x, a), [r, b, -1])
        m_loss = tf.reduce_mean(tf.square(y[None] - y_hat), axis=-1)
        return m_loss + weight * tf.reduce_sum(tf.square(z), axis=-1)

    def _advance_graph(self, a, y, z, m, v, weight, first, steps, lr, anneal):
        def step(i, z, m, v):
            with tf.GradientTape() as tape:
                tape.watch(z)
                total = tf.reduce_sum(self._losses(a, y, z, weight))
            grad = tape.gradient(total, z)
            z, m, v = adam_update(z, grad, m, v, (first + i + 1)[None, :, None], annealed_rate(lr, anneal, i, steps))
            return i + 1, z, m, v

        _, z, m, v = tf.while_loop(lambda i, *_: i < steps, step, (tf.constant(0), z, m, v))
        return z, m, v, self._losses(a, y, z, weight)

    def polish(self, a: np.ndarray, y: np.ndarray, state: schedule.State, done: np.ndarray, zprior_weight: float,
               learning_rate: float, steps: int) -> Tuple[schedule.State, np.ndarray]:
        """Each image's winner (``state`` [B, k] arrays z, m, v after ``done`` [B] steps) run
        ``steps`` more steps with the rate falling linearly to ``learning_rate / steps``: a
        constant-rate Adam ends wherever its last steps left it around the minimum. Returns the new
        state and total loss [B]."""
        out = self._advance(np.asarray(a, np.float32), np.asarray(y, np.float32),
                            *(np.asarray(state[k], np.float32)[None] for k in ("z", "m", "v")),
                            np.float32(zprior_weight), np.asarray(done, np.int32), np.int32(steps),
                            np.float32(learning_rate), np.float32(1.0))
        return {k: np.asarray(t)[0] for k, t in zip(("z", "m", "v"), out)}, np.asarray(out[3])[0]

    def solve_scheduled(self, a: np.ndarray, y: np.ndarray, z0: np.ndarray, zprior_weight: float,
                        learning_rate: float, plan: schedule.Schedule,
                        observe: Optional[schedule.Observe] = None) -> Tuple[np.ndarray, schedule.Outcome]:
        """x_hat [B, 784] of measurements y [B, m] = x A + noise from restarts z0 [R, B, k], and
        the schedule's outcome (winning loss, steps per image, work done); ``observe``: see
        ``schedule.run``."""
        a = np.asarray(a, np.float32)
        weight, rate = np.float32(zprior_weight), np.float32(learning_rate)

        def advance(state, per_image, first, steps):
            z, m, v, losses = self._advance(a, per_image["y"], state["z"], state["m"], state["v"], weight,
                                            np.full(len(per_image["y"]), first, np.int32), np.int32(steps), rate,
                                            np.float32(0.0))
            return {"z": z, "m": m, "v": v}, losses

        zeros = np.zeros_like(z0, np.float32)
        outcome = schedule.run(plan, {"z": np.asarray(z0, np.float32), "m": zeros, "v": zeros},
                               {"y": np.asarray(y, np.float32)}, advance, observe)
        if plan.polish > 0:
            outcome = outcome.polished(*self.polish(a, y, outcome.state, outcome.steps, zprior_weight,
                                                    learning_rate, plan.polish), plan.polish)
        return self.decode(outcome.state["z"]), outcome

    def solve(self, a: np.ndarray, y: np.ndarray, z0: np.ndarray, zprior_weight: float, iters: int,
              learning_rate: float) -> Tuple[np.ndarray, np.ndarray]:
        """The full budget, as the reference: every restart runs ``iters`` steps and per image the
        lowest final total loss wins. Returns x_hat [B, 784] and its total loss [B]."""
        x, outcome = self.solve_scheduled(a, y, z0, zprior_weight, learning_rate, schedule.Schedule(iters))
        return x, outcome.loss


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
