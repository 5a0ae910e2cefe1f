"""EMULATED float-status ops of the NPU (overflow register read by Huawei's loss-scale optimizer).

On Atlas training products an fp16 overflow saturates instead of giving inf and sets a status
register; ``npu_get_float_status`` copies it into the buffer of ``npu_alloc_float_status`` in place,
``npu_clear_float_status`` resets it and returns the no-overflow value. TensorFlow tensors cannot be
filled in place here, so the emulated alloc returns the register as it is once its control
dependencies (the step's gradients) have run, and get passes it through.
[Ascend/tensorflow tf_adapter_2.x/python/npu_device/train/optimizer/npu_loss_scale_optimizer.py]
CPU float32 never saturates, so the register here is set only by injection: EMULATED_NPU_OVERFLOW_AT
lists the 1-based calls of npu_alloc_float_status that see an overflow, on the ranks listed in
EMULATED_NPU_OVERFLOW_RANKS (default: every rank).
"""

from __future__ import annotations

import os
import threading

import numpy as np
import tensorflow as tf

import npu_device

STATUS_SIZE = 8
_lock = threading.Lock()
_calls = [0]


def _injected() -> bool:
    at = {int(x) for x in os.environ.get("EMULATED_NPU_OVERFLOW_AT", "").split(",") if x.strip()}
    ranks = os.environ.get("EMULATED_NPU_OVERFLOW_RANKS")
    ctx = npu_device.global_npu_ctx()  # the rank HCCL gave (in the CM_* start there is no RANK_ID)
    if ranks and str(ctx.worker_id if ctx is not None else 0) not in ranks.split(","):
        return False
    with _lock:
        _calls[0] += 1
        return _calls[0] in at


def npu_alloc_float_status() -> tf.Tensor:
    def read() -> np.ndarray:
        return np.full([STATUS_SIZE], 1.0 if _injected() else 0.0, np.float32)

    out = tf.py_function(read, [], Tout=tf.float32)
    out.set_shape([STATUS_SIZE])
    return out


def npu_get_float_status(status: tf.Tensor) -> tf.Tensor:
    return tf.identity(status)


def npu_clear_float_status(status: tf.Tensor) -> tf.Tensor:
    return tf.zeros_like(status)
