"""Several workers on one study: real processes, a real PostgreSQL server, real signals."""

from __future__ import annotations

import os
import signal
import time

import optuna
import pytest

from helpers import hpo, hpo_popen, postgres_or_fail, unique, write_spec

pytestmark = [pytest.mark.slow]

FINISHED = ("COMPLETE", "PRUNED")


def _worker(tmp_path, tag, *args, **env):
    """A worker with its own working directory and HOME, as on another machine."""
    home = tmp_path / f"home-{tag}"
    home.mkdir(exist_ok=True)
    return hpo_popen(*args, cwd=home, HOME=str(home), **env)


def _states(url, name):
    study = optuna.load_study(study_name=name, storage=url)
    return study.get_trials(deepcopy=False)


@pytest.mark.postgres
def test_three_workers_on_postgresql_reach_the_target_exactly(tmp_path):
    url = postgres_or_fail()
    name = unique("workers")
    spec = write_spec(tmp_path, "w", trials=30, epochs=2, samples=300, random_trials=5)
    assert hpo("study", "create", str(spec), "--name", name, "--storage", url).returncode == 0
    try:
        run = ("study", "run", name, "--trials", "30", "--quiet")
        first = _worker(tmp_path, "a", *run, HPO_STORAGE=url)
        second = _worker(tmp_path, "b", *run, HPO_STORAGE=url)
        deadline = time.monotonic() + 120
        while sum(t.state.name in FINISHED for t in _states(url, name)) < 5:
            assert time.monotonic() < deadline, "workers made no progress"
            for process in (first, second):
                assert process.poll() is None, process.communicate()[1]
            time.sleep(0.2)
        late = _worker(tmp_path, "c", *run, HPO_STORAGE=url)  # joins a study already under way
        for process in (first, second, late):
            out, err = process.communicate(timeout=300)
            assert process.returncode == 0, err
        trials = _states(url, name)
        assert sum(t.state.name in FINISHED for t in trials) == 30
        assert len(trials) == 30  # no overshoot: nothing started beyond the target
        assert len({t.number for t in trials}) == 30
        assert not [t for t in trials if t.state.name == "RUNNING"]
        assert len({tuple(sorted(t.params.items())) for t in trials}) == 30
    finally:
        hpo("study", "delete", name, "--yes", "--storage", url)


@pytest.mark.postgres
def test_a_killed_worker_s_trial_is_failed_and_retried_with_the_same_parameters(tmp_path):
    url = postgres_or_fail()
    name = unique("killed")
    spec = write_spec(tmp_path, "k", trials=4, epochs=1000, samples=1200, random_trials=3)
    # Long trials that cannot diverge (and so end at once): the kill must land mid-trial.
    spec.write_text(spec.read_text().replace("high = 0.5", "high = 0.01")
                    .replace('choices = ["sgd", "momentum", "adam"]', 'choices = ["sgd"]'))
    created = hpo("study", "create", str(spec), "--name", name, "--heartbeat-interval", "1",
                  "--grace-period", "3", "--storage", url)
    assert created.returncode == 0, created.stderr
    beat = {"HPO_STORAGE": url}
    try:
        run = ("study", "run", name, "--trials", "4", "--quiet")
        victim = _worker(tmp_path, "victim", *run, **beat)
        survivor = _worker(tmp_path, "survivor", *run, **beat)
        deadline = time.monotonic() + 120
        while True:  # kill the victim while it runs a trial, after its first heartbeat
            running = {t.number for t in _states(url, name) if t.state.name == "RUNNING"}
            if len(running) == 2:
                time.sleep(1.5)
                # Both trials still running (a diverging one ends at once): the victim is mid-trial.
                if {t.number for t in _states(url, name) if t.state.name == "RUNNING"} == running:
                    break
            assert time.monotonic() < deadline
            assert victim.poll() is None and survivor.poll() is None
            time.sleep(0.1)
        before = {t.number: t for t in _states(url, name) if t.state.name in FINISHED}
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate(timeout=30)
        out, err = survivor.communicate(timeout=300)
        assert survivor.returncode == 0, err

        trials = {t.number: t for t in _states(url, name)}
        dead = [t for t in trials.values() if t.state.name == "FAIL"]
        assert len(dead) == 1 and "fail_reason" not in dead[0].user_attrs  # failed by heartbeat
        retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == dead[0].number]
        assert len(retries) == 1
        assert retries[0].params == dead[0].params and retries[0].state.name in FINISHED
        assert sum(t.state.name in FINISHED for t in trials.values()) == 4
        assert not [t for t in trials.values() if t.state.name in ("RUNNING", "WAITING")]
        for number, trial in before.items():  # nothing finished is lost
            assert trials[number].state == trial.state and trials[number].value == trial.value
    finally:
        hpo("study", "delete", name, "--yes", "--storage", url)


def test_workers_option_runs_local_processes_on_sqlite(tmp_path):
    spec = write_spec(tmp_path, "local", trials=24, epochs=2, samples=300, random_trials=5)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert hpo("study", "create", str(spec), "--storage", url).returncode == 0
    result = hpo("study", "run", "local", "--workers", "2", "--storage", url)
    assert result.returncode == 0, result.stderr
    assert "24/24 finished" in result.stdout
    trials = _states(url, "local")
    assert len(trials) == 24 and all(t.state.name in FINISHED for t in trials)
    assert "locked" not in result.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_four_local_workers_on_sqlite_while_the_dashboard_polls(tmp_path):
    """200 short trials by 4 workers on one SQLite file, the dashboard reading it all along."""
    import json
    import urllib.request

    spec = write_spec(tmp_path, "busy", trials=200, epochs=1, samples=200, random_trials=10)
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    assert hpo("study", "create", str(spec), "--storage", url).returncode == 0
    port = _free_port()
    board = hpo_popen("dashboard", "--storage", url, "--port", str(port))
    polls, errors = 0, []
    try:
        deadline = time.monotonic() + 60
        while True:  # wait for the dashboard to answer
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5).read()
                break
            except OSError:
                assert time.monotonic() < deadline and board.poll() is None, board.communicate()[1]
                time.sleep(0.2)
        workers = hpo_popen("study", "run", "busy", "--workers", "4", "--storage", url)
        while workers.poll() is None:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/1", timeout=30).read()
                json.loads(body)
                polls += 1
            except OSError as exc:
                errors.append(str(exc))
            time.sleep(0.2)
        out, err = workers.communicate()
        assert workers.returncode == 0, err
    finally:
        board.terminate()
        board.communicate(timeout=30)
    assert "locked" not in err.lower() and "locked" not in out.lower()
    assert "200/200 finished" in out
    assert polls >= 5 and not errors
    trials = _states(url, "busy")
    assert len(trials) == 200 and all(t.state.name in FINISHED for t in trials)


def _heartbeats(db) -> dict[int, str]:
    """Each running trial's last heartbeat, by trial id."""
    import sqlite3

    with sqlite3.connect(db, timeout=5) as connection:
        return dict(connection.execute(
            "SELECT trial_heartbeats.trial_id, heartbeat FROM trial_heartbeats JOIN trials USING (trial_id) "
            "WHERE trials.state = 'RUNNING'").fetchall())


def test_workers_with_different_environments_use_the_study_s_heartbeat(tmp_path):
    """The settings stored at create (1 s, 3 s) rule, whatever each machine's environment says."""
    spec = write_spec(tmp_path, "beat", trials=2, epochs=3000, samples=1200, random_trials=3)
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    created = hpo("study", "create", str(spec), "--heartbeat-interval", "1", "--grace-period", "3",
                  "--storage", url)
    assert created.returncode == 0, created.stderr
    run = ("study", "run", "beat", "--quiet")
    slow = _worker(tmp_path, "slow", *run, HPO_STORAGE=url, HPO_HEARTBEAT_INTERVAL="60", HPO_GRACE_PERIOD="600")
    fast = _worker(tmp_path, "fast", *run, HPO_STORAGE=url, HPO_HEARTBEAT_INTERVAL="2", HPO_GRACE_PERIOD="4")
    try:
        deadline = time.monotonic() + 120
        while len(_heartbeats(db)) < 2:
            assert time.monotonic() < deadline, "two trials never ran at once"
            assert slow.poll() is None and fast.poll() is None
            time.sleep(0.2)
        first = _heartbeats(db)
        time.sleep(2.5)
        later = _heartbeats(db)
        # Both beat every second: the stored interval, not 60 s.
        assert all(later[trial] > first[trial] for trial in first), (first, later)

        os.kill(slow.pid, signal.SIGKILL)  # its trial stops beating
        slow.communicate(timeout=30)
        time.sleep(3.5)  # past the study's grace period, far inside the slow worker's 600 s
        stale = hpo("study", "fail-stale", "beat", "--storage", url, HPO_GRACE_PERIOD="600")
        assert stale.returncode == 0, stale.stderr
        assert stale.stdout.startswith("Failed 1 stale trial(s) of 'beat'")
    finally:
        for process in (slow, fast):
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=30)
