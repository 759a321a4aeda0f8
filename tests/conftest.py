"""Shared pytest setup. Keep it small: a fixture used by one test file lives in that file."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, fixed-seed Generator for test inputs."""
    return np.random.default_rng(12345)


# The files whose tests take longest in all (`pytest --durations=0`, summed per file), slowest
# first. A parallel run (`--dist loadfile`) hands out whole files in collection order, so these
# start first and none of them is left running alone at the end; the rest keep their order. A
# file missing here only makes the run a little longer, never different.
SLOWEST_FIRST = (
    "test_claims.py", "test_storage.py", "test_outage.py", "test_workers.py", "test_grpc.py",
    "test_dashboard.py", "test_full_disk.py", "test_transfer.py", "test_secrets.py", "test_signals.py",
    "test_cli_study.py", "test_experiments.py", "test_fleet.py", "test_race_run.py", "test_cli_tree.py",
    "test_plots.py", "test_console.py", "test_confirm.py", "test_foreign.py", "test_files.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
