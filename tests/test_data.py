"""Tests for csgm.data: the IDX reader, one split of IDX files, and load_dataset."""

from __future__ import annotations

import gzip
import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pytest

from csgm.data import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    DataError,
    Dataset,
    load_dataset,
    read_idx,
    read_split,
)
from csgm.config import DataConfig

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST IDX files not installed in {FASHION} (Debian package dataset-fashion-mnist)")


def idx_bytes(magic: int, dims: Sequence[int], data: Optional[bytes] = None) -> bytes:
    """An IDX file: big-endian magic, big-endian int32 dimension sizes, then the bytes."""
    if data is None:
        data = bytes(i % 251 for i in range(int(np.prod(dims))))
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in dims)
    return header + data


def write_idx(path: Path, magic: int, dims: Sequence[int], data: Optional[bytes] = None, *,
              gz: bool = False, extra: bytes = b"", cut: int = 0) -> Path:
    """Write an IDX file; ``extra`` appends trailing bytes, ``cut`` drops bytes from the end."""
    raw = idx_bytes(magic, dims, data) + extra
    if cut:
        raw = raw[:-cut]
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_split(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool = True) -> None:
    suffix = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", IMAGES_MAGIC, images.shape,
              images.astype(np.uint8).tobytes(), gz=gz)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", LABELS_MAGIC, labels.shape,
              labels.astype(np.uint8).tobytes(), gz=gz)


def random_split(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, size=n, dtype=np.uint8))


# --------------------------------------------------------------------------------------------
# read_idx
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("name", ["images", "images.gz"])  # gzip is told by content, not by name
def test_read_images_exact(tmp_path: Path, gz: bool, name: str) -> None:
    images, _ = random_split(7)
    path = write_idx(tmp_path / name, IMAGES_MAGIC, images.shape, images.tobytes(), gz=gz)
    got = read_idx(path, IMAGES_MAGIC, (28, 28))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, images)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_read_labels_exact(tmp_path: Path, gz: bool) -> None:
    labels = np.arange(10, dtype=np.uint8)
    path = write_idx(tmp_path / "labels", LABELS_MAGIC, labels.shape, labels.tobytes(), gz=gz)
    np.testing.assert_array_equal(read_idx(path, LABELS_MAGIC, ()), labels)


def test_read_empty_file_of_zero_images(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "images", IMAGES_MAGIC, (0, 28, 28))
    assert read_idx(path, IMAGES_MAGIC, (28, 28)).shape == (0, 28, 28)


BAD_IDX = [
    # (writer kwargs, expected magic, item shape, message)
    pytest.param(dict(magic=IMAGES_MAGIC, dims=(3, 28, 28), cut=3 * 784 + 5), IMAGES_MAGIC, (28, 28),
                 r"truncated: 11 bytes is shorter than an IDX header\. Download the file again",
                 id="truncated-header"),
    pytest.param(dict(magic=IMAGES_MAGIC, dims=(3, 28, 28), cut=3 * 784 + 16), IMAGES_MAGIC, (28, 28),
                 r"truncated: 0 bytes is shorter than an IDX header", id="empty-file"),
    pytest.param(dict(magic=IMAGES_MAGIC, dims=(3, 28, 28), cut=10), IMAGES_MAGIC, (28, 28),
                 r"truncated: the header announces 3 images \(2352 bytes\) but 2342 bytes follow\. "
                 r"Download the file again", id="truncated-body"),
    pytest.param(dict(magic=IMAGES_MAGIC, dims=(3, 28, 28), cut=10, gz=True), IMAGES_MAGIC, (28, 28),
                 r"truncated: the header announces 3 images", id="truncated-body-gzip"),
    pytest.param(dict(magic=IMAGES_MAGIC, dims=(3, 28, 28), extra=b"\0\0"), IMAGES_MAGIC, (28, 28),
                 r"has trailing bytes: the header announces 3 images \(2352 bytes\) but 2354 bytes follow",
                 id="trailing-bytes"),
    pytest.param(dict(magic=LABELS_MAGIC, dims=(3,), extra=b"\1"), LABELS_MAGIC, (),
                 r"has trailing bytes: the header announces 3 labels \(3 bytes\) but 4 bytes follow",
                 id="labels-trailing-bytes"),
    pytest.param(dict(magic=LABELS_MAGIC, dims=(900,)), IMAGES_MAGIC, (28, 28),
                 r"wrong magic number 0x00000801, expected 0x00000803 for an IDX images file\. "
                 r"Check that this is the images file", id="labels-given-as-images"),
    pytest.param(dict(magic=LABELS_MAGIC, dims=(5,)), IMAGES_MAGIC, (28, 28),
                 r"wrong magic number 0x00000801", id="tiny-labels-given-as-images"),
    pytest.param(dict(magic=IMAGES_MAGIC, dims=(1, 28, 28)), LABELS_MAGIC, (),
                 r"wrong magic number 0x00000803, expected 0x00000801 for an IDX labels file",
                 id="images-given-as-labels"),
    pytest.param(dict(magic=0x12345678, dims=(1, 28, 28)), IMAGES_MAGIC, (28, 28),
                 r"wrong magic number 0x12345678", id="garbage-magic"),
    pytest.param(dict(magic=IMAGES_MAGIC, dims=(2, 32, 32)), IMAGES_MAGIC, (28, 28),
                 r"images of shape \(32, 32\), expected \(28, 28\)\. Only 28x28 MNIST-format data is supported",
                 id="32x32"),
    pytest.param(dict(magic=IMAGES_MAGIC, dims=(2, 28, 27)), IMAGES_MAGIC, (28, 28),
                 r"images of shape \(28, 27\), expected \(28, 28\)", id="28x27"),
]


@pytest.mark.parametrize("kwargs, magic, shape, message", BAD_IDX)
def test_bad_idx(tmp_path: Path, kwargs, magic: int, shape, message: str) -> None:
    kwargs = dict(kwargs)
    path = write_idx(tmp_path / "file-ubyte", kwargs.pop("magic"), kwargs.pop("dims"), **kwargs)
    with pytest.raises(DataError, match="^" + re.escape(str(path)) + ": " + message):
        read_idx(path, magic, shape)


@pytest.mark.parametrize("damage", ["flip-body", "cut-gzip"])
def test_corrupt_gzip(tmp_path: Path, damage: str) -> None:
    raw = bytearray(gzip.compress(idx_bytes(IMAGES_MAGIC, (5, 28, 28), bytes(range(256)) * 15 + bytes(80))))
    if damage == "flip-body":
        for i in range(20, 40):
            raw[i] ^= 0xFF
    else:
        raw = raw[: len(raw) // 2]
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="^" + re.escape(str(path)) + r": corrupt gzip data .*Download the file again"):
        read_idx(path, IMAGES_MAGIC, (28, 28))


def test_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=re.escape(str(tmp_path)) + r": cannot read .*Check data\.path"):
        read_idx(tmp_path, IMAGES_MAGIC, (28, 28))  # a folder, not a file


# --------------------------------------------------------------------------------------------
# read_split
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_read_split(tmp_path: Path, gz: bool) -> None:
    images, labels = random_split(12)
    write_split(tmp_path, "train", images, labels, gz=gz)
    got_images, got_labels = read_split(tmp_path, "train")
    assert got_images.shape == (12, 784) and got_images.dtype == np.uint8
    np.testing.assert_array_equal(got_images, images.reshape(12, 784))
    np.testing.assert_array_equal(got_labels, labels)


def test_read_split_prefers_gzip(tmp_path: Path) -> None:
    images, labels = random_split(4)
    write_split(tmp_path, "t10k", images, labels, gz=True)
    write_split(tmp_path, "t10k", images[:2], labels[:2], gz=False)
    assert len(read_split(tmp_path, "t10k")[0]) == 4


def _count_mismatch(folder: Path) -> str:
    images, labels = random_split(5)
    write_split(folder, "train", images, labels[:4])
    return str(folder / "train-labels-idx1-ubyte.gz")


def _label_too_big(folder: Path) -> str:
    images, labels = random_split(5)
    labels[2] = 10
    write_split(folder, "train", images, labels)
    return str(folder / "train-labels-idx1-ubyte.gz")


def _labels_as_images(folder: Path) -> str:
    images, labels = random_split(20)
    write_split(folder, "train", images, labels)
    (folder / "train-images-idx3-ubyte.gz").write_bytes((folder / "train-labels-idx1-ubyte.gz").read_bytes())
    return str(folder / "train-images-idx3-ubyte.gz")


def _missing_labels(folder: Path) -> str:
    images, labels = random_split(5)
    write_split(folder, "train", images, labels)
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    return str(folder)


def _missing_images(folder: Path) -> str:
    images, labels = random_split(5)
    write_split(folder, "train", images, labels)
    (folder / "train-images-idx3-ubyte.gz").unlink()
    return str(folder)


def _wrong_size_images(folder: Path) -> str:
    write_idx(folder / "train-images-idx3-ubyte", IMAGES_MAGIC, (2, 32, 32))
    write_idx(folder / "train-labels-idx1-ubyte", LABELS_MAGIC, (2,), b"\1\2")
    return str(folder / "train-images-idx3-ubyte")


BAD_SPLITS = [
    pytest.param(_count_mismatch, r"4 labels for 5 images in train-images-idx3-ubyte\.gz\. "
                 r"Use the labels file that belongs to these images", id="count-mismatch"),
    pytest.param(_label_too_big, r"label 10 outside 0\.\.9\. Check the file", id="label-10"),
    pytest.param(_labels_as_images, r"wrong magic number 0x00000801, expected 0x00000803", id="labels-as-images"),
    pytest.param(_missing_labels, r"no train-labels-idx1-ubyte\.gz or train-labels-idx1-ubyte\. "
                 r"data\.source 'idx' needs", id="missing-labels"),
    pytest.param(_missing_images, r"no train-images-idx3-ubyte\.gz or train-images-idx3-ubyte\.", id="missing-images"),
    pytest.param(_wrong_size_images, r"images of shape \(32, 32\)", id="32x32"),
]


@pytest.mark.parametrize("make, message", BAD_SPLITS)
def test_bad_split(tmp_path: Path, make, message: str) -> None:
    named = make(tmp_path)
    with pytest.raises(DataError, match="^" + re.escape(named) + ": " + message):
        read_split(tmp_path, "train")


# --------------------------------------------------------------------------------------------
# load_dataset: the embedded sample
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample() -> Dataset:
    return load_dataset(DataConfig(source="sample"))


def _row_hashes(rows: np.ndarray) -> Counter:
    return Counter(hashlib.sha1(r.tobytes()).hexdigest() for r in rows)


def test_sample_split_sizes(sample: Dataset) -> None:
    assert sample.train.shape == (4000, 784)
    assert sample.heldout.shape == (1000, 784)
    assert sample.train.dtype == np.uint8 and sample.heldout.dtype == np.uint8
    assert sample.train.flags.c_contiguous and sample.heldout.flags.c_contiguous
    assert "4000 training, 0 validation, 1000 held-out" in sample.description
    assert 0 < sample.train.max() <= 255


def test_sample_deterministic(sample: Dataset) -> None:
    again = load_dataset(DataConfig(source="sample"))
    np.testing.assert_array_equal(again.train, sample.train)
    np.testing.assert_array_equal(again.heldout, sample.heldout)


def test_sample_split_is_partition(sample: Dataset) -> None:
    """train + heldout is exactly the 5,000 sample rows (multiset of rows), with no row in both."""
    from csgm.data import read_sample, sample_file

    all_images, _ = read_sample(sample_file())
    assert _row_hashes(all_images) == _row_hashes(sample.train) + _row_hashes(sample.heldout)
    # duplicates in the source aside, no held-out image may be a training image
    source_counts = _row_hashes(all_images)
    shared = set(_row_hashes(sample.train)) & set(_row_hashes(sample.heldout))
    assert all(source_counts[h] > 1 for h in shared)


def test_sample_validation_apart_from_test_and_training(sample: Dataset) -> None:
    """Validation digits: after the test digits in the fixed order, never trained on nor tested."""
    split = load_dataset(DataConfig(source="sample", heldout=100, validation=200))
    assert split.heldout.shape == (100, 784) and split.validation.shape == (200, 784)
    assert len(split.train) == 4700
    np.testing.assert_array_equal(split.heldout, sample.heldout[:100])       # the test digits stay put
    np.testing.assert_array_equal(split.validation, sample.heldout[100:300])
    train, val, test = (set(_row_hashes(x)) for x in (split.train, split.validation, split.heldout))
    assert not (train & val) and not (train & test) and not (val & test)


def test_sample_too_much_validation() -> None:
    with pytest.raises(DataError, match=r"^data\.heldout \+ data\.validation: 5000 leaves"):
        load_dataset(DataConfig(source="sample", heldout=1000, validation=4000))


def test_idx_validation_follows_heldout(small_folder: Path) -> None:
    ds = load_dataset(DataConfig(source="idx", path=str(small_folder), heldout=3, validation=2))
    test_images = random_split(8, seed=2)[0].reshape(8, 784)
    np.testing.assert_array_equal(ds.validation, test_images[3:5])
    np.testing.assert_array_equal(ds.heldout, test_images[:3])
    assert len(ds.train) == 30


def test_sample_heldout_does_not_depend_on_train_limit(sample: Dataset) -> None:
    limited = load_dataset(DataConfig(source="sample", train_limit=50))
    assert limited.train.shape == (50, 784)
    np.testing.assert_array_equal(limited.train, sample.train[:50])
    np.testing.assert_array_equal(limited.heldout, sample.heldout)


def test_sample_smaller_heldout_is_prefix(sample: Dataset) -> None:
    small = load_dataset(DataConfig(source="sample", heldout=10))
    np.testing.assert_array_equal(small.heldout, sample.heldout[:10])
    assert len(small.train) == 4990


def test_sample_heldout_too_large() -> None:
    with pytest.raises(DataError, match=r"^data\.heldout \+ data\.validation: 5000 leaves no training images "
                       r"out of the 5000 sample digits\. Keep their sum below 5000"):
        load_dataset(DataConfig(source="sample", heldout=5000))


# --------------------------------------------------------------------------------------------
# load_dataset: IDX folders (synthetic and the real Fashion-MNIST)
# --------------------------------------------------------------------------------------------

@pytest.fixture()
def small_folder(tmp_path: Path) -> Path:
    write_split(tmp_path, "train", *random_split(30, seed=1))
    write_split(tmp_path, "t10k", *random_split(8, seed=2), gz=False)
    return tmp_path


@pytest.mark.parametrize("heldout, train_limit, n_train, n_heldout", [
    (8, None, 30, 8), (3, None, 30, 3), (1, 10, 10, 1), (8, 100, 30, 8),
])
def test_idx_small(small_folder: Path, heldout: int, train_limit, n_train: int, n_heldout: int) -> None:
    ds = load_dataset(DataConfig(source="idx", path=str(small_folder), heldout=heldout, train_limit=train_limit))
    train_images, _ = random_split(30, seed=1)
    test_images, _ = random_split(8, seed=2)
    np.testing.assert_array_equal(ds.train, train_images.reshape(30, 784)[:n_train])
    np.testing.assert_array_equal(ds.heldout, test_images.reshape(8, 784)[:n_heldout])


def test_idx_heldout_too_large(small_folder: Path) -> None:
    with pytest.raises(DataError, match=r"^data\.heldout \+ data\.validation: 9 is more than the 8 t10k "
                       r"images in .*Keep their sum at most 8"):
        load_dataset(DataConfig(source="idx", path=str(small_folder), heldout=9))


def test_idx_not_a_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=r"^data\.path: " + re.escape(str(missing)) + r" is not a folder"):
        load_dataset(DataConfig(source="idx", path=str(missing)))


def test_idx_missing_test_split(tmp_path: Path) -> None:
    write_split(tmp_path, "train", *random_split(3))
    with pytest.raises(DataError, match="^" + re.escape(str(tmp_path)) + r": no t10k-images-idx3-ubyte\.gz"):
        load_dataset(DataConfig(source="idx", path=str(tmp_path), heldout=1))


@pytest.fixture(scope="module")
def fashion() -> Dataset:
    return load_dataset(DataConfig(source="idx", path=str(FASHION), heldout=10000))


@needs_fashion
def test_fashion_counts(fashion: Dataset) -> None:
    assert fashion.train.shape == (60000, 784) and fashion.train.dtype == np.uint8
    assert fashion.heldout.shape == (10000, 784)


@needs_fashion
def test_fashion_labels() -> None:
    images, labels = read_split(FASHION, "t10k")
    assert images.shape == (10000, 784)
    assert sorted(Counter(labels.tolist()).values()) == [1000] * 10


@needs_fashion
@pytest.mark.parametrize("heldout", [1, 300, 1000])
def test_fashion_heldout_is_first_of_t10k(fashion: Dataset, heldout: int) -> None:
    ds = load_dataset(DataConfig(source="idx", path=str(FASHION), heldout=heldout, train_limit=5))
    np.testing.assert_array_equal(ds.heldout, fashion.heldout[:heldout])
    np.testing.assert_array_equal(ds.train, fashion.train[:5])


@needs_fashion
def test_fashion_heldout_too_large() -> None:
    with pytest.raises(DataError, match=r"^data\.heldout \+ data\.validation: 10001 is more than the 10000 t10k"):
        load_dataset(DataConfig(source="idx", path=str(FASHION), heldout=10001))
