"""The objective: which folds a trial is judged on, what a trial returns and stores, how it ends."""

from __future__ import annotations

import numpy as np
import pytest
from optuna.trial import TrialState

import hpo
import trainer
from hpo._objective import Objective, training_folds
from helpers import DATA_DIR, write_spec

FOLDS = """
[objective]
folds = {folds}
repeats = {repeats}
"""

# sgd with a learning rate no net survives: the loss overflows in the first epoch.
DIVERGING = """
[study]
name = "diverging"
seed = 0
trials = 1

[data]
dataset = "digits"
samples = 200
validation_fraction = 0.25

[model]
hidden_sizes = [16]

[training]
optimizer = "sgd"
epochs = 3
batch_size = 32

[search.lr]
type = "float"
low = 1e20
high = 1e24
log = true
"""


def spec_with(tmp_path, folds=1, repeats=1, **kwargs):
    name = f"folds{folds}-repeats{repeats}"
    return hpo.load_spec(write_spec(tmp_path, name, extra=FOLDS.format(folds=folds, repeats=repeats), **kwargs))


def rows(x: np.ndarray) -> list[bytes]:
    """The rows of x as sortable bytes, to compare sets of samples as multisets."""
    return sorted(row.tobytes() for row in np.asarray(x))


def run_one_trial(spec, tmp_path):
    handle = hpo.create(spec, f"sqlite:///{tmp_path / 'objective.db'}")
    objective = Objective(spec, str(DATA_DIR))
    handle.study.optimize(objective, n_trials=1)
    return objective, handle.study.trials[0]


def test_one_fold_is_the_seeded_split_of_the_pool(tmp_path):
    spec = spec_with(tmp_path, samples=400)
    (fold,) = training_folds(spec, str(DATA_DIR))
    pool = trainer.load_training_pool("digits", DATA_DIR)
    train, validation = trainer.split_train_validation(pool, 400, 0.25, spec.data.split_seed)
    assert np.array_equal(fold.train.x, train.x) and np.array_equal(fold.train.y, train.y)
    assert np.array_equal(fold.validation.x, validation.x) and np.array_equal(fold.validation.y, validation.y)


def test_k_folds_hold_out_every_drawn_sample_once(tmp_path):
    """The k validation parts partition the samples of the single split; each fold trains on the rest."""
    (single,) = training_folds(spec_with(tmp_path, samples=400), str(DATA_DIR))
    drawn = rows(np.concatenate([single.train.x, single.validation.x]))
    folds = training_folds(spec_with(tmp_path, folds=4, samples=400), str(DATA_DIR))
    assert len(folds) == 4
    assert rows(np.concatenate([f.validation.x for f in folds])) == drawn
    for fold in folds:
        assert rows(np.concatenate([fold.train.x, fold.validation.x])) == drawn
        assert len(fold.validation) == 100 and np.unique(fold.validation.y).size == 10


def test_a_trial_over_folds_returns_their_mean_and_stores_each_run(tmp_path):
    spec = spec_with(tmp_path, folds=3, samples=300, epochs=2)
    objective, trial = run_one_trial(spec, tmp_path)
    assert trial.state == TrialState.COMPLETE
    attrs = trial.user_attrs
    assert attrs["outcome"] == "completed" and attrs["folds"] == 3 and attrs["repeats"] == 1
    assert len(attrs["runs"]) == 3 and trial.value == pytest.approx(np.mean(attrs["runs"]), abs=1e-6)
    assert attrs["epochs"] == 2 and len(attrs["curves"]["val_accuracy"]) == 2
    # Each run is the final validation accuracy of that fold, trained with the stored seed.
    config = objective.config(trial.params, attrs["seed"])
    again = [trainer.fit(config, f.train, f.validation).history.epochs[-1].val_accuracy for f in objective.folds]
    assert attrs["runs"] == [round(v, 6) for v in again]


def test_a_single_split_trial_stores_no_runs(tmp_path):
    spec = spec_with(tmp_path, samples=300, epochs=2)
    _, trial = run_one_trial(spec, tmp_path)
    assert trial.state == TrialState.COMPLETE
    assert "runs" not in trial.user_attrs and "folds" not in trial.user_attrs
    assert trial.value == pytest.approx(trial.user_attrs["curves"]["val_accuracy"][-1])


def test_repeats_train_each_fold_with_a_new_seed(tmp_path):
    spec = spec_with(tmp_path, repeats=2, samples=300, epochs=2)
    _, trial = run_one_trial(spec, tmp_path)
    runs = trial.user_attrs["runs"]
    assert len(runs) == 2 and trial.user_attrs["repeats"] == 2 and trial.user_attrs["folds"] == 1
    assert trial.value == pytest.approx(np.mean(runs), abs=1e-6)


def test_a_diverging_configuration_is_pruned_with_its_reason(tmp_path):
    path = tmp_path / "diverging.toml"
    path.write_text(DIVERGING)
    spec = hpo.load_spec(path)
    _, trial = run_one_trial(spec, tmp_path)
    assert trial.state == TrialState.PRUNED
    attrs = trial.user_attrs
    assert attrs["outcome"] == "diverged" and attrs["diverged_epoch"] == 1
    assert attrs["reason"].startswith("loss became ") and "at epoch 1 step " in attrs["reason"]
    assert attrs["epochs"] == 0 and "runs" not in attrs


def test_the_pruner_stops_a_trial_and_the_reason_names_it(tmp_path):
    """A trial far below the others at the first epoch is pruned by the median pruner."""
    path = write_spec(tmp_path, "pruned", samples=300, epochs=3, extra="""
[pruner]
kind = "median"
startup_trials = 1
warmup_epochs = 0
""")
    spec = hpo.load_spec(path)
    handle = hpo.create(spec, f"sqlite:///{tmp_path / 'pruned.db'}")
    handle.study.enqueue_trial({"lr": 0.1, "weight_decay": 1e-8, "optimizer": "adam"})
    handle.study.enqueue_trial({"lr": 1e-3, "weight_decay": 1e-8, "optimizer": "sgd"})
    handle.study.optimize(Objective(spec, str(DATA_DIR)), n_trials=2)
    good, slow = handle.study.trials
    assert good.state == TrialState.COMPLETE
    assert slow.state == TrialState.PRUNED
    assert slow.user_attrs["outcome"] == "stopped"
    assert slow.user_attrs["reason"] == "pruned by the median pruner at epoch 1"
    assert list(slow.intermediate_values) == [1]


def test_the_objective_never_loads_the_test_split(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the objective loaded the test split")

    monkeypatch.setattr(trainer, "load_test_split", refuse)
    _, trial = run_one_trial(spec_with(tmp_path, folds=3, samples=300, epochs=1), tmp_path)
    assert trial.state == TrialState.COMPLETE

