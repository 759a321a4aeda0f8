"""Loading a data set's training pool or test split, cast once and shared within the process."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from trainer._digits import DigitsFileError, read_digits
from trainer._datasets import (
    DIGITS_SEED,
    DIGITS_SIZE,
    DIGITS_TEST_SIZE,
    REGISTRY,
    STANDIN_POOL_SIZE,
    STANDIN_SEED,
    Dataset,
    DatasetInfo,
    DataError,
    check_dtype,
    dataset_info,
    read_only,
)
from trainer._idx import read_cached
from trainer._lookup import require
from trainer._splits import stratified_partition


def load_training_pool(name: str, data_dir: str | os.PathLike | None = None, dtype: str = "float32") -> Dataset:
    """The samples a search may train and validate on (never the test split).

    Args:
        name: "mnist", "fashion-mnist" or "digits".
        data_dir: a folder to look in before the standard places.
        dtype: "float32" or "float64"; images are cast once, here.

    Returns:
        A Dataset with read-only arrays, shared by later calls in this process.
        MNIST without its training files gives the fixed 5,000-image half of t10k.
    """
    return _load(name, data_dir, dtype, "pool")


def load_test_split(name: str, data_dir: str | os.PathLike | None = None, dtype: str = "float32") -> Dataset:
    """The held-out test samples, disjoint from `load_training_pool`; arguments as there."""
    return _load(name, data_dir, dtype, "test")


def _load(name: str, data_dir: str | os.PathLike | None, dtype: str, part: str) -> Dataset:
    info = dataset_info(name)
    dtype = check_dtype(dtype)
    if info.bundled:
        return _load_digits(dtype, part)
    location = require(name, data_dir)
    if location.status == "complete":
        prefix = "train" if part == "pool" else "test"
        roles = (f"{prefix}-images", f"{prefix}-labels")
    else:
        roles = ("test-images", "test-labels")
    signature = tuple(_stat(role, location.files[role]) for role in roles)
    return _build(name, dtype, part, location.status, signature)


def _stat(role: str, path: Path) -> tuple[str, str, int, int]:
    st = path.stat()
    return role, str(path), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=4)
def _build(name: str, dtype: str, part: str, status: str, signature: tuple) -> Dataset:
    info = REGISTRY[name]
    (_, images_path, *images_stat), (_, labels_path, *labels_stat) = signature
    images = _read_checked(info, "images", images_path, images_stat)
    labels = _read_checked(info, "labels", labels_path, labels_stat)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path}: {len(images):,} images but {labels_path} has {len(labels):,} labels; "
            f"the two files are from different sets, run 'hpo data fetch {name}'"
        )
    expected = info.pool_size if status == "complete" and part == "pool" else info.test_size
    if len(labels) != expected:
        raise DataError(
            f"{images_path}: wrong size for {name}: {len(labels):,} images, expected {expected:,}; "
            f"delete the files and run 'hpo data fetch {name}'"
        )
    folder = Path(images_path).parent
    if status == "complete":
        split = "train" if part == "pool" else "t10k"
        source = f"{name} {split}-* ({len(labels):,} images) in {folder}"
    else:
        pool_idx, test_idx = stratified_partition(labels, STANDIN_POOL_SIZE, STANDIN_SEED)
        keep = pool_idx if part == "pool" else test_idx
        images, labels = images[keep], labels[keep]
        other = "test split" if part == "pool" else "training pool"
        source = (
            f"{name} stand-in: {len(keep):,} of the {expected:,} t10k-* images in {folder} "
            f"(fixed stratified half, seed {STANDIN_SEED}; the other half is the {other}; no training files found)"
        )
    x = images.reshape(len(images), -1).astype(dtype)  # (n, rows * cols), the one cast
    x /= 255
    return read_only(Dataset(x, labels.astype(np.int64), source))


def _read_checked(info: DatasetInfo, kind: str, path: str, stat: list[int]) -> np.ndarray:
    """Read one of a registered set's files and check it is what the set needs."""
    fix = f"delete it and run 'hpo data fetch {info.name}'"
    array, sha = read_cached(path, *stat, fix)
    want_ndim = 3 if kind == "images" else 1
    if array.ndim != want_ndim:
        other = "labels" if kind == "images" else "images"
        raise DataError(f"{path}: holds {other} (magic 0x{0x800 + array.ndim:08X}) where {kind} were expected; {fix}")
    if kind == "images" and array.shape[1:] != info.image_shape:
        rows, cols = info.image_shape
        got = "x".join(map(str, array.shape[1:]))
        raise DataError(f"{path}: wrong size: images are {got} pixels, {info.name} has {rows}x{cols}; {fix}")
    if kind == "labels":
        if array.size and array.max() >= info.classes:
            raise DataError(f"{path}: label {array.max()} outside 0..{info.classes - 1}; {fix}")
        # MNIST and Fashion-MNIST use the same file names; a copy in the wrong folder
        # would otherwise load silently as the other set.
        file_name = Path(path).name if Path(path).name.endswith(".gz") else Path(path).name + ".gz"
        for other in REGISTRY.values():
            if other.name != info.name and other.sha256.get(file_name) == sha:
                raise DataError(f"{path}: this file belongs to {other.name}, not {info.name}; {fix}")
    return array


@functools.lru_cache(maxsize=4)
def _load_digits(dtype: str, part: str) -> Dataset:
    try:
        images, labels = read_digits()  # (1797, 64) counts 0..16, (1797,)
    except DigitsFileError as exc:
        raise DataError(f"digits: {exc}") from None
    if len(labels) != DIGITS_SIZE:
        raise DataError(f"digits: the bundled file holds {len(labels)} images, expected {DIGITS_SIZE}; "
                        "reinstall hpo-studies")
    test_idx, pool_idx = stratified_partition(labels, DIGITS_TEST_SIZE, DIGITS_SEED)
    keep = pool_idx if part == "pool" else test_idx
    x = images[keep].astype(dtype)
    x /= 16
    what = "training pool" if part == "pool" else "test split"
    source = (
        f"digits {what}: {len(keep):,} of the {DIGITS_SIZE:,} bundled 8x8 digits "
        f"(fixed stratified 20% test hold-out, seed {DIGITS_SEED})"
    )
    return read_only(Dataset(x, labels[keep], source))
