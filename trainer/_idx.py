"""The IDX file format (unsigned bytes, gzip-compressed or raw): reading and checking one file."""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import zlib
from pathlib import Path

import numpy as np

from trainer._datasets import DataError

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension

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
    raw = gunzip(raw, path, fix)
    return _parse_idx(raw, path, fix), raw


def gunzip(raw: bytes, path: Path, fix: str) -> bytes:
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
def read_cached(path: str, mtime_ns: int, size: int, fix: str) -> tuple[np.ndarray, str]:
    """The decoded file and, for labels, the sha256 of its decompressed content; keyed
    by stat so a replaced file is read again."""
    del mtime_ns, size
    array, raw = _decode(Path(path), fix)
    return array, (hashlib.sha256(raw).hexdigest() if array.ndim == 1 else "")
