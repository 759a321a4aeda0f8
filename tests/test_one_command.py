"""`hpo study run SPEC.toml`: one command creates the study when it is new, runs it when the same
spec is stored, and refuses, saying what differs and how to go on, when another spec is."""

from __future__ import annotations

import json

import optuna
import pytest

from helpers import hpo, write_spec


def _finished(db, name):
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials(deepcopy=False)
    return sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials)


@pytest.mark.slow
def test_a_new_spec_file_is_created_and_run_then_run_again_to_a_higher_target(tmp_path):
    spec = write_spec(tmp_path, "one", trials=3, epochs=2, samples=300)
    db = tmp_path / "s.db"
    storage = f"sqlite:///{db}"
    first = hpo("study", "run", str(spec), "--storage", storage, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"Created study 'one' in {storage} from {spec}." in first.stderr
    assert "one: 3/3 finished, 3 run now, target reached" in first.stdout
    again = hpo("study", "run", str(spec), "--trials", "5", "--storage", storage, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Created" not in again.stderr
    assert "one: 5/5 finished, 2 run now" in again.stdout
    assert _finished(db, "one") == 5
    show = hpo("study", "show", "one", "--json", "--storage", storage)
    assert json.loads(show.stdout)["target"] == 5  # the study's current target, not the spec's 3
    text = hpo("study", "show", "one", "--storage", storage)
    assert "target 5" in text.stdout.splitlines()[0]


def test_a_different_spec_under_the_same_name_is_refused_saying_what_differs(tmp_path):
    spec = write_spec(tmp_path, "one", trials=3, epochs=2, samples=300)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    assert hpo("study", "create", str(spec), "--storage", storage).returncode == 0
    changed = write_spec(tmp_path, "one", trials=3, epochs=4, samples=300)
    refused = hpo("study", "run", str(changed), "--storage", storage, cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"Error: study 'one' in {storage} holds a different spec than {changed} (training.epochs 2 stored, "
        f"4 in the file); run the stored study with `hpo study run one --storage {storage}`, or make a new "
        f"study from the file with `hpo study run {changed} --name NEW_NAME --storage {storage}`"]
    assert refused.stdout == ""


@pytest.mark.slow
def test_name_makes_a_second_study_from_the_same_file(tmp_path):
    spec = write_spec(tmp_path, "one", trials=2, epochs=2, samples=300)
    db = tmp_path / "s.db"
    storage = f"sqlite:///{db}"
    assert hpo("study", "run", str(spec), "--storage", storage).returncode == 0
    other = hpo("study", "run", str(spec), "--name", "two", "--json", "--storage", storage)
    assert other.returncode == 0, other.stderr
    result = json.loads(other.stdout)
    assert (result["name"], result["target"], result["finished"]) == ("two", 2, 2)
    assert result["storage"] == storage and result["best"]["state"] == "COMPLETE"
    assert _finished(db, "one") == 2 and _finished(db, "two") == 2


def test_name_with_a_study_name_instead_of_a_file_is_refused(tmp_path):
    refused = hpo("study", "run", "plain", "--name", "other", "--storage", f"sqlite:///{tmp_path / 's.db'}")
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: --name is for a spec file;")


@pytest.mark.postgres
def test_json_results_mask_the_password(tmp_path):
    from helpers import postgres_or_fail, unique

    url = postgres_or_fail().replace("postgres@", "postgres:s3cret%40x@", 1)  # the server trusts any password
    name = unique("json")
    spec = write_spec(tmp_path, "j", trials=1, epochs=2, samples=300)
    try:
        created = hpo("study", "create", str(spec), "--name", name, "--json", "--storage", url)
        assert created.returncode == 0, created.stderr
        ran = hpo("study", "run", name, "--json", "--storage", url)
        assert ran.returncode == 0, ran.stderr
        for result in (created, ran):
            assert "s3cret" not in result.stdout + result.stderr
            assert json.loads(result.stdout)["storage"] == url.replace("s3cret%40x", "***")
        assert json.loads(ran.stdout)["finished"] == 1
    finally:
        hpo("study", "delete", name, "--yes", "--storage", url)
