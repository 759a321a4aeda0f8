"""Shared pytest setup. Keep it small: a fixture used by one test file lives in that file."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, fixed-seed Generator for test inputs."""
    return np.random.default_rng(12345)
