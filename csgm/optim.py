"""Adam, written out: checkpointable tf.Variables, identical on every TF version we support.

The same update rule serves the VAE's weights (variables) and the recovery's latent codes
(tensors carried through a compiled loop).
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import tensorflow as tf


BETA1, BETA2, EPSILON = 0.9, 0.999, 1e-8


def adam_update(param: tf.Tensor, grad: tf.Tensor, m: tf.Tensor, v: tf.Tensor, step: tf.Tensor,
                lr: float, beta1: float = BETA1, beta2: float = BETA2,
                eps: float = EPSILON) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One Adam step (TF1 AdamOptimizer's form); ``step`` counts from 1. Returns (param, m, v)."""
    t = tf.cast(step, param.dtype)
    lr_t = lr * tf.sqrt(1.0 - tf.pow(beta2, t)) / (1.0 - tf.pow(beta1, t))
    m = beta1 * m + (1.0 - beta1) * grad
    v = beta2 * v + (1.0 - beta2) * tf.square(grad)
    return param - lr_t * m / (tf.sqrt(v) + eps), m, v


def annealed_rate(lr: tf.Tensor, anneal: tf.Tensor, i: tf.Tensor, steps: tf.Tensor) -> tf.Tensor:
    """Step ``i`` of ``steps``'s learning rate: ``lr`` with ``anneal`` 0; with 1 falling linearly to
    lr / steps at the last step (the recovery's polish of each image's winner)."""
    return lr * (1.0 - anneal * tf.cast(i, tf.float32) / tf.cast(steps, tf.float32))


class Adam(tf.Module):
    def __init__(self, variables: Sequence[tf.Variable], learning_rate: float):
        super().__init__(name="adam")
        self.learning_rate = learning_rate
        self.step = tf.Variable(0, dtype=tf.int64, name="step")
        # Zeros of the variables' static shapes (not zeros_like(variable)): no read of a variable
        # in a session graph before its initializer has run.
        self.m = [tf.Variable(tf.zeros(v.shape, v.dtype), name="m") for v in variables]
        self.v = [tf.Variable(tf.zeros(v.shape, v.dtype), name="v") for v in variables]
        self._variables = list(variables)

    @property
    def state(self) -> List[tf.Variable]:
        """Every variable of the optimiser, in a fixed order (broadcasts rely on it)."""
        return self.m + self.v + [self.step]

    def apply(self, grads: Sequence[tf.Tensor]) -> Any:
        """Count the step and update the variables; returns the update (an op in a graph, to be
        depended on: a TF1 graph runs only what is asked for; None when executing eagerly)."""
        # TensorFlow's fused Adam kernel (the one behind TF1's AdamOptimizer): one pass over
        # memory per variable instead of a dozen element-wise ops; same rule as adam_update.
        # Raw ops on the handles: the same code updates a plain variable and this replica's
        # copy of a distributed (mirrored) one.
        count = tf.raw_ops.AssignAddVariableOp(resource=self.step.handle, value=tf.constant(1, tf.int64))
        with tf.control_dependencies([count]):
            t = tf.cast(self.step.read_value(), tf.float32)
        beta1_power, beta2_power = tf.pow(BETA1, t), tf.pow(BETA2, t)
        updates = [tf.raw_ops.ResourceApplyAdam(
            var=var.handle, m=m.handle, v=v.handle, beta1_power=beta1_power,
            beta2_power=beta2_power, lr=tf.constant(self.learning_rate, tf.float32),
            beta1=tf.constant(BETA1), beta2=tf.constant(BETA2), epsilon=tf.constant(EPSILON),
            grad=tf.cast(g, tf.float32)) for var, g, m, v in zip(self._variables, grads, self.m, self.v)]
        return None if tf.executing_eagerly() else tf.group(updates)

    def skip(self) -> Any:
        """Count a step without moving anything (an overflowing fp16 step); the op in a graph."""
        return self.step.assign_add(1)
