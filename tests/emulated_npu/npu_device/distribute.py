"""EMULATED ``npu_device.distribute``: all_reduce and broadcast with the adapter's signatures and its
skip when this process is not a cluster worker (RANK_SIZE <= 1).
[Ascend/tensorflow tf_adapter_2.x/python/npu_device/distribute/hccl.py]"""

from __future__ import annotations

from typing import Any, List, Sequence

import numpy as np
import tensorflow as tf

import emulated_ascend
from npu_device import global_npu_ctx


def _is_worker() -> bool:
    ctx = global_npu_ctx()
    return ctx is not None and ctx.is_cluster_worker()


def all_reduce(values: Any, reduction: str = "mean", fusion: int = 1, fusion_id: int = -1,
               group: str = "hccl_world_group") -> Any:
    if not _is_worker():
        return values
    if reduction not in ("mean", "sum"):
        raise ValueError(f"emulated HCCL: reduction {reduction!r} not emulated (mean, sum)")
    single = not isinstance(values, (list, tuple))
    tensors = [values] if single else list(values)
    workers = global_npu_ctx().workers_num

    def reduce(*arrays: tf.Tensor) -> List[np.ndarray]:
        summed = emulated_ascend.call("sum", [a.numpy() for a in arrays])
        return [s / workers if reduction == "mean" else s for s in summed]

    out = tf.py_function(reduce, tensors, Tout=[t.dtype for t in tensors])
    for o, t in zip(out, tensors):
        o.set_shape(t.shape)
    return out[0] if single else list(out)


def broadcast(values: Any, root_rank: int = 0, fusion: int = 2, fusion_id: int = 0,
              group: str = "hccl_world_group") -> None:
    if not _is_worker():
        return
    variables: Sequence[tf.Variable] = values if isinstance(values, (list, tuple)) else [values]
    arrays = emulated_ascend.call("broadcast", [v.numpy() for v in variables], root=root_rank)
    for v, a in zip(variables, arrays):
        v.assign(a)
