"""EMULATED float-status ops of the NPU (overflow register read by Huawei's loss-scale optimizer).

On Atlas training products an fp16 overflow saturates instead of giving inf and sets a status
register; ``npu_get_float_status`` copies it into the buffer of ``npu_alloc_float_status`` in place,
``npu_clear_float_status`` resets it and returns the no-overflow value. TensorFlow tensors cannot be
filled in place here, so the emulated alloc returns the register as it is once its control
dependencies (the step's gradients) have run, and get passes it through.
[Ascend/tensorflow tf_adapter_2.x/python/npu_device/train/optimizer/npu_loss_scale_optimizer.py]
The register is set only by injection (emulated_ascend.injected_overflow: each call of
npu_alloc_float_status is one read).
"""

from __future__ import annotations


import numpy as np
import tensorflow as tf

import emulated_ascend

STATUS_SIZE = 8
def npu_alloc_float_status() -> tf.Tensor:
    def read() -> np.ndarray:
        return np.full([STATUS_SIZE], 1.0 if emulated_ascend.injected_overflow() else 0.0, np.float32)

    out = tf.py_function(read, [], Tout=tf.float32)
    out.set_shape([STATUS_SIZE])
    return out


def npu_get_float_status(status: tf.Tensor) -> tf.Tensor:
    return tf.identity(status)


def npu_clear_float_status(status: tf.Tensor) -> tf.Tensor:
    return tf.zeros_like(status)
