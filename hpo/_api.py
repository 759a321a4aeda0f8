"""The Python API: one function per `hpo study` command, named like it, for notebooks and scripts.

Every function that works on a study takes a `StudyHandle` (from `create` or `open_study`) or a
study's name with `storage=`; `storage` is a URL, or None for $HPO_STORAGE, else
`hpo.DEFAULT_STORAGE`, as on the command line. What a command prints with `--json`, its function returns as a dict.
docs/api.md shows them at work; tests/test_api_doc.py runs that page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo import _child, _confirm, _evaluate, _inventory, _racing, _study, _transfer
from hpo._errors import StudyError
from hpo._narrow import DEFAULT_MARGIN, Narrowing
from hpo._spec import StudySpec, load_spec, parse_spec
from hpo._storage import Heartbeat, StorageURL, resolve_storage
from hpo._study import Progress, RunResult, StudyHandle

Study = StudyHandle | str  # a handle, or a study's name in `storage`
Storage = str | StorageURL | None


def create(spec: StudySpec | str | Path | dict, storage: Storage = None, name: str | None = None) -> StudyHandle:
    """Create a study, as `hpo study create`.

    Args:
        spec: a spec file (TOML), its parsed form (`hpo.load_spec`) or a dict in the TOML layout.
        storage: where the study lives (see the module's docstring).
        name: the study's name (default: the spec's [study] name).

    Returns:
        The new study's handle. Raises StudyError when the name is taken, SpecError for a bad spec.
    """
    if isinstance(spec, (str, Path)):
        spec = load_spec(spec)
    elif isinstance(spec, dict):
        spec = parse_spec(spec, source="the spec given to hpo.create")
    return _study.create(spec, resolve_storage(storage), name)


def open_study(name: str, storage: Storage = None) -> StudyHandle:
    """The handle of an existing study; StudyError names the storage when there is none by that name."""
    return _study.open_study(name, resolve_storage(storage))


def _handle(study: Study, storage: Storage, heartbeat: Heartbeat | None = Heartbeat(interval=None)) -> StudyHandle:
    if isinstance(study, StudyHandle):
        return study
    if isinstance(study, str):
        return _study.open_study(study, resolve_storage(storage), heartbeat)
    raise TypeError(f"expected a StudyHandle (from hpo.create or hpo.open_study) or a study name; "
                    f"got {type(study).__name__}")


def run(study: Study, trials: int | None = None, *, storage: Storage = None, timeout: float | None = None,
        workers: int = 1, data_dir: str | Path | None = None,
        on_progress: Callable[[Progress], None] | None = None) -> RunResult:
    """Run trials until the study holds `trials` finished ones, as `hpo study run` (it resumes).

    Args:
        study: a handle or a name.
        trials: the study's total target of finished trials (default: the spec's [study] trials).
        timeout: start no new trial after this many seconds.
        workers: worker processes on this machine.
        data_dir: a folder with the data files, searched first.
        on_progress: called with a `Progress` as trials finish.

    Returns:
        A RunResult: ran, finished, target, best (a FrozenTrial), reached_target, counts.
    """
    handle = _handle(study, storage, None)  # None: the study's own heartbeat settings
    folder = str(data_dir) if data_dir else None
    if workers > 1:
        from hpo._workers import run_workers  # processes only for those who ask for them

        return run_workers(handle, workers, target=trials, timeout=timeout,
                           data_dir=folder, on_progress=on_progress)
    return _study.run(handle, target=trials, timeout=timeout, on_progress=on_progress, data_dir=folder)


@dataclass(frozen=True)
class Narrowed:
    """What `narrow` found: the rule's result and, with `into`, the child study."""

    narrowing: Narrowing  # per parameter: old and new range, where the best fell, crowded edges
    warm_start: int  # the parent's finished trials inside the new ranges
    child: StudyHandle | None  # the study created with `into`, else None
    widen: bool  # whether crowded sides were pushed past the old range

    @property
    def ranges(self) -> dict[str, Any]:
        """Per parameter: type, old and new range (as `hpo study narrow --json` prints them)."""
        return self.narrowing.ranges(self.widen)


def narrow(study: Study, *, top: int | None = None, quantile: float | None = None, margin: float = DEFAULT_MARGIN,
           into: str | None = None, trials: int | None = None, widen: bool = False,
           storage: Storage = None) -> Narrowed:
    """Narrow the search ranges to where the best trials lie, as `hpo study narrow`.

    Args:
        study: a handle or a name.
        top: narrow to the best `top` complete trials; or
        quantile: to the best share of them (default 0.2).
        margin: widen each range by this fraction of its span (of log10 for log parameters).
        into: create a child study of this name searching the new ranges, warm-started with the
            parent's finished trials inside them.
        trials: with `into`, new trials for the child beyond its warm start.
        widen: push sides crowded by the best trials past the old range.

    Returns:
        A Narrowed: `narrowing`, `ranges`, `warm_start` and `child` (a handle, with `into`).
    """
    if top is not None and quantile is not None:
        raise StudyError("give top or quantile, not both")
    if trials is not None and into is None:
        raise StudyError("trials sets the child's trials; give into=CHILD too")
    handle = _handle(study, storage)
    found = _child.narrow_study(handle, top=top, quantile=quantile, margin=margin)
    widen = widen and found.can_widen
    if into:
        child = _child.create_child(handle, found, into, trials=trials, widen=widen)
        return Narrowed(found, child.warm_start, child.handle, widen)
    return Narrowed(found, len(_child.warm_start_trials(handle, found, widen)), None, widen)


def confirm(study: Study, *, top: int = 5, seeds: int = 5, workers: int = 1, data_dir: str | Path | None = None,
            storage: Storage = None) -> list[_confirm.Confirmation]:
    """Retrain the `top` best distinct configurations `seeds` times each, as `hpo study confirm`.

    Returns the Confirmations ranked by mean validation accuracy, best first (each with trial,
    params, original, values, mean, sd, gap, diverged); the first is remembered as the study's
    confirmed choice, which `best` and `evaluate` then use.
    """
    handle = _handle(study, storage, None)  # None: the study's own heartbeat settings
    return _confirm.confirm(handle, top=top, seeds=seeds, workers=workers,
                            data_dir=str(data_dir) if data_dir else None)


def evaluate(study: Study, *, seeds: int = _evaluate.DEFAULT_SEEDS, force: bool = False,
             data_dir: str | Path | None = None, storage: Storage = None) -> dict[str, Any]:
    """The final test, once, as `hpo study evaluate`: retrain the chosen configuration on train +
    validation with `seeds` seeds and score it on the test split.

    Returns the stored result (mean, std, seeds, trial, params, source, validation, n_train,
    n_test, date, forced). A second evaluation raises StudyError unless `force=True`.
    """
    handle = _handle(study, storage)
    return _evaluate.evaluate(handle, seeds=seeds, force=force, data_dir=str(data_dir) if data_dir else None)


def best(study: Study, storage: Storage = None) -> dict[str, Any]:
    """The chosen configuration and the estimate it rests on, as `hpo study best --json`: the race's
    choice for a raced study, else the confirmed one when `confirm` has run, else the best trial.

    Returns a dict with number, state, value (the estimate: the race's mean over its folds, the
    confirmed mean, or the single run), stderr (None for a single run), runs (folds raced or seeds
    confirmed), single_run_value (the trial's own number), params, epochs, phase, seconds, reason,
    source ("race", "confirmed" or "single run") and, when confirmed, `confirmed` (mean, sd, seeds,
    top, date). Raises StudyError when there is nothing to choose yet.
    """
    return _evaluate.best_summary(_handle(study, storage))


def best_trial(study: Study | optuna.Study, storage: Storage = None) -> FrozenTrial | None:
    """The complete trial with the highest validation accuracy (ties: the earlier), or None."""
    return _study.best_trial(_optuna_study(study, storage))


def ranked(study: Study | optuna.Study, storage: Storage = None) -> list[FrozenTrial]:
    """The complete trials, best first (ties: the earlier trial first)."""
    return _study.ranked(_optuna_study(study, storage))


def _optuna_study(study: Study | optuna.Study, storage: Storage) -> optuna.Study:
    return study if isinstance(study, optuna.Study) else _handle(study, storage).study


def show(study: Study, top: int = 10, storage: Storage = None) -> dict[str, Any]:
    """The study at a glance, as `hpo study show --json`: name, counts by state, lineage, spec, for
    a raced study `race` (budget_epochs, epochs_spent, folds, repeats, configurations_tried, and
    the `top` configurations' evidence: number, state, runs, folds, mean, stderr, values, epochs,
    params), and the `top` best trials (each as `trial_summary` describes one)."""
    handle = _handle(study, storage)
    race = {"race": _racing.race_view(handle, top)} if handle.spec.objective.raced else {}
    return {"name": handle.name, "counts": _study.count_states(handle.study),
            "lineage": handle.study.user_attrs.get(_study.LINEAGE_ATTR), "spec": handle.spec.to_dict(), **race,
            "best": [_study.trial_summary(t) for t in _study.ranked(handle.study)[:top]]}


def trials(study: Study, states: tuple[TrialState, ...] | None = None, storage: Storage = None) -> list[FrozenTrial]:
    """The study's trials in order (Optuna's FrozenTrial), optionally only those in `states`."""
    return _handle(study, storage).trials(states)


def list_studies(storage: Storage = None) -> list[_inventory.StudyRow]:
    """The studies in the storage, as `hpo study list`: name, dataset, finished, counts, best, parent."""
    return _inventory.list_studies(resolve_storage(storage))


def delete(name: str, storage: Storage = None) -> int:
    """Delete a study and its trials, as `hpo study delete --yes`; returns how many trials it held."""
    return _study.delete(name, resolve_storage(storage))


def export(name: str, path: str | Path, storage: Storage = None, format: str | None = None) -> _transfer.Transfer:
    """Write a study to a file that `hpo study import` reads back, as `hpo study export`.

    Args:
        format: "json" (one file) or "csv" (a row per trial, plus a sidecar NAME.study.json);
            default: from the file's suffix.
    """
    path = Path(path)
    fmt = format or ("csv" if path.suffix == ".csv" else "json")
    return _transfer.export_study(name, resolve_storage(storage), path, fmt)


def copy(name: str, to: str | StorageURL, storage: Storage = None, new_name: str | None = None) -> _transfer.Transfer:
    """Copy a study with all its trials and attributes into the storage `to`, as `hpo study copy`."""
    return _transfer.copy_study(name, resolve_storage(storage), resolve_storage(to), new_name)
