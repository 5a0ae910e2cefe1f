"""EMULATED helper.get_gen_ops(): the float status ops v2 (tf_adapter/ops/aicore/npu_mixed_precesion_ops.cc)."""

from __future__ import annotations

import types

import numpy as np
import tensorflow as tf

import emulated_ascend

STATUS_SIZE = 8


def _get_status() -> tf.Tensor:
    def read() -> np.ndarray:
        return np.full([STATUS_SIZE], 1 if emulated_ascend.injected_overflow() else 0, np.int32)

    out = tf.py_function(read, [], Tout=tf.int32)
    out.set_shape([STATUS_SIZE])
    return out


def _clear_status() -> tf.Tensor:
    return tf.zeros([STATUS_SIZE], tf.int32)


def get_gen_ops() -> types.SimpleNamespace:
    return types.SimpleNamespace(npu_get_float_status_v2=_get_status, npu_clear_float_status_v2=_clear_status)
