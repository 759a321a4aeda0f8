"""Re-check the best trials over fresh seeds before choosing a winner.

The best single run of a search is the luckiest draw, not the best configuration. `confirm`
retrains the K best distinct configurations S times each with fresh seeds on the same
train/validation split and ranks them by mean validation accuracy.

The runs live as trials of a companion study `<name>:confirm` in the same storage (each
enqueued with its parameters, the trial it re-checks and its seed), so they run with the same
machinery as any study: workers, heartbeats, resume without redoing finished runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo import _optuna_internals as internals
from hpo._claims import claims_for
from hpo._format import utc_now
from hpo._errors import StudyError
from hpo._notes import CONFIRMATION, ROLE_ATTR
from hpo._notes import refresh as refresh_note
from hpo._sampler import trial_seed
from hpo._spec import ObjectiveSpec, PrunerSpec, SamplerSpec
from hpo._storage import Heartbeat
from hpo._study import (
    LINEAGE_ATTR, QUEUE_ONLY_ATTR, Progress, StudyHandle, create, open_study, ranked, run,
)

SUFFIX = ":confirm"
CONFIRMED_ATTR = "confirmed"
SEED_STREAM = 1000  # confirmation seeds never coincide with the seeds of the search itself


@dataclass(frozen=True)
class Confirmation:
    """One configuration re-checked over seeds."""

    trial: int
    params: dict
    original: float
    values: list[float]
    diverged: int

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else float("nan")

    @property
    def sd(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def gap(self) -> float:
        """How far the single-run value was above the confirmed mean."""
        return self.original - self.mean

    def as_dict(self) -> dict:
        return {**asdict(self), "mean": self.mean, "sd": self.sd, "gap": self.gap,
                "min": min(self.values, default=None), "max": max(self.values, default=None)}


def distinct_best(handle: StudyHandle, top: int) -> list[FrozenTrial]:
    """The `top` best complete trials with distinct parameters (a retry repeats its original)."""
    chosen: list[FrozenTrial] = []
    seen: set[tuple] = set()
    for trial in ranked(handle.study):
        key = tuple(sorted((k, repr(v)) for k, v in trial.params.items()))
        if key not in seen:
            seen.add(key)
            chosen.append(trial)
        if len(chosen) == top:
            break
    return chosen


def companion(handle: StudyHandle) -> StudyHandle:
    """The study holding the confirmation runs; created on first use."""
    name = handle.name + SUFFIX
    try:
        return open_study(name, handle.storage_url, Heartbeat())
    except StudyError:
        spec = handle.spec.replace(
            name=name, sampler=SamplerSpec(kind="random"), pruner=PrunerSpec(kind="none"),
            objective=ObjectiveSpec(repeats=1, folds=handle.spec.objective.folds))
        lineage = {"parent": handle.name, "rule": "confirmation runs", "date": utc_now()}
        create(spec, handle.storage_url,
               extra_attrs={QUEUE_ONLY_ATTR: True, LINEAGE_ATTR: lineage, ROLE_ATTR: CONFIRMATION})
        return open_study(name, handle.storage_url, Heartbeat())


def confirm(handle: StudyHandle, top: int = 5, seeds: int = 5, workers: int = 1,
            heartbeat: Heartbeat = Heartbeat(), data_dir: str | None = None,
            on_progress: Callable[[Progress], None] | None = None) -> list[Confirmation]:
    """Retrain the `top` best distinct configurations `seeds` times; rank by mean; remember the winner."""
    if handle.name.endswith(SUFFIX):
        raise StudyError(f"'{handle.name}' holds confirmation runs; confirm its parent study instead")
    if handle.spec.objective.raced:
        # Its choice already rests on folds, and seed re-runs outside the race would spend epochs
        # the budget does not count.
        raise StudyError(f"study '{handle.name}' is raced: its choice is already a mean over "
                         f"{handle.spec.objective.folds} folds with its standard error (`hpo study best "
                         f"{handle.name}`); to gather more evidence, raise [objective] repeats in a new study")
    candidates = distinct_best(handle, top)
    if not candidates:
        raise StudyError(f"study '{handle.name}' has no complete trial to confirm; "
                         f"run it first with `hpo study run {handle.name}`")
    runs = companion(handle)
    claims_for(internals.study_storage(runs.study)).queue_once(runs, [
        {"params": trial.params, "user_attrs": {
            "confirms_trial": trial.number, "repeat": repeat,
            "seed": trial_seed(handle.spec.seed, trial.number, SEED_STREAM + repeat)}}
        for trial in candidates for repeat in range(seeds)], key=["confirms_trial", "repeat"])
    finished = runs.finished()
    done = {(t.user_attrs.get("confirms_trial"), t.user_attrs.get("repeat")) for t in finished}
    target = len(finished) + sum((t.number, r) not in done for t in candidates for r in range(seeds))
    if workers > 1:
        from hpo._workers import run_workers

        run_workers(runs, workers, target=target, data_dir=data_dir,
                    on_progress=on_progress)
    else:
        run(runs, target=target, on_progress=on_progress, data_dir=data_dir)
    results = summarise(handle, runs, candidates, seeds)
    winner = results[0]
    handle.study.set_user_attr(CONFIRMED_ATTR, {
        "trial": winner.trial, "params": winner.params, "mean": winner.mean, "sd": winner.sd,
        "original": winner.original, "seeds": seeds, "top": top, "date": utc_now(),
        "table": [r.as_dict() for r in results]})
    refresh_note(handle.study)
    return results


def summarise(handle: StudyHandle, runs: StudyHandle, candidates: list[FrozenTrial],
              seeds: int) -> list[Confirmation]:
    """Per configuration: the first `seeds` confirmation runs; ranked by mean, best first."""
    by_trial: dict[int, list[FrozenTrial]] = {}
    for t in runs.finished():
        if t.user_attrs.get("repeat", seeds) < seeds:
            by_trial.setdefault(t.user_attrs.get("confirms_trial"), []).append(t)
    results = []
    for trial in candidates:
        done = by_trial.get(trial.number, [])
        values = [t.value for t in done if t.state == TrialState.COMPLETE]
        diverged = sum(t.state == TrialState.PRUNED for t in done)
        results.append(Confirmation(trial.number, dict(trial.params), trial.value, values, diverged))
    if any(len(r.values) + r.diverged < seeds for r in results):
        raise StudyError(f"some confirmation runs of '{handle.name}' did not finish; "
                         f"`hpo study confirm {handle.name}` again runs only the missing ones")
    # Diverged runs count as a failure of the configuration: they rank below any mean.
    return sorted(results, key=lambda r: (r.diverged, -r.mean, r.trial))


def confirmed_choice(study: optuna.Study) -> dict | None:
    return study.user_attrs.get(CONFIRMED_ATTR)
