"""The objective: one trial trains the NumPy net and is judged on the held-out validation split.

The test split is never loaded here: this module only asks the trainer for the training pool.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

import trainer
from hpo._errors import StudyError
from hpo._sampler import trial_seed
from hpo._space import suggest
from hpo._storage import params_in_one_write, record_trial
from hpo._spec import StudySpec


@dataclass(frozen=True)
class Fold:
    train: trainer.Dataset
    validation: trainer.Dataset


def training_folds(spec: StudySpec, data_dir: str | None = None) -> list[Fold]:
    """The train/validation pairs a trial is judged on: one split, or k stratified folds."""
    pool = trainer.load_training_pool(spec.data.dataset, data_dir=data_dir, dtype=_dtype(spec))
    train, validation = trainer.split_train_validation(
        pool, spec.data.samples, spec.data.validation_fraction, spec.data.split_seed)
    if spec.objective.folds == 1:
        return [Fold(train, validation)]
    x = np.concatenate([train.x, validation.x])
    y = np.concatenate([train.y, validation.y])
    folds = trainer.stratified_folds(y, spec.objective.folds, spec.data.split_seed)
    result = []
    for held_out in folds:
        keep = np.ones(len(y), dtype=bool)
        keep[held_out] = False
        result.append(Fold(trainer.Dataset(x[keep], y[keep]), trainer.Dataset(x[held_out], y[held_out])))
    return result


def _dtype(spec: StudySpec) -> str:
    return str(spec.fixed.get("dtype", "float32"))


class Objective:
    """Callable for Optuna: suggest, train, report each epoch, return final validation accuracy.

    A trial ends in one of three states: complete; pruned (the pruner said so, or training
    diverged, with the reason and the epoch kept on the trial); failed (a real error).
    """

    def __init__(self, spec: StudySpec, data_dir: str | None = None):
        if spec.objective.raced:
            # One trial here trains every fold at once, outside the race's rules and its budget.
            raise StudyError(f"study '{spec.name}' is raced: `hpo study run {spec.name}` races it one fold at a "
                             f"time; it cannot be run as single trials (hpo worker, or the objective alone)")
        self.spec = spec
        self.data_dir = data_dir
        self._folds: list[Fold] | None = None
        # Told (epoch, epochs) after each epoch, so that a console can show a long trial moving.
        self.on_epoch: Callable[[int, int], None] | None = None

    @property
    def folds(self) -> list[Fold]:
        if self._folds is None:
            self._folds = training_folds(self.spec, self.data_dir)
        return self._folds

    def __call__(self, trial: optuna.Trial) -> float:
        with params_in_one_write(trial):
            params = suggest(trial, self.spec.search)
        runs = [(fold, repeat) for fold in range(len(self.folds)) for repeat in range(self.spec.objective.repeats)]
        # Without a pruner nothing reads the per-epoch values while the trial runs, so they are
        # stored with the trial's attributes in one transaction at its end.
        live = not isinstance(trial.study.pruner, optuna.pruners.NopPruner)
        intermediate: dict[int, float] = {}
        attrs: dict[str, Any] = {}
        values: list[float] = []
        seconds = 0.0
        for index, (fold, repeat) in enumerate(runs):
            seed = trial_seed(self.spec.seed, trial.number, stream=2 + repeat)
            if index == 0 and "seed" in trial.user_attrs:  # a confirmation run brings its own seed
                seed = int(trial.user_attrs["seed"])
            # Only the first run reports per epoch, so the pruner judges one comparable curve.
            if index > 0:
                report = None
            elif live:
                report = functools.partial(self._report, trial)
            else:
                report = intermediate.__setitem__  # returns None: never stops training
            history = self._train(params, seed, self.folds[fold], report)
            seconds += sum(e.seconds for e in history.epochs)
            if index == 0:
                attrs.update(curves=history.as_dict(), epochs=len(history.epochs), seed=seed)
            if history.outcome != "completed":
                attrs.update(seconds=round(seconds, 3), outcome=history.outcome, reason=history.reason)
                if history.outcome == "diverged":
                    attrs["diverged_epoch"] = history.stop_epoch
                record_trial(trial, intermediate, attrs)
                raise optuna.TrialPruned(history.reason)
            values.append(float(history.epochs[-1].val_accuracy))
        attrs.update(seconds=round(seconds, 3), outcome="completed")
        if len(runs) > 1:
            attrs.update(runs=[round(v, 6) for v in values], repeats=self.spec.objective.repeats,
                         folds=self.spec.objective.folds)
        record_trial(trial, intermediate, attrs)
        return float(np.mean(values))

    @staticmethod
    def _report(trial: optuna.Trial, epoch: int, value: float) -> str | None:
        trial.report(value, epoch)
        if trial.should_prune():
            pruner = type(trial.study.pruner).__name__.replace("Pruner", "").lower()
            return f"pruned by the {pruner} pruner at epoch {epoch}"
        return None

    def config(self, params: dict[str, Any], seed: int) -> trainer.TrainConfig:
        fold = self.folds[0]
        return self.spec.train_config(
            params, seed=seed, input_size=fold.train.x.shape[1],
            output_size=int(max(fold.train.y.max(), fold.validation.y.max())) + 1)

    def _train(self, params: dict[str, Any], seed: int, fold: Fold,
               report: Callable[[int, float], str | None] | None) -> trainer.History:
        config = self.config(params, seed)

        def on_epoch(metrics: trainer.EpochMetrics, network: Any) -> str | None:
            if self.on_epoch is not None:
                self.on_epoch(metrics.epoch, config.epochs)
            return report(metrics.epoch, metrics.val_accuracy) if report else None

        return trainer.fit(config, fold.train, fold.validation, callback=on_epoch).history
