"""The final test, once: retrain the chosen configuration on train + validation, score it on the test split.

This is the only module of the search side that loads the test split. Everything before it (the
search, narrowing, confirmation) judges configurations on the validation split alone, so the
test accuracy reported here is an honest estimate. Looking at the test split twice would turn
it into a second validation set; a second evaluation is therefore refused unless forced, and a
forced one is recorded as such, with the earlier results kept.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import trainer
from hpo._confirm import confirmed_choice
from hpo._format import utc_now
from hpo._errors import StudyError
from hpo._notes import refresh as refresh_note
from hpo._objective import _dtype
from hpo._sampler import trial_seed
from hpo._study import StudyHandle, best_trial, trial_summary

TEST_RESULT_ATTR = "test_result"
SEED_STREAM = 2000  # seeds of the final runs never coincide with search or confirmation seeds
DEFAULT_SEEDS = 3


@dataclass(frozen=True)
class Choice:
    """The configuration to evaluate and the estimate the choice rests on."""

    trial: int  # its trial; for a race, the configuration's first run
    params: dict[str, Any]
    source: str  # "race", "confirmed" or "best trial"
    validation: float  # the estimate: the race's mean, the confirmed mean, or the single run
    detail: str  # for people
    stderr: float | None = None  # of the estimate; None for a single run (or a mean of one)
    runs: int = 1  # the runs the estimate averages: folds raced, or seeds confirmed


def choose(handle: StudyHandle) -> Choice:
    """The race's incumbent for a raced study; else the confirmed choice when `hpo study confirm`
    has run, else the best complete trial. StudyError when there is nothing to choose yet."""
    if handle.spec.objective.raced:
        from hpo._racing import standing  # the race builds on the study module, as this one does

        c = standing(handle).choice
        if c is None:
            raise StudyError(f"study '{handle.name}' has no complete run yet; "
                             f"run it first with `hpo study run {handle.name}`")
        se = c.se if math.isfinite(c.se) else None
        spread = f" ± {se:.4f} (standard error)" if se is not None else ""
        return Choice(c.number, dict(c.params), "race", c.mean,
                      f"the race's choice: configuration #{c.number}, mean validation accuracy {c.mean:.4f}"
                      f"{spread} over {c.runs} fold{'s' if c.runs != 1 else ''}", se, c.runs)
    confirmed = confirmed_choice(handle.study)
    if confirmed:
        seeds = int(confirmed["seeds"])
        return Choice(int(confirmed["trial"]), dict(confirmed["params"]), "confirmed", float(confirmed["mean"]),
                      f"the confirmed choice: trial {confirmed['trial']}, mean validation accuracy "
                      f"{confirmed['mean']:.4f} ± {confirmed['sd']:.4f} over {confirmed['seeds']} seeds",
                      float(confirmed["sd"]) / math.sqrt(seeds) if seeds > 1 else None, seeds)
    trial = best_trial(handle.study)
    if trial is None:
        raise StudyError(f"study '{handle.name}' has no complete trial to evaluate; "
                         f"run it first with `hpo study run {handle.name}`")
    return Choice(trial.number, dict(trial.params), "best trial", float(trial.value),
                  f"the best trial: #{trial.number}, validation accuracy {trial.value:.4f} in a single run "
                  f"(not confirmed; `hpo study confirm {handle.name}` re-checks the best over seeds first)")


# How `best` names where its value comes from.
SOURCES = {"race": "race", "confirmed": "confirmed", "best trial": "single run"}


def best_summary(handle: StudyHandle) -> dict[str, Any]:
    """What `hpo study best --json` prints and `hpo.best` returns: the choice and its estimate.

    `value` is the estimate the choice rests on (the race's mean, the confirmed mean, or the single
    run), with `stderr` and `runs`; `single_run_value` is the one trial's own number, kept apart.
    """
    if not handle.spec.objective.raced and best_trial(handle.study) is None:
        raise StudyError(f"study '{handle.name}' has no complete trial yet; "
                         f"run it first with `hpo study run {handle.name}`")
    choice = choose(handle)
    trial = handle.study.get_trials(deepcopy=False)[choice.trial]
    summary = trial_summary(trial)
    summary.update(value=choice.validation, stderr=choice.stderr, runs=choice.runs,
                   single_run_value=summary["value"], source=SOURCES[choice.source], params=choice.params)
    confirmed = confirmed_choice(handle.study)
    if choice.source == "confirmed" and confirmed:
        summary["confirmed"] = {k: confirmed[k] for k in ("mean", "sd", "seeds", "top", "date")}
    return summary


def previous(handle: StudyHandle) -> dict[str, Any] | None:
    return handle.study.user_attrs.get(TEST_RESULT_ATTR)


def check_first(handle: StudyHandle, force: bool = False) -> None:
    """Refuse a second look at the test split unless forced."""
    earlier = previous(handle)
    if earlier and not force:
        raise StudyError(
            f"study '{handle.name}' was evaluated on the test split on {earlier.get('date')} (test accuracy "
            f"{earlier.get('mean', float('nan')):.4f}); the test set is used once, since every further look "
            f"would make it one more validation set; add --force to evaluate again (it is recorded as forced)")


def evaluate(handle: StudyHandle, seeds: int = DEFAULT_SEEDS, force: bool = False, data_dir: str | None = None,
             on_seed: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Retrain the chosen configuration on train + validation with `seeds` seeds; score each on the test split.

    Args:
        handle: the study.
        seeds: training runs, each with its own seed (>= 1).
        force: evaluate although the study was evaluated before (recorded as forced; the
            earlier results are kept under "history").
        data_dir: a folder with the data files, searched first.
        on_seed: called after each run with its index and result.

    Returns:
        The stored result: mean, std, each seed's accuracy, the trial used, source, date.

    Raises:
        StudyError: evaluated before (without force), or no complete trial.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise StudyError(f"--seeds must be a whole number >= 1; got {seeds!r}")
    check_first(handle, force)
    earlier = previous(handle)
    choice = choose(handle)
    spec = handle.spec
    dtype = _dtype(spec)
    pool = trainer.load_training_pool(spec.data.dataset, data_dir=data_dir, dtype=dtype)
    train, validation = trainer.split_train_validation(
        pool, spec.data.samples, spec.data.validation_fraction, spec.data.split_seed)
    # The same samples the search used, now all for training: validation has done its job.
    both = trainer.Dataset(np.concatenate([train.x, validation.x]), np.concatenate([train.y, validation.y]),
                           f"train + validation: {len(train)} + {len(validation)} samples")
    test = trainer.load_test_split(spec.data.dataset, data_dir=data_dir, dtype=dtype)
    classes = int(max(both.y.max(), test.y.max())) + 1
    runs = []
    for index in range(seeds):
        seed = trial_seed(spec.seed, choice.trial, SEED_STREAM + index)
        config = spec.train_config(choice.params, seed=seed, input_size=both.x.shape[1], output_size=classes)
        fitted = trainer.fit(config, both)
        loss, accuracy = trainer.evaluate(fitted.network, test)
        run = {"seed": seed, "accuracy": float(accuracy), "loss": float(loss) if math.isfinite(loss) else None,
               "outcome": fitted.history.outcome, "epochs": len(fitted.history.epochs)}
        runs.append(run)
        if on_seed:
            on_seed(index, run)
    accuracies = [r["accuracy"] for r in runs]
    result: dict[str, Any] = {
        "mean": statistics.fmean(accuracies),
        "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "seeds": runs,
        "trial": choice.trial,
        "params": choice.params,
        "source": choice.source,
        "validation": choice.validation,
        "n_train": len(both),
        "n_test": len(test),
        "date": utc_now(),
        "forced": bool(earlier),
    }
    if earlier:
        result["history"] = [*earlier.get("history", []), {k: v for k, v in earlier.items() if k != "history"}]
    handle.study.set_user_attr(TEST_RESULT_ATTR, result)
    refresh_note(handle.study)
    return result
