"""How values look when shown or stored for people: table cells and timestamps."""

from __future__ import annotations

import datetime
import math
from typing import Any


def fmt(value: Any, digits: int = 4) -> str:
    """A value as a table cell: floats short, scientific when tiny or huge."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.{max(digits - 1, 1)}e}"
        return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"
    return str(value)


def utc_now() -> str:
    """The current time in UTC, to the second, as ISO 8601 (how studies record dates)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
