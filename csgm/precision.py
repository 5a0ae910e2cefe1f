"""Dynamic loss scaling for float16 training (``precision: mixed`` on an NPU, see csgm.ascend).

On the CPU ``mixed`` is bfloat16 inside csgm's own graph (measured in docs/benchmarks.md), which keeps
float32's range: no loss scaling there. On an NPU CANN runs float16, which needs it; and on Atlas
training products an overflow saturates instead of giving inf, so it is read from the NPU's float
status register (csgm.backends.npu.float_status), as Huawei's ``NpuLossScaleOptimizer`` does
(Ascend/tensorflow tf_adapter_2.x/python/npu_device/train/optimizer/npu_loss_scale_optimizer.py).
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

# Keras' LossScaleOptimizer defaults, which NpuLossScaleOptimizer inherits.
INITIAL_SCALE = 2.0 ** 15
GROWTH_STEPS = 2000
MULTIPLIER = 2.0
MAX_SCALE = 3.4e38  # the NPU optimizer grows the scale only while scale * multiplier stays below this


def finite_status(after: Sequence[tf.Tensor]) -> tf.Tensor:
    """0.0 when every tensor is finite, else 1.0: overflow as IEEE arithmetic shows it (inf/nan)."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in after])
    return tf.cast(tf.logical_not(finite), tf.float32)


class DynamicLossScale(tf.Module):
    """Huawei's dynamic loss-scale rule: after ``GROWTH_STEPS`` finite steps in a row the scale is
    multiplied by ``MULTIPLIER``; on an overflow the update is skipped and the scale divided (never
    below 1). ``status(grads)`` is > 0 when the step overflowed; summed over ranks, so every rank
    skips the same steps."""

    def __init__(self, status: Callable[[Sequence[tf.Tensor]], tf.Tensor] = finite_status,
                 initial: float = INITIAL_SCALE, growth_steps: int = GROWTH_STEPS, multiplier: float = MULTIPLIER):
        super().__init__(name="loss_scale")
        self.status = status
        self.growth_steps, self.multiplier = growth_steps, multiplier
        self.scale = tf.Variable(initial, dtype=tf.float32, trainable=False, name="scale")
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")
        self.overflows = tf.Variable(0, dtype=tf.int64, trainable=False, name="overflows")

    def update(self, overflow_status: tf.Tensor) -> tf.Tensor:
        """Advance the rule by one step; returns whether the step's gradients may be applied."""
        finite = overflow_status <= 0.0

        def on_finite() -> tf.Tensor:
            grow = self.good_steps + 1 >= self.growth_steps
            may_grow = tf.logical_and(grow, self.scale < MAX_SCALE / self.multiplier)
            with tf.control_dependencies([
                    self.scale.assign(tf.where(may_grow, self.scale * self.multiplier, self.scale)),
                    self.good_steps.assign(tf.where(grow, tf.constant(0, tf.int64), self.good_steps + 1))]):
                return tf.constant(True)  # in a TF1 graph a branch runs only what its output needs

        def on_overflow() -> tf.Tensor:
            with tf.control_dependencies([self.scale.assign(tf.maximum(self.scale / self.multiplier, 1.0)),
                                          self.good_steps.assign(0), self.overflows.assign_add(1)]):
                return tf.constant(False)

        return tf.cond(finite, on_finite, on_overflow)
