"""What every experiment shares: the kinds, budgets, data, the output folder, figures and JSON."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

import trainer
from hpo._files import make_folder, replacing, write_file

Progress = Callable[[str], None]

# Matplotlib warns on stderr when it cannot save its font cache (a full disk); the figure is drawn
# all the same, and a command's failure stays its one line.
logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)

FIGURE_DPI = 80
# One colour per optimizer / setting, the same in every figure (matplotlib's tab10).
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


class Kind(str, Enum):
    """The seed's experiments, one per command."""

    optimizers = "optimizers"
    activations = "activations"
    init = "init"
    batchnorm = "batchnorm"
    overfit = "overfit"


@dataclass
class Report:
    """What one experiment hands back: every number drawn, the key table, the verdicts.

    Attributes:
        kind: the experiment.
        settings: the budget and hyperparameters actually used.
        results: every number drawn in the figures (JSON-ready).
        table: headers and rows of the key numbers, for people.
        claims: one entry per claim of the seed: the claim, whether it holds here, the numbers.
        figures: the PNG files written.
    """

    kind: str
    settings: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)
    table: dict[str, Any] = field(default_factory=dict)
    claims: list[dict[str, Any]] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)

    def claim(self, text: str, holds: bool, evidence: str) -> None:
        self.claims.append({"claim": text, "holds": bool(holds), "evidence": evidence})

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: lists and Python numbers, NaN and infinity as None."""
        return _plain({
            "kind": self.kind,
            "settings": self.settings,
            "table": self.table,
            "claims": self.claims,
            "figures": self.figures,
            "results": self.results,
        })


def write_json(report: Report, out: Path) -> Path:
    """Write the report as OUT/KIND.json (NaN and infinity as null, so any reader can parse it)."""
    path = out / f"{report.kind}.json"
    return write_file(path, json.dumps(report.as_dict(), indent=1, allow_nan=False) + "\n", "the file")


def _plain(value: Any) -> Any:
    """Numpy arrays and scalars as lists and Python numbers; non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return float(f"{value:.7g}") if math.isfinite(value) else None  # 7 significant digits
    return value


def prepare_out(out: str | Path) -> Path:
    """The output folder, created if needed; OutputError (one line) when it is not a folder or
    cannot be created."""
    return make_folder(Path(out))


def load_pool(data: str, data_dir: str | None) -> trainer.Dataset:
    return trainer.load_training_pool(data, data_dir=data_dir)


def take(pool: trainer.Dataset, n_train: int | None, validation_fraction: float, seed: int
         ) -> tuple[trainer.Dataset, trainer.Dataset]:
    """n_train stratified training samples (all but the validation share when None) and a validation part."""
    if n_train is None:
        return trainer.split_train_validation(pool, None, validation_fraction, seed)
    n_samples = round(n_train / (1 - validation_fraction))
    train, validation = trainer.split_train_validation(pool, min(n_samples, len(pool)), validation_fraction, seed)
    return train, validation


def display_name(data: str) -> str:
    """The data set's name as people write it, for figure titles."""
    return {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}.get(data, data)


def sizes(dataset: trainer.Dataset) -> dict[str, int]:
    """input_size and output_size of a network for these samples."""
    return {"input_size": int(dataset.x.shape[1]), "output_size": int(dataset.y.max()) + 1}


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Centred moving average; near the ends the window shrinks symmetrically, so the curve
    keeps its length and its first and last values are not pulled towards the middle."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    half = max(window // 2, 0)
    cumsum = np.concatenate([[0.0], np.cumsum(values)])
    out = np.empty(n)
    for i in range(n):
        h = min(half, i, n - 1 - i)
        out[i] = (cumsum[i + h + 1] - cumsum[i - h]) / (2 * h + 1)
    return out


STYLE = {
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "figure.titlesize": 12,
}


@contextlib.contextmanager
def plotting() -> Iterator[None]:
    """The house look for the figures made inside the block (rcParams are read when artists are made)."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        yield


def figure(rows: int = 1, cols: int = 1, *, width: float = 6.4, height: float = 4.4, **kwargs: Any):
    """A figure and its (rows, cols) axes; no pyplot, so no backend and no global figure list."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **kwargs)
    return fig, axes


def save_figure(fig: Any, path: Path, report: Report) -> None:
    """Write `fig` as the PNG `path`, whole or not at all, and list it in the report."""
    with replacing(path, "the figure") as temporary:
        fig.savefig(temporary, dpi=FIGURE_DPI, facecolor="white", format="png")
    report.figures.append(str(path))


def say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)
