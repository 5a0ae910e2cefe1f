"""Sparse-Gen (Dhar, Grover, Ermon, ICML 2018): x = G(z) + nu with an L1 penalty on nu.

The deviation nu lets the estimate leave the generator's range where the measurements say so, so
the error keeps falling with m after CSGM's range error has stopped it. Followed from the authors'
code (ermongroup/sparse_gen ``src/mnistomni_estimators.py`` ``vae_l1_estimator``):

- per (restart, image) loss: mloss1 mean_j |y_j - ((G(z) + nu) A)_j| + mloss2 mean_j (...)^2
  + zprior ||z||^2 + weight ||nu||_1; nu starts at 0;
- when there are more than 800 iterations, the first 800 move z alone, the rest move z and nu
  jointly with the same Adam state for z (TF1 keeps one slot per variable);
- after every joint step nu is clipped to [-G(z), 1 - G(z)] so that x stays in [0, 1];
- per image the restart with the lowest total loss wins.

The authors' MNIST settings per m (``quant_scripts/mnist_reconstruction.sh``) are ``SETTINGS``;
their script has no m below 50, where the m = 50 setting is used. With ``weight`` 0 and no joint
phase this is plain CSGM with the reference's L1/L2 measurement-loss weights (``mloss1_weight``
of AshishBora/csgm), which is how the L1 measurement-loss method runs.

All restarts of all images run as one tensor in one compiled loop, as in CsgmSolver, in chunks
between which ``csgm.schedule`` prunes restarts and retires converged images; with ``Schedule.polish``
each image's winner (z and nu) then runs on at a falling rate (``recovery.sparse_gen_polish_m``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from csgm import schedule
from csgm.model import VAE, compute_dtype
from csgm.estimators import decoder
from csgm.optim import adam_update, annealed_rate
from csgm.runner import Runner

Z_ONLY_STEPS = 800  # the authors' warm start: z alone first when there are more iterations
STATE = ("z", "mz", "vz", "nu", "mn", "vn")  # z, its Adam moments; nu, its Adam moments


@dataclass(frozen=True)
class Settings:
    weight: float        # lambda on ||nu||_1 (the authors' sparse_gen_weight)
    zprior_weight: float
    iters: int


def settings_for(m: int) -> Settings:
    """The authors' MNIST settings for m Gaussian measurements."""
    if m >= 500:
        return Settings(weight=0.01, zprior_weight=0.0, iters=3000)
    if m >= 200:
        return Settings(weight=0.1, zprior_weight=0.1, iters=1500)
    return Settings(weight=0.5, zprior_weight=0.1, iters=1500)


class SparseGenSolver:
    def __init__(self, model: VAE, precision: str = "fp32", xla: bool = False, runner: Optional[Runner] = None):
        self.model = model
        self.dtype = compute_dtype(precision)
        self.runner = runner or Runner()
        k = model.latent_dim
        self.decode = decoder(self.runner, model, self.dtype)
        state = [tf.TensorSpec([None, None, k], tf.float32)] * 3 + [tf.TensorSpec([None, None, 784], tf.float32)] * 3
        self._advance = self.runner.function(self._advance_graph, jit_compile=xla, signature=[
            tf.TensorSpec([784, None], tf.float32),      # A
            tf.TensorSpec([None, None], tf.float32),     # y [B, m]
            *state,                                      # z, Adam's m and v for z [R, B, k]; nu, its m, v
            tf.TensorSpec([4], tf.float32),              # mloss1, mloss2, zprior, nu weights
            tf.TensorSpec([], tf.int32),                 # z-only steps
            tf.TensorSpec([], tf.int32),                 # steps already taken
            tf.TensorSpec([], tf.int32),                 # steps to take
            tf.TensorSpec([], tf.float32),               # learning rate
            tf.TensorSpec([], tf.float32),               # anneal: 0 constant rate, 1 falling to lr / steps
        ])

    def _generate(self, z: tf.Tensor) -> tf.Tensor:
        r, b, k = tf.shape(z)[0], tf.shape(z)[1], tf.shape(z)[2]
        x = self.model.decode(tf.reshape(z, [r * b, k]), self.dtype)
        return tf.cast(tf.reshape(x, [r, b, 784]), tf.float32)

    @staticmethod
    def _losses(a, y, g, z, nu, w) -> tf.Tensor:
        """Per (restart, image) total loss [R, B] of the estimate g + nu."""
        residual = y[None] - tf.einsum("rbp,pm->rbm", g + nu, a)
        return (w[0] * tf.reduce_mean(tf.abs(residual), axis=-1)
                + w[1] * tf.reduce_mean(tf.square(residual), axis=-1)
                + w[2] * tf.reduce_sum(tf.square(z), axis=-1)
                + w[3] * tf.reduce_sum(tf.abs(nu), axis=-1))

    def _advance_graph(self, a, y, z, mz, vz, nu, mn, vn, w, z_only, first, steps, lr, anneal):
        def step(i, z, mz, vz, nu, mn, vn):
            t = first + i  # the global step: Adam's bias correction and the phase follow it
            rate = annealed_rate(lr, anneal, i, steps)
            with tf.GradientTape() as tape:
                tape.watch([z, nu])
                total = tf.reduce_sum(self._losses(a, y, self._generate(z), z, nu, w))
            gz, gn = tape.gradient(total, [z, nu])
            z, mz, vz = adam_update(z, gz, mz, vz, t + 1, rate)

            def move_nu():
                # One Adam step count for all variables, as TF1's AdamOptimizer shares its beta
                # powers; then x = G(z) + nu is kept in [0, 1] against the generator's new output.
                nu_new, mn_new, vn_new = adam_update(nu, gn, mn, vn, t + 1, rate)
                g = self._generate(z)
                return tf.clip_by_value(nu_new, -g, 1.0 - g), mn_new, vn_new

            nu, mn, vn = tf.cond(t >= z_only, move_nu, lambda: (nu, mn, vn))
            return i + 1, z, mz, vz, nu, mn, vn

        _, *state = tf.while_loop(lambda i, *_: i < steps, step, (tf.constant(0), z, mz, vz, nu, mn, vn))
        z, nu = state[0], state[3]
        return (*state, self._losses(a, y, self._generate(z), z, nu, w))

    def solve_scheduled(self, a: np.ndarray, y: np.ndarray, z0: np.ndarray, weight: float, zprior_weight: float,
                        learning_rate: float, plan: schedule.Schedule, mloss1_weight: float = 0.0,
                        mloss2_weight: float = 1.0, observe: Optional[schedule.Observe] = None
                        ) -> Tuple[np.ndarray, schedule.Outcome]:
        """x_hat [B, 784] in [0, 1] and the schedule's outcome over ``plan.iters`` steps; ``weight`` 0
        keeps nu at 0 (z alone). Convergence checks wait for nu to start moving (``z_only_steps``);
        ``observe``: see ``schedule.run``."""
        z_only = z_only_steps(weight, plan.iters)
        plan = checks_after_z_only(plan, weight)
        a, rate = np.asarray(a, np.float32), np.float32(learning_rate)
        w = np.array([mloss1_weight, mloss2_weight, zprior_weight, weight], np.float32)

        def advance(state, per_image, first, steps, anneal=0.0):
            *out, losses = self._advance(a, per_image["y"], *(state[k] for k in STATE), w, np.int32(z_only),
                                         np.int32(first), np.int32(steps), rate, np.float32(anneal))
            return dict(zip(STATE, out)), losses

        z0 = np.asarray(z0, np.float32)
        zeros, pixels = np.zeros_like(z0), np.zeros(z0.shape[:2] + (784,), np.float32)
        start = {"z": z0, "mz": zeros, "vz": zeros, "nu": pixels, "mn": pixels, "vn": pixels}
        per_image = {"y": np.asarray(y, np.float32)}
        outcome = schedule.run(plan, start, per_image, advance, observe)
        if plan.polish > 0:
            # The winners at a falling rate. Sparse-Gen never stops early (recovery.method_schedule), so
            # every image has run plan.iters steps: one step count for all.
            winners = {k: v[None] for k, v in outcome.state.items()}
            state, loss = advance(winners, per_image, plan.iters, plan.polish, anneal=1.0)
            outcome = outcome.polished({k: np.asarray(v)[0] for k, v in state.items()}, np.asarray(loss)[0],
                                       plan.polish)
        g = self.decode(outcome.state["z"])
        return np.clip(g + outcome.state["nu"], 0.0, 1.0), outcome

    def solve(self, a: np.ndarray, y: np.ndarray, z0: np.ndarray, weight: float, zprior_weight: float,
              iters: int, learning_rate: float, mloss1_weight: float = 0.0,
              mloss2_weight: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
        """The full budget (every restart runs ``iters`` steps): x_hat [B, 784] and its total loss [B]."""
        x, outcome = self.solve_scheduled(a, y, z0, weight, zprior_weight, learning_rate, schedule.Schedule(iters),
                                          mloss1_weight, mloss2_weight)
        return x, outcome.loss


def checks_after_z_only(plan: schedule.Schedule, weight: float) -> schedule.Schedule:
    """The plan with its convergence checks moved past the z-only phase, where nu starts to move."""
    z_only = z_only_steps(weight, plan.iters)
    return replace(plan, stop_from=max(plan.stop_from, z_only if z_only < plan.iters else 0))


def z_only_steps(weight: float, iters: int) -> int:
    """Steps that move z alone: all of them without the nu penalty (plain CSGM), else the authors'
    warm start when the budget exceeds it."""
    if weight == 0:
        return iters
    return Z_ONLY_STEPS if iters > Z_ONLY_STEPS else 0
