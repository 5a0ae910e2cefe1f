"""EMULATED: the check every tf.compat.v1.Session of an NPU process gets (see npu_bridge/__init__.py)."""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List

import tensorflow as tf

import emulated_ascend
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

_original_init: List[Any] = []
state: Dict[str, Any] = {"initialized": False, "device": None, "rank": None, "size": None}


def _parameters(config: Any) -> Dict[str, Any]:
    for custom in config.graph_options.rewrite_options.custom_optimizers:
        if custom.name == "NpuOptimizer":
            return {k: getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
                    for k, v in custom.parameter_map.items()}
    raise RuntimeError("emulated npu_bridge: a Session without the NpuOptimizer custom optimizer in its "
                       "config; on an NPU its graph would run on the host CPU, with no error (npu_attrs.cc)")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def check_config(config: Any) -> Dict[str, Any]:
    if config is None:
        raise RuntimeError("emulated npu_bridge: a Session without a config (no NpuOptimizer): its graph "
                           "would run on the host CPU")
    params = _parameters(config)
    rewrite = config.graph_options.rewrite_options
    off = RewriterConfig.OFF
    if rewrite.remapping != off:
        raise RuntimeError("emulated npu_bridge: remapping must be RewriterConfig.OFF in an NPU session")
    if rewrite.memory_optimization != off:
        print("emulated npu_bridge: warning: memory_optimization is not OFF (the guide turns it off)",
              file=sys.stderr)
    if params.get("use_off_line") is False:
        raise RuntimeError("emulated npu_bridge: use_off_line false runs the graph on the host")
    mode = params.get("precision_mode")
    if mode is not None:
        mode = _text(mode)
        if mode not in emulated_ascend.PRECISION_MODES:
            raise RuntimeError(f"emulated npu_bridge: InvalidArgument '{mode}' is invalid, it should be one "
                               f"of the list:{list(emulated_ascend.PRECISION_MODES)}")
        if mode in emulated_ascend.BF16_MODES and emulated_ascend.chip() in emulated_ascend.CHIPS_WITHOUT_BF16:
            raise RuntimeError(f"emulated npu_bridge: precision_mode {mode} needs bfloat16, which the Ascend "
                               f"{emulated_ascend.chip()} does not have")
    if int(params.get("iterations_per_loop") or 1) < 1:
        raise RuntimeError("emulated npu_bridge: iterations_per_loop must be >= 1")
    if int(params.get("graph_run_mode", 1) or 0) not in (0, 1):
        raise RuntimeError("emulated npu_bridge: graph_run_mode must be 0 or 1")
    if (params.get("enable_dump") or params.get("enable_dump_debug")) and not params.get("dump_path"):
        raise RuntimeError("emulated npu_bridge: if use dump function, dump_path must be set.")
    return params


def device_id(environ=os.environ) -> int:
    """ASCEND_DEVICE_ID (logical), else DEVICE_ID, else 0 (npu_attrs.cc GetEnvDeviceID)."""
    for key in ("ASCEND_DEVICE_ID", "DEVICE_ID"):
        text = environ.get(key)
        if text is not None:
            try:
                value = int(text)
            except ValueError:
                value = -1
            if value < 0:
                raise RuntimeError(f"emulated npu_bridge: InvalidArgument {key}={text!r} must be a "
                                   "non-negative integer")
            return value
    return 0


def install() -> None:
    if _original_init:
        return
    _original_init.append(tf.compat.v1.Session.__init__)

    def init(self: Any, target: str = "", graph: Any = None, config: Any = None) -> None:
        params = check_config(config)
        state["device"] = emulated_ascend.physical_device(device_id())
        state["params"] = params
        if emulated_ascend.chip() in emulated_ascend.CHIPS_WITHOUT_BF16:
            emulated_ascend.refuse_bfloat16()
        _original_init[0](self, target, graph, config)

    tf.compat.v1.Session.__init__ = init
