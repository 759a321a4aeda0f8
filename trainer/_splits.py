"""Seeded stratified splits: a pool into training and validation parts, labels into k folds."""

from __future__ import annotations

import numbers

import numpy as np

from trainer._datasets import DataError, Dataset, read_only


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Share `total` among classes in proportion to `counts` (largest remainder; ties go
    to the lower class index), so shares differ from exact proportions by less than one."""
    exact = counts * (total / counts.sum())
    share = np.floor(exact).astype(np.int64)
    remainder = exact - share
    order = np.lexsort((np.arange(len(counts)), -remainder))
    share[order[: total - share.sum()]] += 1
    return share


def stratified_partition(y: np.ndarray, first_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted index arrays (first, rest) covering y, first of size first_size."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    take = _allocate(counts, first_size)
    first, rest = [], []
    for cls, k in zip(classes, take):
        idx = rng.permutation(np.flatnonzero(y == cls))
        first.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(rest))


def stratified_folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """k disjoint folds covering y, each with about the same share of every class.

    Each class is shuffled by the seed and cut into k parts whose sizes differ by at most
    one; the part that gets a class's extra sample rotates, so the remainders do not all
    land in the first fold. Studies with `folds = k` are judged on these folds, so the
    assignment for a given (y, k, seed) must never change.

    Args:
        y: class labels, a 1-D integer array.
        k: number of folds, an integer in [2, len(y)].
        seed: integer >= 0.

    Returns:
        k sorted index arrays into y.

    Raises:
        DataError: an argument breaks its rule.
    """
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"y must be a 1-D integer array of class labels; got {y.dtype} array of shape {y.shape}")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 2 <= k <= len(y):
        raise DataError(f"k must be an integer in [2, {len(y)}], the number of labels; got {k!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise DataError(f"seed must be an integer >= 0; got {seed!r}")
    rng = np.random.default_rng(int(seed))
    buckets: list[list[np.ndarray]] = [[] for _ in range(k)]
    offset = 0
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        for i, part in enumerate(np.array_split(members, k)):
            buckets[(i + offset) % k].append(part)
        offset += len(members) % k
    return [np.sort(np.concatenate(b)) for b in buckets]


def split_train_validation(
    pool: Dataset, n_samples: int | None, validation_fraction: float, seed: int
) -> tuple[Dataset, Dataset]:
    """Draw n_samples from the pool and split them into training and validation parts.

    Both draws are stratified (each class keeps its share of the pool, within one
    sample) and depend only on the seed; the parts are disjoint and every class is in
    both.

    Args:
        pool: from `load_training_pool`.
        n_samples: how many samples to use in total; None uses the whole pool.
        validation_fraction: share of n_samples held out for validation, in (0, 1);
            the validation size is round(n_samples * validation_fraction).
        seed: integer >= 0.

    Returns:
        (train, validation), read-only Datasets.

    Raises:
        DataError: an argument breaks its rule, or a class would be missing from a part.
    """
    if not isinstance(pool, Dataset):
        raise DataError(f"pool must be a Dataset (from load_training_pool); got {type(pool).__name__}")
    size = len(pool)
    if n_samples is None:
        n_samples = size
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral):
        raise DataError(f"n_samples must be an integer in [2, {size}] or None for the whole pool; got {n_samples!r}")
    n_samples = int(n_samples)
    if not 2 <= n_samples <= size:
        raise DataError(
            f"n_samples must be in [2, {size}], the pool size; got {n_samples} (pool: {pool.source or 'as given'})"
        )
    if (
        isinstance(validation_fraction, bool)
        or not isinstance(validation_fraction, numbers.Real)
        or not 0 < validation_fraction < 1
    ):
        raise DataError(f"validation_fraction must be a number in (0, 1), ends open; got {validation_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise DataError(f"seed must be an integer >= 0; got {seed!r}")

    classes, counts = np.unique(pool.y, return_counts=True)
    n_val = round(n_samples * validation_fraction)
    if n_samples < 2 * len(classes):
        raise DataError(
            f"n_samples must be at least {2 * len(classes)} (two per class for {len(classes)} classes, "
            f"so each is in both parts); got {n_samples}"
        )
    if not len(classes) <= n_val <= n_samples - len(classes):
        raise DataError(
            f"validation_fraction={validation_fraction} of n_samples={n_samples} gives {n_val} validation and "
            f"{n_samples - n_val} training samples; each part needs at least one per class ({len(classes)}); "
            f"move validation_fraction towards 0.5 or use more samples"
        )
    take = _allocate(counts, n_samples)
    take_val = _allocate(take, n_val)
    for cls, k, v, available in zip(classes, take, take_val, counts):
        if v < 1 or k - v < 1:
            raise DataError(
                f"class {cls} gets {v} validation and {k - v} training samples ({available} in the pool); "
                f"use more samples or move validation_fraction towards 0.5"
            )

    rng = np.random.default_rng(int(seed))
    train_parts, val_parts = [], []
    for cls, k, v in zip(classes, take, take_val):
        idx = rng.permutation(np.flatnonzero(pool.y == cls))[:k]
        val_parts.append(idx[:v])
        train_parts.append(idx[v:])
    train_idx = np.sort(np.concatenate(train_parts))
    val_idx = np.sort(np.concatenate(val_parts))

    def part(idx: np.ndarray, what: str) -> Dataset:
        source = f"{what} {len(idx):,} of {n_samples:,} drawn from {pool.source or 'a pool'} (seed {seed})"
        return read_only(Dataset(pool.x[idx], pool.y[idx], source))

    return part(train_idx, "train"), part(val_idx, "validation")
