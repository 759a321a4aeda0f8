"""Samplers and pruners built from a spec.

Random trials on log scales first, then multivariate TPE. The sampler is re-seeded from the
study seed and the trial number for every trial: a seeded sampler re-created by a resumed run
(or by a second worker) would otherwise replay the same startup sequence and try parameters
that were already tried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from hpo import _optuna_internals as internals
from hpo._spec import PrunerSpec, SamplerSpec, StudySpec

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def trial_seed(study_seed: int, trial_number: int, stream: int = 0) -> int:
    """A seed for one trial (and one of its streams), independent of the others."""
    sequence = np.random.SeedSequence([study_seed, trial_number, stream])
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


class TrialSeededSampler(BaseSampler):
    """Delegates to a fresh inner sampler per trial, seeded from (study seed, trial number).

    It also records on each trial whether it was sampled in the random phase or by TPE.
    """

    def __init__(self, spec: SamplerSpec, seed: int):
        self._spec = spec
        self._seed = seed
        self._inner: BaseSampler = self._make(seed)

    def _make(self, seed: int) -> BaseSampler:
        if self._spec.kind == "random":
            return RandomSampler(seed=seed)
        return TPESampler(
            n_startup_trials=self._spec.random_trials,
            multivariate=self._spec.multivariate,
            constant_liar=True,  # workers running at once do not all pick the same point
            seed=seed,
        )

    def phase(self, n_finished: int) -> str:
        if self._spec.kind == "random" or n_finished < self._spec.random_trials:
            return "random"
        return "tpe"

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._inner = self._make(trial_seed(self._seed, trial.number, stream=1))
        internals.set_trial_user_attr(study, trial, "phase", self._phase_of(study))
        self._inner.before_trial(study, trial)

    def _phase_of(self, study: Study) -> str:
        if self._spec.kind == "random":
            return "random"  # nothing to count
        # The trials as TPE is about to read them: the study's per-thread cache, which a new trial
        # starts empty (hpo's `_start_trial` and Optuna's `ask` alike), so other workers' finished
        # trials count, and the storage is read once for both.
        return self.phase(len(internals.cached_trials(study, FINISHED)))

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def make_sampler(spec: StudySpec) -> TrialSeededSampler:
    return TrialSeededSampler(spec.sampler, spec.seed)


def make_pruner(spec: PrunerSpec, epochs: int) -> optuna.pruners.BasePruner:
    """The pruner of a spec; epochs are the pruners' steps."""
    if spec.kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec.startup_trials, n_warmup_steps=spec.warmup_epochs)
    if spec.kind == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec.min_epochs, reduction_factor=spec.reduction_factor)
    if spec.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=spec.min_epochs, max_resource=epochs, reduction_factor=spec.reduction_factor)
    return optuna.pruners.NopPruner()
