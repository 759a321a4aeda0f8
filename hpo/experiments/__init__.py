"""The seed's experiments, reproduced: each writes its figures and a JSON of every number drawn.

`run_experiment(kind, data, out, seed, quick)` runs one of `Kind` (optimizers, activations,
init, batchnorm, overfit) or "all", and returns a JSON-ready dict; see docs/experiments.md.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from hpo._errors import HpoError
from hpo.experiments._common import Kind, Progress, prepare_out

__all__ = ["KINDS", "Kind", "run_experiment"]

KINDS = tuple(kind.value for kind in Kind)


def run_experiment(kind: str | Kind, data: str = "mnist", out: str | Path | None = None, seed: int = 0,
                   quick: bool = False, *, data_dir: str | None = None,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Run one experiment (or "all") and write its PNG figures and KIND.json into `out`.

    Args:
        kind: one of KINDS, or "all" for every one, each into its own folder `out/KIND`.
        data: the data set for the experiments that train ("mnist", "fashion-mnist", "digits").
        out: the output folder; default ./experiments/KIND (./experiments for "all").
        seed: every random draw (splits, weights, batches, dropout masks) comes from it.
        quick: a small budget (seconds), for tests; the default is the seed's full budget.
        data_dir: a folder to look for the data files in first.
        progress: called with one line per stage, for people watching a long run.

    Returns:
        The report: kind, settings, table (headers, rows), claims (claim, holds, evidence),
        figures (paths) and results (every number drawn). For "all": {"kind": "all",
        "experiments": {KIND: report}}.

    Raises:
        HpoError: unknown kind. trainer.DataError: the data cannot be found or read.
    """
    name = kind.value if isinstance(kind, Kind) else str(kind)
    if name == "all":
        base = Path(out) if out is not None else Path("experiments")
        reports = {k: run_experiment(k, data, base / k, seed, quick, data_dir=data_dir, progress=progress)
                   for k in KINDS}
        return {"kind": "all", "experiments": reports}
    if name not in KINDS:
        raise HpoError(f"unknown experiment {name!r}; choose one of {', '.join(KINDS)} or all")
    folder = Path(out) if out is not None else Path("experiments") / name
    created = not folder.exists()
    prepare_out(folder)
    # Imported on use: only the experiment that runs pulls in matplotlib and its pieces.
    module = importlib.import_module(f"hpo.experiments._{name}")
    try:
        report = module.run(data=data, out=folder, seed=seed, quick=quick, data_dir=data_dir, progress=progress)
    except BaseException:
        if created and not any(folder.iterdir()):
            folder.rmdir()  # a failed run (missing data, Ctrl-C) leaves no empty folder behind
        raise
    return report.as_dict()
