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

from hpo._storage import Heartbeat, StorageURL, open_storage
from hpo._study import LINEAGE_ATTR, SPEC_ATTR, count_states, finished_count

NOT_HPO = "not hpo"  # the data column of a study hpo did not create


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


def list_studies(url: str | StorageURL) -> list[StudyRow]:
    """One row per study in the storage, in the order the storage keeps them."""
    storage = open_storage(url, Heartbeat(interval=None))
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        counts = count_states(study)
        attrs = summary.user_attrs
        spec = attrs.get(SPEC_ATTR)
        lineage = attrs.get(LINEAGE_ATTR)
        by_hpo = isinstance(spec, dict)
        directions = tuple(d.name.lower() for d in summary.directions)
        best = _best(study, summary.directions)
        rows.append(StudyRow(
            name=summary.study_name,
            dataset=_dataset(spec) if by_hpo else _foreign(directions),
            finished=finished_count(counts),
            counts=counts,
            best_value=best.value if best else None,
            best_number=best.number if best else None,
            parent=lineage.get("parent") if isinstance(lineage, dict) else None,
            created=attrs.get("created") if isinstance(attrs.get("created"), str) else None,
            by_hpo=by_hpo,
            directions=directions,
        ))
    return rows


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
