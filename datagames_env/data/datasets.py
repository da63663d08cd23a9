"""Datasets of the environment: one in-memory pool of features and labels, and a fixed seeded split.

Every source ends up as one :class:`Dataset` (float32 features, int64 labels, class names); the environment
then splits it once with :func:`split_dataset` into the stream pool the robots observe, a validation part
(confusion matrices) and a test part (final accuracy).

| name            | where the data comes from                                       | features            |
|-----------------|-----------------------------------------------------------------|---------------------|
| ``digits``      | scikit-learn's 8x8 digits, shipped with scikit-learn (no files) | (1797, 64) in [0,1] |
| ``mnist``       | ``<data_dir>/MNIST``: official gzip IDX files                   | (n, 1, 28, 28)      |
| ``kmnist``      | ``<data_dir>/KMNIST``: official gzip IDX files                  | (n, 1, 28, 28)      |
| ``fashion_mnist`` | ``<data_dir>/FashionMNIST``: official gzip IDX files          | (n, 1, 28, 28)      |
| ``cifar10``     | ``<data_dir>/cifar-10-batches-py``: official python batches     | (n, 3, 32, 32)      |
| ``*.npz`` path  | arrays ``features`` (or ``x``), ``labels`` (or ``y``), optional ``class_names`` | as stored |

``data_dir`` is the argument, else ``$DATAGAMES_DATA_DIR``, else a per-user cache folder
(:func:`resolve_data_dir`). IDX sources load every official part that is complete (``train`` then ``t10k``),
so a folder holding only the 10,000-image test files gives a 10,000-image dataset. With ``download=True`` the
missing official files are fetched (:func:`download_dataset`): md5-checked against the published checksums,
written atomically, never left half-written. Every problem with the data raises :class:`DatasetError`, whose
message names the file, array, key or shape that is wrong.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar, TypedDict

import numpy as np

__all__ = [
    "CLASS_NAMES",
    "DATASET_NAMES",
    "DATASET_SOURCES",
    "DATA_DIR_ENV_VAR",
    "Dataset",
    "DatasetError",
    "DatasetSource",
    "DatasetSplits",
    "download_dataset",
    "from_arrays",
    "load_dataset",
    "load_npz",
    "read_idx",
    "resolve_data_dir",
    "split_dataset",
]

DATA_DIR_ENV_VAR = "DATAGAMES_DATA_DIR"


class DatasetError(ValueError):
    """A data problem: missing or corrupt file, wrong array shape or dtype, bad key, failed download."""


# --------------------------------------------------------------------------------------------------------------
# The in-memory dataset
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """Features and labels of one dataset, validated on construction.

    ``features`` is float32: images ``(n, channels, height, width)`` scaled to [0, 1], or vectors ``(n, d)``.
    ``labels`` is int64 ``(n,)`` with values in ``0 .. n_classes - 1``. A class may have no sample (a subset),
    but every label has a name.
    """

    name: str
    features: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        # Construction is the one place where the invariants are checked, so every consumer can rely on them.
        if not isinstance(self.features, np.ndarray) or self.features.dtype != np.float32:
            raise DatasetError(f"dataset {self.name!r}: features must be a float32 numpy array, got {_describe(self.features)}")
        if self.features.ndim not in (2, 4):
            raise DatasetError(
                f"dataset {self.name!r}: features must be (n, d) vectors or (n, channels, height, width) images, "
                f"got shape {self.features.shape}"
            )
        if not isinstance(self.labels, np.ndarray) or self.labels.dtype != np.int64 or self.labels.ndim != 1:
            raise DatasetError(f"dataset {self.name!r}: labels must be a 1-D int64 numpy array, got {_describe(self.labels)}")
        if len(self.labels) != len(self.features):
            raise DatasetError(
                f"dataset {self.name!r}: labels has {len(self.labels)} entries but features has {len(self.features)} "
                f"samples (features shape {self.features.shape}, labels shape {self.labels.shape})"
            )
        if not isinstance(self.class_names, tuple) or not all(isinstance(c, str) for c in self.class_names):
            raise DatasetError(f"dataset {self.name!r}: class_names must be a tuple of str, got {self.class_names!r}")
        if len(self.class_names) == 0:
            raise DatasetError(f"dataset {self.name!r}: class_names is empty")
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DatasetError(
                f"dataset {self.name!r}: labels range {self.labels.min()}..{self.labels.max()} is outside "
                f"0..{len(self.class_names) - 1} (class_names has {len(self.class_names)} entries)"
            )

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_samples(self) -> int:
        return int(self.features.shape[0])

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.features.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.features.ndim == 4

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """How a sample looks as an image (privacy patches, conv nets): images as they are, square vectors
        (digits: 64 = 8x8) as 1-channel images, anything else None."""
        if self.is_image:
            return self.feature_shape  # type: ignore[return-value]
        side = math.isqrt(self.feature_shape[0])
        return (1, side, side) if side * side == self.feature_shape[0] else None

    def as_images(self) -> Dataset:
        """The same samples as ``(n, C, H, W)`` images (see :attr:`image_shape`)."""
        if self.is_image:
            return self
        shape = self.image_shape
        if shape is None:
            raise DatasetError(f"dataset {self.name!r}: vectors of length {self.feature_shape[0]} are not square images")
        return Dataset(self.name, np.ascontiguousarray(self.features.reshape(self.n_samples, *shape)), self.labels,
                       self.class_names)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Dataset:
        """The samples at ``indices`` (integer indices, or a boolean mask of length ``n_samples``), same classes."""
        index_array = np.asarray(indices)
        if index_array.dtype == bool:
            if index_array.shape != (self.n_samples,):
                raise DatasetError(
                    f"subset of {self.name!r}: boolean mask has shape {index_array.shape}, expected ({self.n_samples},)"
                )
            index_array = np.flatnonzero(index_array)
        if index_array.size == 0:
            index_array = index_array.astype(np.int64)  # an empty list arrives as float64
        if index_array.ndim != 1 or index_array.dtype.kind not in "iu":
            raise DatasetError(f"subset of {self.name!r}: indices must be a 1-D integer array, got {_describe(index_array)}")
        if index_array.size and (index_array.min() < -self.n_samples or index_array.max() >= self.n_samples):
            raise DatasetError(
                f"subset of {self.name!r}: indices range {index_array.min()}..{index_array.max()} is outside "
                f"0..{self.n_samples - 1}"
            )
        return Dataset(self.name, self.features[index_array], self.labels[index_array], self.class_names)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n_samples={self.n_samples}, feature_shape={self.feature_shape}, "
            f"n_classes={self.n_classes})"
        )


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array of dtype {value.dtype} and shape {value.shape}"
    return f"{type(value).__name__}"


def from_arrays(
    features: Any,
    labels: Any,
    class_names: Sequence[str] | np.ndarray | None = None,
    name: str = "custom",
) -> Dataset:
    """Validate user arrays into a :class:`Dataset`.

    ``features``: numeric and finite, ``(n, d)`` vectors, ``(n, H, W)`` grey images (a channel axis is added) or
    ``(n, C, H, W)`` images; uint8 is scaled by 1/255, everything is stored as float32. ``labels``: 1-D integers,
    one per sample, in ``0 .. K-1``. Without ``class_names`` every class ``0 .. max(labels)`` must occur (a gap
    is more likely a labelling mistake than an absent class); with ``class_names`` absent classes are fine but
    there must be a name for every label.
    """
    feature_array = np.asarray(features)
    label_array = np.asarray(labels)

    if feature_array.dtype.kind not in "biuf":
        raise DatasetError(f"{name}: features must be numeric, got {_describe(feature_array)}")
    if feature_array.ndim not in (2, 3, 4):
        raise DatasetError(
            f"{name}: features must be 2-D (n, d), 3-D (n, height, width) or 4-D (n, channels, height, width), "
            f"got shape {feature_array.shape}"
        )
    n_samples = feature_array.shape[0]
    if n_samples == 0:
        raise DatasetError(f"{name}: features has no samples (shape {feature_array.shape})")
    if 0 in feature_array.shape[1:]:
        raise DatasetError(f"{name}: features has samples of shape {feature_array.shape[1:]}, which hold no value")
    if feature_array.ndim == 3:
        feature_array = feature_array[:, None, :, :]

    if label_array.ndim != 1:
        raise DatasetError(f"{name}: labels must be 1-D (one integer per sample), got shape {label_array.shape}")
    if label_array.dtype.kind not in "iu":
        raise DatasetError(f"{name}: labels must be integers, got dtype {label_array.dtype}")
    if len(label_array) != n_samples:
        raise DatasetError(
            f"{name}: labels has {len(label_array)} entries but features has {n_samples} samples "
            f"(features shape {np.shape(features)}, labels shape {label_array.shape})"
        )
    if label_array.min() < 0:
        raise DatasetError(f"{name}: labels must be >= 0, got minimum {label_array.min()}")
    max_label = int(label_array.max())

    if class_names is None:
        if max_label >= n_samples:  # checked first: np.arange(max_label + 1) of a label 2**40 does not fit in memory
            raise DatasetError(
                f"{name}: labels go up to {max_label} but there are {n_samples} samples, so classes 0..{max_label} "
                f"cannot all occur; pass class_names to declare the classes, or relabel to 0..K-1"
            )
        missing = np.setdiff1d(np.arange(max_label + 1), label_array)
        if missing.size:
            raise DatasetError(
                f"{name}: labels must cover every class 0..{max_label}, classes {missing.tolist()} have no sample; "
                f"pass class_names to declare classes that are absent"
            )
        names = tuple(str(i) for i in range(max_label + 1))
    else:
        names = _as_class_names(class_names, name)
        if len(names) < max_label + 1:
            raise DatasetError(
                f"{name}: class_names has {len(names)} entries but labels go up to {max_label} "
                f"(need at least {max_label + 1} names)"
            )

    if feature_array.dtype == np.uint8:
        feature_float = feature_array.astype(np.float32) / np.float32(255.0)
    else:
        with np.errstate(over="ignore"):  # float64 beyond float32 range becomes inf, reported just below
            feature_float = feature_array.astype(np.float32)
    if not np.isfinite(feature_float).all():
        bad = int(np.count_nonzero(~np.isfinite(feature_float)))
        raise DatasetError(f"{name}: features has {bad} non-finite value(s) (NaN or inf, or beyond float32 range)")

    return Dataset(
        name=str(name),
        features=np.ascontiguousarray(feature_float),
        labels=label_array.astype(np.int64),
        class_names=names,
    )


def _as_class_names(class_names: Sequence[str] | np.ndarray, name: str) -> tuple[str, ...]:
    if isinstance(class_names, (str, bytes)):
        raise DatasetError(f"{name}: class_names must be a sequence of names, got the single string {class_names!r}")
    names_array = np.asarray(class_names)
    if names_array.ndim != 1 or names_array.dtype.kind not in "USO":
        raise DatasetError(f"{name}: class_names must be a 1-D sequence of strings, got {_describe(names_array)}")
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names_array.tolist())
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise DatasetError(f"{name}: class_names has duplicate entries {duplicates}")
    return names


# --------------------------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSplits:
    """Disjoint, sorted int64 index arrays that together cover the dataset."""

    pool: np.ndarray  # the stream pool the robots observe
    validation: np.ndarray  # where confusion matrices are measured
    test: np.ndarray  # final accuracy


def split_dataset(
    labels: np.ndarray,
    validation_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> DatasetSplits:
    """Split indices ``0 .. len(labels)-1`` into pool / validation / test, stratified by class when possible.

    Stratified (scikit-learn ``train_test_split`` with ``stratify``) when every class has at least two samples
    expected in each part; otherwise a plain seeded permutation, because stratifying a class with one or two
    samples fails or is meaningless. The same labels and seed always give the same split.
    """
    # Deferred: scikit-learn is slow to import and most callers of this module never split.
    from sklearn.model_selection import train_test_split

    label_array = np.asarray(labels)
    if label_array.ndim != 1 or label_array.dtype.kind not in "iu":
        raise DatasetError(f"split_dataset: labels must be a 1-D integer array, got {_describe(label_array)}")
    for fraction_name, fraction in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise DatasetError(f"split_dataset: {fraction_name} must be in [0, 1), got {fraction}")
    n_samples = len(label_array)
    n_test = round(n_samples * test_fraction)
    n_validation = round(n_samples * validation_fraction)
    n_pool = n_samples - n_test - n_validation
    if n_pool < 1:
        raise DatasetError(
            f"split_dataset: validation_fraction={validation_fraction} and test_fraction={test_fraction} of "
            f"{n_samples} samples leave no sample for the pool"
        )

    rng = np.random.default_rng(seed)
    test_state, validation_state = (int(s) for s in rng.integers(0, 2**31 - 1, size=2))
    all_indices = np.arange(n_samples, dtype=np.int64)
    _, class_counts = np.unique(label_array, return_counts=True)
    smallest_part = min(f for f in (1.0 - validation_fraction - test_fraction, validation_fraction, test_fraction) if f > 0)
    stratify = bool(class_counts.min() * smallest_part >= 2.0)

    if stratify:
        rest, test = _split_off(all_indices, label_array, n_test, test_state, train_test_split)
        pool, validation = _split_off(rest, label_array[rest], n_validation, validation_state, train_test_split)
    else:
        order = rng.permutation(n_samples)
        test, validation, pool = order[:n_test], order[n_test : n_test + n_validation], order[n_test + n_validation :]

    return DatasetSplits(
        pool=np.sort(pool).astype(np.int64),
        validation=np.sort(validation).astype(np.int64),
        test=np.sort(test).astype(np.int64),
    )


def _split_off(indices: np.ndarray, labels: np.ndarray, n_split: int, state: int, train_test_split: Any) -> tuple[np.ndarray, np.ndarray]:
    if n_split == 0:
        return indices, np.empty(0, dtype=np.int64)
    kept, split = train_test_split(indices, test_size=n_split, random_state=state, stratify=labels)
    return kept, split


# --------------------------------------------------------------------------------------------------------------
# Sources and where their files live
# --------------------------------------------------------------------------------------------------------------


class DatasetSource(TypedDict):
    folder: str  # sub-folder of the data directory
    files: tuple[str, ...]  # the official file names, in download order
    md5s: dict[str, str]  # published md5 per file name
    base_url: str  # official mirror; file URL = base_url + file name
    format: str  # "idx" (gzip IDX image/label pairs) or "cifar" (python pickle batches in a tar.gz)


_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# Published checksums, as in torchvision's dataset classes (MNIST/KMNIST test files also checked in shared/datasets).
DATASET_SOURCES: dict[str, DatasetSource] = {
    "mnist": {
        "folder": "MNIST",
        "files": _IDX_FILES,
        "md5s": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "base_url": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "format": "idx",
    },
    "kmnist": {
        "folder": "KMNIST",
        "files": _IDX_FILES,
        "md5s": {
            "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
            "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
            "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
            "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
        },
        "base_url": "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        "format": "idx",
    },
    "fashion_mnist": {
        "folder": "FashionMNIST",
        "files": _IDX_FILES,
        "md5s": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "base_url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "format": "idx",
    },
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "files": ("cifar-10-python.tar.gz",),
        "md5s": {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
        "base_url": "https://www.cs.toronto.edu/~kriz/",
        "format": "cifar",
    },
}

DATASET_NAMES: tuple[str, ...] = ("digits", *DATASET_SOURCES)

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "digits": tuple(str(d) for d in range(10)),
    "mnist": tuple(str(d) for d in range(10)),
    "kmnist": ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    # Used only when batches.meta is missing; the official file carries the same names.
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}

_IDX_PARTS = ("train", "t10k")  # official parts, loaded in this order
_CIFAR_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
_CIFAR_META = "batches.meta"
_ALIASES = {"fashionmnist": "fashion_mnist", "fmnist": "fashion_mnist", "cifar_10": "cifar10", "cifar": "cifar10"}


_PROJECT_ROOT = Path(__file__).resolve().parents[2]  # a source checkout's root (configs' relative data_dir)


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``data_dir`` if given (a relative one is tried from the working directory, then from
    the project root), else ``$DATAGAMES_DATA_DIR``, else the per-user cache folder.

    Nothing is created here; :func:`download_dataset` creates folders when it writes.
    """
    if data_dir is not None and str(data_dir) != "":
        path = Path(data_dir).expanduser()
        if not path.is_absolute() and not path.is_dir() and (_PROJECT_ROOT / path).is_dir():
            return _PROJECT_ROOT / path  # the shipped configs' ../shared/datasets, from any working directory
        return path
    from_env = os.environ.get(DATA_DIR_ENV_VAR, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("datagames_env"))


def _canonical_name(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in DATASET_NAMES:
        raise DatasetError(f"unknown dataset {name!r}: expected one of {list(DATASET_NAMES)} or a path to a .npz file")
    return key


# --------------------------------------------------------------------------------------------------------------
# File formats
# --------------------------------------------------------------------------------------------------------------

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


MAX_IDX_BYTES = 1 << 31  # 2 GiB: 40x the largest official IDX file (MNIST train images, 47 MB)
MAX_NPZ_BYTES = MAX_IDX_BYTES  # what loading an .npz may take: its arrays plus the float32 copy of the features
_IDX_MAX_DIMS = 32  # numpy 1.x's limit (numpy 2 allows 64)


def read_idx(path: str | os.PathLike[str], max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file (the MNIST family's format), gzip-compressed or plain, into a native-endian array.

    Checks the magic number (two zero bytes, a known type code, 1..32 dimensions) and that the payload holds
    exactly the bytes the header announces; a truncated or padded file raises :class:`DatasetError` naming it.
    The header is checked before the payload is read, and gzip is decompressed as a stream: a small file that
    inflates to gigabytes is refused after the header (payload over ``max_bytes``) or one byte past the payload.
    """
    file_path = Path(path)
    try:
        with open(file_path, "rb") as raw_file:
            gzipped = raw_file.read(2) == _GZIP_MAGIC  # by content, not by the name: renamed files still work
            raw_file.seek(0)
            stream = gzip.GzipFile(fileobj=raw_file) if gzipped else raw_file
            return _read_idx_stream(stream, file_path, max_bytes)
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DatasetError(f"IDX file {file_path} is a corrupt or truncated gzip stream: {error}") from error
    except OSError as error:
        raise DatasetError(f"cannot read IDX file {file_path}: {error}") from error


def _read_exactly(stream: IO[bytes], n: int) -> bytes:
    parts, left = [], n
    while left > 0:
        part = stream.read(min(left, 1 << 24))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _read_idx_stream(stream: IO[bytes], file_path: Path, max_bytes: int) -> np.ndarray:
    magic = _read_exactly(stream, 4)
    if len(magic) < 4:
        raise DatasetError(f"IDX file {file_path} is too short ({len(magic)} bytes) to hold the 4-byte magic number")
    zero_a, zero_b, type_code, n_dims = magic
    if zero_a != 0 or zero_b != 0:
        raise DatasetError(
            f"IDX file {file_path} has a wrong magic number 0x{magic.hex()}: the first two bytes must be zero"
        )
    if type_code not in _IDX_DTYPES:
        raise DatasetError(
            f"IDX file {file_path} has unknown type code 0x{type_code:02x} in magic number 0x{magic.hex()} "
            f"(known: {', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)})"
        )
    if n_dims == 0:
        raise DatasetError(f"IDX file {file_path} declares 0 dimensions in magic number 0x{magic.hex()}")
    if n_dims > _IDX_MAX_DIMS:
        raise DatasetError(f"IDX file {file_path} declares {n_dims} dimensions in magic number 0x{magic.hex()}; "
                           f"numpy arrays hold at most {_IDX_MAX_DIMS} (the MNIST family uses 1 and 3)")
    dims = _read_exactly(stream, 4 * n_dims)
    if len(dims) < 4 * n_dims:
        raise DatasetError(f"IDX file {file_path} is truncated inside its header "
                           f"({4 + len(dims)} of {4 + 4 * n_dims} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected_bytes = math.prod(shape) * dtype.itemsize  # python ints: no overflow
    if expected_bytes > max_bytes:
        raise DatasetError(f"IDX file {file_path}: its header announces shape {shape} of {dtype.name}, "
                           f"{expected_bytes} bytes, more than the limit of {max_bytes} (read_idx max_bytes)")
    payload = _read_exactly(stream, expected_bytes)
    if len(payload) < expected_bytes:
        raise DatasetError(f"IDX file {file_path} is truncated: shape {shape} of {dtype.name} needs {expected_bytes} "
                           f"payload bytes, found {len(payload)}")
    if stream.read(1):
        raise DatasetError(f"IDX file {file_path} is longer than its header says: shape {shape} of {dtype.name} "
                           f"needs {expected_bytes} payload bytes, and more follow")
    values = np.frombuffer(payload, dtype=dtype).reshape(shape)
    return values.astype(dtype.newbyteorder("="))  # copy: native byte order and a writeable array


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches without running arbitrary code: only numpy's array reconstruction is allowed."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset({
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(text, "latin1"): a pure data transform.
        ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str) -> Any:
        # Official batches were pickled by numpy 1.x as numpy.core.*; numpy 2 moved it to numpy._core.
        if module == "numpy.core" or module.startswith("numpy.core."):
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        return super().find_class(module, name)


def _read_cifar_pickle(path: Path) -> dict[Any, Any]:
    try:
        with path.open("rb") as file:
            content = _NumpyOnlyUnpickler(file, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise DatasetError(f"CIFAR file {path} is not a readable CIFAR python batch: {error}") from error
    if not isinstance(content, dict):
        raise DatasetError(f"CIFAR file {path} must hold a dict, got {type(content).__name__}")
    return content


def _pickle_key(content: Mapping[Any, Any], key: str, path: Path) -> Any:
    # Official files (pickled by Python 2) have bytes keys; files re-pickled by Python 3 may have str keys.
    for candidate in (key.encode(), key):
        if candidate in content:
            return content[candidate]
    raise DatasetError(f"CIFAR file {path} has no key {key!r} (keys: {sorted(str(k) for k in content)})")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    content = _read_cifar_pickle(path)
    data = np.asarray(_pickle_key(content, "data", path))
    labels = np.asarray(_pickle_key(content, "labels", path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"CIFAR file {path}: 'data' must be uint8 of shape (n, 3072), got {_describe(data)}")
    if labels.ndim != 1 or len(labels) != len(data) or (labels.size and labels.dtype.kind not in "iu"):
        raise DatasetError(
            f"CIFAR file {path}: 'labels' must be {len(data)} integers (one per row of 'data'), got {_describe(labels)}"
        )
    # Rows are 1024 red, 1024 green, 1024 blue values, each plane row-major: exactly (3, 32, 32).
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_npz(path: str | os.PathLike[str], max_bytes: int = MAX_NPZ_BYTES) -> Dataset:
    """Load a dataset saved with ``np.savez``: ``features`` (or ``x``), ``labels`` (or ``y``), optional ``class_names``.

    The ``.npy`` headers inside the zip are read first: object arrays (pickles) are refused, and so is a file whose
    arrays, with the float32 copy of the features, would take more than ``max_bytes`` (a compressed file of
    kilobytes can declare gigabytes). Store class names as a string array.
    """
    file_path = Path(path)
    if not file_path.is_file():
        raise DatasetError(f"npz file {file_path} does not exist")
    try:
        with zipfile.ZipFile(file_path) as archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            feature_key = next((k for k in ("features", "x") if k in members), None)
            label_key = next((k for k in ("labels", "y") if k in members), None)
            if feature_key is None or label_key is None:
                missing = "features (or x)" if feature_key is None else "labels (or y)"
                raise DatasetError(f"npz file {file_path} has no array {missing}; keys found: {sorted(members)}")
            keys = [feature_key, label_key, *(["class_names"] if "class_names" in members else [])]
            headers = {key: _npy_header(archive, members[key], file_path, key) for key in keys}
        needed = 0
        for key, (shape, dtype) in headers.items():
            size = math.prod(shape)  # python ints: no overflow
            needed += size * dtype.itemsize + (4 * size if key == feature_key else 0)
            if needed > max_bytes:
                raise DatasetError(
                    f"npz file {file_path}: array '{key}' declares shape {shape} of {dtype}; loading "
                    f"{', '.join(list(headers)[:list(headers).index(key) + 1])} needs {needed:,} bytes (features "
                    f"also as float32), more than the limit of {max_bytes:,} bytes (load_npz max_bytes)")
        with np.load(file_path, allow_pickle=False) as archive:
            features = archive[feature_key]
            labels = archive[label_key]
            class_names = archive["class_names"] if "class_names" in headers else None
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, KeyError, RuntimeError, NotImplementedError, zlib.error,
            zipfile.BadZipFile) as error:
        raise DatasetError(f"cannot read npz file {file_path}: {error}") from error
    return from_arrays(features, labels, class_names=class_names, name=file_path.stem)


def _npy_header(archive: zipfile.ZipFile, member: str, file_path: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype a ``.npy`` member of an npz declares, read without its payload."""
    with archive.open(member) as stream:
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise ValueError(f"npy format version {version} (1.0 or 2.0 expected for numeric arrays)")
        except ValueError as error:
            raise DatasetError(f"npz file {file_path}: '{key}' ({member}) is not a readable .npy array: {error}") from None
    if dtype.hasobject:
        raise DatasetError(f"npz file {file_path}: array '{key}' holds Python objects (dtype {dtype}), which only "
                           "a pickle can load; refused (store class names as a string array)")
    return tuple(int(d) for d in shape), dtype


# --------------------------------------------------------------------------------------------------------------
# Loading by name
# --------------------------------------------------------------------------------------------------------------


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> Dataset:
    """Load a dataset by name (see the module table) or from a ``.npz`` path.

    ``download=True`` first fetches the official files that are missing or corrupt (a no-op when all are there).
    """
    if not isinstance(name, str) or not name.strip():
        raise DatasetError(f"dataset name must be a non-empty string, got {name!r}")
    if name.lower().endswith(".npz") or (os.sep in name and Path(name).expanduser().is_file()):
        return load_npz(Path(name).expanduser())

    key = _canonical_name(name)
    if key == "digits":
        return _load_digits()
    if download:
        download_dataset(key, data_dir=data_dir)
    folder = resolve_data_dir(data_dir) / DATASET_SOURCES[key]["folder"]
    if DATASET_SOURCES[key]["format"] == "idx":
        return _load_idx_dataset(key, folder)
    return _load_cifar10(folder)


def _load_digits() -> Dataset:
    # Shipped inside scikit-learn: no file, no network.
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel intensities are 0..16 in this set.
    features = np.asarray(digits.data, dtype=np.float32) / np.float32(16.0)
    return from_arrays(features, np.asarray(digits.target, dtype=np.int64), CLASS_NAMES["digits"], name="digits")


def _find_file(folder: Path, file_name: str) -> Path | None:
    """The official file, or its uncompressed twin, in ``folder`` or in torchvision's ``folder/raw`` layout."""
    plain_name = file_name.removesuffix(".gz")
    for directory in (folder, folder / "raw"):
        for candidate in (file_name, plain_name):
            if (directory / candidate).is_file():
                return directory / candidate
    return None


def _missing_data_error(key: str, folder: Path, expected: Iterable[str]) -> DatasetError:
    return DatasetError(
        f"no {key} data found in {folder}: expected the official files {', '.join(expected)}. "
        f"Fix: pass data_dir=<folder that contains {DATASET_SOURCES[key]['folder']}/>, or set "
        f"${DATA_DIR_ENV_VAR}, or use download=True to fetch them (md5-checked)."
    )


def _load_idx_dataset(key: str, folder: Path) -> Dataset:
    image_parts: list[np.ndarray] = []
    label_parts: list[np.ndarray] = []
    for part in _IDX_PARTS:
        images_path = _find_file(folder, f"{part}-images-idx3-ubyte.gz")
        labels_path = _find_file(folder, f"{part}-labels-idx1-ubyte.gz")
        if images_path is None and labels_path is None:
            continue
        if images_path is None or labels_path is None:
            present, absent = (images_path, "images") if images_path else (labels_path, "labels")
            warnings.warn(f"{key}: skipping the {part} part: found {present} but not its {absent} file", stacklevel=3)
            continue
        images = read_idx(images_path)
        labels = read_idx(labels_path)
        if images.dtype != np.uint8 or images.ndim != 3:
            raise DatasetError(f"{images_path}: expected uint8 images of shape (n, height, width), got {_describe(images)}")
        if 0 in images.shape[1:]:
            raise DatasetError(f"{images_path}: images of size {images.shape[1:]} (height, width) hold no pixel")
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise DatasetError(f"{labels_path}: expected uint8 labels of shape (n,), got {_describe(labels)}")
        if len(images) != len(labels):
            raise DatasetError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
        if image_parts and images.shape[1:] != image_parts[0].shape[1:]:
            raise DatasetError(f"{images_path}: image size {images.shape[1:]} differs from the train part's {image_parts[0].shape[1:]}")
        if labels.size and labels.max() >= len(CLASS_NAMES[key]):
            raise DatasetError(f"{labels_path}: label {labels.max()} is outside 0..{len(CLASS_NAMES[key]) - 1}")
        image_parts.append(images)
        label_parts.append(labels)
    if not image_parts:
        raise _missing_data_error(key, folder, (f.removesuffix(".gz") + "[.gz]" for f in DATASET_SOURCES[key]["files"]))
    return from_arrays(
        np.concatenate(image_parts), np.concatenate(label_parts).astype(np.int64), CLASS_NAMES[key], name=key
    )


def _load_cifar10(folder: Path) -> Dataset:
    batch_paths = [folder / batch for batch in _CIFAR_BATCHES if (folder / batch).is_file()]
    if not batch_paths:
        raise _missing_data_error("cifar10", folder, (*_CIFAR_BATCHES, _CIFAR_META))
    images, labels = zip(*(_read_cifar_batch(path) for path in batch_paths))
    meta_path = folder / _CIFAR_META
    if meta_path.is_file():
        label_names = _pickle_key(_read_cifar_pickle(meta_path), "label_names", meta_path)
        class_names: Sequence[str] = [n.decode() if isinstance(n, bytes) else str(n) for n in label_names]
    else:
        class_names = CLASS_NAMES["cifar10"]
    return from_arrays(np.concatenate(images), np.concatenate(labels), class_names, name="cifar10")


# --------------------------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------------------------

_CHUNK_BYTES = 1 << 16
_DOWNLOAD_TIMEOUT_S = 60.0


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
    progress: bool = True,
) -> Path:
    """Fetch the official files of ``name`` into ``resolve_data_dir(data_dir)/<folder>`` and return that folder.

    Each file is streamed to a temporary file in the same folder, its md5 compared with the published one, and
    only then renamed into place (``os.replace`` is atomic), so a failed download (HTTP error, truncated transfer,
    wrong checksum) raises :class:`DatasetError` naming the file and leaves neither a partial nor a temporary file.
    Files already present with the right md5 are not fetched again. ``base_url`` replaces the official mirror.
    CIFAR-10's archive is kept in the folder and its batches are extracted next to it.
    """
    key = _canonical_name(name)
    if key == "digits":
        raise DatasetError("dataset 'digits' ships with scikit-learn and has nothing to download")
    source = DATASET_SOURCES[key]
    folder = resolve_data_dir(data_dir) / source["folder"]
    url_prefix = (base_url or source["base_url"]).rstrip("/") + "/"

    if source["format"] == "cifar" and all((folder / batch).is_file() for batch in (*_CIFAR_BATCHES, _CIFAR_META)):
        return folder  # already extracted; the archive itself is no longer needed

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatasetError(f"cannot create the data folder {folder}: {error}") from error
    for file_name in source["files"]:
        target = folder / file_name
        expected_md5 = source["md5s"][file_name]
        if target.is_file() and _md5_of(target) == expected_md5:
            continue
        _download_file(url_prefix + file_name, target, expected_md5, progress)
    if source["format"] == "cifar":
        _extract_cifar_archive(folder / source["files"][0], folder)
    return folder


def _download_file(url: str, target: Path, expected_md5: str, progress: bool) -> None:
    file_name = target.name
    temp_path: Path | None = None
    try:
        # A temporary file in the target folder, so the final os.replace is an atomic rename on one filesystem.
        with tempfile.NamedTemporaryFile(
            dir=target.parent, prefix=f".{file_name}.", suffix=".part", delete=False
        ) as temp_file:
            temp_path = Path(temp_file.name)
            try:
                with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
                    header_length = response.headers.get("Content-Length")
                    expected_bytes = int(header_length) if header_length and header_length.isdigit() else None
                    digest, received_bytes = _stream_to(response, temp_file, file_name, expected_bytes, progress)
            except urllib.error.HTTPError as error:
                raise DatasetError(f"downloading {file_name} from {url} failed: HTTP {error.code} {error.reason}") from error
            except urllib.error.URLError as error:
                raise DatasetError(f"downloading {file_name} from {url} failed: {error.reason}") from error
            except http.client.IncompleteRead as error:
                raise DatasetError(
                    f"downloading {file_name} from {url} failed: truncated transfer, received {len(error.partial)} "
                    f"bytes before the connection closed"
                ) from error
            except (OSError, http.client.HTTPException) as error:
                raise DatasetError(f"downloading {file_name} from {url} failed: {error}") from error
        if expected_bytes is not None and received_bytes != expected_bytes:
            raise DatasetError(
                f"downloading {file_name} from {url} failed: truncated transfer, received {received_bytes} of "
                f"{expected_bytes} bytes (Content-Length)"
            )
        if digest != expected_md5:
            raise DatasetError(
                f"checksum mismatch for {file_name} from {url}: md5 {digest}, expected {expected_md5}; the file was not kept"
            )
        os.replace(temp_path, target)
    except OSError as error:  # the folder is not writable, the disk is full ...
        raise DatasetError(f"cannot write {file_name} into {target.parent}: {error}") from error
    finally:
        # After a successful os.replace the temporary name no longer exists; after a failure this removes it.
        if temp_path is not None:
            temp_path.unlink(missing_ok=True)


def _stream_to(
    response: Any, sink: IO[bytes], file_name: str, expected_bytes: int | None, progress: bool
) -> tuple[str, int]:
    """Copy the response body to ``sink`` chunk by chunk; return its md5 and length."""
    digest = hashlib.md5(usedforsecurity=False)
    received_bytes = 0
    progress_bar, task = _progress_bar(file_name, expected_bytes) if progress else (None, None)
    try:
        while chunk := response.read(_CHUNK_BYTES):
            sink.write(chunk)
            digest.update(chunk)
            received_bytes += len(chunk)
            if progress_bar is not None:
                progress_bar.update(task, advance=len(chunk))
    finally:
        if progress_bar is not None:
            progress_bar.stop()
    return digest.hexdigest(), received_bytes


def _progress_bar(file_name: str, total_bytes: int | None) -> tuple[Any, Any]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    # stderr, so a command that prints JSON on stdout stays parseable.
    progress_bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = progress_bar.add_task(f"downloading {file_name}", total=total_bytes)
    progress_bar.start()
    return progress_bar, task


def _extract_cifar_archive(archive_path: Path, folder: Path) -> None:
    """Extract the CIFAR batches from the official archive into ``folder``.

    No tar extraction API is used: each wanted member is read and written under a name chosen here, so a
    crafted archive cannot write outside ``folder`` (path traversal, absolute names, links). Members with such
    names make the whole archive rejected, since an honest archive never has them.
    """
    wanted = {*_CIFAR_BATCHES, _CIFAR_META}
    found: set[str] = set()
    try:
        with tarfile.open(archive_path, mode="r:gz") as archive:
            members = archive.getmembers()
            for member in members:
                parts = Path(member.name).parts
                if member.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise DatasetError(f"archive {archive_path} has an unsafe member name {member.name!r}; nothing was extracted")
            for member in members:
                parts = Path(member.name).parts
                if len(parts) != 2 or parts[0] != "cifar-10-batches-py" or parts[1] not in wanted:
                    continue
                if not member.isfile():
                    raise DatasetError(f"archive {archive_path}: member {member.name!r} is not a regular file")
                member_file = archive.extractfile(member)
                if member_file is None:
                    raise DatasetError(f"archive {archive_path}: cannot read member {member.name!r}")
                _write_atomically(folder / parts[1], member_file)
                found.add(parts[1])
    except DatasetError:
        raise
    except (OSError, EOFError, tarfile.TarError, zlib.error) as error:
        raise DatasetError(f"cannot extract archive {archive_path}: {error}") from error
    missing = sorted(wanted - found)
    if missing:
        raise DatasetError(f"archive {archive_path} lacks cifar-10-batches-py/{', '.join(missing)}")


def _write_atomically(target: Path, source: IO[bytes]) -> None:
    temp_path: Path | None = None
    try:
        with tempfile.NamedTemporaryFile(
            dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False
        ) as temp_file:
            temp_path = Path(temp_file.name)
            while chunk := source.read(_CHUNK_BYTES):
                temp_file.write(chunk)
        os.replace(temp_path, target)
    finally:
        if temp_path is not None:
            temp_path.unlink(missing_ok=True)
