"""The raced search: its rules, its budget, and that it beats single-run choice under noise.

A synthetic objective stands in for training: each configuration has a known true accuracy,
and a run observes it plus a fold effect shared by all configurations plus its own noise, as
a 100-image validation accuracy does. Runs cost `epochs` epochs unless stopped early.
"""

from __future__ import annotations

import threading

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpo._racing import (
    CONFIG_ATTR,
    RUN_ATTR,
    Configuration,
    RaceSettings,
    configurations,
    epochs_spent,
    incumbent,
    next_step,
    race,
)
from hpo._spec import CategoricalParam, FloatParam, StudySpec, load_spec
from helpers import DATA_DIR, write_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)

ARMS = 12
# Arm 0 is the true best; the next ones are close behind, as good configurations are.
TRUTH = {arm: 0.90 - 0.012 * arm ** 0.8 for arm in range(ARMS)}
NOISE = 0.04  # between runs, as between training seeds on 100 validation images
FOLD_NOISE = 0.02  # some folds are easier for everyone


def arms_spec(seed: int = 0, epochs: int = 1) -> StudySpec:
    return StudySpec(name="arms", seed=seed, fixed={"epochs": epochs},
                     search=(CategoricalParam("arm", tuple(range(ARMS))),))


class Synthetic:
    """A noisy objective with known truth; counts the epochs it was asked to train."""

    def __init__(self, truth, seed: int, epochs: int = 1, folds: int = 5):
        self.truth = truth
        self.seed = seed
        self.epochs = epochs
        self.fold_effect = np.random.default_rng([seed, 1]).normal(0, FOLD_NOISE, folds)
        self.folds = folds
        self.trained = 0
        self.calls = 0

    def final(self, params, run: int, number: int) -> float:
        noise = np.random.default_rng([self.seed, 2, number, run]).normal(0, NOISE)
        return float(np.clip(self.truth(params) + self.fold_effect[run % self.folds] + noise, 0, 1))

    def __call__(self, params, run, number, reference):
        self.calls += 1
        final = self.final(params, run, number)
        curve = []
        for epoch in range(1, self.epochs + 1):
            curve.append(final * epoch / self.epochs)
            # the stopping rule of the trainer's callback, at the checkpoint epochs
            if reference and epoch in (self.epochs // 2,) and curve[-1] < reference[epoch - 1] - 0.15:
                self.trained += epoch
                return None, curve, epoch
        self.trained += self.epochs
        return final, curve, self.epochs


def arm_truth(params) -> float:
    return TRUTH[params["arm"]]


def steady_truth(params) -> float:
    """Best at x = 0: the larger x, the worse on average and the more a run varies."""
    return 0.90 - 0.06 * params["x"] - 0.2 * (params["y"] - 0.6) ** 2


class Unsteady(Synthetic):
    """Run-to-run noise grows with x, as with learning rates near the edge of stability."""

    def final(self, params, run: int, number: int) -> float:
        noise = np.random.default_rng([self.seed, 2, number, run]).normal(0, 0.02 + 0.10 * params["x"])
        return float(np.clip(self.truth(params) + self.fold_effect[run % self.folds] + noise, 0, 1))


XY = (FloatParam("x", 0.0, 1.0), FloatParam("y", 0.0, 1.0))


def raced_truth(seed: int, budget: int) -> float:
    study = optuna.create_study(direction="maximize")
    spec = StudySpec(name="xy", seed=seed, fixed={"epochs": 1}, search=XY)
    result = race(study, spec, RaceSettings(startup=6), budget, evaluate=Unsteady(steady_truth, seed))
    return steady_truth(result.choice.params)


def single_run_truth(seed: int, budget: int) -> float:
    """Plain TPE at the same budget: one run per trial, choice = the best single run."""
    synthetic = Unsteady(steady_truth, seed)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(lambda t: synthetic({"x": t.suggest_float("x", 0, 1), "y": t.suggest_float("y", 0, 1)},
                                       0, t.number, None)[0], n_trials=budget)
    return steady_truth(study.best_params)


@pytest.mark.slow
def test_racing_hands_over_truly_better_configurations_than_the_best_single_run():
    raced = np.array([raced_truth(s, 60) for s in range(20)])
    single = np.array([single_run_truth(s, 60) for s in range(20)])
    # Paired by seed: if neither were better, 15 or more wins of 20 would happen 2% of the time.
    assert (raced > single).sum() >= 15, (raced, single)
    assert raced.mean() > single.mean() + 0.01


def config(number: int, values: dict[int, float], stopped: float | None = None) -> Configuration:
    return Configuration(number, {"arm": number}, {}, values=dict(values), stopped=stopped)


def test_the_incumbent_is_the_best_mean_among_the_most_evaluated():
    lucky = config(3, {0: 0.99})
    steady = config(0, {0: 0.90, 1: 0.88, 2: 0.89})
    weaker = config(1, {0: 0.86, 1: 0.87, 2: 0.85})
    assert incumbent([lucky, steady, weaker], RaceSettings()) is steady


def test_a_close_challenger_runs_its_next_fold_and_a_distant_one_does_not():
    leader = config(0, {0: 0.90, 1: 0.88, 2: 0.89})
    close = config(1, {0: 0.88})  # 0.02 behind on fold 0: within 0.05 / sqrt(1)
    distant = config(2, {0: 0.80})
    step = next_step([leader, close, distant], RaceSettings(margin=0.05))
    assert step.config is close and step.run == 1
    step = next_step([leader, distant], RaceSettings(margin=0.05))
    assert step.config is None  # nothing to race: explore


def test_the_comparison_is_paired_on_common_folds():
    # Fold 1 is hard for everyone: the challenger's low value there is no deficit.
    leader = config(0, {0: 0.90, 1: 0.80, 2: 0.89})
    challenger = config(1, {0: 0.89, 1: 0.79})
    assert next_step([leader, challenger], RaceSettings(margin=0.02)).config is challenger


def test_a_challenger_level_with_the_incumbent_makes_the_incumbent_run_again():
    leader = config(0, {0: 0.90, 1: 0.88})
    level = config(1, {0: 0.89, 1: 0.87})
    step = next_step([leader, level], RaceSettings(folds=5))
    assert step.config is leader and step.run == 2


def test_the_incumbent_stops_at_folds_times_repeats():
    leader = config(0, {r: 0.9 for r in range(5)})
    level = config(1, {r: 0.89 for r in range(5)})
    assert next_step([leader, level], RaceSettings(folds=5, repeats=1)).config is None
    assert next_step([leader, level], RaceSettings(folds=5, repeats=2)).config is leader


def test_a_stopped_configuration_is_out_of_the_race():
    leader = config(0, {0: 0.90, 1: 0.88})
    stopped = config(1, {0: 0.91}, stopped=0.3)
    assert next_step([leader, stopped], RaceSettings()).config is None


def test_budget_counts_every_epoch_of_every_run_stopped_ones_included():
    epochs, budget = 10, 400
    synthetic = Synthetic(lambda p: 0.3 + 0.6 * (p["x"] > 0.5), seed=3, epochs=epochs)
    spec = StudySpec(name="x", seed=3, fixed={"epochs": epochs}, search=(FloatParam("x", 0.0, 1.0),))
    study = optuna.create_study(direction="maximize")
    result = race(study, spec, RaceSettings(startup=5), budget, evaluate=synthetic)
    trials = study.get_trials()
    stopped = [t for t in trials if t.state == TrialState.PRUNED]
    assert stopped, "the hopeless half of the space should have been stopped early"
    assert result.epochs == epochs_spent(trials) == synthetic.trained
    assert budget - epochs < result.epochs <= budget
    assert all(t.user_attrs["epochs"] == epochs // 2 for t in stopped)


def test_every_run_of_a_configuration_is_a_different_fold_and_the_choice_has_the_most_runs():
    settings = RaceSettings(folds=4, repeats=2, startup=6)
    study = optuna.create_study(direction="maximize")
    result = race(study, arms_spec(5), settings, 80, evaluate=Synthetic(arm_truth, 5, folds=4))
    runs: dict[int, list[int]] = {}
    for t in study.get_trials():
        runs.setdefault(t.user_attrs[CONFIG_ATTR], []).append(t.user_attrs[RUN_ATTR])
    assert all(sorted(r) == list(range(len(r))) for r in runs.values())
    assert result.choice.runs == max(len(r) for r in runs.values())
    assert result.choice.runs > settings.folds  # the incumbent went on to a second seed per fold
    assert np.isfinite(result.choice.se)


class Crash(Exception):
    pass


def test_a_race_resumes_after_a_crash_in_the_middle_of_a_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    study = optuna.create_study(direction="maximize", storage=url, study_name="arms")
    synthetic = Synthetic(arm_truth, 7)

    def crashing(params, run, number, reference):
        if synthetic.calls == 15:
            raise Crash
        return synthetic(params, run, number, reference)

    with pytest.raises(Crash):
        race(study, arms_spec(7), RaceSettings(startup=6), 40, evaluate=crashing)
    crashed = study.get_trials(states=(TrialState.RUNNING,))
    assert len(crashed) == 1
    # what the heartbeat does to a run whose worker died
    study.tell(crashed[0].number, state=TrialState.FAIL)
    before = len(configurations(study.get_trials()))
    resumed = optuna.load_study(study_name="arms", storage=url)
    result = race(resumed, arms_spec(7), RaceSettings(startup=6), 40, evaluate=synthetic)
    # A run whose worker died without saying how far it got counts its full length (1 epoch here).
    assert result.epochs == 40 and synthetic.trained == 39
    assert result.configurations >= before
    done = [t for t in resumed.get_trials() if t.state != TrialState.FAIL]
    assert len({(t.user_attrs[CONFIG_ATTR], t.user_attrs[RUN_ATTR]) for t in done}) == len(done)


def test_two_workers_race_one_study_within_the_budget(tmp_path):
    url = f"sqlite:///{tmp_path / 'race.db'}"
    optuna.create_study(direction="maximize", storage=url, study_name="arms")
    synthetic = Synthetic(arm_truth, 11)
    results, errors = [], []

    def worker():
        try:
            study = optuna.load_study(study_name="arms", storage=url)
            results.append(race(study, arms_spec(11), RaceSettings(startup=6), 40, evaluate=synthetic))
        except Exception as exc:  # surfaced below: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    study = optuna.load_study(study_name="arms", storage=url)
    trials = study.get_trials()
    assert epochs_spent(trials) == synthetic.trained <= 40
    # A run claimed by both workers, or past the budget at the last moment, is given up before it trains.
    given_up = [t for t in trials if t.state not in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert all(t.state == TrialState.FAIL
               and t.user_attrs["reason"].startswith(("over the budget", "another worker claimed this run first"))
               and t.user_attrs["epochs"] == 0 for t in given_up)
    assert results[-1].choice.number == incumbent(configurations(trials), RaceSettings()).number


def test_a_race_with_the_trainer_counts_every_epoch_each_run_trained(tmp_path):
    spec = load_spec(write_spec(tmp_path, samples=200, epochs=4))
    study = optuna.create_study(direction="maximize")
    settings = RaceSettings(folds=3, startup=3, prune_epochs=(2,), prune_margin=0.05)
    result = race(study, spec, settings, budget_epochs=48, data_dir=str(DATA_DIR))
    trials = study.get_trials()
    for t in trials:
        curve = t.user_attrs["curve"]
        # a diverged run also counts the epoch it diverged in, which left no accuracy
        assert t.user_attrs["epochs"] in (len(curve), len(curve) + 1)
        if t.state == TrialState.COMPLETE:
            assert t.value == pytest.approx(curve[-1], abs=1e-4) and len(curve) == 4
    assert result.epochs == sum(t.user_attrs["epochs"] for t in trials)
    assert 48 - 4 < result.epochs <= 48
    assert result.choice.runs == max(c.runs for c in configurations(trials))


def test_a_new_configuration_another_worker_runs_counts_as_the_worst_value_to_the_sampler():
    """So that two workers do not propose the same point (a constant liar on the proxy study)."""
    from hpo._racing import EstimateSampler

    study = optuna.create_study(direction="maximize")
    x = optuna.distributions.FloatDistribution(0, 1)
    study.add_trial(optuna.trial.create_trial(params={"x": 0.2}, distributions={"x": x}, value=0.8,
                                              user_attrs={CONFIG_ATTR: 0, RUN_ATTR: 0, "epochs": 1}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.RUNNING, params={"x": 0.7}, distributions={"x": x},
                                              user_attrs={CONFIG_ATTR: 1, RUN_ATTR: 0}))
    study.ask()  # the trial being sampled: no configuration yet
    proxy, _ = EstimateSampler(RaceSettings(), 0)._inner(study, study.get_trials()[-1])
    assert sorted((t.params["x"], t.value) for t in proxy.trials) == [(0.2, 0.8), (0.7, 0.0)]

