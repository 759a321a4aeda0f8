"""The bundled 8x8 digits, read with NumPy from the package's own copy and checked against a
pinned checksum (see trainer/data/README.md for origin and license)."""

from __future__ import annotations

import gzip
import hashlib
import io
from importlib import resources

import numpy as np

DIGITS_FILE = "digits.csv.gz"
DIGITS_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
DIGITS_SHAPE = (1797, 65)  # 64 pixel counts, then the label


class DigitsFileError(Exception):
    """The bundled file is missing, altered or malformed."""


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The images (1797, 64) as float64 counts 0..16 and the labels (1797,) as int64."""
    resource = resources.files("trainer") / "data" / DIGITS_FILE
    try:
        packed = resource.read_bytes()
    except OSError as exc:
        raise DigitsFileError(f"the bundled {DIGITS_FILE} cannot be read ({exc.strerror or exc}); "
                              "reinstall hpo-studies") from None
    digest = hashlib.sha256(packed).hexdigest()
    if digest != DIGITS_SHA256:
        raise DigitsFileError(f"the bundled {DIGITS_FILE} has SHA-256 {digest[:12]}..., expected "
                              f"{DIGITS_SHA256[:12]}...; reinstall hpo-studies")
    table = np.loadtxt(io.BytesIO(gzip.decompress(packed)), delimiter=",")  # (1797, 65)
    if table.shape != DIGITS_SHAPE:
        raise DigitsFileError(f"the bundled {DIGITS_FILE} holds a {table.shape} table, "
                              f"expected {DIGITS_SHAPE}; reinstall hpo-studies")
    return table[:, :-1], table[:, -1].astype(np.int64)
