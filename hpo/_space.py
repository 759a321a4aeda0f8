"""The search space of a spec, as Optuna distributions and as suggestions on a trial."""

from __future__ import annotations

from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import BaseTrial

from hpo._spec import CategoricalParam, FloatParam, IntParam, SearchParam


def distribution(param: SearchParam) -> BaseDistribution:
    """The Optuna distribution of one search parameter."""
    if isinstance(param, FloatParam):
        return FloatDistribution(param.low, param.high, log=param.log)
    if isinstance(param, IntParam):
        return IntDistribution(param.low, param.high, log=param.log)
    return CategoricalDistribution(param.choices)


def distributions(search: tuple[SearchParam, ...]) -> dict[str, BaseDistribution]:
    return {p.name: distribution(p) for p in search}


def suggest(trial: BaseTrial, search: tuple[SearchParam, ...]) -> dict[str, Any]:
    """Ask the trial for a value of every searched parameter (log-uniform where `log` is set).

    Args:
        trial: a running trial, or a FixedTrial to replay given values.
        search: the spec's search parameters.

    Returns:
        Parameter name -> value, in the order of `search`.
    """
    params: dict[str, Any] = {}
    for p in search:
        if isinstance(p, FloatParam):
            params[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
        elif isinstance(p, IntParam):
            params[p.name] = trial.suggest_int(p.name, p.low, p.high, log=p.log)
        elif isinstance(p, CategoricalParam):
            params[p.name] = trial.suggest_categorical(p.name, p.choices)
    return params
