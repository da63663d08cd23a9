"""Tests of datagames_env.data.datasets: loaders, validation, split, data directory and md5-checked download.

Real MNIST / KMNIST test files come from ``../shared/datasets`` (skipped when absent). FashionMNIST and CIFAR-10
are not available offline, so their loaders are tested on small files in the official formats written here.
Downloads run against an HTTP server on 127.0.0.1 serving such files; nothing touches the network.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import tarfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import platformdirs
import pytest

from datagames_env.data import datasets
from datagames_env.data.datasets import (
    DATASET_SOURCES,
    Dataset,
    DatasetError,
    download_dataset,
    from_arrays,
    load_dataset,
    load_npz,
    read_idx,
    resolve_data_dir,
    split_dataset,
)

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
IDX_TYPE_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}
N_CLASSES = 10


# --------------------------------------------------------------------------------------------------------------
# Writers of the official formats
# --------------------------------------------------------------------------------------------------------------


def idx_bytes(values: np.ndarray) -> bytes:
    """IDX encoding: 0x00 0x00 <type code> <ndim>, one big-endian uint32 per dimension, big-endian payload."""
    type_code = IDX_TYPE_CODES[values.dtype.type]
    header = bytes([0, 0, type_code, values.ndim]) + np.asarray(values.shape, dtype=">u4").tobytes()
    return header + values.astype(values.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, values: np.ndarray, compress: bool = True) -> Path:
    payload = idx_bytes(values)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def make_images_and_labels(n_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n_images, 28, 28), dtype=np.uint8)
    labels = (np.arange(n_images) % N_CLASSES).astype(np.uint8)  # every class present
    return images, labels


def write_idx_part(folder: Path, part: str, n_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = make_images_and_labels(n_images, seed)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / f"{part}-images-idx3-ubyte.gz", images)
    write_idx(folder / f"{part}-labels-idx1-ubyte.gz", labels)
    return images, labels


CIFAR_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_BATCHES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]


def cifar_batch_bytes(n_rows: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A batch as the official files store it: a Python-2 style pickle with bytes keys, uint8 rows of 3072."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n_rows, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, N_CLASSES, size=n_rows)]
    content = {b"batch_label": b"batch", b"labels": labels, b"data": data, b"filenames": [b"x.png"] * n_rows}
    # The official files were pickled under numpy 1.x, whose array reconstructor lived in numpy.core.
    payload = pickle.dumps(content, protocol=2).replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    return payload, data, np.asarray(labels)


def cifar_meta_bytes() -> bytes:
    meta = {b"num_cases_per_batch": 10000, b"label_names": [n.encode() for n in CIFAR_LABEL_NAMES], b"num_vis": 3072}
    return pickle.dumps(meta, protocol=2)


def write_cifar_folder(folder: Path, rows_per_batch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    all_data, all_labels = [], []
    for seed, batch in enumerate(CIFAR_BATCHES):
        payload, data, labels = cifar_batch_bytes(rows_per_batch, seed)
        (folder / batch).write_bytes(payload)
        all_data.append(data)
        all_labels.append(labels)
    (folder / "batches.meta").write_bytes(cifar_meta_bytes())
    return np.concatenate(all_data), np.concatenate(all_labels)


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Embedded default and real files
# --------------------------------------------------------------------------------------------------------------


def test_digits_loads_offline_as_vectors_in_unit_range() -> None:
    digits = load_dataset("digits")
    assert digits.features.shape == (1797, 64)  # published size of scikit-learn's digits set
    assert digits.features.dtype == np.float32 and digits.labels.dtype == np.int64
    assert 0.0 <= digits.features.min() and digits.features.max() <= 1.0
    assert digits.class_names == tuple(str(d) for d in range(10))
    assert set(np.unique(digits.labels)) == set(range(10))
    assert not digits.is_image and digits.feature_shape == (64,) and digits.n_samples == 1797


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("kmnist", "KMNIST")])
def test_real_test_set_loads_with_published_md5(name: str, folder: str) -> None:
    if not (SHARED_DATASETS / folder).is_dir():
        pytest.skip(f"{SHARED_DATASETS / folder} is not available")
    source = DATASET_SOURCES[name]
    for file_name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert md5_of(SHARED_DATASETS / folder / file_name) == source["md5s"][file_name]

    dataset = load_dataset(name, data_dir=SHARED_DATASETS)
    assert dataset.features.shape == (10_000, 1, 28, 28)  # the official test split
    assert dataset.features.dtype == np.float32
    assert 0.0 <= dataset.features.min() and dataset.features.max() <= 1.0
    assert dataset.labels.dtype == np.int64
    assert set(np.unique(dataset.labels)) == set(range(10))
    assert dataset.n_classes == 10 and dataset.is_image


def test_kmnist_class_names_are_the_romanized_hiragana() -> None:
    assert datasets.CLASS_NAMES["kmnist"] == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")


# --------------------------------------------------------------------------------------------------------------
# IDX format
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("dtype", list(IDX_TYPE_CODES), ids=lambda t: np.dtype(t).name)
def test_idx_round_trip(tmp_path: Path, compress: bool, dtype: type) -> None:
    rng = np.random.default_rng(0)
    values = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
    path = write_idx(tmp_path / "values.idx", values, compress=compress)
    loaded = read_idx(path)
    np.testing.assert_array_equal(loaded, values)
    assert loaded.dtype.isnative and loaded.dtype.kind == values.dtype.kind
    assert loaded.flags.writeable


def test_idx_truncated_payload_names_the_file(tmp_path: Path) -> None:
    full = idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8))
    path = tmp_path / "short-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(full[:-10]))
    with pytest.raises(DatasetError, match="short-images-idx3-ubyte.gz.*truncated"):
        read_idx(path)


def test_idx_truncated_gzip_stream_names_the_file(tmp_path: Path) -> None:
    compressed = gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32)))
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DatasetError, match="cut.gz"):
        read_idx(path)


@pytest.mark.parametrize(
    "magic, problem",
    [(b"\x01\x00\x08\x01", "magic"), (b"\x00\x00\x42\x01", "type code"), (b"\x00\x00\x08\x00", "0 dimensions")],
)
def test_idx_wrong_magic_names_the_file(tmp_path: Path, magic: bytes, problem: str) -> None:
    path = tmp_path / "bad-magic.idx"
    path.write_bytes(magic + np.asarray([3], dtype=">u4").tobytes() + b"abc")
    with pytest.raises(DatasetError, match="bad-magic.idx") as raised:
        read_idx(path)
    assert problem in str(raised.value)


def test_idx_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="absent.gz"):
        read_idx(tmp_path / "absent.gz")


# --------------------------------------------------------------------------------------------------------------
# FashionMNIST and CIFAR-10 loaders on small official-format files
# --------------------------------------------------------------------------------------------------------------


def test_fashion_mnist_concatenates_train_then_test(tmp_path: Path) -> None:
    folder = tmp_path / "FashionMNIST"
    train_images, train_labels = write_idx_part(folder, "train", 30, seed=1)
    test_images, test_labels = write_idx_part(folder, "t10k", 20, seed=2)

    dataset = load_dataset("fashion_mnist", data_dir=tmp_path)
    assert dataset.features.shape == (50, 1, 28, 28)
    expected = np.concatenate([train_images, test_images])[:, None].astype(np.float32) / 255
    np.testing.assert_allclose(dataset.features, expected)
    np.testing.assert_array_equal(dataset.labels, np.concatenate([train_labels, test_labels]))
    assert dataset.class_names[0] == "T-shirt/top" and dataset.class_names[-1] == "Ankle boot"
    assert dataset.n_classes == 10


def test_idx_loader_uses_every_complete_part_only(tmp_path: Path) -> None:
    folder = tmp_path / "FashionMNIST"
    write_idx_part(folder, "t10k", 20, seed=2)
    assert load_dataset("fashion-mnist", data_dir=tmp_path).n_samples == 20

    # A train part without its labels is incomplete: skipped with a warning, the t10k part still loads.
    write_idx(folder / "train-images-idx3-ubyte.gz", make_images_and_labels(30, seed=1)[0])
    with pytest.warns(UserWarning, match="train"):
        assert load_dataset("fashion_mnist", data_dir=tmp_path).n_samples == 20


def test_idx_loader_rejects_image_label_count_mismatch(tmp_path: Path) -> None:
    folder = tmp_path / "MNIST"
    write_idx_part(folder, "t10k", 20, seed=2)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(19, dtype=np.uint8))
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", data_dir=tmp_path)


def test_missing_files_error_says_where_and_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as raised:
        load_dataset("kmnist", data_dir=tmp_path)
    message = str(raised.value)
    assert str(tmp_path / "KMNIST") in message
    assert "t10k-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message
    assert "data_dir" in message and "DATAGAMES_DATA_DIR" in message and "download=True" in message


def test_unknown_dataset_name_lists_the_choices() -> None:
    with pytest.raises(DatasetError, match="mnist"):
        load_dataset("imagenet")


def test_cifar10_loads_official_pickle_batches(tmp_path: Path) -> None:
    data, labels = write_cifar_folder(tmp_path / "cifar-10-batches-py")
    assert b"numpy.core.multiarray" in (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the numpy.core alias must be resolved without a deprecation warning
        dataset = load_dataset("cifar10", data_dir=tmp_path)
    assert dataset.features.shape == (len(data), 3, 32, 32) and dataset.features.dtype == np.float32
    # Row layout is 1024 red, then green, then blue values, each plane row-major.
    np.testing.assert_allclose(dataset.features[:, 0].reshape(len(data), -1), data[:, :1024] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(dataset.features[:, 2, 31, 31], data[:, 3071] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(dataset.labels, labels)
    assert dataset.class_names == tuple(CIFAR_LABEL_NAMES)


def test_cifar10_refuses_pickles_that_run_code(tmp_path: Path) -> None:
    class RunsCode:
        def __reduce__(self) -> tuple:
            return (os.getcwd, ())

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": RunsCode(), b"labels": []}, protocol=2))
    with pytest.raises(DatasetError, match="data_batch_1"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar10_wrong_row_length_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    content = {b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}
    (folder / "test_batch").write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(DatasetError, match="test_batch.*3072"):
        load_dataset("cifar10", data_dir=tmp_path)


# --------------------------------------------------------------------------------------------------------------
# from_arrays and npz
# --------------------------------------------------------------------------------------------------------------


def test_from_arrays_adds_channel_axis_and_scales_uint8() -> None:
    images = np.full((6, 5, 7), 255, dtype=np.uint8)
    dataset = from_arrays(images, np.arange(6) % 3, name="toy")
    assert dataset.features.shape == (6, 1, 5, 7) and dataset.features.dtype == np.float32
    assert dataset.features.max() == 1.0
    assert dataset.class_names == ("0", "1", "2") and dataset.labels.dtype == np.int64
    assert dataset.is_image and dataset.feature_shape == (1, 5, 7)


def test_from_arrays_keeps_vectors_and_allows_absent_named_classes() -> None:
    features = np.linspace(-3, 3, 12).reshape(4, 3)  # float64, not scaled
    dataset = from_arrays(features, [0, 1, 1, 0], class_names=["cat", "dog", "owl"])
    np.testing.assert_allclose(dataset.features, features.astype(np.float32))
    assert dataset.n_classes == 3 and dataset.class_names[2] == "owl"


@pytest.mark.parametrize(
    "features, labels, class_names, named",
    [
        (np.zeros((4, 3)), [0, 1, 0], None, "labels"),  # wrong label length
        (np.array([[0.0, np.nan], [1.0, 2.0]]), [0, 1], None, "features"),  # NaN
        (np.array([[0.0, np.inf], [1.0, 2.0]]), [0, 1], None, "features"),  # inf
        (np.zeros(4), [0, 1, 0, 1], None, "features"),  # 1-D
        (np.zeros((4, 3)), [0, 1, 2, 3], ["a", "b"], "class_names"),  # too few names
        (np.zeros((4, 3)), [0, 2, 2, 0], None, "labels"),  # class 1 missing, no names to declare it
        (np.zeros((4, 3)), [0.0, 1.0, 0.0, 1.0], None, "labels"),  # float labels
        (np.zeros((4, 3)), [[0, 1], [0, 1]], None, "labels"),  # 2-D labels
        (np.zeros((4, 3)), [0, -1, 0, 1], None, "labels"),  # negative label
        (np.array([["a", "b"]] * 2), [0, 1], None, "features"),  # not numeric
        (np.zeros((2, 3)), [0, 1], ["a", "a"], "class_names"),  # duplicate names
    ],
)
def test_from_arrays_bad_input_names_the_array(features, labels, class_names, named: str) -> None:
    with pytest.raises(DatasetError, match=named):
        from_arrays(features, labels, class_names=class_names)


def test_wrong_label_length_reports_both_shapes() -> None:
    with pytest.raises(DatasetError) as raised:
        from_arrays(np.zeros((4, 3)), [0, 1, 0])
    assert "(4, 3)" in str(raised.value) and "(3,)" in str(raised.value)


@pytest.mark.parametrize(
    "features, labels, class_names, named",
    [
        (np.zeros((2, 3)), np.array([0, 1]), ("a", "b"), "float32"),  # float64 features
        (np.zeros((2, 3), dtype=np.float32), np.array([0, 1], dtype=np.int32), ("a", "b"), "int64"),
        (np.zeros((2, 3), dtype=np.float32), np.array([0, 2]), ("a", "b"), "labels range"),
        (np.zeros((3, 3), dtype=np.float32), np.array([0, 1]), ("a", "b"), "labels has 2 entries"),
    ],
)
def test_dataset_constructor_checks_invariants(features, labels, class_names, named: str) -> None:
    with pytest.raises(DatasetError, match=named):
        Dataset("direct", features, labels, class_names)


def test_dataset_subset_keeps_classes() -> None:
    dataset = from_arrays(np.arange(10, dtype=np.float32).reshape(5, 2), [0, 1, 2, 1, 0], name="toy")
    part = dataset.subset([4, 0])
    np.testing.assert_array_equal(part.labels, [0, 0])
    assert part.class_names == dataset.class_names and part.n_classes == 3 and part.n_samples == 2
    assert dataset.subset(np.array([True, False, False, False, True])).n_samples == 2
    assert dataset.subset([]).n_samples == 0
    with pytest.raises(DatasetError, match="indices"):
        dataset.subset([7])


def test_load_npz_with_either_key_names(tmp_path: Path) -> None:
    features = np.random.default_rng(0).random((8, 2, 4, 4)).astype(np.float32)
    labels = np.arange(8) % 4
    long_names = tmp_path / "long.npz"
    np.savez(long_names, features=features, labels=labels, class_names=np.array(["a", "b", "c", "d"]))
    dataset = load_npz(long_names)
    assert dataset.name == "long" and dataset.class_names == ("a", "b", "c", "d")
    np.testing.assert_array_equal(dataset.features, features)

    short_names = tmp_path / "short.npz"
    np.savez(short_names, x=features, y=labels)
    via_loader = load_dataset(str(short_names))
    assert via_loader.feature_shape == (2, 4, 4) and via_loader.class_names == ("0", "1", "2", "3")


def test_load_npz_bad_content_names_the_key_or_array(tmp_path: Path) -> None:
    no_labels = tmp_path / "no_labels.npz"
    np.savez(no_labels, features=np.zeros((3, 2)))
    with pytest.raises(DatasetError, match="labels"):
        load_npz(no_labels)

    short_labels = tmp_path / "short_labels.npz"
    np.savez(short_labels, features=np.zeros((3, 2)), labels=np.array([0, 1]))
    with pytest.raises(DatasetError, match="labels"):
        load_npz(short_labels)

    not_npz = tmp_path / "broken.npz"
    not_npz.write_bytes(b"not a zip archive")
    with pytest.raises(DatasetError, match="broken.npz"):
        load_npz(not_npz)

    with pytest.raises(DatasetError, match="missing.npz"):
        load_npz(tmp_path / "missing.npz")


# --------------------------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------------------------

IMBALANCED_LABELS = np.repeat(np.arange(5), [40, 60, 80, 100, 120])


def test_split_is_disjoint_sorted_and_covering() -> None:
    splits = split_dataset(IMBALANCED_LABELS, validation_fraction=0.15, test_fraction=0.15, seed=0)
    parts = (splits.pool, splits.validation, splits.test)
    for part in parts:
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)
    joined = np.concatenate(parts)
    assert len(joined) == len(IMBALANCED_LABELS)
    np.testing.assert_array_equal(np.sort(joined), np.arange(len(IMBALANCED_LABELS)))
    assert len(splits.validation) == round(0.15 * len(IMBALANCED_LABELS)) == len(splits.test)


def test_split_is_stratified() -> None:
    splits = split_dataset(IMBALANCED_LABELS, validation_fraction=0.2, test_fraction=0.1, seed=3)
    class_counts = np.bincount(IMBALANCED_LABELS)
    for part, fraction in ((splits.validation, 0.2), (splits.test, 0.1), (splits.pool, 0.7)):
        part_counts = np.bincount(IMBALANCED_LABELS[part], minlength=len(class_counts))
        # Each class keeps its share in each part, up to rounding of one sample per split step.
        assert np.all(np.abs(part_counts - fraction * class_counts) <= 2)


def test_split_is_deterministic_per_seed_and_differs_across_seeds() -> None:
    first = split_dataset(IMBALANCED_LABELS, seed=7)
    again = split_dataset(IMBALANCED_LABELS, seed=7)
    other = split_dataset(IMBALANCED_LABELS, seed=8)
    for name in ("pool", "validation", "test"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.validation, other.validation)


def test_split_falls_back_to_permutation_for_tiny_classes() -> None:
    labels = np.array([0] * 30 + [1])  # class 1 has a single sample: cannot be stratified
    splits = split_dataset(labels, validation_fraction=0.2, test_fraction=0.2, seed=0)
    joined = np.concatenate([splits.pool, splits.validation, splits.test])
    np.testing.assert_array_equal(np.sort(joined), np.arange(len(labels)))
    np.testing.assert_array_equal(split_dataset(labels, 0.2, 0.2, seed=0).pool, splits.pool)


@pytest.mark.parametrize("validation_fraction, test_fraction", [(0.5, 0.5), (-0.1, 0.2), (0.2, 1.0)])
def test_split_rejects_fractions_without_a_pool(validation_fraction: float, test_fraction: float) -> None:
    with pytest.raises(DatasetError, match="fraction"):
        split_dataset(IMBALANCED_LABELS, validation_fraction, test_fraction)


# --------------------------------------------------------------------------------------------------------------
# Data directory
# --------------------------------------------------------------------------------------------------------------


def test_resolve_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda app_name: str(tmp_path / "cache" / app_name))
    monkeypatch.delenv("DATAGAMES_DATA_DIR", raising=False)
    assert resolve_data_dir() == tmp_path / "cache" / "datagames_env"

    monkeypatch.setenv("DATAGAMES_DATA_DIR", str(tmp_path / "from_env"))
    assert resolve_data_dir() == tmp_path / "from_env"
    assert resolve_data_dir(tmp_path / "argument") == tmp_path / "argument"
    assert resolve_data_dir(str(tmp_path / "argument")) == tmp_path / "argument"


def test_load_dataset_reads_env_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_idx_part(tmp_path / "MNIST", "t10k", 10, seed=0)
    monkeypatch.setenv("DATAGAMES_DATA_DIR", str(tmp_path))
    assert load_dataset("mnist").n_samples == 10


# --------------------------------------------------------------------------------------------------------------
# Download against a local server
# --------------------------------------------------------------------------------------------------------------


class QuietFileHandler(http.server.SimpleHTTPRequestHandler):
    requested_paths: ClassVar[list[str]] = []  # replaced per test by a subclass with its own list

    def do_GET(self) -> None:
        self.requested_paths.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # keep the test output clean
        pass


class TruncatingHandler(http.server.BaseHTTPRequestHandler):
    """Announces more bytes than it sends, then closes the connection: a transfer cut off midway."""

    def do_GET(self) -> None:
        body = b"\x1f\x8b" + b"partial body" * 10
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) + 1000))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def local_server(handler: type[http.server.BaseHTTPRequestHandler] | functools.partial) -> Iterator[str]:
    """An HTTP server bound to 127.0.0.1 on a free port, shut down on exit; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def no_proxy_for_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy configured in the environment must not intercept requests to the local test server.
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def served_fashion_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path, list[str]]]:
    """Small FashionMNIST files on a local server, with the md5 table patched to match them."""
    served = tmp_path / "served"
    write_idx_part(served, "train", 30, seed=1)
    write_idx_part(served, "t10k", 20, seed=2)
    source = DATASET_SOURCES["fashion_mnist"]
    patched_md5s = {name: md5_of(served / name) for name in source["files"]}
    requested_paths: ClassVar[list[str]] = []  # replaced per test by a subclass with its own list
    handler_class = type("RecordingHandler", (QuietFileHandler,), {"requested_paths": requested_paths})
    with local_server(functools.partial(handler_class, directory=str(served))) as base_url:
        monkeypatch.setitem(DATASET_SOURCES, "fashion_mnist", {**source, "md5s": patched_md5s, "base_url": base_url})
        yield base_url, tmp_path / "data", requested_paths


def test_download_writes_verified_files_and_skips_them_next_time(served_fashion_files) -> None:
    _, data_dir, requested_paths = served_fashion_files
    folder = download_dataset("fashion_mnist", data_dir=data_dir, progress=True)
    assert folder == data_dir / "FashionMNIST"
    source = DATASET_SOURCES["fashion_mnist"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(source["files"])  # no temporary file left
    for name in source["files"]:
        assert md5_of(folder / name) == source["md5s"][name]
    assert len(requested_paths) == len(source["files"])

    download_dataset("fashion_mnist", data_dir=data_dir, progress=False)
    assert len(requested_paths) == len(source["files"])  # everything present with the right md5: no request

    assert load_dataset("fashion_mnist", data_dir=data_dir).n_samples == 50


def test_load_dataset_with_download_fetches_missing_files(served_fashion_files) -> None:
    _, data_dir, _ = served_fashion_files
    dataset = load_dataset("fashion_mnist", data_dir=data_dir, download=True)
    assert dataset.features.shape == (50, 1, 28, 28)


def test_download_wrong_checksum_leaves_nothing(served_fashion_files, monkeypatch: pytest.MonkeyPatch) -> None:
    _, data_dir, _ = served_fashion_files
    source = DATASET_SOURCES["fashion_mnist"]
    wrong_md5s = {name: "0" * 32 for name in source["files"]}
    monkeypatch.setitem(DATASET_SOURCES, "fashion_mnist", {**source, "md5s": wrong_md5s})
    with pytest.raises(DatasetError, match=r"checksum.*train-images-idx3-ubyte\.gz"):
        download_dataset("fashion_mnist", data_dir=data_dir, progress=False)
    assert list((data_dir / "FashionMNIST").iterdir()) == []


def test_download_truncated_transfer_leaves_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with (
        local_server(TruncatingHandler) as base_url,
        pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz.*truncated"),
    ):
        download_dataset("mnist", data_dir=data_dir, base_url=base_url, progress=False)
    assert list((data_dir / "MNIST").iterdir()) == []


def test_download_http_404_names_the_file_and_leaves_nothing(served_fashion_files) -> None:
    base_url, data_dir, _ = served_fashion_files
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz.*404"):
        download_dataset("fashion_mnist", data_dir=data_dir, base_url=base_url + "no/such/folder/", progress=False)
    assert list((data_dir / "FashionMNIST").iterdir()) == []


def make_cifar_archive(path: Path, batches_folder: Path, extra_member: tuple[str, bytes] | None = None) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for file in sorted(batches_folder.iterdir()):
            archive.add(file, arcname=f"cifar-10-batches-py/{file.name}")
        if extra_member is not None:
            member_name, content = extra_member
            info = tarfile.TarInfo(member_name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))


def test_cifar10_download_extracts_the_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = tmp_path / "served"
    served.mkdir()
    data, _ = write_cifar_folder(tmp_path / "batches")
    make_cifar_archive(served / "cifar-10-python.tar.gz", tmp_path / "batches")
    source = DATASET_SOURCES["cifar10"]
    monkeypatch.setitem(
        DATASET_SOURCES, "cifar10", {**source, "md5s": {"cifar-10-python.tar.gz": md5_of(served / "cifar-10-python.tar.gz")}}
    )
    with local_server(functools.partial(QuietFileHandler, directory=str(served))) as base_url:
        folder = download_dataset("cifar10", data_dir=tmp_path / "data", base_url=base_url, progress=False)
    assert folder == tmp_path / "data" / "cifar-10-batches-py"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left
    dataset = load_dataset("cifar10", data_dir=tmp_path / "data")
    assert dataset.features.shape == (len(data), 3, 32, 32)


@pytest.mark.parametrize("evil_name", ["cifar-10-batches-py/../../evil.txt", "/tmp/evil.txt"])
def test_cifar10_archive_with_path_traversal_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, evil_name: str) -> None:
    write_cifar_folder(tmp_path / "batches")
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    archive_path = folder / "cifar-10-python.tar.gz"
    make_cifar_archive(archive_path, tmp_path / "batches", extra_member=(evil_name, b"owned"))
    source = DATASET_SOURCES["cifar10"]
    # The archive is already in place with the (patched) right md5, so no request is made: only extraction runs.
    monkeypatch.setitem(DATASET_SOURCES, "cifar10", {**source, "md5s": {archive_path.name: md5_of(archive_path)}})
    with pytest.raises(DatasetError, match="unsafe"):
        download_dataset("cifar10", data_dir=tmp_path / "data", base_url="http://127.0.0.1:9/", progress=False)
    assert not list(tmp_path.rglob("evil.txt"))
    assert sorted(p.name for p in folder.iterdir()) == [archive_path.name]  # nothing extracted
