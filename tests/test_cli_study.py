"""`hpo study …` end to end, as real subprocesses against SQLite files on disk and PostgreSQL."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import time

import optuna
import pytest

from helpers import hpo, hpo_popen, postgres_or_fail, unique, write_spec


def _trials(db, name):
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    return study.get_trials(deepcopy=False)


def _params_key(trial):
    return tuple(sorted((k, repr(v)) for k, v in trial.params.items()))


@pytest.mark.slow
def test_create_run_resume_show_best(tmp_path):
    spec = write_spec(tmp_path, "tiny", trials=10, epochs=2, samples=300)
    db = tmp_path / "studies.db"
    storage = f"sqlite:///{db}"

    created = hpo("study", "create", str(spec), "--storage", storage)
    assert created.returncode == 0, created.stderr
    assert "Created study 'tiny'" in created.stdout

    first = hpo("study", "run", "tiny", "--trials", "10", "--storage", storage)
    assert first.returncode == 0, first.stderr
    assert "10/10 finished, 10 run now" in first.stdout
    second = hpo("study", "run", "tiny", "--trials", "20", "--storage", storage)
    assert second.returncode == 0, second.stderr
    assert "20/20 finished, 10 run now" in second.stdout  # only what remained
    trials = _trials(db, "tiny")
    assert len(trials) == 20
    assert len({_params_key(t) for t in trials}) == 20
    # In the order they started (a trial's number is given when its place in the budget is made).
    phases = [t.user_attrs["phase"] for t in sorted(trials, key=lambda t: t.datetime_start)]
    assert phases[:5] == ["random"] * 5 and "tpe" in phases[5:]
    assert all(len(t.user_attrs["curves"]["val_accuracy"]) == t.user_attrs["epochs"] for t in trials
               if t.state.name == "COMPLETE")

    again = hpo("study", "run", "tiny", "--trials", "20", "--storage", storage)
    assert again.returncode == 0 and "0 run now" in again.stdout

    show = hpo("study", "show", "tiny", "--top", "5", "--storage", storage)
    assert show.returncode == 0, show.stderr
    lines = show.stdout.splitlines()
    assert any(line.startswith("Best-1 ") for line in lines)
    assert any(line.startswith("Best-5 ") for line in lines)
    assert "lr" in show.stdout and "weight_decay" in show.stdout

    best = hpo("study", "best", "tiny", "--json", "--storage", storage)
    assert best.returncode == 0, best.stderr
    data = json.loads(best.stdout)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert data["value"] == max(t.value for t in complete)
    assert set(data["params"]) == {"lr", "weight_decay", "optimizer"}
    assert isinstance(data["number"], int)

    listed = hpo("study", "list", "--json", "--storage", storage)
    assert json.loads(listed.stdout)[0]["finished"] == 20


def test_create_twice_says_how_to_continue(tmp_path):
    spec = write_spec(tmp_path, "dup")
    storage = f"sqlite:///{tmp_path / 's.db'}"
    assert hpo("study", "create", str(spec), "--storage", storage).returncode == 0
    again = hpo("study", "create", str(spec), "--storage", storage)
    assert again.returncode == 1
    assert again.stderr.strip() == (
        f"Error: a study named 'dup' already exists in {storage}; continue it with "
        "`hpo study run dup`, or create another with --name NEW_NAME")
    assert "Traceback" not in again.stderr


def _wait_for_running(db, name, timeout=60.0, beating=False):
    """Until a trial of the study runs (`beating`: has its parameters and has recorded a heartbeat)."""
    beat = (" AND trial_id IN (SELECT trial_id FROM trial_heartbeats)"
            " AND trial_id IN (SELECT trial_id FROM trial_params)") if beating else ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as connection:
                    rows = connection.execute(
                        "SELECT count(*) FROM trials JOIN studies USING (study_id) "
                        f"WHERE studies.study_name = ? AND trials.state = 'RUNNING'{beat}", (name,)).fetchone()
                if rows and rows[0] > 0:
                    return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    raise AssertionError("no trial started running")


@pytest.mark.slow
def test_ctrl_c_fails_the_running_trial_and_run_continues_without_repeats(tmp_path):
    spec = write_spec(tmp_path, "intr", trials=6, epochs=300, samples=1200, random_trials=3)
    db = tmp_path / "s.db"
    storage = f"sqlite:///{db}"
    assert hpo("study", "create", str(spec), "--storage", storage).returncode == 0
    assert hpo("study", "run", "intr", "--trials", "1", "--storage", storage).returncode == 0

    process = hpo_popen("study", "run", "intr", "--trials", "6", "--storage", storage)
    time.sleep(1.0)  # let the process import and start its trial
    _wait_for_running(db, "intr")
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    # 130 either way in a shell: exit(130), or ended by the SIGINT re-raised at exit.
    assert process.returncode in (130, -signal.SIGINT), err
    # The message starts a line of its own, and its hint keeps the target and the storage.
    match = re.search(r"^Error: interrupted: trial (\d+) was recorded as failed; "
                      rf"hpo study run intr --trials 6 --storage {re.escape(storage)} continues the study$",
                      err, re.M)
    assert match, err
    assert "Traceback" not in err
    failed = [t for t in _trials(db, "intr") if t.state.name == "FAIL"]
    assert [t.number for t in failed] == [int(match.group(1))]
    assert failed[0].user_attrs["fail_reason"] == "interrupted by the user (Ctrl-C)"

    resumed = hpo("study", "run", "intr", "--trials", "3", "--storage", storage)
    assert resumed.returncode == 0, resumed.stderr
    trials = _trials(db, "intr")
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3
    keys = [_params_key(t) for t in trials if t.state.name != "WAITING"]  # trials that ran
    assert len(keys) == len(set(keys)), "a resumed run repeated a parameter set"


@pytest.mark.slow
def test_sigkill_leaves_no_running_trial_after_the_grace_period(tmp_path):
    spec = write_spec(tmp_path, "killed", trials=2, epochs=800, samples=1200, random_trials=3)  # a second or more a trial
    db = tmp_path / "s.db"
    storage = f"sqlite:///{db}"
    created = hpo("study", "create", str(spec), "--heartbeat-interval", "1", "--grace-period", "2",
                  "--storage", storage)
    assert created.returncode == 0, created.stderr
    process = hpo_popen("study", "run", "killed", "--storage", storage)
    _wait_for_running(db, "killed", beating=True)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    victim = [t for t in _trials(db, "killed") if t.state.name == "RUNNING"]
    assert len(victim) == 1

    patient = hpo("study", "fail-stale", "killed", "--grace-period", "600", "--storage", storage)
    assert patient.returncode == 0 and patient.stdout.startswith("No stale trials")  # within its grace
    time.sleep(2.5)
    stale = hpo("study", "fail-stale", "killed", "--storage", storage)  # the study's grace period
    assert stale.returncode == 0, stale.stderr
    assert stale.stdout.startswith(f"Failed 1 stale trial(s) of 'killed': {victim[0].number}; "
                                   "1 queued again with the same parameters.")

    resumed = hpo("study", "run", "killed", "--storage", storage)
    assert resumed.returncode == 0, resumed.stderr
    trials = {t.number: t for t in _trials(db, "killed")}
    assert not [t for t in trials.values() if t.state.name == "RUNNING"]
    assert trials[victim[0].number].state.name == "FAIL"
    retry = [t for t in trials.values() if t.system_attrs.get("failed_trial") == victim[0].number]
    assert len(retry) == 1 and retry[0].params == victim[0].params
    assert retry[0].state.name in ("COMPLETE", "PRUNED")
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials.values()) == 2


@pytest.mark.postgres
@pytest.mark.slow
def test_same_commands_against_postgresql(tmp_path):
    url = postgres_or_fail()
    name = unique("pg-study")
    spec = write_spec(tmp_path, "pg", trials=4, epochs=2, samples=300)
    try:
        created = hpo("study", "create", str(spec), "--name", name, "--storage", url)
        assert created.returncode == 0, created.stderr
        ran = hpo("study", "run", name, "--trials", "4", "--storage", url)
        assert ran.returncode == 0, ran.stderr
        assert "4/4 finished" in ran.stdout
        show = hpo("study", "show", name, "--storage", url)
        assert show.returncode == 0 and "Best-1" in show.stdout
        best = json.loads(hpo("study", "best", name, "--json", "--storage", url).stdout)
        assert 0 <= best["value"] <= 1
    finally:
        hpo("study", "delete", name, "--yes", "--storage", url)


@pytest.mark.parametrize("flags, message", [
    (("--grace-period", "5", "--heartbeat-interval", "20"),
     "Error: grace period 5 s is under twice the heartbeat interval 20 s, so a live trial could be "
     "failed as dead; give --grace-period 40 or more, or a shorter --heartbeat-interval"),
    (("--heartbeat-interval", "20"),  # the default grace period, 30 s, is too short for it
     "Error: grace period 30 s is under twice the heartbeat interval 20 s, so a live trial could be "
     "failed as dead; give --grace-period 40 or more, or a shorter --heartbeat-interval"),
])
def test_a_grace_period_under_two_heartbeats_is_refused(tmp_path, flags, message):
    spec = write_spec(tmp_path, "beat")
    storage = f"sqlite:///{tmp_path / 's.db'}"
    refused = hpo("study", "create", str(spec), *flags, "--storage", storage)
    assert (refused.returncode, refused.stderr.splitlines()) == (1, [message])
    from_file = hpo("study", "run", str(spec), *flags, "--storage", storage)
    assert (from_file.returncode, from_file.stderr.splitlines()) == (1, [message])
    assert not (tmp_path / "s.db").exists() or "beat" not in optuna.get_all_study_names(storage)


def test_heartbeat_settings_are_stored_and_run_refuses_to_change_them(tmp_path):
    spec = write_spec(tmp_path, "beat")
    storage = f"sqlite:///{tmp_path / 's.db'}"
    created = hpo("study", "create", str(spec), "--heartbeat-interval", "4", "--grace-period", "9",
                  "--storage", storage, HPO_HEARTBEAT_INTERVAL="50", HPO_GRACE_PERIOD="100")
    assert created.returncode == 0, created.stderr
    study = optuna.load_study(study_name="beat", storage=storage)
    assert study.user_attrs["heartbeat"] == {"interval": 4, "grace_period": 9}
    refused = hpo("study", "run", "beat", "--grace-period", "60", "--storage", storage)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "Error: the heartbeat settings are the study's (interval 4 s, grace period 9 s, chosen when 'beat' "
        "was created), so that every worker uses the same; drop --heartbeat-interval and --grace-period, "
        "or create a new study with other settings: `hpo study create SPEC --name NEW_NAME "
        f"--heartbeat-interval S --grace-period S --storage {storage}`"]


def test_the_environment_sets_a_new_study_s_heartbeat(tmp_path):
    spec = write_spec(tmp_path, "env")
    storage = f"sqlite:///{tmp_path / 's.db'}"
    created = hpo("study", "create", str(spec), "--storage", storage,
                  HPO_HEARTBEAT_INTERVAL="5", HPO_GRACE_PERIOD="12")
    assert created.returncode == 0, created.stderr
    study = optuna.load_study(study_name="env", storage=storage)
    assert study.user_attrs["heartbeat"] == {"interval": 5, "grace_period": 12}


def test_a_study_without_stored_settings_runs_with_the_defaults(tmp_path):
    """Studies made before the settings were stored use 10 s and 30 s."""
    from hpo import _optuna_internals as internals
    from hpo import _study
    from hpo._spec import load_spec
    from hpo._storage import Heartbeat

    storage = f"sqlite:///{tmp_path / 's.db'}"
    _study.create(load_spec(write_spec(tmp_path, "old")), storage, heartbeat=Heartbeat(interval=None))
    assert "heartbeat" not in optuna.load_study(study_name="old", storage=storage).user_attrs
    opened = _study.open_study("old", storage)
    assert _study.study_heartbeat(opened.study) == Heartbeat(10, 30)
    assert internals.rdb_storage(internals.study_storage(opened.study)).get_heartbeat_interval() == 10
    stored = _study.create(load_spec(write_spec(tmp_path, "new")), storage, heartbeat=Heartbeat(3, 7))
    opened = _study.open_study(stored.name, storage)
    assert internals.rdb_storage(internals.study_storage(opened.study)).get_heartbeat_interval() == 3
