"""A study as it travels between storages and files: plain records, independent of any storage."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState


@dataclass
class TrialRecord:
    """One trial as it travels. Datetimes are timezone-aware UTC; params in their external form."""

    number: int
    state: TrialState
    values: list[float] | None
    datetime_start: datetime.datetime | None
    datetime_complete: datetime.datetime | None
    params: dict[str, Any] = field(default_factory=dict)
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    intermediate_values: dict[int, float] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    system_attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyRecord:
    """A whole study, independent of any storage; trials sorted by number."""

    name: str
    directions: list[StudyDirection]
    user_attrs: dict[str, Any]
    system_attrs: dict[str, Any]
    trials: list[TrialRecord]

    def counts(self) -> dict[str, int]:
        counts = {state.name: 0 for state in TrialState}
        for trial in self.trials:
            counts[trial.state.name] += 1
        return counts
