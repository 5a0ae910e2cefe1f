"""Which training checkpoint a run may resume: only one made from the same inputs.

A checkpoint's ``meta.json`` records ``inputs``: everything its weights depend on (the data, the
model's shape, the optimiser settings, the seed) and their ``digest``. The epoch count is not an
input: raising ``train.epochs`` continues a finished run. Nor is the number of ranks, so a run
may continue on another number of devices. The meta is sealed with a SHA-256 of its own content
(common.records) and its keys are type-checked on read: a damaged or older one is refused, naming
the file. Reading the meta needs no TensorFlow, so a dry run can say what a run would do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from common.inputs import shown
from common.records import RecordError, is_count, is_number, read_sealed_json, short_digest
from common.schema import to_data
from csgm.config import DataConfig, TrainConfig

PREFIX = "epoch-"
# A mid-epoch checkpoint (written on SIGTERM, csgm.preemption): epoch-00003-step-000000123 holds the
# weights after global step 123, inside epoch 3. It orders before epoch-00003, the end of that epoch.
MID_EPOCH = re.compile(r"epoch-(\d+)(?:-step-(\d+))?")


def checkpoint_name(epoch: int, step: Optional[int] = None) -> str:
    """The folder of a checkpoint at the end of ``epoch``, or (``step``) at that global step inside it."""
    return f"{PREFIX}{epoch:05d}" + ("" if step is None else f"-step-{step:09d}")


def _order(path: Path) -> Tuple[int, int, int]:
    match = MID_EPOCH.fullmatch(path.name)
    if match is None:
        return (-1, 0, 0)
    epoch, step = match.groups()
    return (int(epoch), 0, int(step)) if step is not None else (int(epoch), 1, 0)


class CheckpointError(ValueError):
    pass
# The TrainConfig fields that change the weights; the others (epochs, log_every, checkpoint_every,
# keep_checkpoints, resume) only change how long or how visibly training runs.
WEIGHT_FIELDS = ("batch_size", "learning_rate", "seed", "precision", "latent_dim", "hidden")
AUGMENT_FIELDS = ("augment", "augment_rotate", "augment_scale", "augment_shift")
_UNSET = object()  # a key one side never recorded, unequal to any value


def training_inputs(train: TrainConfig, data: Union[DataConfig, str]) -> Dict[str, Any]:
    """What the weights depend on, as flat ``section.key`` -> value (the keys a user would --set).
    ``data`` is the data section, or for a library caller without one the data set's description."""
    inputs: Dict[str, Any] = {f"train.{name}": getattr(train, name) for name in WEIGHT_FIELDS}
    if train.augment != "none":  # only then: checkpoints trained before augmentation existed keep their digest
        inputs.update({f"train.{name}": getattr(train, name) for name in AUGMENT_FIELDS})
    if isinstance(data, str):
        inputs["data"] = data
    else:
        inputs.update({f"data.{name}": value for name, value in to_data(data).items()})
    return inputs


def digest(inputs: Dict[str, Any]) -> str:
    return short_digest(inputs)


def complete_checkpoints(folder: Path) -> List[Path]:
    """Finished checkpoints, oldest first (temporary folders of interrupted writes are ignored)."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if MID_EPOCH.fullmatch(p.name) and (p / "meta.json").is_file()]
    return sorted(found, key=_order)


def read_meta(path: Path) -> Dict[str, Any]:
    """A checkpoint's meta.json: intact (its content digest, common.records) and well-typed."""
    file = path / "meta.json"
    fix = "Delete this checkpoint folder to use the previous one (or --set train.resume=never to train afresh)"
    try:
        meta = read_sealed_json(file)  # a regular file, size-capped, strict JSON, intact
    except RecordError as e:
        raise CheckpointError(f"{e}. {fix}") from None
    except OSError as e:
        raise CheckpointError(f"{file}: unreadable ({e.strerror or e}). {fix}") from None
    problem = meta_problem(meta)
    if problem:
        raise CheckpointError(f"{file}: {problem}. {fix}")
    return meta


def meta_problem(meta: Dict[str, Any]) -> Optional[str]:
    """Why a checkpoint's meta cannot be used (a key missing or of the wrong type), or None."""
    for key in ("epoch", "step"):
        if not is_count(meta.get(key)):
            return f"{key}: {shown(meta.get(key))} is not a whole number >= 0"
    if not is_count(meta.get("epoch_examples", 0)):
        return f"epoch_examples: {shown(meta['epoch_examples'])} is not a whole number >= 0"
    model = meta.get("model", {})
    if not isinstance(model, dict) or not all(is_count(model.get(k, 1), 1) for k in ("latent_dim", "hidden")):
        return f"model: {shown(model)} is not {{latent_dim, hidden}} as whole numbers >= 1"
    for key in ("loss", "heldout_recon_mse", "validation_recon_mse"):
        if meta.get(key) is not None and not is_number(meta[key]):
            return f"{key}: {shown(meta[key])} is not a number"
    if not isinstance(meta.get("digest", ""), str):
        return f"digest: {shown(meta['digest'])} is not a string"
    files = meta.get("files")
    if not isinstance(files, dict) or not files or not all(
            isinstance(name, str) and name == Path(name).name and name not in ("", ".", "..")
            and isinstance(sha, str) for name, sha in files.items()):
        return f"files: {shown(files)} is not {{file name: sha256}} of the checkpoint's files"
    return None


def latest(folder: Path) -> Optional[Tuple[Path, Dict[str, Any]]]:
    found = complete_checkpoints(folder)
    return (found[-1], read_meta(found[-1])) if found else None


@dataclass(frozen=True)
class Decision:
    """What a run with these inputs does with the checkpoints in its folder."""
    action: str                      # 'fresh', 'resume' or 'refuse'
    path: Optional[Path] = None      # the latest checkpoint, if any
    epoch: Optional[int] = None      # the last epoch it finished, or the epoch it stopped in
    differences: Tuple[str, ...] = ()  # 'train.seed: 0 in the checkpoint, 7 now'
    epoch_examples: int = 0          # > 0: stopped inside ``epoch`` after this many of its examples

    @property
    def next_epoch(self) -> int:
        """The epoch training continues in."""
        return 0 if self.epoch is None else self.epoch + (0 if self.epoch_examples else 1)

    def describe(self, epochs: int, output_dir: Path) -> str:
        if self.action == "fresh":
            return "train: starts fresh (no checkpoint to resume)"
        if self.action == "resume" and self.epoch_examples:
            return (f"train: resumes from {self.path} inside epoch {self.epoch} (stopped there on SIGTERM "
                    f"after {self.epoch_examples} of its examples)")
        if self.action == "resume":
            done = (self.epoch or 0) + 1
            return (f"train: resumes from {self.path} ({done} of {epochs} epochs done)" if done < epochs
                    else f"train: already done ({self.path}); no training step runs")
        return f"train: will refuse to start: {refusal(self, output_dir)}"


def decide(folder: Path, inputs: Dict[str, Any], mode: str = "auto") -> Decision:
    """Compare the latest checkpoint's recorded inputs with ours (``mode`` is train.resume)."""
    found = None if mode == "never" else latest(folder)
    if found is None:
        return Decision("fresh")
    path, meta = found
    epoch = int(meta.get("epoch", -1))
    recorded = meta.get("inputs")
    if not isinstance(recorded, dict):
        return Decision("refuse", path, epoch, ("(the checkpoint records no inputs: it was written by an "
                                                "older version)",))
    if meta.get("digest") == digest(inputs) and recorded == inputs:
        return Decision("resume", path, epoch, epoch_examples=int(meta.get("epoch_examples", 0)))
    def shown(values: Dict[str, Any], key: str) -> str:  # an absent key is a setting added since (default)
        return repr(values[key]) if key in values else "unset"

    diffs = tuple(f"{key}: {shown(recorded, key)} in the checkpoint, {shown(inputs, key)} now"
                  for key in sorted(set(recorded) | set(inputs))
                  if recorded.get(key, _UNSET) != inputs.get(key, _UNSET))
    return Decision("refuse", path, epoch, diffs)


def refusal(decision: Decision, output_dir: Path) -> str:
    return (f"{decision.path} was trained with other settings ({'; '.join(decision.differences)}). "
            f"Its weights would not be what this spec describes. Choose a new output_dir "
            f"(--output-dir DIR), or start afresh in {output_dir} with --set train.resume=never "
            "(deletes its checkpoints)")
