"""`hpo worker`: real worker processes on a SQLite file shared by several studies."""

from __future__ import annotations

import signal
import time

import optuna
import pytest

from helpers import hpo, hpo_popen, write_spec

pytestmark = [pytest.mark.slow]

FINISHED = ("COMPLETE", "PRUNED")


def make(tmp_path, url, name, trials, *, priority=None, extra="", epochs=1, samples=200):
    spec = write_spec(tmp_path, name, trials=trials, epochs=epochs, samples=samples, random_trials=2, extra=extra)
    if priority is not None:
        text = spec.read_text().replace(f'name = "{name}"', f'name = "{name}"\npriority = {priority}')
        spec.write_text(text)
    created = hpo("study", "create", str(spec), "--storage", url)
    assert created.returncode == 0, created.stderr


def trials(url, name):
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def workers(url, n, *args):
    return [hpo_popen("worker", "--storage", url, "--poll", "0.2", *args) for _ in range(n)]


def finish(processes):
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
        outputs.append(out)
    return outputs


def test_the_higher_priority_study_is_finished_first(tmp_path):
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    make(tmp_path, url, "low", 6)
    make(tmp_path, url, "high", 6, priority=1)  # from the spec
    make(tmp_path, url, "urgent", 4)
    changed = hpo("study", "priority", "urgent", "7", "--storage", url)
    assert changed.returncode == 0 and changed.stdout == "Study 'urgent': priority 7 (was 0).\n"
    outputs = finish(workers(url, 2))
    assert sum(len(out.splitlines()) - 1 for out in outputs) == 16
    runs = {name: trials(url, name) for name in ("urgent", "high", "low")}
    assert [len(t) for t in runs.values()] == [4, 6, 6]
    assert all(t.state.name in FINISHED for ts in runs.values() for t in ts)
    # A worker takes a lower priority only once every trial of the higher one is taken.
    for higher, lower in (("urgent", "high"), ("high", "low")):
        assert max(t.datetime_start for t in runs[higher]) <= min(t.datetime_start for t in runs[lower])
        assert max(t.datetime_complete for t in runs[higher]) <= max(t.datetime_complete for t in runs[lower])


def test_equal_priorities_share_the_workers(tmp_path):
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    make(tmp_path, url, "left", 8)
    make(tmp_path, url, "right", 8)
    finish(workers(url, 2))
    started = sorted([(t.datetime_start, name) for name in ("left", "right") for t in trials(url, name)])
    order = [name for _, name in started]
    assert len(order) == 16
    # Both studies move together: at any point neither is more than a few trials ahead.
    for end in range(1, 17):
        head = order[:end]
        assert abs(head.count("left") - head.count("right")) <= 2, order


def test_a_waiting_worker_picks_up_a_study_created_later(tmp_path):
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    make(tmp_path, url, "first", 2)
    [worker] = workers(url, 1, "--wait")
    try:
        deadline = time.monotonic() + 120
        while sum(t.state.name in FINISHED for t in trials(url, "first")) < 2:
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.2)
        make(tmp_path, url, "later", 3)
        while sum(t.state.name in FINISHED for t in trials(url, "later")) < 3:
            assert time.monotonic() < deadline and worker.poll() is None, worker.communicate()[1]
            time.sleep(0.2)
        time.sleep(0.5)
        assert worker.poll() is None  # still waiting for more work
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    assert worker.returncode == 128 + signal.SIGTERM
    assert err == "Error: terminated (SIGTERM) between trials, nothing lost\n"
    assert [line.split(" #")[0] for line in out.splitlines()] == ["first"] * 2 + ["later"] * 3
    assert len(trials(url, "later")) == 3


def test_sigterm_mid_trial_records_the_trial_and_stops_the_worker(tmp_path):
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    # Long trials that cannot diverge (a diverging one ends at once): the signal lands mid-trial.
    spec = write_spec(tmp_path, "long", trials=2, epochs=1000, samples=1200, random_trials=2)
    spec.write_text(spec.read_text().replace("high = 0.5", "high = 0.01")
                    .replace('choices = ["sgd", "momentum", "adam"]', 'choices = ["sgd"]'))
    assert hpo("study", "create", str(spec), "--storage", url).returncode == 0
    [worker] = workers(url, 1)
    deadline = time.monotonic() + 120
    while True:
        running = [t.number for t in trials(url, "long") if t.state.name == "RUNNING"]
        if running:
            time.sleep(1.0)
            if [t.number for t in trials(url, "long") if t.state.name == "RUNNING"] == running:
                break
        assert time.monotonic() < deadline and worker.poll() is None, worker.communicate()[1]
        time.sleep(0.1)
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 128 + signal.SIGTERM
    failed = [t for t in trials(url, "long") if t.state.name == "FAIL"]
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"] == "terminated (SIGTERM)"
    assert err == f"Error: terminated (SIGTERM): trial {failed[0].number} was recorded as failed (study 'long')\n"
    assert not [t for t in trials(url, "long") if t.state.name == "RUNNING"]


def test_each_study_keeps_its_own_settings(tmp_path):
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    make(tmp_path, url, "folded", 2, extra="\n[objective]\nfolds = 3\n")
    make(tmp_path, url, "plain", 2, extra='\n[pruner]\nkind = "median"\n')
    finish(workers(url, 1))
    folded = trials(url, "folded")
    assert all(t.user_attrs["folds"] == 3 and len(t.user_attrs["runs"]) == 3 for t in folded)
    plain = trials(url, "plain")
    assert all("folds" not in t.user_attrs for t in plain)
    assert all(t.intermediate_values for t in plain)  # the median pruner reads the values live


def test_an_unknown_study_is_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    make(tmp_path, url, "there", 1)
    result = hpo("worker", "--storage", url, "--study", "absent")
    assert result.returncode == 1
    assert result.stderr == (f"Error: no study named 'absent' in {url} that a worker can run; "
                             "`hpo study list` shows the studies there\n")


def test_a_raced_study_is_left_to_hpo_study_run(tmp_path):
    """A race picks each run from its evidence and spends a budget of epochs: workers of the fleet
    run the plain study and leave the raced one untouched."""
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    make(tmp_path, url, "plain", 3)
    make(tmp_path, url, "raced", 3, extra='\n[objective]\nmethod = "race"\nfolds = 3\nprune_epochs = []\n',
         epochs=2)
    finish(workers(url, 1))
    assert sum(t.state.name in FINISHED for t in trials(url, "plain")) == 3
    assert trials(url, "raced") == []
