"""The job spec: one typed schema for the YAML file a user writes.

Each section is a frozen dataclass; every component receives only its own section. Load a spec
with :func:`load_spec`; the resolved form (defaults filled in, overrides applied) is what the
job saves next to its outputs.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import yaml

from common.inputs import SPEC_BYTES, InputError, loads_yaml, read_text, shown
from common.records import short_digest
from common.schema import SpecError, build, known_paths, option, to_data
from csgm.ascend import NpuOptions, npu_precision_conflict
from csgm.config import DataConfig, RecoveryConfig, TrainConfig

STAGE_ORDER = ("train", "recover")  # recovery uses the trained generator
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class DevicesSpec:
    type: str = option("cpu", "device kind of every rank", choices=("cpu", "gpu", "npu"))
    count: int = option(1, "devices (ranks) per server", min=1, max=16)
    # TensorFlow takes an int32 and fails inside the rank above it; no CPU has 1024 cores per rank
    threads: int = option(0, "TensorFlow intra-op threads per rank; 0 lets TensorFlow choose", min=0, max=1024)


@dataclass(frozen=True)
class LaunchSpec:
    rank_table: Optional[str] = option(None, "HCCL rank table (JSON); --rank-table (or an exported "
                                       "RANK_TABLE_FILE) overrides. Without one, CPU and GPU jobs make "
                                       "a loopback table for devices.count ranks")
    rank_table_timeout_s: float = option(300.0, "how long to wait for a rank table whose status is "
                                         "'initializing' (as Huawei's scripts: 300 s)", min=0.0)
    max_restarts: int = option(0, "restart all local ranks this many times after a failure", min=0)
    grace_period_s: float = option(30.0, "after SIGTERM, seconds before SIGKILL: the ranks finish their "
                                   "step and rank 0 checkpoints it (torchrun also waits 30 s); the pod's "
                                   "terminationGracePeriodSeconds is this plus 30", min=0.0)
    stall_timeout_s: Optional[float] = option(None, "fail a rank that prints nothing for this long "
                                              "(hang detection); null: off", min=1.0)
    collective_timeout_s: float = option(600.0, "backends tf and horovod: how long a collective waits "
                                         "for its peers before the rank fails", min=1.0)
    port: int = option(29500, "first TCP port of the collective rendezvous on each server",
                       min=1024, max=65000)


@dataclass(frozen=True)
class HcclSpec:
    connect_timeout_s: int = option(120, "HCCL_CONNECT_TIMEOUT: link set-up wait", min=120, max=7200)
    exec_timeout_s: int = option(1800, "HCCL_EXEC_TIMEOUT: how long a collective waits for peers",
                                 min=1, max=17340)


@dataclass(frozen=True)
class JobSpec:
    name: str = option("csgm", "job name: a DNS-1123 label (lower case, digits, '-')")
    output_dir: Optional[str] = option(None, "run folder; default runs/<name>")
    stages: Tuple[str, ...] = option(list(STAGE_ORDER), "what to run, in order, each once",
                                     choices=STAGE_ORDER)
    backend: str = option("local", "collective engine between ranks: local (one process), tf "
                          "(TensorFlow collectives), horovod, hccl (Ascend)",
                          choices=("local", "tf", "horovod", "hccl"))
    data: DataConfig = option(DataConfig(), "data set")
    devices: DevicesSpec = option(DevicesSpec(), "devices")
    train: TrainConfig = option(TrainConfig(), "VAE training")
    recovery: RecoveryConfig = option(RecoveryConfig(), "compressed-sensing recovery")
    launch: LaunchSpec = option(LaunchSpec(), "process launch and supervision")
    hccl: HcclSpec = option(HcclSpec(), "HCCL settings (devices.type npu)")
    npu: NpuOptions = option(NpuOptions(), "Ascend NPU options (devices.type npu), passed to CANN's adapter")

    def check(self) -> Optional[Tuple[str, str, str]]:
        if not DNS_LABEL.fullmatch(self.name):
            return ("name", f"{shown(self.name)} is not a DNS-1123 label",
                    "Use at most 63 lower-case letters, digits and '-', starting and ending "
                    "with a letter or digit")
        if self.output_dir is not None and not self.output_dir.strip():
            return ("output_dir", "is empty", f"Remove the key (or set it to null) for runs/{self.name}, or "
                    "name a folder")
        order = [s for s in STAGE_ORDER if s in self.stages]
        if list(self.stages) != order:  # run_stages runs each stage once, in this order
            return ("stages", f"{list(self.stages)} repeats a stage or is out of order",
                    f"List each stage once, in the order they run: {order}")
        if self.devices.type == "npu":
            return npu_precision_conflict(self.stages, self.train.precision, self.recovery.precision)
        return None

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name


def _read_yaml(path: Path) -> Any:
    source = str(path)
    try:
        return loads_yaml(read_text(path, SPEC_BYTES, "job spec (YAML)"), source)
    except FileNotFoundError:
        raise SpecError(source, "", "file not found", "Check the path of the job spec") from None
    except OSError as e:
        raise SpecError(source, "", f"cannot read the file ({e.strerror or e})",
                        "Pass a readable UTF-8 YAML file") from None
    except InputError as e:
        raise SpecError(e.source, e.path, e.problem, _capital(e.fix)) from None


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _yaml_value(raw: str) -> Any:
    try:
        return loads_yaml(raw, "--set") if raw.strip() else None
    except InputError:
        return None


def parse_override(text: str) -> Tuple[str, Any]:
    """'train.epochs=2' -> ('train.epochs', 2); the value is read as YAML ('[25,100]' is a list)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError("--set", text, "expected key.path=value", "Write e.g. --set train.epochs=2")
    fields = dict(known_paths(JobSpec))
    leaves = set(fields)
    inside = sorted(p for p in leaves if p.startswith(key + "."))
    if key not in leaves and inside:
        # The example is a key whose default has the type of the value given, if there is one.
        given = type(_yaml_value(raw))
        example = next((p for p in inside if type(fields[p].default) is given), inside[0])
        raise SpecError("--set", key, f"is a section, not a value; its keys are {', '.join(inside)}",
                        f"Set one of them, e.g. --set {example}={raw.strip() or '...'}")
    if key not in leaves:
        near = difflib.get_close_matches(key, sorted(leaves), n=1)
        hint = f"Did you mean {near[0]!r}? " if near else ""
        raise SpecError("--set", key, "unknown key", hint + "docs/spec.md lists every key")
    try:
        value = loads_yaml(raw, "--set") if raw.strip() else None
    except InputError as e:
        if not e.problem.startswith("YAML syntax error"):  # an alias bomb, 0x10, yes: the loader's own fix
            raise SpecError("--set", key, e.problem, _capital(e.fix)) from None
        raise SpecError("--set", key, f"cannot read the value {shown(raw)} ({e.problem})",
                        "Quote strings, write lists as [a,b]") from None
    return key, value


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    for text in overrides:
        key, value = parse_override(text)
        node = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                section = ".".join(parts[:depth + 1])
                raise SpecError("--set", key, f"{section} is {shown(child)} in the spec, not a section",
                                f"Fix {section} in the spec file first")
            node = child
        node[parts[-1]] = value
    return data


# Paths a spec file may give; relative ones are read from the spec file's folder (as a Makefile's
# includes are), so a spec works from any current folder. Paths given by --set stay relative to it.
PATH_KEYS = ("output_dir", "data.path", "launch.rank_table")


def _resolve_paths(data: Dict[str, Any], folder: Path) -> None:
    for key in PATH_KEYS:
        *sections, leaf = key.split(".")
        node: Any = data
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(leaf), str) and node[leaf].strip():
            node[leaf] = os.path.abspath(os.path.join(folder, os.path.expanduser(node[leaf])))


def load_spec(path: Any, overrides: Sequence[str] = ()) -> JobSpec:
    """Read, override and validate a job spec; every problem is one SpecError naming the fix."""
    path = Path(path)
    data = _read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(str(path), "(top level)", "expected a mapping of keys",
                        "Start the file with keys such as 'name:' and 'train:'")
    _resolve_paths(data, path.parent)
    overridden = [parse_override(o)[0] for o in overrides]
    as_written = copy.deepcopy(data)  # apply_overrides edits in place
    data = apply_overrides(data, overrides)
    try:
        return build(JobSpec, data, str(path))
    except SpecError as e:
        if any(e.path == k or e.path.startswith(k + "[") for k in overridden):
            raise SpecError("--set", e.path, e.problem, e.fix) from None
        if overridden and _valid(as_written, path):
            # A check across keys failed only because of an override: name both places.
            raise SpecError(spec_source(e.source, overrides), e.path, e.problem, e.fix) from None
        raise


def spec_source(path: Any, overrides: Sequence[str] = ()) -> str:
    """How a message names a spec file and the --set overrides applied to it."""
    keys = [parse_override(o)[0] for o in overrides]
    return f"{path} with --set {', '.join(keys)}" if keys else str(path)


def _valid(data: Dict[str, Any], path: Path) -> bool:
    try:
        build(JobSpec, data, str(path))
    except SpecError:
        return False
    return True


def spec_to_yaml(spec: JobSpec) -> str:
    return yaml.safe_dump(to_data(spec), sort_keys=False)


def spec_digest(section: Any) -> str:
    """A stable hash of a spec (or one section), to tell whether saved work belongs to it."""
    return short_digest(to_data(section))
