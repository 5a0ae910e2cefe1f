"""Ascend settings that need no TensorFlow (the launcher and the spec read them): the adapter's
options a job sets, and what each stage's precision means on an NPU.

Precision on an NPU: csgm's graph stays float32 and CANN's process-wide precision mode does the
casting: ``mixed`` is ``allow_mix_precision`` (float16 on the Ascend 910A, which has no bfloat16),
``fp32`` is ``must_keep_origin_dtype``. The mode is read once, by ``npu_device.open()``, for the whole
process, so stages running in one process must agree on it. float16 training needs loss scaling
(csgm.precision). Option names and values as in Ascend/tensorflow tf_adapter_2.x/python/npu_device/
configs/npu_config.py, dump_config.py and profiling_config.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

from common.schema import SpecError, option

NPU_PRECISION_MODES = {"fp32": "must_keep_origin_dtype", "mixed": "allow_mix_precision"}


@dataclass(frozen=True)
class NpuOptions:
    adapter: str = option("auto", "CANN's TensorFlow adapter: npu_bridge (TF 1.15, graph sessions), npu_device "
                          "(TF 2.6.5, functions), or auto: the one that matches the installed TensorFlow "
                          "(1.x: npu_bridge, 2.x: npu_device)", choices=("auto", "npu_bridge", "npu_device"))
    chip: str = option("910A", "the NPUs' chip: 910A (Atlas 800 training server: no bfloat16, device ids "
                       "0..7) or 910B", choices=("910A", "910B"))
    dump_path: Optional[str] = option(None, "dump operator data here (the adapter's dump_config."
                                      "enable_dump/dump_path); absolute path on the node")
    dump_step: Optional[str] = option(None, "steps to dump, the adapter's syntax, e.g. '0|5|10-20'")
    dump_mode: str = option("output", "dump operators' input, output or all",
                            choices=("input", "output", "all"))
    exception_dump: bool = option(False, "dump the inputs of a failing operator (enable_exception_dump)")
    profiling_options: Optional[str] = option(None, "turn on the adapter's profiling with these options (a "
                                              "JSON string, e.g. '{\"output\": \"/prof\", \"task_trace\": "
                                              "\"on\"}')")
    smi_check: bool = option(True, "before starting ranks, check this server's devices with npu-smi (skipped "
                             "with a note when npu-smi is absent)")
    bind_cores: bool = option(False, "pin each rank to its share of the CPU cores with taskset, as ModelZoo "
                              "and MindX scripts do")


def adapter_options(precision_mode: str, options: NpuOptions) -> Dict[str, Any]:
    """The adapter's option paths and values this job sets (also shown by the worker's log)."""
    out: Dict[str, Any] = {"precision_mode": precision_mode}
    if options.dump_path:
        out.update({"dump_config.enable_dump": True, "dump_config.dump_path": options.dump_path,
                    "dump_config.dump_mode": options.dump_mode})
        if options.dump_step:
            out["dump_config.dump_step"] = options.dump_step
    if options.exception_dump:
        out["enable_exception_dump"] = 1
    if options.profiling_options:
        out.update({"profiling_config.enable_profiling": True,
                    "profiling_config.profiling_options": options.profiling_options})
    return out


def bridge_options(precision_mode: str, options: NpuOptions) -> Dict[str, Any]:
    """The same options as ``NpuOptimizer`` parameter_map keys of the TF 1.15 adapter (npu_bridge),
    as read by Ascend/tensorflow tf_adapter/util/npu_attrs.cc; ``use_off_line`` sends the graph to
    the NPU (false: "run online process and skip the optimizer", i.e. on the host)."""
    out: Dict[str, Any] = {"use_off_line": True, "precision_mode": precision_mode}
    if options.dump_path:
        out.update({"enable_dump": True, "dump_path": options.dump_path, "dump_mode": options.dump_mode})
        if options.dump_step:
            out["dump_step"] = options.dump_step
    if options.exception_dump:
        out["enable_exception_dump"] = 1
    if options.profiling_options:
        out.update({"profiling_mode": True, "profiling_options": options.profiling_options})
    return out


# Each CANN adapter and the TensorFlow it is built for (CANN's install guide, instg_0045; the TF1
# adapter builds against TF 1.15.0, the TF2 one against 2.6.5: Ascend/tensorflow README.md and
# tf_adapter_2.x/CMakeLists.txt).
ADAPTER_TF_MAJOR = {"npu_bridge": 1, "npu_device": 2}
# The job image of each adapter (k8s/image/Dockerfile's STACK) and the TensorFlow its base holds.
ADAPTER_STACK = {"npu_bridge": "tf1.15", "npu_device": "tf2.6.5"}
STACK_TENSORFLOW = {"tf1.15": "1.15.", "tf2.6.5": "2.6."}


def resolve_adapter(choice: str, tf_version: Optional[str]) -> Tuple[Optional[str], str]:
    """(adapter, why) for ``npu.adapter`` = ``choice`` under TensorFlow ``tf_version`` (None: unknown,
    e.g. a dry run on a machine without TensorFlow); adapter None means refused, ``why`` says the fix."""
    major = int(tf_version.split(".")[0]) if tf_version and tf_version[0].isdigit() else None
    if choice == "auto":
        if major is None:
            return "npu_device", "auto: TensorFlow not found here; npu_device on TF 2.x, npu_bridge on TF 1.15"
        adapter = "npu_bridge" if major == 1 else "npu_device"
        return adapter, f"auto: TensorFlow {tf_version} is installed"
    if major is not None and ADAPTER_TF_MAJOR[choice] != major:
        other = "npu_device" if choice == "npu_bridge" else "npu_bridge"
        stack = "TF 1.15" if choice == "npu_bridge" else "TF 2.6.5"
        return None, (f"npu.adapter {choice} is CANN's adapter for {stack}, but TensorFlow {tf_version} is "
                      f"installed. Set npu.adapter auto (or {other}), or run in the CANN {stack} image")
    return choice, "as npu.adapter says"


def installed_tensorflow() -> Optional[str]:
    """The installed TensorFlow's version from package metadata, without importing it (seconds)."""
    try:
        from importlib import metadata  # novermin: Python 3.8+, pkg_resources below for 3.7

        def version(name: str) -> str:
            return metadata.version(name)
        missing: Any = metadata.PackageNotFoundError
    except ImportError:
        import pkg_resources

        def version(name: str) -> str:
            return pkg_resources.get_distribution(name).version
        missing = pkg_resources.DistributionNotFound
    for name in ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-aarch64"):
        try:
            return version(name)
        except missing:
            continue
    return None


def graph_precision(precision: str, device_type: str) -> str:
    """The precision of csgm's own graph: on NPUs always fp32 (CANN's precision mode casts)."""
    return "fp32" if device_type == "npu" else precision


def npu_precision_conflict(stages: Sequence[str], train: str, recovery: str) -> Optional[Tuple[str, str, str]]:
    """(key, problem, fix) when the stages running in one NPU process want different precisions."""
    if "train" in stages and "recover" in stages and train != recovery:
        return ("recovery.precision", f"is {recovery} but train.precision is {train}; on an NPU the precision "
                "mode is set once per process (CANN's precision_mode, before npu_device.open())",
                "Give both stages the same precision, or run them as separate jobs (stages: [train], "
                "then stages: [recover])")
    return None


def npu_precision_mode(stages: Sequence[str], train: str, recovery: str) -> str:
    """CANN's precision mode for a process running ``stages`` (see npu_precision_conflict)."""
    conflict = npu_precision_conflict(stages, train, recovery)
    if conflict:
        raise SpecError("job spec", *conflict)
    return NPU_PRECISION_MODES[train if "train" in stages else recovery]


