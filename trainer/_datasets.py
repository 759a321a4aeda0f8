"""What a data set is and which ones the project knows: `Dataset`, `DataError`, the registry.

Where the files are is `_lookup`, how they are read is `_idx`, loading them is `_load`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

DTYPES = ("float32", "float64")

# The MNIST stand-in: without the training files, the 10,000 t10k images are split into a
# fixed stratified pool and test half. Changing either constant changes every result.
STANDIN_SEED = 1998
STANDIN_POOL_SIZE = 5_000

# The bundled digits (trainer/data, scikit-learn's copy of UCI optdigits): a fixed stratified 20% is held out as the test split.
DIGITS_SEED = 1997
DIGITS_SIZE = 1_797
DIGITS_TEST_SIZE = round(DIGITS_SIZE * 0.2)  # 359


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
        title="bundled 8x8 handwritten digits (UCI optdigits test set)",
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


def dataset_info(name: str) -> DatasetInfo:
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(REGISTRY)}") from None


def check_dtype(dtype: object) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise DataError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return name


def read_only(dataset: Dataset) -> Dataset:
    dataset.x.flags.writeable = False
    dataset.y.flags.writeable = False
    return dataset
