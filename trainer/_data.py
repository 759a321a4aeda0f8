"""Data sets for the trainer: IDX reader, registry, lookup on disk, download, splits.

Everything works offline once the files are on disk; only `download` touches the network.
Files are found, in order, in an explicit folder, `$HPO_DATA_DIR`, the per-user cache
(`$XDG_CACHE_HOME/hpo/datasets` or `~/.cache/hpo/datasets`) and `/usr/share/datasets`
(Debian's `dataset-*` packages). See docs/data.md.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import numbers
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

__all__ = [
    "DataError",
    "Dataset",
    "DatasetInfo",
    "FileCheck",
    "Location",
    "REGISTRY",
    "cache_root",
    "download",
    "list_datasets",
    "load_test_split",
    "load_training_pool",
    "locate",
    "read_idx",
    "split_train_validation",
    "verify",
]

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
DTYPES = ("float32", "float64")

# Where Debian's dataset-* packages put their files; a module constant so tests can move it.
SYSTEM_ROOT = Path("/usr/share/datasets")

# The MNIST stand-in: without the training files, the 10,000 t10k images are split into a
# fixed stratified pool and test half. Changing either constant changes every result.
STANDIN_SEED = 1998
STANDIN_POOL_SIZE = 5_000

# scikit-learn's bundled digits: a fixed stratified 20% is held out as the test split.
DIGITS_SEED = 1997
DIGITS_SIZE = 1_797
DIGITS_TEST_SIZE = round(DIGITS_SIZE * 0.2)  # 359

DOWNLOAD_TIMEOUT = 60  # seconds without data before a mirror is given up
_CHUNK = 1 << 16

Progress = Callable[[str, int, "int | None"], None]


class DataError(Exception):
    """A data set cannot be found, read, downloaded or split.

    The message is one line: the file or argument, what is wrong, and how to fix it.
    """


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images and labels, ready for the trainer.

    Attributes:
        x: float array (n, d) with values in [0, 1], in the dtype asked for at load time.
        y: int64 array (n,) of class indices.
        source: where the samples come from, for people (which files, which split).
    """

    x: np.ndarray
    y: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        x, y = self.x, self.y
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.dtype.name not in DTYPES:
            raise DataError(f"Dataset.x must be a float32 or float64 array (n, d); got {_describe(x)}")
        if not isinstance(y, np.ndarray) or y.ndim != 1 or y.dtype != np.int64:
            raise DataError(f"Dataset.y must be an int64 array (n,); got {_describe(y)}")
        if len(x) != len(y):
            raise DataError(f"Dataset.x and Dataset.y must have the same length; got {len(x)} and {len(y)}")

    def __len__(self) -> int:
        return len(self.y)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


# ---------------------------------------------------------------------------------------
# Registry

_FILES = MappingProxyType(
    {
        "train-images": "train-images-idx3-ubyte.gz",
        "train-labels": "train-labels-idx1-ubyte.gz",
        "test-images": "t10k-images-idx3-ubyte.gz",
        "test-labels": "t10k-labels-idx1-ubyte.gz",
    }
)


@dataclass(frozen=True)
class DatasetInfo:
    """What the project knows about one data set.

    Attributes:
        name: registry key, also the folder name under every data root.
        title: for people.
        input_size, classes: what a network for it takes in and puts out.
        pool_size, test_size: samples in the training pool and the test split when all
            files are present (for bundled sets, after the fixed hold-out).
        files: role ("train-images", ...) -> file name; empty for bundled sets.
        sha256: file name -> sha256 of the decompressed content, where known.
        md5: file name -> MD5 of the original gzip file, as published (for downloads).
        mirrors: base URLs tried in order by `download`.
        image_shape: (rows, cols) of one image.
        test_only_standin: without the training files, split the test files into a
            pool half and a test half instead of failing.
        package: a system package that installs the files under /usr/share/datasets.
    """

    name: str
    title: str
    input_size: int
    classes: int
    pool_size: int
    test_size: int
    files: Mapping[str, str]
    sha256: Mapping[str, str]
    md5: Mapping[str, str]
    mirrors: tuple[str, ...]
    image_shape: tuple[int, int] = (28, 28)
    test_only_standin: bool = False
    package: str | None = None

    @property
    def bundled(self) -> bool:
        """True when the data ship with a library and there are no files to find."""
        return not self.files


REGISTRY: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        title="MNIST handwritten digits (LeCun, Cortes, Burges; CC BY-SA 3.0)",
        input_size=784,
        classes=10,
        pool_size=60_000,
        test_size=10_000,
        files=_FILES,
        sha256=MappingProxyType(
            {
                "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            }
        ),
        md5=MappingProxyType(
            {
                "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
            }
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        test_only_standin=True,
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        title="Fashion-MNIST (Zalando SE; MIT)",
        input_size=784,
        classes=10,
        pool_size=60_000,
        test_size=10_000,
        files=_FILES,
        sha256=MappingProxyType(
            {
                "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            }
        ),
        md5=MappingProxyType(
            {
                "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
            }
        ),
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        package="dataset-fashion-mnist",
    ),
    "digits": DatasetInfo(
        name="digits",
        title="scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set)",
        input_size=64,
        classes=10,
        pool_size=DIGITS_SIZE - DIGITS_TEST_SIZE,
        test_size=DIGITS_TEST_SIZE,
        files=MappingProxyType({}),
        sha256=MappingProxyType({}),
        md5=MappingProxyType({}),
        mirrors=(),
        image_shape=(8, 8),
    ),
}


def _info(name: str) -> DatasetInfo:
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(REGISTRY)}") from None


def _dtype(dtype: object) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise DataError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return name


# ---------------------------------------------------------------------------------------
# IDX files

_GENERIC_FIX = "replace it with a good copy (hpo data fetch NAME downloads the registered sets)"


def read_idx(path: str | os.PathLike, *, fix: str | None = None) -> np.ndarray:
    """Read one IDX file of unsigned bytes, gzip-compressed or raw.

    Args:
        path: the file. Compression is detected from the content, not the name.
        fix: how to repair a bad file, appended to error messages.

    Returns:
        A read-only uint8 array shaped as the header says: (n,) for labels,
        (n, rows, cols) for images.

    Raises:
        DataError: unreadable, truncated, corrupt gzip, bad magic number, unsupported
            element type or a length that disagrees with the header; one line each.
    """
    return _decode(Path(path), fix or _GENERIC_FIX)[0]


def _decode(path: Path, fix: str) -> tuple[np.ndarray, bytes]:
    """The parsed array and the decompressed bytes it was parsed from."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc}); check the path and its permissions") from None
    raw = _gunzip(raw, path, fix)
    return _parse_idx(raw, path, fix), raw


def _gunzip(raw: bytes, path: Path, fix: str) -> bytes:
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataError(f"{path}: truncated gzip file (the compressed data end early); {fix}") from None
    except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: corrupt gzip file ({exc}); {fix}") from None


def _parse_idx(raw: bytes, path: Path, fix: str) -> np.ndarray:
    if len(raw) < 4:
        raise DataError(f"{path}: truncated: {len(raw)} bytes, too short for an IDX header; {fix}")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (IMAGES_MAGIC, LABELS_MAGIC):
        if raw[:2] == b"\0\0" and raw[3] in (1, 3):
            raise DataError(
                f"{path}: unsupported IDX element type 0x{raw[2]:02X}; only unsigned bytes (0x08) are read; {fix}"
            )
        raise DataError(
            f"{path}: bad magic number 0x{magic:08X}, expected 0x{IMAGES_MAGIC:08X} (images) or "
            f"0x{LABELS_MAGIC:08X} (labels): not an IDX file; {fix}"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated: the IDX header needs {header} bytes, the file has {len(raw)}; {fix}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    found = len(raw) - header
    shape = "x".join(str(d) for d in dims)
    if found < expected:
        raise DataError(
            f"{path}: truncated: the header declares {shape} = {expected:,} bytes of data, "
            f"the file holds {found:,}; {fix}"
        )
    if found > expected:
        raise DataError(
            f"{path}: wrong size: {found:,} bytes of data where the header declares {shape} = {expected:,}; {fix}"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=expected, offset=header).reshape(dims)


@functools.lru_cache(maxsize=4)
def _read_cached(path: str, mtime_ns: int, size: int, fix: str) -> tuple[np.ndarray, str]:
    """The decoded file and, for labels, the sha256 of its decompressed content; keyed
    by stat so a replaced file is read again."""
    del mtime_ns, size
    array, raw = _decode(Path(path), fix)
    return array, (hashlib.sha256(raw).hexdigest() if array.ndim == 1 else "")


# ---------------------------------------------------------------------------------------
# Lookup


def cache_root() -> Path:
    """The per-user download folder: `$XDG_CACHE_HOME/hpo/datasets` or `~/.cache/hpo/datasets`."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # XDG: relative paths are ignored
    return base / "hpo" / "datasets"


@dataclass(frozen=True)
class Location:
    """Where a data set's files are, or that they are missing.

    Attributes:
        name: the data set.
        status: "complete" (all files), "test-only" (MNIST without its training files:
            pool and test are the two halves of t10k), "bundled" (ships with a library)
            or "missing".
        folder: the folder the files are read from, None when bundled or missing.
        files: role ("train-images", ...) -> path of each file found there.
        searched: every place looked at, in order, each with a note.
        pool_size, test_size: samples `load_training_pool` / `load_test_split` give;
            None when missing.
    """

    name: str
    status: str
    folder: Path | None
    files: Mapping[str, Path]
    searched: tuple[str, ...]
    pool_size: int | None
    test_size: int | None


def _find_file(folder: Path, file_name: str) -> Path | None:
    # The registry names the gzip files; an uncompressed copy is accepted too.
    for candidate in (folder / file_name, folder / file_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _roots(name: str, data_dir: str | os.PathLike | None) -> list[tuple[Path | None, str]]:
    """Folders to look in, in order, each with a label; a None folder is a place not set."""
    roots: list[tuple[Path | None, str]] = []
    if data_dir is not None:
        explicit = Path(data_dir).expanduser()
        roots += [(explicit / name, "data_dir"), (explicit, "data_dir")]
    env = os.environ.get("HPO_DATA_DIR", "")
    roots.append((Path(env).expanduser() / name, "$HPO_DATA_DIR") if env else (None, "$HPO_DATA_DIR not set"))
    roots.append((cache_root() / name, "user cache"))
    roots.append((SYSTEM_ROOT / name, "system"))
    return roots


def locate(name: str, data_dir: str | os.PathLike | None = None) -> Location:
    """Find a data set's files without reading them.

    Args:
        name: a registry name (`REGISTRY`).
        data_dir: a folder to look in first, holding `NAME/FILE` or `FILE`.

    Returns:
        A Location; its status is "missing" (never an error) when nothing is found.
    """
    info = _info(name)
    if info.bundled:
        return Location(name, "bundled", None, {}, (), info.pool_size, info.test_size)
    searched = []
    test_roles = ("test-images", "test-labels")
    for folder, label in _roots(name, data_dir):
        if folder is None:
            searched.append(label)
            continue
        found = {role: p for role, f in info.files.items() if (p := _find_file(folder, f)) is not None}
        if len(found) == len(info.files):
            searched.append(f"{folder} ({label}: found)")
            return Location(name, "complete", folder, found, tuple(searched), info.pool_size, info.test_size)
        if info.test_only_standin and all(r in found for r in test_roles):
            searched.append(f"{folder} ({label}: test files only)")
            files = {r: found[r] for r in test_roles}
            standin_test = info.test_size - STANDIN_POOL_SIZE
            return Location(name, "test-only", folder, files, tuple(searched), STANDIN_POOL_SIZE, standin_test)
        if found:
            missing = ", ".join(f for r, f in info.files.items() if r not in found)
            searched.append(f"{folder} ({label}: incomplete, missing {missing})")
        else:
            searched.append(f"{folder} ({label})")
    return Location(name, "missing", None, {}, tuple(searched), None, None)


def list_datasets(data_dir: str | os.PathLike | None = None) -> list[Location]:
    """`locate` for every registered data set, in registry order."""
    return [locate(name, data_dir) for name in REGISTRY]


def _require(name: str, data_dir: str | os.PathLike | None) -> Location:
    location = locate(name, data_dir)
    if location.status != "missing":
        return location
    info = REGISTRY[name]
    how = f"run 'hpo data fetch {name}', or set HPO_DATA_DIR to a folder whose {name}/ subfolder holds the IDX files"
    if info.package:
        how += f", or install the {info.package} package"
    raise DataError(f"{name}: data files not found; searched {'; '.join(location.searched)}; {how}")


# ---------------------------------------------------------------------------------------
# Loading


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
    info = _info(name)
    dtype = _dtype(dtype)
    if info.bundled:
        return _load_digits(dtype, part)
    location = _require(name, data_dir)
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
        pool_idx, test_idx = _stratified_partition(labels, STANDIN_POOL_SIZE, STANDIN_SEED)
        keep = pool_idx if part == "pool" else test_idx
        images, labels = images[keep], labels[keep]
        other = "test split" if part == "pool" else "training pool"
        source = (
            f"{name} stand-in: {len(keep):,} of the {expected:,} t10k-* images in {folder} "
            f"(fixed stratified half, seed {STANDIN_SEED}; the other half is the {other}; no training files found)"
        )
    x = images.reshape(len(images), -1).astype(dtype)  # (n, rows * cols), the one cast
    x /= 255
    return _frozen(Dataset(x, labels.astype(np.int64), source))


def _read_checked(info: DatasetInfo, kind: str, path: str, stat: list[int]) -> np.ndarray:
    """Read one of a registered set's files and check it is what the set needs."""
    fix = f"delete it and run 'hpo data fetch {info.name}'"
    array, sha = _read_cached(path, *stat, fix)
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


def _frozen(dataset: Dataset) -> Dataset:
    dataset.x.flags.writeable = False
    dataset.y.flags.writeable = False
    return dataset


@functools.lru_cache(maxsize=4)
def _load_digits(dtype: str, part: str) -> Dataset:
    try:
        from sklearn.datasets import load_digits  # only here: the rest of trainer/ is NumPy-only
    except ImportError:
        raise DataError("digits: needs scikit-learn, which bundles them; pip install scikit-learn") from None
    bunch = load_digits()
    images = bunch.data  # (1797, 64), integers 0..16
    labels = bunch.target.astype(np.int64)
    if len(labels) != DIGITS_SIZE:
        raise DataError(
            f"digits: scikit-learn gave {len(labels)} images, expected {DIGITS_SIZE}; reinstall scikit-learn"
        )
    test_idx, pool_idx = _stratified_partition(labels, DIGITS_TEST_SIZE, DIGITS_SEED)
    keep = pool_idx if part == "pool" else test_idx
    x = images[keep].astype(dtype)
    x /= 16
    what = "training pool" if part == "pool" else "test split"
    source = (
        f"digits {what}: {len(keep):,} of scikit-learn's {DIGITS_SIZE:,} bundled 8x8 digits "
        f"(fixed stratified 20% test hold-out, seed {DIGITS_SEED})"
    )
    return _frozen(Dataset(x, labels[keep], source))


# ---------------------------------------------------------------------------------------
# Splits


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Share `total` among classes in proportion to `counts` (largest remainder; ties go
    to the lower class index), so shares differ from exact proportions by less than one."""
    exact = counts * (total / counts.sum())
    share = np.floor(exact).astype(np.int64)
    remainder = exact - share
    order = np.lexsort((np.arange(len(counts)), -remainder))
    share[order[: total - share.sum()]] += 1
    return share


def _stratified_partition(y: np.ndarray, first_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
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
        return _frozen(Dataset(pool.x[idx], pool.y[idx], source))

    return part(train_idx, "train"), part(val_idx, "validation")


# ---------------------------------------------------------------------------------------
# Checksums


@dataclass(frozen=True)
class FileCheck:
    """The result of checking one file.

    Attributes:
        file: the registry file name.
        path: the file checked.
        status: "ok", "mismatch", "unverified" (no checksum known and the gzip is not the
            published one) or "unreadable".
        method: "sha256" (of the decompressed content) or "md5" (of the gzip file).
        expected, actual: the checksums compared (actual is None when unreadable).
        detail: one line for people.
    """

    file: str
    path: Path
    status: str
    method: str
    expected: str | None
    actual: str | None
    detail: str


def verify(name: str, data_dir: str | os.PathLike | None = None) -> list[FileCheck]:
    """Check the files that `locate` finds against the registry's checksums.

    Compares the sha256 of the decompressed content (distributors recompress the gzip
    files, so their MD5 differs); files without a known sha256 fall back to the MD5 of
    the gzip file.

    Returns:
        One FileCheck per file found; empty for bundled sets.

    Raises:
        DataError: the data set is unknown or its files are missing.
    """
    info = _info(name)
    if info.bundled:
        return []
    location = _require(name, data_dir)
    checks = []
    for role, path in location.files.items():
        file_name = info.files[role]
        checks.append(_check_file(info, file_name, path))
    return checks


def _check_file(info: DatasetInfo, file_name: str, path: Path) -> FileCheck:
    try:
        packed = path.read_bytes()
        content = _gunzip(packed, path, f"delete it and run 'hpo data fetch {info.name}'")
    except (OSError, DataError) as exc:
        detail = str(exc) if isinstance(exc, DataError) else f"{path}: cannot read it ({exc.strerror or exc})"
        return FileCheck(file_name, path, "unreadable", "sha256", info.sha256.get(file_name), None, detail)
    sha = info.sha256.get(file_name)
    if sha:
        actual = hashlib.sha256(content).hexdigest()
        status = "ok" if actual == sha else "mismatch"
        detail = f"sha256 of the decompressed content {'matches' if status == 'ok' else 'differs: ' + actual}"
        return FileCheck(file_name, path, status, "sha256", sha, actual, detail)
    md5 = info.md5.get(file_name)
    actual = hashlib.md5(packed, usedforsecurity=False).hexdigest()
    if md5 and actual == md5:
        return FileCheck(file_name, path, "ok", "md5", md5, actual, "MD5 matches the published gzip file")
    detail = "no sha256 known for the content, and the gzip is not the published file (recompressed?)"
    return FileCheck(file_name, path, "unverified", "md5", md5, actual, detail)


# ---------------------------------------------------------------------------------------
# Download


def download(
    name: str,
    dest: str | os.PathLike | None = None,
    base_url: str | None = None,
    progress: Progress | None = None,
) -> Path:
    """Download a data set's files and check each before it is kept.

    A file is kept when the MD5 of the gzip matches the published one, or, for a mirror
    that recompressed it, when the sha256 of its content matches the registry. Each file
    is written to a temporary file in the destination folder and renamed into place only
    after the check, so a failure leaves no partial file. Files already present and
    correct are not downloaded again.

    Args:
        name: a registry name with files ("mnist", "fashion-mnist").
        dest: the data root; files go into DEST/NAME/. Default: `cache_root()`.
        base_url: a URL (http, https or file) of the folder holding the files. Default:
            `$HPO_DATA_URL/NAME/` when that is set, else the registry's mirrors in order.
        progress: called as progress(file_name, bytes_done, bytes_total_or_None) while
            a file downloads; the last call for a file has bytes_done == bytes_total.
            Files already in place and correct are not reported.

    Returns:
        The folder holding the files.

    Raises:
        DataError: bundled set, bad URL, network failure or checksum mismatch (one line).
    """
    info = _info(name)
    if info.bundled:
        raise DataError(f"{name}: bundled with scikit-learn; there is nothing to download")
    bases = _bases(info, base_url)
    folder = (Path(dest).expanduser() if dest is not None else cache_root()) / name
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{folder}: cannot create it ({exc.strerror or exc}); choose another --dest") from None
    try:
        for file_name in info.files.values():
            target = folder / file_name
            if target.is_file() and _accepted(info, file_name, target.read_bytes()) is None:
                continue
            _fetch(info, file_name, bases, folder, progress)
    except BaseException:
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise
    return folder


def _bases(info: DatasetInfo, base_url: str | None) -> list[str]:
    env = os.environ.get("HPO_DATA_URL", "")
    if base_url:
        bases, origin = [base_url], "--url"
    elif env:
        bases, origin = [env.rstrip("/") + f"/{info.name}/"], "HPO_DATA_URL"
    else:
        bases, origin = list(info.mirrors), "mirror"
    for base in bases:
        if urllib.parse.urlsplit(base).scheme not in ("http", "https", "file"):
            raise DataError(f"{origin} must be an http://, https:// or file:// URL; got {base!r}")
    return [base if base.endswith("/") else base + "/" for base in bases]


def _accepted(info: DatasetInfo, file_name: str, packed: bytes) -> str | None:
    """None when the downloaded bytes are the right file, else why not."""
    md5 = hashlib.md5(packed, usedforsecurity=False).hexdigest()
    expected_md5 = info.md5.get(file_name)
    if md5 == expected_md5:
        return None
    sha = info.sha256.get(file_name)
    if sha:
        try:
            content = gzip.decompress(packed) if packed[:2] == b"\x1f\x8b" else packed
        except (EOFError, OSError, zlib.error):
            content = b""
        if hashlib.sha256(content).hexdigest() == sha:
            return None  # recompressed by the mirror, same content
        return f"MD5 {md5} does not match the published {expected_md5}, nor does the content match its sha256"
    return f"MD5 {md5} does not match the published {expected_md5}"


def _fetch(info: DatasetInfo, file_name: str, bases: list[str], folder: Path, progress: Progress | None) -> None:
    target = folder / file_name
    errors = []
    for base in bases:
        url = base + file_name
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{file_name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                problem = _stream(url, out, file_name, progress)
                out.flush()
                os.fsync(out.fileno())
            if problem is None:
                problem = _accepted(info, file_name, Path(temp).read_bytes())
                if problem:
                    problem = f"{url}: {problem}"
            if problem is None:
                os.chmod(temp, 0o644)  # mkstemp makes it private; the data are not
                os.replace(temp, target)
                return
            errors.append(problem)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
    raise DataError(
        f"{info.name}: could not download {file_name}: {'; '.join(errors)}; nothing was kept in {folder}; "
        f"try again, or point --url or HPO_DATA_URL at another mirror"
    )


def _stream(url: str, out, file_name: str, progress: Progress | None) -> str | None:
    """Copy url into out; None on success, else the reason as one line."""
    request = urllib.request.Request(url, headers={"User-Agent": "hpo-data/1"})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
            done = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(file_name, done, total)
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        return f"{url}: {exc.reason}"
    except (OSError, ValueError) as exc:  # timeouts, resets, malformed URLs
        return f"{url}: {exc}"
    if total is not None and done != total:
        return f"{url}: connection closed after {done:,} of {total:,} bytes"
    if progress and total is None:
        progress(file_name, done, done)
    return None
