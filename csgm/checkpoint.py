"""Checkpoints that are either complete or absent.

Each checkpoint is a folder ``epoch-00042/`` (or, stopped on SIGTERM inside epoch 42 after global step
123, ``epoch-00042-step-000000123/``) holding TensorFlow's checkpoint files and
``meta.json`` (epoch, step, model shape, the inputs of csgm.resume and their digest, resolved
spec, the SHA-256 of each TensorFlow file; sealed with the digest of its own content,
common.records). It is written under a temporary name and renamed into place only when complete, so a crash
mid-write leaves nothing that could be loaded.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf

from common.records import sha256_file, write_sealed_json
from csgm.runner import Runner
from csgm.resume import CheckpointError, checkpoint_name, complete_checkpoints, latest, read_meta

__all__ = ["CheckpointError", "CheckpointStore", "read_meta"]


class CheckpointStore:
    def __init__(self, folder: Path, keep: int = 3, runner: Optional[Runner] = None, **trackables: Any):
        """``runner`` (csgm.runner): how TensorFlow runs in this process; the files are the same."""
        self.folder = Path(folder)
        self.keep = keep
        self.runner = runner or Runner()
        self.checkpoint = self.runner.checkpoint(**trackables)

    def complete(self) -> List[Path]:
        """Finished checkpoints, oldest first (temporary folders of interrupted writes are ignored)."""
        return complete_checkpoints(self.folder)

    def latest(self) -> Optional[Tuple[Path, Dict[str, Any]]]:
        return latest(self.folder)

    def clear(self) -> None:
        """Delete every checkpoint (train.resume: never)."""
        for old in self.complete():
            shutil.rmtree(old, ignore_errors=True)

    def restore(self, path: Path, partial: bool = False) -> None:
        """Load ``path`` into the trackables; ``partial`` allows the checkpoint to hold more
        (the recovery stage loads only the model of a training checkpoint)."""
        verify_files(path)
        try:
            self.runner.read(self.checkpoint, str(path / "ckpt"), partial)
        except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:  # IndexError: a short read
            raise CheckpointError(f"{path}: cannot restore this checkpoint ({first_line(e)}). "
                                  "Delete it to start from the previous one") from None

    def save(self, epoch: int, meta: Dict[str, Any], step: Optional[int] = None) -> Path:
        """Write the checkpoint of the end of ``epoch`` or, with ``step``, of that global step inside
        it. A signal or a full disk during the write leaves only a temporary folder, never loaded."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = checkpoint_name(epoch, step)
        final = self.folder / name
        tmp = self.folder / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            self.runner.write(self.checkpoint, str(tmp / "ckpt"))
            files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.name.startswith("ckpt")}
            write_sealed_json(tmp / "meta.json", dict(meta, epoch=epoch, files=files))
        except (tf.errors.OpError, OSError) as e:
            shutil.rmtree(tmp, ignore_errors=True)  # never leave a partial checkpoint behind
            full = "No space left" in str(e) or getattr(e, "errno", None) == errno.ENOSPC
            raise OSError(errno.ENOSPC if full else errno.EIO,
                          "No space left on device" if full else first_line(e), str(tmp)) from None
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        done = self.complete()
        # The end of an epoch supersedes the mid-epoch checkpoints before it.
        superseded = [] if step is not None else [p for p in done[:-1] if "-step-" in p.name]
        for old in superseded + [p for p in done[:-self.keep] if p not in superseded]:
            shutil.rmtree(old, ignore_errors=True)
        return final


def verify_files(path: Path) -> None:
    """Refuse a checkpoint whose TensorFlow files differ from the digests its meta.json records:
    TensorFlow's own checksums miss a truncated data file (a short read)."""
    for name, expected in read_meta(path)["files"].items():
        file = path / name
        if not file.is_file() or sha256_file(file) != expected:
            raise CheckpointError(f"{file}: {'missing' if not file.is_file() else 'truncated or changed'} since "
                                  "the checkpoint was written (its sha256 differs from the one in meta.json). "
                                  "Delete this checkpoint folder to use the previous one")


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
