"""Child studies: a narrowing of a study turned into a new study that searches the narrowed
space (same data, model and training settings), records where it came from and starts from the
parent's trials inside its ranges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo._errors import SpecError, StudyError
from hpo._format import utc_now
from hpo._narrow import DEFAULT_MARGIN, Narrowing, narrow, trainer_check
from hpo._sampler import FINISHED
from hpo._space import distributions
from hpo._spec import parse_spec
from hpo._storage import Heartbeat, mask_url, open_storage
from hpo._study import LINEAGE_ATTR, StudyHandle, create

WARM_START_ATTR = "warm_start"  # on a copied trial: {"study": parent name, "trial": its number there}


def narrow_study(handle: StudyHandle, top: int | None = None, quantile: float | None = None,
                 margin: float = DEFAULT_MARGIN) -> Narrowing:
    """The narrowing of a study's search space by its best complete trials."""
    try:
        return narrow(handle.spec.search, handle.trials((TrialState.COMPLETE,)), top=top,
                      quantile=quantile, margin=margin, check=trainer_check(handle.spec))
    except StudyError as exc:
        raise StudyError(f"cannot narrow '{handle.name}': {exc}") from None


def warm_start_trials(handle: StudyHandle, narrowing: Narrowing, widen: bool = False) -> list[FrozenTrial]:
    """The parent's finished trials (complete and pruned) that lie inside the new ranges."""
    return [t for t in handle.trials(FINISHED) if narrowing.contains(t.params, widen)]


@dataclass(frozen=True)
class Child:
    handle: StudyHandle
    warm_start: int  # parent trials copied in
    new_trials: int  # trials still to run to reach the child's target


def create_child(handle: StudyHandle, narrowing: Narrowing, name: str, trials: int | None = None,
                 widen: bool = False) -> Child:
    """Create a child study searching the narrowed space, warm-started with the parent's trials in it.

    Args:
        handle: the parent study.
        narrowing: from `narrow_study(handle, …)`.
        name: the child's name (in the parent's storage).
        trials: new trials the child should run beyond its warm start (default: the parent's
            [study] trials); the child's target is warm start + trials.
        widen: push crowded sides beyond the old range instead of narrowing them.
    """
    if trials is not None and trials < 1:
        raise StudyError(f"--trials must be a whole number >= 1; got {trials}")
    if widen and not narrowing.can_widen:
        raise StudyError("--widen: no parameter crowds an edge of its range, so there is no side to widen")
    if name in optuna.get_all_study_names(storage=open_storage(handle.url, Heartbeat(interval=None))):
        raise StudyError(f"a study named '{name}' already exists in {mask_url(handle.url)}; "
                         "choose another name for the child (--into)")
    search = narrowing.search(widen)
    warm = warm_start_trials(handle, narrowing, widen)
    new_trials = trials if trials is not None else handle.spec.trials
    spec = handle.spec.replace(name=name, search=search, trials=len(warm) + new_trials)
    try:  # the stored spec must read back: every range valid for the trainer at both ends
        parse_spec(spec.to_dict(), source=f"child study '{name}'")
    except SpecError as exc:
        raise StudyError(f"the narrowed space is not a valid spec: {exc}") from None
    widened = [p.name for p in narrowing.params if widen and p.widened is not None]
    rule = narrowing.rule + (f"; widened {', '.join(widened)}" if widened else "")
    lineage = {
        "parent": handle.name,
        "rule": rule,
        "date": utc_now(),
        "ranges": narrowing.ranges(widen),
        "best_trials": list(narrowing.best),
        "warm_start": len(warm),
    }
    child = create(spec, handle.url, extra_attrs={LINEAGE_ATTR: lineage})
    dists = distributions(search)
    child.study.add_trials([_copied(t, dists, handle.name) for t in warm])
    return Child(child, len(warm), new_trials)


def _copied(trial: FrozenTrial, dists: dict, parent: str) -> FrozenTrial:
    """A parent's trial as a child's warm-start trial, with the times it really ran.

    (`optuna.trial.create_trial` would stamp both times with now: zero seconds, invisible on
    the dashboard's timeline.) The number and id are assigned by the child's storage.
    """
    value = trial.value if trial.value is not None and math.isfinite(trial.value) else None
    return FrozenTrial(
        number=-1, trial_id=-1, state=trial.state, value=value, values=None,
        datetime_start=trial.datetime_start, datetime_complete=trial.datetime_complete,
        params={k: trial.params[k] for k in dists}, distributions=dists,
        user_attrs={**trial.user_attrs, WARM_START_ATTR: {"study": parent, "trial": trial.number}},
        system_attrs={}, intermediate_values=dict(trial.intermediate_values))
