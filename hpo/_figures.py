"""The figures a study can draw and how their files are named (kept apart from the plotting
code, so that the command line lists them without importing matplotlib)."""

from __future__ import annotations

import re

KINDS = ("ranges", "curves", "history", "importance", "optimizers", "intermediate", "confirm")


def file_stem(name: str) -> str:
    """A study name made safe as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"
