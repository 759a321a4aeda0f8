"""The final test: used once, on the untouched test split, and never reachable from the search."""

from __future__ import annotations

import re
import sqlite3

import pytest
from typer.testing import CliRunner

import trainer
import trainer._load
from hpo import _study
from hpo._confirm import confirm
from hpo._errors import StudyError
from hpo._notes import note
from hpo._evaluate import TEST_RESULT_ATTR, choose, evaluate
from hpo._child import create_child, narrow_study
from hpo._spec import load_spec
from hpo._storage import Heartbeat
from hpo.cli import app
from helpers import DATA_DIR, REPO, write_spec

SAMPLES = 400


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A tiny digits study, really run: 8 trials of 3 epochs on 400 samples."""
    folder = tmp_path_factory.mktemp("evaluate")
    path = folder / "searched.db"
    spec = load_spec(write_spec(folder, "tiny", trials=8, epochs=3, samples=SAMPLES, random_trials=4))
    _study.run(_study.create(spec, f"sqlite:///{path}"), target=8, data_dir=str(DATA_DIR))
    return path


@pytest.fixture
def study(searched, tmp_path):
    """A fresh copy of the searched study, so each test evaluates it for the first time."""
    path = tmp_path / "copy.db"
    with sqlite3.connect(searched) as source, sqlite3.connect(path) as target:
        source.backup(target)
    return _study.open_study("tiny", f"sqlite:///{path}", Heartbeat(interval=None))


@pytest.fixture
def test_loads(monkeypatch):
    """Count the loads of the test split (the real loader still does the work)."""
    calls = []
    real = trainer.load_test_split

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "load_test_split", counting)
    return calls


def test_evaluate_retrains_the_best_trial_on_train_plus_validation_and_looks_at_test_once(study, test_loads):
    best = _study.best_trial(study.study)
    seen = []
    result = evaluate(study, seeds=2, data_dir=str(DATA_DIR), on_seed=lambda i, run: seen.append(i))
    assert len(test_loads) == 1 and seen == [0, 1]
    assert result["trial"] == best.number and result["params"] == best.params
    assert result["source"] == "best trial" and result["validation"] == best.value
    assert result["n_train"] == SAMPLES  # the search's train + validation samples, nothing more
    assert result["n_test"] == len(trainer.load_test_split("digits"))
    assert len(result["seeds"]) == 2 and len({run["seed"] for run in result["seeds"]}) == 2
    accuracies = [run["accuracy"] for run in result["seeds"]]
    assert result["mean"] == pytest.approx(sum(accuracies) / 2)
    assert all(0 <= a <= 1 for a in accuracies) and result["std"] >= 0
    assert result["forced"] is False and re.match(r"\d{4}-\d\d-\d\dT", result["date"])
    assert study.study.user_attrs[TEST_RESULT_ATTR] == result
    # The dashboard's note of the study now holds the result.
    assert (f"### Test result\n\nTest accuracy {result['mean']:.4g} ± {result['std']:.4g} over 2 seeds, "
            f"trial {best.number} (best trial; validation {best.value:.4g})") in note(study.study)


def test_a_second_evaluation_is_refused_unless_forced_and_forcing_is_recorded(study, test_loads):
    first = evaluate(study, seeds=1, data_dir=str(DATA_DIR))
    with pytest.raises(StudyError) as caught:
        evaluate(study, seeds=1, data_dir=str(DATA_DIR))
    assert str(caught.value) == (
        f"study 'tiny' was evaluated on the test split on {first['date']} (test accuracy {first['mean']:.4f}); "
        "the test set is used once, since every further look would make it one more validation set; "
        "add --force to evaluate again (it is recorded as forced)")
    assert len(test_loads) == 1  # refused before any data was read
    second = evaluate(study, seeds=1, force=True, data_dir=str(DATA_DIR))
    assert second["forced"] is True
    assert second["history"] == [first]
    third = evaluate(study, seeds=1, force=True, data_dir=str(DATA_DIR))
    assert [h["date"] for h in third["history"]] == [first["date"], second["date"]]
    assert "history" not in third["history"][1]


def test_the_confirmed_choice_is_evaluated_when_there_is_one(study):
    second_best = _study.ranked(study.study)[1]
    study.study.set_user_attr("confirmed", {
        "trial": second_best.number, "params": second_best.params, "mean": 0.5, "sd": 0.01, "seeds": 3,
        "original": second_best.value, "top": 3, "date": "2026-01-01", "table": []})
    choice = choose(study)
    assert choice.source == "confirmed" and choice.trial == second_best.number
    assert choice.detail.startswith(f"the confirmed choice: trial {second_best.number}, mean validation")
    result = evaluate(study, seeds=1, data_dir=str(DATA_DIR))
    assert result["trial"] == second_best.number and result["source"] == "confirmed"


def test_an_unrun_study_cannot_be_evaluated(tmp_path):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    handle = _study.create(load_spec(write_spec(tmp_path, "empty")), url)
    with pytest.raises(StudyError, match=r"^study 'empty' has no complete trial to evaluate; run it first with "
                                         r"`hpo study run empty`$"):
        evaluate(handle)


def test_evaluate_command_says_what_it_evaluates_and_refuses_a_second_time(study):
    runner = CliRunner()
    args = ["study", "evaluate", "tiny", "--seeds", "2", "--storage", study.url, "--data-dir", str(DATA_DIR)]
    first = runner.invoke(app, args, env={"HPO_STORAGE": ""})
    assert first.exit_code == 0, first.output
    lines = first.stdout.splitlines()
    best = _study.best_trial(study.study)
    assert lines[0] == (f"Evaluating the best trial: #{best.number}, validation accuracy {best.value:.4f} in a single "
                        "run (not confirmed; `hpo study confirm tiny` re-checks the best over seeds first).")
    assert lines[2].startswith("  seed 1/2 (") and lines[3].startswith("  seed 2/2 (")
    assert lines[4].startswith("Test accuracy of 'tiny': ")
    assert f"(trial {best.number}, best trial; validation" in lines[4]
    again = runner.invoke(app, args, env={"HPO_STORAGE": ""})
    assert again.exit_code == 1 and again.stdout == ""
    assert "the test set is used once" in again.stderr and "add --force" in again.stderr
    forced = runner.invoke(app, [*args, "--force", "--json"], env={"HPO_STORAGE": ""})
    assert forced.exit_code == 0, forced.output
    assert '"forced": true' in forced.stdout


# ---------------------------------------------------------------------------------------
# The search cannot reach the test split


def test_search_narrowing_and_confirmation_never_load_the_test_split(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the test split was loaded outside `hpo study evaluate`")

    monkeypatch.setattr(trainer, "load_test_split", refuse)
    monkeypatch.setattr(trainer._load, "load_test_split", refuse)
    url = f"sqlite:///{tmp_path / 'isolated.db'}"
    spec = load_spec(write_spec(tmp_path, "iso", trials=6, epochs=2, samples=300, random_trials=3))
    parent = _study.create(spec, url)
    assert _study.run(parent, target=6, data_dir=str(DATA_DIR)).finished == 6
    child = create_child(parent, narrow_study(parent, top=3), "iso-narrow", trials=2)
    result = _study.run(_study.open_study("iso-narrow", url), data_dir=str(DATA_DIR))
    assert result.reached_target and result.ran == 2 and result.finished == child.warm_start + 2
    assert confirm(parent, top=2, seeds=1, data_dir=str(DATA_DIR))
    with pytest.raises(AssertionError, match="outside `hpo study evaluate`"):
        evaluate(parent, seeds=1, data_dir=str(DATA_DIR))  # the one place that loads it


def test_only_the_evaluate_module_names_the_test_split():
    # The experiments (hpo/experiments/) reproduce the seed's chapters, test accuracy included;
    # docs/CONTRACTS.md allows them. Nothing on the search side may load it.
    root = REPO / "hpo"
    users = sorted(str(path.relative_to(root)) for path in root.rglob("*.py")
                   if "load_test_split" in path.read_text(encoding="utf-8"))
    assert [u for u in users if not u.startswith("experiments/")] == ["_evaluate.py"]

