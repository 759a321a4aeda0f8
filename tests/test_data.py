"""The data side of the trainer: IDX files, lookup, the MNIST stand-in, digits, splits, `hpo data`.

The real files come from $HPO_DATA_DIR (the shared copy in /work/shared/data when unset); a
missing copy is a failure, not a skip.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import trainer
import trainer._lookup  # its SYSTEM_ROOT is moved into tmp_path
from hpo.cli._data import app
from trainer import (
    REGISTRY,
    DataError,
    Dataset,
    list_datasets,
    load_test_split,
    load_training_pool,
    locate,
    read_idx,
    split_train_validation,
    stratified_folds,
    verify,
)

DATA_DIR = Path(os.environ.get("HPO_DATA_DIR", "/work/shared/data"))

# From /work/shared/data/README.md, kept apart from the registry so a typo in either shows.
README_SHA256 = {
    ("mnist", "t10k-images-idx3-ubyte.gz"): "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ("mnist", "t10k-labels-idx1-ubyte.gz"): "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ("fashion-mnist", "train-images-idx3-ubyte.gz"): "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ("fashion-mnist", "train-labels-idx1-ubyte.gz"): "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ("fashion-mnist", "t10k-images-idx3-ubyte.gz"): "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ("fashion-mnist", "t10k-labels-idx1-ubyte.gz"): "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
MNIST_T10K_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes holding array."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def rows(x: np.ndarray, scale: int = 255) -> list[bytes]:
    """The rows of x as sortable bytes (back to the integer pixels), to compare as multisets."""
    return sorted(row.tobytes() for row in np.rint(np.asarray(x) * scale).astype(np.uint8))


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Every standard place points at an empty folder in tmp_path."""
    paths = {
        "explicit": tmp_path / "explicit",
        "env": tmp_path / "env",
        "xdg": tmp_path / "xdg",
        "home": tmp_path / "home",
        "system": tmp_path / "system",
    }
    for path in paths.values():
        path.mkdir()
    monkeypatch.setenv("HPO_DATA_DIR", str(paths["env"]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(paths["xdg"]))
    monkeypatch.setenv("HOME", str(paths["home"]))
    monkeypatch.setattr(trainer._lookup, "SYSTEM_ROOT", paths["system"])
    return paths


def link_mnist_test_files(folder: Path) -> Path:
    """Make folder hold the real MNIST t10k files (symlinks) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).symlink_to(DATA_DIR / "mnist" / name)
    return folder


# ---------------------------------------------------------------------------------------
# The real files


def test_registry_checksums_are_the_published_ones():
    for (name, file_name), sha in README_SHA256.items():
        assert REGISTRY[name].sha256[file_name] == sha


@pytest.mark.parametrize(("name", "n_files"), [("mnist", 2), ("fashion-mnist", 4)])
def test_real_files_match_their_sha256(name, n_files):
    checks = verify(name, DATA_DIR)
    assert len(checks) == n_files
    assert [c.status for c in checks] == ["ok"] * n_files
    for check in checks:
        content = gzip.decompress(check.path.read_bytes())
        assert hashlib.sha256(content).hexdigest() == README_SHA256[(name, check.file)]


def test_mnist_t10k_label_counts_match_the_published_ones():
    labels = read_idx(DATA_DIR / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert labels.dtype == np.uint8 and labels.shape == (10_000,)
    assert np.bincount(labels).tolist() == MNIST_T10K_LABEL_COUNTS


def test_read_idx_gives_images_as_the_header_says():
    images = read_idx(DATA_DIR / "mnist" / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert not images.flags.writeable


@pytest.mark.parametrize(
    ("name", "loader", "shape", "label_counts"),
    [
        ("mnist", load_training_pool, (5_000, 784), None),
        ("mnist", load_test_split, (5_000, 784), None),
        ("fashion-mnist", load_training_pool, (60_000, 784), [6_000] * 10),
        ("fashion-mnist", load_test_split, (10_000, 784), [1_000] * 10),
        ("digits", load_training_pool, (1_438, 64), None),
        ("digits", load_test_split, (359, 64), None),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_loaded_sets_have_their_shape_dtype_and_range(name, loader, shape, label_counts, dtype):
    data = loader(name, DATA_DIR, dtype=dtype)
    assert isinstance(data, Dataset)
    assert data.x.shape == shape and len(data) == shape[0]
    assert data.x.dtype == np.dtype(dtype)
    assert data.y.dtype == np.int64 and data.y.shape == (shape[0],)
    assert data.x.min() == 0.0 and data.x.max() == 1.0
    assert set(np.unique(data.y)) == set(range(10))
    if label_counts:
        assert np.bincount(data.y).tolist() == label_counts
    assert data.source


def test_data_dir_defaults_to_HPO_DATA_DIR(places, monkeypatch):
    monkeypatch.setenv("HPO_DATA_DIR", str(DATA_DIR))
    assert len(load_test_split("mnist")) == 5_000
    assert locate("fashion-mnist").folder == DATA_DIR / "fashion-mnist"


def test_loading_again_in_one_process_is_cached_and_read_only():
    first = load_training_pool("fashion-mnist", DATA_DIR)
    assert load_training_pool("fashion-mnist", DATA_DIR) is first
    assert load_training_pool("fashion-mnist", DATA_DIR, dtype="float64") is not first
    with pytest.raises(ValueError):
        first.x[0, 0] = 0.5
    with pytest.raises(ValueError):
        first.y[0] = 3


# ---------------------------------------------------------------------------------------
# The MNIST stand-in: without train-* files, t10k is split into pool and test halves


def test_mnist_stand_in_halves_are_disjoint_cover_t10k_and_say_so():
    pool = load_training_pool("mnist", DATA_DIR)
    test = load_test_split("mnist", DATA_DIR)
    assert len(pool) == len(test) == 5_000
    t10k = read_idx(DATA_DIR / "mnist" / "t10k-images-idx3-ubyte.gz").reshape(10_000, 784)
    # Same multiset of rows: every t10k image is used exactly once, in one half.
    assert rows(np.concatenate([pool.x, test.x])) == sorted(r.tobytes() for r in t10k)
    assert (np.bincount(pool.y) + np.bincount(test.y)).tolist() == MNIST_T10K_LABEL_COUNTS
    # Stratified: each class is split in half, within one image.
    assert np.abs(np.bincount(pool.y) - np.bincount(test.y)).max() <= 1
    assert "stand-in" in pool.source and "t10k" in pool.source and "stand-in" in test.source
    assert locate("mnist", DATA_DIR).status == "test-only"


def test_mnist_stand_in_partition_is_fixed():
    # Pinned so that a change of seed, code or NumPy's generator cannot pass silently:
    # every recorded MNIST result depends on this partition.
    test = load_test_split("mnist", DATA_DIR)
    pixels = np.rint(test.x * 255).astype(np.uint8)
    digest = hashlib.sha256(pixels.tobytes() + test.y.tobytes()).hexdigest()
    assert digest[:16] == "b3a2165f1b316be8"


def test_mnist_with_training_files_uses_them_and_the_whole_t10k(tmp_path, places):
    folder = link_mnist_test_files(tmp_path / "full" / "mnist")
    rng = np.random.default_rng(0)
    # Uncompressed on purpose: raw IDX files are read as well as gzip ones.
    (folder / "train-images-idx3-ubyte").write_bytes(idx_bytes(rng.integers(0, 256, (60_000, 28, 28))))
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(60_000) % 10))
    pool = load_training_pool("mnist", tmp_path / "full")
    test = load_test_split("mnist", tmp_path / "full")
    assert locate("mnist", tmp_path / "full").status == "complete"
    assert len(pool) == 60_000 and "train-*" in pool.source
    assert len(test) == 10_000 and np.bincount(test.y).tolist() == MNIST_T10K_LABEL_COUNTS


# ---------------------------------------------------------------------------------------
# digits


DIGITS_LABEL_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]  # UCI optdigits test set
DIGITS_PIXELS_SHA256 = "8f26b2bd9d135c256808f68f14fdabddde6d9c7f869ae419704b051f0f14b3b3"  # uint8 (1797, 64)


def test_digits_come_from_the_bundled_file_split_into_disjoint_stratified_parts():
    from trainer._digits import read_digits

    images, labels = read_digits()
    assert images.shape == (1_797, 64) and np.bincount(labels).tolist() == DIGITS_LABEL_COUNTS
    pixels = np.ascontiguousarray(images.astype(np.uint8)).tobytes()
    assert hashlib.sha256(pixels).hexdigest() == DIGITS_PIXELS_SHA256
    pool = load_training_pool("digits")
    test = load_test_split("digits")
    assert (len(pool), len(test)) == (1_438, 359) and pool.x.shape[1] == 64
    assert rows(np.concatenate([pool.x, test.x]), 16) == rows(images / 16, 16)
    share = np.bincount(test.y) / np.bincount(labels)
    assert np.all(np.abs(share - 0.2) < 0.01)
    assert locate("digits").status == "bundled"
    assert verify("digits") == []


def test_an_altered_digits_file_is_refused_with_one_line(monkeypatch, tmp_path):
    import trainer._digits as digits
    from trainer._load import _load_digits

    altered = tmp_path / "trainer" / "data"
    altered.mkdir(parents=True)
    (altered / "digits.csv.gz").write_bytes(gzip.compress(b"0,0\n"))
    monkeypatch.setattr(digits.resources, "files", lambda package: tmp_path / "trainer")
    _load_digits.cache_clear()
    try:
        with pytest.raises(DataError, match=r"^digits: the bundled digits.csv.gz has SHA-256 .*; reinstall"):
            load_training_pool("digits")
    finally:
        _load_digits.cache_clear()


# ---------------------------------------------------------------------------------------
# Bad files: each failure is one line naming the file, what is wrong and the fix

LABELS = idx_bytes(np.arange(100) % 10)


def _corrupt_crc(raw: bytes) -> bytes:
    packed = bytearray(gzip.compress(raw))
    packed[-8] ^= 0xFF  # the CRC-32 in the gzip trailer
    return bytes(packed)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            gzip.compress(LABELS)[:-30],
            r"truncated gzip file \(the compressed data end early\)",
            id="truncated-gzip",
        ),
        pytest.param(_corrupt_crc(LABELS), r"corrupt gzip file \(CRC check failed", id="corrupt-gzip"),
        pytest.param(
            b"PK\x03\x04" + bytes(100),
            r"bad magic number 0x504B0304, expected 0x00000803 \(images\) or 0x00000801 \(labels\): not an IDX file",
            id="bad-magic",
        ),
        pytest.param(pickle.dumps(np.zeros(3)), r"bad magic number 0x80", id="pickle-is-never-loaded"),
        pytest.param(
            gzip.compress(b"\x00\x00\x08\x02" + bytes(16)),
            r"bad magic number 0x00000802",
            id="bad-magic-in-gzip",
        ),
        pytest.param(
            b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + bytes(12),
            r"unsupported IDX element type 0x0D; only unsigned bytes \(0x08\)",
            id="float-elements",
        ),
        pytest.param(b"", r"truncated: 0 bytes, too short for an IDX header", id="empty"),
        pytest.param(
            b"\x00\x00\x08\x03" + bytes(6),
            r"truncated: the IDX header needs 16 bytes, the file has 10",
            id="truncated-header",
        ),
        pytest.param(
            gzip.compress(LABELS[:-10]),
            r"truncated: the header declares 100 = 100 bytes of data, the file holds 90",
            id="truncated-data",
        ),
        pytest.param(
            LABELS + bytes(5),
            r"wrong size: 105 bytes of data where the header declares 100 = 100",
            id="wrong-size",
        ),
    ],
)
def test_bad_idx_files_fail_with_one_clear_line(tmp_path, content, message):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as caught:
        read_idx(path)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: ")
    assert "hpo data fetch" in text


def test_an_unreadable_idx_path_fails_with_one_clear_line(tmp_path):
    with pytest.raises(DataError, match=r"nothing\.gz: cannot read it \(No such file or directory\)"):
        read_idx(tmp_path / "nothing.gz")


def _write_mnist_test_files(folder: Path, images: np.ndarray | bytes | None, labels: np.ndarray | None) -> None:
    folder.mkdir(parents=True)
    real = DATA_DIR / "mnist"
    for name, content in (("t10k-images-idx3-ubyte.gz", images), ("t10k-labels-idx1-ubyte.gz", labels)):
        if content is None:
            (folder / name).symlink_to(real / name)
        else:
            raw = content if isinstance(content, bytes) else idx_bytes(content)
            (folder / name).write_bytes(gzip.compress(raw, compresslevel=1))


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        pytest.param(
            np.zeros(10_000),
            None,
            r"t10k-images-idx3-ubyte\.gz: holds labels \(magic 0x00000801\) where images were expected",
            id="labels-as-images",
        ),
        pytest.param(
            np.zeros((100, 28, 28)),
            np.arange(100) % 10,
            r"t10k-images-idx3-ubyte\.gz: wrong size for mnist: 100 images, expected 10,000",
            id="wrong-count",
        ),
        pytest.param(
            np.zeros((10_000, 8, 8)),
            None,
            r"t10k-images-idx3-ubyte\.gz: wrong size: images are 8x8 pixels, mnist has 28x28",
            id="wrong-pixels",
        ),
        pytest.param(
            None,
            np.full(10_000, 12),
            r"t10k-labels-idx1-ubyte\.gz: label 12 outside 0\.\.9",
            id="bad-label",
        ),
        pytest.param(
            None,
            np.zeros(9_999),
            r"10,000 images but .*t10k-labels-idx1-ubyte\.gz has 9,999 labels",
            id="count-mismatch",
        ),
        pytest.param(
            None,
            "fashion",
            r"t10k-labels-idx1-ubyte\.gz: this file belongs to fashion-mnist, not mnist",
            id="other-data-set",
        ),
    ],
)
def test_files_that_are_not_the_data_set_fail_with_one_clear_line(tmp_path, places, images, labels, message):
    if isinstance(labels, str):
        labels = read_idx(DATA_DIR / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz")
    _write_mnist_test_files(tmp_path / "bad" / "mnist", images, labels)
    with pytest.raises(DataError, match=message) as caught:
        load_test_split("mnist", tmp_path / "bad")
    assert "\n" not in str(caught.value)
    assert str(caught.value).endswith("run 'hpo data fetch mnist'")


# ---------------------------------------------------------------------------------------
# Lookup


def test_missing_data_lists_every_place_searched(places):
    with pytest.raises(DataError) as caught:
        load_training_pool("mnist", data_dir=places["explicit"])
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("mnist: data files not found; searched ")
    expected_order = [
        f"{places['explicit'] / 'mnist'} (data_dir)",
        f"{places['explicit']} (data_dir)",
        f"{places['env'] / 'mnist'} ($HPO_DATA_DIR)",
        f"{places['xdg'] / 'hpo' / 'datasets' / 'mnist'} (user cache)",
        f"{places['system'] / 'mnist'} (system)",
    ]
    positions = [text.index(place) for place in expected_order]
    assert positions == sorted(positions)
    assert "run 'hpo data fetch mnist'" in text


def test_missing_data_without_HPO_DATA_DIR_or_XDG_says_so(places, monkeypatch):
    monkeypatch.delenv("HPO_DATA_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    with pytest.raises(DataError) as caught:
        load_test_split("fashion-mnist")
    text = str(caught.value)
    assert "$HPO_DATA_DIR not set" in text
    assert f"{places['home'] / '.cache' / 'hpo' / 'datasets' / 'fashion-mnist'} (user cache)" in text
    assert "or install the dataset-fashion-mnist package" in text


def test_an_incomplete_folder_is_named_with_what_it_lacks(places):
    cache = places["xdg"] / "hpo" / "datasets" / "fashion-mnist"
    cache.mkdir(parents=True)
    (cache / "t10k-labels-idx1-ubyte.gz").symlink_to(DATA_DIR / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match=r"fashion-mnist \(user cache: incomplete, missing train-images-idx3-ubyte\.gz, "
                       r"train-labels-idx1-ubyte\.gz, t10k-images-idx3-ubyte\.gz\)"):
        load_training_pool("fashion-mnist")


@pytest.mark.parametrize(
    ("filled", "winner"),
    [
        (["explicit/mnist", "env/mnist", "cache/mnist", "system/mnist"], "explicit/mnist"),
        (["explicit", "env/mnist", "cache/mnist", "system/mnist"], "explicit"),
        (["env/mnist", "cache/mnist", "system/mnist"], "env/mnist"),
        (["cache/mnist", "system/mnist"], "cache/mnist"),
        (["system/mnist"], "system/mnist"),
    ],
)
def test_lookup_order_is_explicit_env_cache_system(places, filled, winner):
    roots = {
        "explicit": places["explicit"],
        "env": places["env"],
        "cache": places["xdg"] / "hpo" / "datasets",
        "system": places["system"],
    }

    def folder(spec: str) -> Path:
        root, _, sub = spec.partition("/")
        return roots[root] / sub

    for spec in filled:
        link_mnist_test_files(folder(spec))
    assert locate("mnist", places["explicit"]).folder == folder(winner)
    assert len(load_test_split("mnist", places["explicit"])) == 5_000


def test_HPO_DATA_DIR_needs_a_folder_per_data_set(places):
    link_mnist_test_files(places["env"])  # the files directly in $HPO_DATA_DIR, not in mnist/
    assert locate("mnist").status == "missing"


def test_uncompressed_copies_are_read_like_the_gzip_ones(tmp_path, places):
    folder = tmp_path / "raw" / "mnist"
    folder.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(gzip.decompress((DATA_DIR / "mnist" / f"{name}.gz").read_bytes()))
    raw = load_test_split("mnist", tmp_path / "raw")
    packed = load_test_split("mnist", DATA_DIR)
    assert np.array_equal(raw.x, packed.x) and np.array_equal(raw.y, packed.y)
    assert [c.status for c in verify("mnist", tmp_path / "raw")] == ["ok", "ok"]


def test_list_datasets_reports_each_set(places):
    by_name = {loc.name: loc for loc in list_datasets(DATA_DIR)}
    assert list(by_name) == ["mnist", "fashion-mnist", "digits"]
    mnist = by_name["mnist"]
    assert (mnist.status, mnist.pool_size, mnist.test_size) == ("test-only", 5_000, 5_000)
    assert set(by_name["mnist"].files) == {"test-images", "test-labels"}
    fashion = by_name["fashion-mnist"]
    assert (fashion.status, fashion.folder) == ("complete", DATA_DIR / "fashion-mnist")
    assert by_name["digits"].status == "bundled"
    assert [loc.status for loc in list_datasets()] == ["missing", "missing", "bundled"]


def test_verify_finds_a_changed_file(tmp_path, places):
    folder = tmp_path / "changed" / "mnist"
    labels = read_idx(DATA_DIR / "mnist" / "t10k-labels-idx1-ubyte.gz").copy()
    labels[0] = (labels[0] + 1) % 10
    _write_mnist_test_files(folder, None, labels)
    checks = {c.file: c for c in verify("mnist", folder.parent)}
    assert checks["t10k-images-idx3-ubyte.gz"].status == "ok"
    assert checks["t10k-labels-idx1-ubyte.gz"].status == "mismatch"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: load_training_pool("cifar"), r"unknown data set 'cifar'; choose one of mnist, fashion-mnist, digits"),
        (lambda: load_test_split("digits", dtype="float16"), r"dtype must be one of float32, float64; got 'float16'"),
        (lambda: Dataset(np.zeros((3, 2)), np.zeros(3)),
         r"Dataset\.y must be an int64 array \(n,\); got float64 array of shape \(3,\)"),
        (lambda: Dataset(np.zeros(3), np.zeros(3, np.int64)),
         r"Dataset\.x must be a float32 or float64 array \(n, d\); got float64 array of shape \(3,\)"),
        (lambda: Dataset(np.zeros((3, 2), np.float32), np.zeros(2, np.int64)), r"same length; got 3 and 2"),
    ],
)
def test_bad_arguments_fail_with_one_clear_line(call, message):
    with pytest.raises(DataError, match=message):
        call()


# ---------------------------------------------------------------------------------------
# Splits


def indexed_pool(class_counts=(100, 200, 300, 400)) -> Dataset:
    """A pool whose first column encodes each row's index, so parts can be traced back."""
    y = np.repeat(np.arange(len(class_counts)), class_counts)
    y = np.random.default_rng(1).permutation(y).astype(np.int64)
    x = np.zeros((len(y), 3), dtype=np.float64)
    x[:, 0] = np.arange(len(y)) / len(y)
    return Dataset(x, y, "an indexed test pool")


def indices(part: Dataset, n: int) -> np.ndarray:
    return np.rint(part.x[:, 0] * n).astype(int)


def test_split_of_the_whole_pool_is_disjoint_and_covers_it():
    pool = indexed_pool()
    train, validation = split_train_validation(pool, None, 0.25, seed=3)
    a, b = indices(train, len(pool)), indices(validation, len(pool))
    assert len(b) == 250 and len(a) == 750
    assert not set(a) & set(b)
    assert sorted(np.concatenate([a, b])) == list(range(len(pool)))
    assert np.array_equal(pool.y[a], train.y) and np.array_equal(pool.y[b], validation.y)


@pytest.mark.parametrize(("n_samples", "fraction"), [(1_000, 0.2), (500, 0.2), (101, 0.3), (40, 0.5)])
def test_split_is_stratified(n_samples, fraction):
    """Each class keeps its pool share in both parts, within one sample."""
    pool = indexed_pool()
    train, validation = split_train_validation(pool, n_samples, fraction, seed=0)
    share = np.bincount(pool.y) / len(pool)
    n_val = round(n_samples * fraction)
    assert len(validation) == n_val and len(train) == n_samples - n_val
    assert np.all(np.abs(np.bincount(validation.y) - share * n_val) < 1)
    assert np.all(np.abs(np.bincount(train.y) - share * (n_samples - n_val)) < 2)
    assert not set(indices(train, 1_000)) & set(indices(validation, 1_000))


def test_split_depends_only_on_the_seed():
    pool = indexed_pool()
    first = split_train_validation(pool, 300, 0.2, seed=7)
    again = split_train_validation(pool, 300, 0.2, seed=7)
    other = split_train_validation(pool, 300, 0.2, seed=8)
    for a, b in zip(first, again):
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(first[1].x, other[1].x)
    assert not first[0].x.flags.writeable and not first[1].y.flags.writeable


def test_the_books_500_sample_search_on_the_mnist_stand_in():
    train, validation = split_train_validation(load_training_pool("mnist", DATA_DIR), 500, 0.2, seed=0)
    assert (len(train), len(validation)) == (400, 100)
    assert train.x.dtype == np.float32
    assert np.bincount(validation.y, minlength=10).min() >= 8
    assert not set(rows(train.x)) & set(rows(validation.x))


@pytest.mark.parametrize(
    ("n_samples", "fraction", "seed", "message"),
    [
        (1_001, 0.2, 0, r"n_samples must be in \[2, 1000\], the pool size; got 1001 \(pool: an indexed test pool\)"),
        (1, 0.2, 0, r"n_samples must be in \[2, 1000\]"),
        (2.5, 0.2, 0, r"n_samples must be an integer in \[2, 1000\] or None for the whole pool; got 2\.5"),
        (True, 0.2, 0, r"n_samples must be an integer .* got True"),
        (100, 0.0, 0, r"validation_fraction must be a number in \(0, 1\), ends open; got 0\.0"),
        (100, 1, 0, r"validation_fraction must be a number in \(0, 1\), ends open; got 1"),
        (100, float("nan"), 0, r"validation_fraction must be a number in \(0, 1\), ends open; got nan"),
        (100, "0.2", 0, r"validation_fraction must be a number in \(0, 1\), ends open; got '0.2'"),
        (100, 0.2, -1, r"seed must be an integer >= 0; got -1"),
        (100, 0.2, 1.5, r"seed must be an integer >= 0; got 1\.5"),
        (6, 0.5, 0, r"n_samples must be at least 8 \(two per class for 4 classes, so each is in both parts\); got 6"),
        (100, 0.02, 0, r"validation_fraction=0\.02 of n_samples=100 gives 2 validation and 98 training samples; "
                       r"each part needs at least one per class \(4\)"),
        (10, 0.4, 0, r"class 0 gets 0 validation and 1 training samples \(100 in the pool\)"),
    ],
)
def test_bad_split_arguments_fail_with_one_clear_line(n_samples, fraction, seed, message):
    with pytest.raises(DataError, match=message):
        split_train_validation(indexed_pool(), n_samples, fraction, seed)


def test_split_needs_a_dataset():
    with pytest.raises(DataError, match=r"pool must be a Dataset \(from load_training_pool\); got tuple"):
        split_train_validation((np.zeros((4, 2)), np.zeros(4)), None, 0.5, 0)


def fold_digest(folds: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for fold in folds:
        h.update(np.asarray(fold, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()


SMALL_LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 0, 2, 2, 1, 0, 0, 1, 2, 1, 1], dtype=np.int64)


@pytest.mark.parametrize(
    ("k", "seed", "expected"),
    [
        (3, 0, [[1, 5, 6, 8, 9, 10, 11], [7, 12, 15, 16, 18, 19, 20], [0, 2, 3, 4, 13, 14, 17]]),
        (4, 7, [[0, 2, 7, 12, 15, 19], [1, 6, 14, 16, 18], [3, 4, 5, 11, 17], [8, 9, 10, 13, 20]]),
    ],
)
def test_folds_are_the_ones_stored_studies_were_judged_on(k, seed, expected):
    """Pinned from the first implementation: a study with `folds = k` must see the same folds on resume."""
    assert [f.tolist() for f in stratified_folds(SMALL_LABELS, k, seed)] == expected


@pytest.mark.parametrize(
    ("name", "k", "seed", "digest"),
    [
        ("digits", 3, 0, "9e11824cef3a8d3b728b5b254a3b1c535422bd28bccf1a535f0b81a92a61293e"),
        ("digits", 5, 42, "ad18359347665c19e116ebeeeb59c99192bbfcc94142ba6d496b6e8d8ee1db3b"),
        ("digits", 10, 1, "aa15a218f7987400f2d4fa38c00e8a83eeb2d0b02a5c5a91e88fa62a836d1908"),
        ("mnist", 5, 3, "179d422cfad0bef3618f0ab3fb164859223cc23605b57c0e2d9152eb3effafda"),
    ],
)
def test_folds_of_real_pools_are_pinned(name, k, seed, digest):
    assert fold_digest(stratified_folds(load_training_pool(name, DATA_DIR).y, k, seed)) == digest


@pytest.mark.parametrize(("class_counts", "k"), [((100, 200, 300, 400), 3), ((7, 5, 11, 1), 4), ((50, 50), 10)])
@pytest.mark.parametrize("seed", [0, 5])
def test_folds_are_disjoint_cover_the_labels_and_share_every_class(class_counts, k, seed):
    """Within a class, fold sizes differ by at most one."""
    y = indexed_pool(class_counts).y
    folds = stratified_folds(y, k, seed)
    assert len(folds) == k
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(y)))
    for fold in folds:
        assert np.all(np.diff(fold) > 0)  # sorted, no repeats
    per_class = np.array([np.bincount(y[fold], minlength=len(class_counts)) for fold in folds])  # (k, classes)
    assert np.all(per_class.max(axis=0) - per_class.min(axis=0) <= 1)
    # Remainders rotate: fold sizes differ by at most one too.
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    assert all(np.array_equal(a, b) for a, b in zip(folds, stratified_folds(y, k, seed)))


@pytest.mark.parametrize(
    ("y", "k", "seed", "message"),
    [
        (SMALL_LABELS, 1, 0, r"k must be an integer in \[2, 21\], the number of labels; got 1"),
        (SMALL_LABELS, 22, 0, r"k must be an integer in \[2, 21\], the number of labels; got 22"),
        (SMALL_LABELS, 3.0, 0, r"k must be an integer in \[2, 21\], the number of labels; got 3\.0"),
        (SMALL_LABELS, 3, -1, r"seed must be an integer >= 0; got -1"),
        (SMALL_LABELS.astype(float), 3, 0, r"y must be a 1-D integer array of class labels; got float64 array"),
        (SMALL_LABELS.reshape(3, 7), 3, 0, r"y must be a 1-D integer array of class labels; got int64 array of shape \(3, 7\)"),
    ],
)
def test_bad_fold_arguments_fail_with_one_clear_line(y, k, seed, message):
    with pytest.raises(DataError, match=message):
        stratified_folds(y, k, seed)


# ---------------------------------------------------------------------------------------
# `hpo data list` and `hpo data verify`

runner = CliRunner()


def test_cli_list_as_json(places):
    result = runner.invoke(app, ["list", "--json", "--data-dir", str(DATA_DIR)])
    assert result.exit_code == 0, result.stderr
    listed = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert listed["mnist"]["status"] == "test-only"
    assert (listed["mnist"]["pool_size"], listed["mnist"]["test_size"]) == (5_000, 5_000)
    assert listed["fashion-mnist"]["location"] == str(DATA_DIR / "fashion-mnist")
    assert listed["digits"]["status"] == "bundled"
    assert result.stderr == ""


def test_cli_list_as_a_table(places):
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["name", "status", "samples", "(pool", "+", "test)", "location"]
    assert lines[2].split()[:2] == ["mnist", "missing"]
    assert lines[4].split() == ["digits", "bundled", "1,438", "+", "359", "package"]
    assert "mnist: not found; 'hpo data fetch mnist' downloads it into" in result.stdout


def _copy_mnist_test_files(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).write_bytes((DATA_DIR / "mnist" / name).read_bytes())
    return folder


@pytest.mark.parametrize("cut", [0.5, 0.99, 10])
def test_cli_list_does_not_call_a_truncated_gzip_ok(tmp_path, places, cut):
    """A download cut short: the gzip ends before its trailer, whose recorded length then cannot match."""
    folder = _copy_mnist_test_files(tmp_path / "cut" / "mnist")
    images = folder / "t10k-images-idx3-ubyte.gz"
    raw = images.read_bytes()
    images.write_bytes(raw[: int(len(raw) * cut) if cut < 1 else cut])
    result = runner.invoke(app, ["list", "--data-dir", str(tmp_path / "cut")])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[2].split()[:2] == ["mnist", "damaged"]
    why = ("truncated: 10 bytes, too short for a gzip file" if cut == 10 else
           "truncated or another file: its gzip trailer does not record the 7,840,016 uncompressed bytes of "
           "the registry's file")
    assert f"mnist: t10k-images-idx3-ubyte.gz: {why}; delete it and run 'hpo data fetch mnist'\n" in result.stdout
    listed = json.loads(runner.invoke(app, ["list", "--json", "--data-dir", str(tmp_path / "cut")]).stdout)
    assert listed[0]["status"] == "damaged"
    assert listed[0]["problems"] == {"t10k-images-idx3-ubyte.gz": why}
    assert [c.status for c in verify("mnist", tmp_path / "cut")] == ["unreadable", "ok"]  # the full check agrees


def test_cli_list_checks_the_size_of_uncompressed_files(tmp_path, places):
    folder = _copy_mnist_test_files(tmp_path / "raw" / "mnist")
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    (folder / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(labels.read_bytes())[:-1])
    labels.unlink()
    listed = json.loads(runner.invoke(app, ["list", "--json", "--data-dir", str(tmp_path / "raw")]).stdout)
    assert listed[0]["problems"] == {
        "t10k-labels-idx1-ubyte.gz": "10,007 bytes where the uncompressed file has 10,008 (truncated or another file)"}


def test_whole_files_are_listed_without_problems(tmp_path, places):
    folder = _copy_mnist_test_files(tmp_path / "whole" / "mnist")
    packed = folder / "t10k-labels-idx1-ubyte.gz"
    (folder / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(packed.read_bytes()))
    packed.unlink()  # an uncompressed copy is read as well
    assert locate("mnist", tmp_path / "whole").problems == {}
    assert locate("fashion-mnist", DATA_DIR).problems == {}


def test_cli_verify_passes_on_the_real_files(places):
    result = runner.invoke(app, ["verify", "mnist", "--data-dir", str(DATA_DIR)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("ok      sha256") == 2
    assert "training files absent" in result.stdout


def test_cli_verify_fails_on_a_changed_file(tmp_path, places):
    labels = read_idx(DATA_DIR / "mnist" / "t10k-labels-idx1-ubyte.gz").copy()
    labels[:2] = labels[1::-1]
    _write_mnist_test_files(tmp_path / "changed" / "mnist", None, labels)
    result = runner.invoke(app, ["verify", "mnist", "--data-dir", str(tmp_path / "changed")])
    assert result.exit_code == 1
    assert "mismatch" in result.stdout
    assert result.stderr == (
        "Error: 1 of 2 mnist files failed the check (t10k-labels-idx1-ubyte.gz); "
        "delete them and run 'hpo data fetch mnist'\n"
    )


def test_cli_reports_missing_data_in_one_line(places):
    result = runner.invoke(app, ["verify", "fashion-mnist"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: fashion-mnist: data files not found; searched ")
    assert result.stderr.count("\n") == 1


def test_cli_rejects_an_unknown_data_set():
    result = runner.invoke(app, ["verify", "cifar"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "'cifar' is not one of" in result.stderr


def test_hpo_data_as_a_real_process(places):
    # Run `python -m hpo data ...` from the checkout the tests import.
    root = Path(trainer.__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    ok = subprocess.run([sys.executable, "-m", "hpo", "data", "list", "--json", "--data-dir", str(DATA_DIR)],
                        capture_output=True, text=True, cwd=root, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert [e["status"] for e in json.loads(ok.stdout)] == ["test-only", "complete", "bundled"]
    missing = subprocess.run([sys.executable, "-m", "hpo", "data", "verify", "mnist"],
                             capture_output=True, text=True, cwd=root, env=env, timeout=120)
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert missing.stderr.startswith("Error: mnist: data files not found; searched ")
    assert "Traceback" not in missing.stderr and missing.stderr.count("\n") == 1
