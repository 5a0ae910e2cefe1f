"""EMULATED hccl_ops: HcomAllReduce / HcomBroadcast as real collectives between the ranks' processes."""

from __future__ import annotations

from typing import List, Sequence

import numpy as np
import tensorflow as tf

import emulated_ascend
from npu_bridge import _session

REDUCTIONS = ("min", "max", "prod", "sum")  # tf_adapter/ops/hccl/hccl_ops.cc: no "mean"
DTYPES = (tf.int8, tf.int16, tf.int32, tf.int64, tf.float16, tf.float32, tf.bfloat16)


def _collective(op: str, arrays: List[np.ndarray], root: int = 0) -> List[np.ndarray]:
    state = _session.state
    if not state["initialized"]:
        raise RuntimeError("emulated HCCL: a collective before initialize_system")
    if state["size"] == 1:
        return arrays
    return emulated_ascend.call(op, arrays, root)


def allreduce(tensor, reduction, fusion=1, fusion_id=-1, group="hccl_world_group"):
    if reduction not in REDUCTIONS:
        raise ValueError(f"Attr reduction has value '{reduction}' not in list of allowed values: "
                         f"{', '.join(REDUCTIONS)} (HcomAllReduce)")
    tensor = tf.convert_to_tensor(tensor)
    if tensor.dtype not in DTYPES:
        raise TypeError(f"HcomAllReduce: dtype {tensor.dtype.name} not allowed")
    if fusion not in (0, 1, 2):
        raise ValueError("HcomAllReduce: fusion must be 0, 1 or 2")
    out = tf.py_function(lambda t: _collective(reduction, [t.numpy()])[0], [tensor], Tout=tensor.dtype)
    out.set_shape(tensor.shape)
    return out


def broadcast(tensor: Sequence[tf.Tensor], root_rank, fusion=2, fusion_id=0, group="hccl_world_group"):
    if not isinstance(tensor, (list, tuple)):
        raise TypeError("HcomBroadcast takes a list of tensors")
    if fusion not in (0, 2):
        raise ValueError("HcomBroadcast: fusion must be 0 or 2")
    tensors = [tf.convert_to_tensor(t) for t in tensor]

    def run(*values: tf.Tensor) -> List[np.ndarray]:
        size = _session.state["size"] or 1
        if not 0 <= root_rank < size:
            raise ValueError(f"HcomBroadcast: root_rank {root_rank} outside the group of {size}")
        return _collective("broadcast", [v.numpy() for v in values], root_rank)

    out = tf.py_function(run, tensors, Tout=[t.dtype for t in tensors])
    for o, t in zip(out, tensors):
        o.set_shape(t.shape)
    return list(out)
