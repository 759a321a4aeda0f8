"""What a storage holds: every study in it, hpo's own and those other Optuna programs made.

A storage may be shared with plain Optuna code, so a listing reads any study it finds: one
minimized or maximized, with several objectives or with no trial at all, never a crash. Only the
studies hpo created carry a spec; the others are marked as not hpo's.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpo._storage import Heartbeat, StorageURL, listed, open_storage
from hpo._study import LINEAGE_ATTR, SPEC_ATTR, count_states, finished_count

NOT_HPO = "not hpo"  # the data column of a study hpo did not create
# What a study is for, in the listing's `kind` column.
SEARCH, RACE, CONFIRMATION, FOREIGN = "search", "race", "confirmation", "not hpo"


@dataclass(frozen=True)
class StudyRow:
    name: str
    dataset: str  # NOT_HPO (and how many objectives, when several) for a study hpo did not create
    finished: int
    counts: dict[str, int]
    best_value: float | None  # by the study's direction; None with several objectives
    best_number: int | None
    parent: str | None
    created: str | None
    by_hpo: bool = True
    directions: tuple[str, ...] = ("maximize",)
    # SEARCH; RACE (best_value is the race's choice: its mean over runs); CONFIRMATION (a
    # `NAME:confirm` companion holding seed re-runs, not a search of its own); FOREIGN.
    kind: str = SEARCH


def list_studies(url: str | StorageURL) -> list[StudyRow]:
    """One row per study in the storage, in the order the storage keeps them."""
    storage = open_storage(url, Heartbeat(interval=None))
    rows = []
    for summary in listed(lambda: optuna.get_all_study_summaries(storage, include_best_trial=False)):
        try:
            rows.append(_row(storage, summary))
        except KeyError:  # deleted by another process since the listing
            continue
    return rows


def _row(storage: optuna.storages.BaseStorage, summary: optuna.study.StudySummary) -> StudyRow:
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    counts = count_states(study)
    attrs = summary.user_attrs
    spec = attrs.get(SPEC_ATTR)
    lineage = attrs.get(LINEAGE_ATTR)
    by_hpo = isinstance(spec, dict)
    directions = tuple(d.name.lower() for d in summary.directions)
    kind = _kind(attrs, spec) if by_hpo else FOREIGN
    best = _best(study, summary.directions)
    best_value = best.value if best else None
    best_number = best.number if best else None
    if kind == RACE:
        best_value, best_number = _race_choice(study, spec)
    return StudyRow(
        name=summary.study_name,
        dataset=_dataset(spec) if by_hpo else _foreign(directions),
        finished=finished_count(counts),
        counts=counts,
        best_value=best_value,
        best_number=best_number,
        parent=lineage.get("parent") if isinstance(lineage, dict) else None,
        created=attrs.get("created") if isinstance(attrs.get("created"), str) else None,
        by_hpo=by_hpo,
        directions=directions,
        kind=kind,
    )


def _kind(attrs: dict, spec: dict) -> str:
    from hpo._notes import CONFIRMATION as CONFIRMATION_ROLE, ROLE_ATTR

    if attrs.get(ROLE_ATTR) == CONFIRMATION_ROLE:
        return CONFIRMATION
    objective = spec.get("objective")
    return RACE if isinstance(objective, dict) and objective.get("method") == "race" else SEARCH


def _race_choice(study: optuna.Study, stored: dict) -> tuple[float | None, int | None]:
    """A raced study's best: the race's choice (its mean over runs), not a lucky single run."""
    from hpo import _racing  # the race reads the study layer, which re-exports this module
    from hpo._spec import parse_spec

    spec = parse_spec(stored, source=f"study '{study.study_name}'")
    configs = _racing.configurations(study.get_trials(deepcopy=False))
    choice = _racing.incumbent(configs, _racing.RaceSettings.of(spec))
    if choice is None:
        return None, None
    return choice.mean, choice.number


def _dataset(spec: dict) -> str:
    data = spec.get("data")
    return str(data.get("dataset", "?")) if isinstance(data, dict) else "?"


def _foreign(directions: tuple[str, ...]) -> str:
    return NOT_HPO if len(directions) == 1 else f"{NOT_HPO}, {len(directions)} objectives"


def _best(study: optuna.Study, directions: list[StudyDirection]) -> FrozenTrial | None:
    """The best complete trial by the study's own direction; ties go to the earlier trial."""
    if len(directions) != 1:
        return None  # several objectives have a front, not one best
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    sign = -1.0 if directions[0] == StudyDirection.MINIMIZE else 1.0
    return max(complete, key=lambda t: (sign * t.value, -t.number))
