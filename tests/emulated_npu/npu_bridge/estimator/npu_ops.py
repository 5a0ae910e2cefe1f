"""EMULATED npu_ops: initialize_system / shutdown_system (NPUInit / NPUShutdown), graph ops only."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

import emulated_ascend
from npu_bridge import _session


def _graph_only(name: str) -> None:
    if tf.executing_eagerly():
        raise RuntimeError(f"{name} is not supported in eager mode (npu_ops.py)")


def _initialize() -> np.ndarray:
    state = _session.state
    if state["initialized"]:
        return np.int32(0)  # GePlugin::Init is idempotent
    size = int(emulated_ascend.get_ranksize())
    rank = 0
    if size > 1:
        chief, table = os.getenv("CM_CHIEF_IP"), os.getenv("RANK_TABLE_FILE")
        if chief and table:
            raise RuntimeError("emulated HCCL: CM_CHIEF_IP and RANK_TABLE_FILE both set: neither mode is "
                               "enabled (ge_plugin.cc)")
        if not os.getenv("JOB_ID"):
            raise RuntimeError("emulated npu_bridge: JOB_ID is not set on a job of several ranks "
                               "(NPUBasics: can not get job config from env)")
        if chief:
            for key in ("CM_CHIEF_PORT", "CM_CHIEF_DEVICE"):
                if not os.getenv(key):
                    raise RuntimeError(f"emulated HCCL: CM mode needs {key}")
            rank = emulated_ascend.connect_cm(size, os.getenv("CM_WORKER_IP") or chief, _session.device_id())
        elif table:
            if not os.getenv("RANK_ID"):
                raise RuntimeError("emulated HCCL: Can't find rank_id or pod_name in env.")
            emulated_ascend.hccl_device_check(state["device"])
            rank = int(os.environ["RANK_ID"])
            emulated_ascend.connect(rank, size)
        else:
            raise RuntimeError("emulated HCCL: RANK_SIZE > 1 without RANK_TABLE_FILE or CM_CHIEF_IP")
    state.update(initialized=True, rank=rank, size=size)
    print(f"EMULATED NPU (npu_bridge): device {state['device']} on chip {emulated_ascend.chip()}, rank "
          f"{rank} of {size}, options {state.get('params')}", flush=True)
    return np.int32(0)


def _shutdown() -> np.ndarray:
    _session.state["initialized"] = False
    return np.int32(0)


def initialize_system(name=None) -> tf.Operation:
    _graph_only("initialize_system")
    return tf.py_function(_initialize, [], Tout=tf.int32, name=name).op


def shutdown_system(name=None) -> tf.Operation:
    _graph_only("shutdown_system")
    return tf.py_function(_shutdown, [], Tout=tf.int32, name=name).op
