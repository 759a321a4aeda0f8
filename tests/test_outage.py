"""Storage outages: a PostgreSQL server of the test's own is stopped under running workers."""

from __future__ import annotations

import os
import time

import optuna
import pytest

from helpers import hpo, hpo_popen, unique, write_spec
from pgserver import private_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

FINISHED = ("COMPLETE", "PRUNED")


@pytest.fixture
def server():
    yield from private_server()


def _trials(url, name):
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def _wait_for_finished(url, name, count, process, limit=120.0):
    deadline = time.monotonic() + limit
    while sum(t.state.name in FINISHED for t in _trials(url, name)) < count:
        assert time.monotonic() < deadline, "the workers made no progress"
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.2)


def test_two_workers_ride_out_a_ten_second_restart_and_end_at_the_target(tmp_path, server):
    name = unique("outage")
    spec = write_spec(tmp_path, "o", trials=24, epochs=3, samples=300)
    assert hpo("study", "create", str(spec), "--name", name, "--storage", server.url).returncode == 0
    run = hpo_popen("study", "run", name, "--workers", "2", "--quiet", cwd=tmp_path,
                    HPO_STORAGE=server.url)
    _wait_for_finished(server.url, name, 6, run)
    before = {t.number: (t.state, t.value, t.params) for t in _trials(server.url, name)
              if t.state.name in FINISHED}
    server.stop()
    time.sleep(10)
    server.start()
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert "Traceback" not in err
    trials = _trials(server.url, name)
    finished = [t for t in trials if t.state.name in FINISHED]
    assert len(finished) == 24
    assert not [t for t in trials if t.state.name == "RUNNING"]
    after = {t.number: (t.state, t.value, t.params) for t in trials}
    assert all(after[number] == record for number, record in before.items())


def test_an_outage_longer_than_the_bound_ends_with_one_line(tmp_path, server):
    name = unique("outage")
    spec = write_spec(tmp_path, "o", trials=200, epochs=3, samples=300)
    assert hpo("study", "create", str(spec), "--name", name, "--storage", server.url).returncode == 0
    run = hpo_popen("study", "run", name, "--quiet", cwd=tmp_path, HPO_STORAGE=server.url,
                    HPO_STORAGE_RETRY="4")
    _wait_for_finished(server.url, name, 2, run)
    server.stop()
    try:
        out, err = run.communicate(timeout=120)
    finally:
        server.start()
    assert run.returncode not in (0, None)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: storage ") and "unreachable for 4 s" in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("quiet", [True, False], ids=["quiet", "progress"])
def test_workers_that_lose_their_storage_end_with_their_own_line_in_the_parent(tmp_path, server, quiet):
    name = unique("outage")
    spec = write_spec(tmp_path, "o", trials=200, epochs=3, samples=300)
    assert hpo("study", "create", str(spec), "--name", name, "--storage", server.url).returncode == 0
    run = hpo_popen("--storage-retry", "4", "study", "run", name, "--workers", "2",
                    *(["--quiet"] if quiet else []), cwd=tmp_path, HPO_STORAGE=server.url)
    _wait_for_finished(server.url, name, 2, run)
    server.stop()
    try:
        out, err = run.communicate(timeout=120)
    finally:
        server.start()
    assert run.returncode not in (0, None)
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, err
    assert "storage " in errors[0] and "unreachable for 4 s" in errors[0]
    assert "Traceback" not in err


def test_an_outage_longer_than_the_grace_period_fails_no_live_trial(tmp_path, server):
    """Every heartbeat stops during an outage; the worker back first must not take the others'
    live trials for dead ones."""
    name = unique("outage")
    spec = write_spec(tmp_path, "o", trials=30, epochs=40, samples=600)
    assert hpo("study", "create", str(spec), "--name", name, "--storage", server.url,
               "--heartbeat-interval", "1", "--grace-period", "2").returncode == 0
    run = hpo_popen("study", "run", name, "--workers", "2", "--quiet", cwd=tmp_path, HPO_STORAGE=server.url)
    _wait_for_finished(server.url, name, 1, run)
    while sum(t.state.name == "RUNNING" for t in _trials(server.url, name)) < 2:
        assert run.poll() is None, run.communicate()[1]
        time.sleep(0.1)
    server.stop()
    time.sleep(6)  # three grace periods
    server.start()
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert "Traceback" not in err
    trials = _trials(server.url, name)
    assert sum(t.state.name in FINISHED for t in trials) == 30
    assert not [t.number for t in trials if t.state.name in ("FAIL", "RUNNING")]
