"""A raced study as a product: `hpo study run` races it within its budget of epochs, resumes after a
signal, shares it between workers, and `best`, `show`, `evaluate` and the API speak of its estimate.

The budget of a raced study is `[study] trials` x `[training] epochs` epochs; every epoch of every
run counts: each fold and repeat, the stopped runs, the runs failed by a signal (the epochs they
trained) and those whose worker died (their full length). Confirmation spends no epochs outside it:
a raced study refuses `confirm`.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

import hpo
from hpo._errors import StudyError
from hpo._racing import (
    CONFIG_ATTR,
    EPOCHS_ATTR,
    RUN_ATTR,
    RaceSettings,
    budget_epochs,
    configurations,
    epochs_spent,
    incumbent,
    race,
)
from hpo._spec import CategoricalParam, StudySpec, load_spec
from helpers import DATA_DIR, hpo as hpo_cli, hpo_popen, write_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)

RACED = '\n[objective]\nmethod = "race"\nfolds = 3\nprune_epochs = [{checkpoint}]\nprune_margin = 0.1\n'


def raced_spec(folder, name="raced", *, trials=12, epochs=4, samples=300, checkpoint=2):
    return write_spec(folder, name, trials=trials, epochs=epochs, samples=samples, random_trials=3,
                      extra=RACED.format(checkpoint=checkpoint))


def finished_runs(trials) -> list[tuple[int, int]]:
    return [(t.user_attrs[CONFIG_ATTR], t.user_attrs[RUN_ATTR]) for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


# --- Budget accounting ------------------------------------------------------------------------


class Counting:
    """A synthetic run: configuration `arm` scores 0.9 - 0.05 arm plus noise; arms >= 3 fall far behind
    at the checkpoint epoch and are stopped there when the incumbent's run is the reference."""

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.trained = 0
        self.seen: list[tuple[int, int]] = []

    def __call__(self, params, run, number, reference):
        self.seen.append((number, run))
        final = 0.9 - 0.05 * params["arm"] + 0.01 * ((number * 7 + run * 3) % 5 - 2)
        curve = [final] * self.epochs
        if reference and params["arm"] >= 3 and final < reference[0] - 0.1:
            self.trained += 1
            return None, curve[:1], 1
        self.trained += self.epochs
        return final, curve, self.epochs


def test_the_budget_counts_every_fold_repeat_and_stopped_run():
    spec = StudySpec(name="arms", seed=1, fixed={"epochs": 3}, search=(CategoricalParam("arm", tuple(range(6))),))
    settings = RaceSettings(folds=3, repeats=2, margin=0.5, prune_epochs=(1,), startup=4)
    counting = Counting(3)
    study = optuna.create_study(direction="maximize")
    result = race(study, spec, settings, budget_epochs(spec, 20), evaluate=counting)
    trials = study.get_trials()
    assert budget_epochs(spec, 20) == 60
    assert result.epochs == epochs_spent(trials) == counting.trained == sum(t.user_attrs[EPOCHS_ATTR] for t in trials)
    assert 60 - 3 < result.epochs <= 60  # the race stops when a whole run no longer fits
    assert any(t.state == TrialState.PRUNED and t.user_attrs[EPOCHS_ATTR] == 1 for t in trials)
    # The incumbent went past the folds into the repeats: runs 3..5 are fold r % 3 with a new seed.
    assert result.choice.runs > settings.folds and max(result.choice.values) < settings.max_runs
    assert len(set(counting.seen)) == len(counting.seen)  # no run trained twice


def test_a_run_that_failed_without_its_epochs_counts_its_full_length():
    study = optuna.create_study(direction="maximize")
    dist = optuna.distributions.FloatDistribution(0, 1)
    for state, attrs in ((TrialState.FAIL, {}), (TrialState.FAIL, {EPOCHS_ATTR: 2}), (TrialState.PRUNED, {EPOCHS_ATTR: 1})):
        study.add_trial(optuna.trial.create_trial(state=state, params={"x": 0.5}, distributions={"x": dist},
                                                  user_attrs={CONFIG_ATTR: 0, RUN_ATTR: 0, **attrs}))
    # a dead worker's run: unknown, so its full 5 epochs; a signalled one: the 2 it trained
    assert epochs_spent(study.get_trials(), 5) == 5 + 2 + 1


def test_a_raced_study_refuses_confirmation(tmp_path):
    handle = hpo.create(load_spec(raced_spec(tmp_path)), f"sqlite:///{tmp_path / 'r.db'}")
    with pytest.raises(StudyError, match="is raced: its choice is already a mean over 3 folds"):
        hpo.confirm(handle)


def test_a_raced_study_is_not_run_as_single_trials(tmp_path):
    from hpo._objective import Objective

    spec = load_spec(raced_spec(tmp_path))
    with pytest.raises(StudyError, match="study 'raced' is raced: `hpo study run raced` races it one fold at a time"):
        Objective(spec)


# --- The race through the product ---------------------------------------------------------------


def test_run_races_a_raced_study_and_best_show_evaluate_speak_of_its_estimate(tmp_path):
    storage = f"sqlite:///{tmp_path / 'r.db'}"
    handle = hpo.create(load_spec(raced_spec(tmp_path)), storage)
    reports = []
    result = hpo.run(handle, data_dir=DATA_DIR, on_progress=reports.append)
    trials = handle.trials()
    configs = configurations(trials)
    choice = incumbent(configs, RaceSettings.of(handle.spec))
    spent, budget = result.epochs
    assert budget == 12 * 4 and budget - 4 < spent <= budget and result.reached_target
    assert spent == epochs_spent(trials, 4)
    assert len(set(finished_runs(trials))) == len(finished_runs(trials))
    # The listing's best is the race's choice, not the luckiest single run.
    row = {r.name: r for r in hpo.list_studies(storage)}["raced"]
    assert row.kind == "race" and (row.best_value, row.best_number) == (choice.mean, choice.number)
    # Progress is said in epochs of the budget, with the incumbent's estimate.
    assert {r.unit for r in reports} == {"epochs"} and {r.target for r in reports} == {budget}
    assert reports[-1].done == spent and "incumbent #" in reports[-1].leader
    assert any(r.running and list(r.running.values())[0][0] > 0 for r in reports)  # epochs as they go

    best = hpo.best(handle)
    assert best["source"] == "race" and best["number"] == choice.number
    assert best["value"] == pytest.approx(choice.mean) and best["runs"] == choice.runs
    assert best["stderr"] == pytest.approx(choice.se) if choice.runs > 1 else best["stderr"] is None
    assert best["single_run_value"] == trials[choice.number].value
    shown = json.loads(hpo_cli("study", "show", handle.name, "--json", "--storage", storage).stdout)["race"]
    assert shown["budget_epochs"] == budget and shown["epochs_spent"] == spent
    first = shown["configurations"][0]
    assert first["number"] == choice.number and first["state"] == "choice" and first["runs"] == choice.runs
    assert first["folds"] == sorted({r % 3 for r in choice.values}) and first["mean"] == pytest.approx(choice.mean)
    assert hpo.show(handle)["race"] == shown
    # The figure, the report and the dashboard's note show the choice and its evidence.
    from hpo._notes import note
    from hpo._plots import panels, render
    from hpo._report import build

    figure = render(handle.study, "race")
    assert panels(figure) == ["race"] and f"choice #{choice.number}" in figure.axes[0].get_title(loc="left")
    page = build(handle, kinds=("race",))
    assert "<h2>Race</h2>" in page and "<figure id='fig-race'>" in page and "standard error" in page
    assert f"### The race's choice\n\nConfiguration {choice.number}: mean validation accuracy" in note(handle.study)
    tested = hpo.evaluate(handle, seeds=1, data_dir=DATA_DIR)
    assert tested["trial"] == choice.number and tested["source"] == "race"
    assert tested["validation"] == pytest.approx(choice.mean)


@pytest.mark.slow
def test_the_cli_says_a_races_budget_choice_and_evidence(tmp_path):
    storage = f"sqlite:///{tmp_path / 'r.db'}"
    spec = raced_spec(tmp_path)
    ran = hpo_cli("study", "run", str(spec), "--storage", storage)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("raced: ") and " epochs (12 trials x 4), " in ran.stdout
    assert "budget spent; choice #" in ran.stdout
    shown = hpo_cli("study", "show", "raced", "--storage", storage)
    assert "Race on 3 folds (x 1 repeats): " in shown.stdout and "/48 epochs of the budget" in shown.stdout
    assert "config  runs  folds" in shown.stdout and "choice" in shown.stdout
    best = hpo_cli("study", "best", "raced", "--storage", storage)
    assert best.stdout.startswith("Race's choice of 'raced': configuration #")
    assert "(standard error) over" in best.stdout and "(its first run alone: " in best.stdout
    data = json.loads(hpo_cli("study", "best", "raced", "--json", "--storage", storage).stdout)
    assert data["source"] == "race" and {"value", "stderr", "runs", "single_run_value"} <= data.keys()
    refused = hpo_cli("study", "confirm", "raced", "--storage", storage)
    assert refused.returncode == 1 and refused.stderr.startswith("Error: study 'raced' is raced")


def _wait_for(url: str, name: str, ready, process, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
        except KeyError:
            trials = []
        if ready(trials):
            return
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.05)


@pytest.mark.slow
def test_a_race_killed_by_sigterm_resumes_through_hpo_study_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    spec = raced_spec(tmp_path, trials=10, epochs=40, samples=1400, checkpoint=10)
    process = hpo_popen("study", "run", str(spec), "--storage", url, "--quiet")

    def mid_race(trials):  # a run is training, a few have finished
        running = [t for t in trials if t.state == TrialState.RUNNING and RUN_ATTR in t.user_attrs]
        return running and len(finished_runs(trials)) >= 3

    _wait_for(url, "raced", mid_race, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "Traceback" not in err
    study = optuna.load_study(study_name="raced", storage=url)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert not study.get_trials(states=(TrialState.RUNNING,))
    # The signal lands in a run (recorded as failed with the epochs it trained, which count) or, when
    # that run has just ended, between two runs (nothing lost).
    if "was recorded as failed" in err:
        assert len(failed) == 1 and failed[0].user_attrs["fail_reason"] == "terminated (SIGTERM)"
        assert 0 <= failed[0].user_attrs[EPOCHS_ATTR] < 40
    else:
        assert "nothing lost" in err and not failed
    before = finished_runs(study.get_trials())

    again = hpo_cli("study", "run", "raced", "--storage", url, "--json")
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    trials = study.get_trials()
    runs = finished_runs(trials)
    assert set(before) <= set(runs) and not [r for r, n in Counter(runs).items() if n > 1]  # none repeated
    assert result["epochs_spent"] == epochs_spent(trials, 40) <= result["budget_epochs"] == 400
    assert result["reached_target"] and not study.get_trials(states=(TrialState.RUNNING,))


@pytest.mark.slow
def test_two_workers_race_one_study_through_hpo_study_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    spec = raced_spec(tmp_path, trials=16, epochs=20, samples=1000, checkpoint=5)
    done = hpo_cli("study", "run", str(spec), "--storage", url, "--workers", "2", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    study = optuna.load_study(study_name="raced", storage=url)
    trials = study.get_trials()
    runs = finished_runs(trials)
    assert len(set(runs)) == len(runs)  # no run raced twice
    assert result["epochs_spent"] == epochs_spent(trials, 20) <= result["budget_epochs"] == 320
    assert result["reached_target"] and not study.get_trials(states=(TrialState.RUNNING,))
    # A run given up (claimed by both, or over the budget) trained nothing; no other run failed.
    assert all(t.user_attrs["reason"].startswith(("over the budget", "another worker claimed this run first"))
               and t.user_attrs[EPOCHS_ATTR] == 0 for t in trials if t.state == TrialState.FAIL)
    choice = incumbent(configurations(trials), RaceSettings(folds=3))
    assert result["best"]["number"] == choice.number and result["best"]["value"] == pytest.approx(choice.mean)


@pytest.mark.slow
def test_a_dead_workers_run_is_failed_counted_whole_and_raced_again(tmp_path):
    from hpo import _optuna_internals as internals
    from hpo._racing import claim_run

    storage = f"sqlite:///{tmp_path / 'r.db'}"
    created = hpo_cli("study", "create", str(raced_spec(tmp_path)), "--heartbeat-interval", "1",
                      "--grace-period", "2", "--storage", storage)
    assert created.returncode == 0, created.stderr
    assert "(raced, budget 12 trials x 4 = 48 epochs)" in created.stdout
    handle = hpo.open_study("raced", storage)
    # A worker claims a run, sends one heartbeat and dies.
    claim, _ = claim_run(handle.study, handle.spec, RaceSettings.of(handle.spec), 48)
    internals.study_storage(handle.study).record_heartbeat(internals.trial_id(claim.trial))
    time.sleep(2.5)
    result = hpo.run(handle, data_dir=DATA_DIR)
    dead = handle.study.get_trials()[claim.trial.number]
    assert dead.state == TrialState.FAIL and EPOCHS_ATTR not in dead.user_attrs
    spent, budget = result.epochs
    assert spent == epochs_spent(handle.trials(), 4) <= budget == 48  # the dead run counted 4 epochs
    assert 48 - 4 - 4 < spent and result.reached_target
    # It was a new configuration's first run: without a result it is no evidence, and the race went on.
    assert claim.number not in {c.number for c in configurations(handle.trials())}

