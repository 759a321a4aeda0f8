"""`hpo study confirm`: the best configurations re-trained over fresh seeds, ranked by mean."""

from __future__ import annotations

import json
import signal
import time

import optuna
import pytest

import hpo as hpo_api
from hpo import _study
from hpo._confirm import SUFFIX, confirm, confirmed_choice
from hpo._notes import CONFIRMATION, ROLE_ATTR, note
from hpo._spec import load_spec
from helpers import DATA_DIR, hpo, hpo_popen, write_spec

pytestmark = pytest.mark.slow


@pytest.fixture
def searched(tmp_path):
    """A small digits study with 8 finished trials, on a SQLite file."""
    spec = load_spec(write_spec(tmp_path, "small", trials=8, epochs=3, samples=400, random_trials=4))
    url = f"sqlite:///{tmp_path / 's.db'}"
    handle = _study.create(spec, url)
    _study.run(handle, target=8, data_dir=str(DATA_DIR))
    return handle


def _runs(handle):
    runs = optuna.load_study(study_name=handle.name + SUFFIX, storage=handle.url)
    return runs.get_trials(deepcopy=False)


def test_confirm_gives_s_runs_per_configuration_with_distinct_seeds(searched):
    results = confirm(searched, top=3, seeds=4, data_dir=str(DATA_DIR))
    assert len(results) == 3
    runs = _runs(searched)
    assert len(runs) == 12 and all(t.state.name in ("COMPLETE", "PRUNED") for t in runs)
    for r in results:
        mine = [t for t in runs if t.user_attrs["confirms_trial"] == r.trial]
        assert len(mine) == 4
        assert len({t.user_attrs["seed"] for t in mine}) == 4  # fresh seeds, all distinct
        original = searched.study.trials[r.trial]
        assert original.user_attrs["seed"] not in {t.user_attrs["seed"] for t in mine}
        assert all(t.params == original.params for t in mine)
        assert len(r.values) + r.diverged == 4
    means = [r.mean for r in results if not r.diverged]
    assert means == sorted(means, reverse=True)  # ranked by mean
    choice = confirmed_choice(searched.study)
    assert choice["trial"] == results[0].trial and choice["seeds"] == 4

    # Asking again re-runs nothing and gives the same table.
    again = confirm(searched, top=3, seeds=4, data_dir=str(DATA_DIR))
    assert [(r.trial, r.values) for r in again] == [(r.trial, r.values) for r in results]
    assert len(_runs(searched)) == 12


def test_the_confirmed_choice_is_in_the_note_and_the_runs_are_labelled_bookkeeping(searched):
    results = confirm(searched, top=2, seeds=2, data_dir=str(DATA_DIR))
    winner = results[0]
    assert (f"### Confirmed choice\n\nTrial {winner.trial}: mean validation accuracy {winner.mean:.4g} "
            f"± {winner.sd:.4g} over 2 seeds") in note(searched.study)
    runs = _study.open_study(searched.name + SUFFIX, searched.url)
    assert runs.study.user_attrs[ROLE_ATTR] == CONFIRMATION
    assert searched.study.user_attrs[ROLE_ATTR] == "search"
    assert note(runs.study).startswith(f"**Bookkeeping study, not a search:** the confirmation runs of `{searched.name}`")
    assert runs.study.metric_names == ["validation accuracy"]
    # The listing says which study is the search and which holds its confirmation runs.
    kinds = {row.name: row.kind for row in _study.list_studies(searched.url)}
    assert kinds == {searched.name: "search", searched.name + SUFFIX: "confirmation"}
    table = hpo("study", "list", "--storage", searched.url)
    assert table.returncode == 0, table.stderr
    assert {line.split()[0]: line.split()[1] for line in table.stdout.splitlines()[2:]} == kinds


def test_best_and_cli_say_which_choice_they_use(searched):
    before = json.loads(hpo("study", "best", searched.name, "--json", "--storage", searched.url).stdout)
    assert before["source"] == "single run"
    table = hpo("study", "confirm", searched.name, "--top", "2", "--seeds", "3", "--storage", searched.url)
    assert table.returncode == 0, table.stderr
    assert "above mean" in table.stdout and "Confirmed choice: trial" in table.stdout
    assert before["value"] == before["single_run_value"] and before["stderr"] is None and before["runs"] == 1
    after = json.loads(hpo("study", "best", searched.name, "--json", "--storage", searched.url).stdout)
    assert after["source"] == "confirmed" and after["confirmed"]["seeds"] == 3
    # The value is the estimate the choice rests on, the confirmed mean; the single run is kept apart.
    confirmed = searched.study.user_attrs["confirmed"]
    assert after["value"] == confirmed["mean"] and after["runs"] == 3
    assert after["single_run_value"] == searched.study.trials[confirmed["trial"]].value
    assert after["stderr"] == pytest.approx(confirmed["sd"] / 3 ** 0.5)
    assert hpo_api.best(searched.name, storage=searched.url) == after


def test_confirm_survives_an_interruption_without_duplicate_runs(tmp_path):
    spec = write_spec(tmp_path, "slowish", trials=4, epochs=40, samples=1200, random_trials=4)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert hpo("study", "create", str(spec), "--storage", url).returncode == 0
    assert hpo("study", "run", "slowish", "--storage", url).returncode == 0
    process = hpo_popen("study", "confirm", "slowish", "--top", "2", "--seeds", "3", "--storage", url)
    deadline = time.monotonic() + 120
    while True:  # interrupt once at least one run is done and another is running
        try:
            trials = optuna.load_study(study_name="slowish" + SUFFIX, storage=url).get_trials(deepcopy=False)
        except KeyError:
            trials = []
        states = [t.state.name for t in trials]
        if "RUNNING" in states and ("COMPLETE" in states or "PRUNED" in states):
            break
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    # 130 either way in a shell: exit(130), or ended by the SIGINT re-raised at exit.
    assert process.returncode in (130, -signal.SIGINT), err

    resumed = hpo("study", "confirm", "slowish", "--top", "2", "--seeds", "3", "--storage", url, "--json")
    assert resumed.returncode == 0, resumed.stderr
    table = json.loads(resumed.stdout)
    assert [len(row["values"]) + row["diverged"] for row in table] == [3, 3]
    runs = optuna.load_study(study_name="slowish" + SUFFIX, storage=url).get_trials(deepcopy=False)
    finished = [(t.user_attrs["confirms_trial"], t.user_attrs["repeat"]) for t in runs
                if t.state.name in ("COMPLETE", "PRUNED")]
    assert sorted(finished) == sorted(set(finished)) and len(finished) == 6  # no run done twice


def test_confirm_runs_in_parallel_workers(searched):
    result = hpo("study", "confirm", searched.name, "--top", "2", "--seeds", "3", "--workers", "2",
                 "--storage", searched.url, "--json")
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    assert [len(row["values"]) + row["diverged"] for row in table] == [3, 3]
    runs = _runs(searched)
    assert len(runs) == 6 and len({t.user_attrs["seed"] for t in runs}) == 6
