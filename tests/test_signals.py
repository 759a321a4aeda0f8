"""Signals end a run cleanly: real processes, real SIGTERM and SIGKILL, a SQLite file on disk.

SIGTERM is what `kill`, schedulers, systemd and container runtimes send: it is handled like Ctrl-C
(the running trial failed with the reason, one line, exit 143). The workers of `--workers K` end
with their parent however it ends, SIGKILL included, and `run` again reaches the target exactly.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import optuna
import pytest

from helpers import hpo, hpo_popen, write_spec

pytestmark = [pytest.mark.slow]

FINISHED = ("COMPLETE", "PRUNED")


def _trials(db: Path, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials(deepcopy=False)


def _running(db: Path, name: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            return connection.execute(
                "SELECT count(*) FROM trials JOIN studies USING (study_id) "
                "WHERE studies.study_name = ? AND trials.state = 'RUNNING'", (name,)).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _wait_for_running(db: Path, name: str, count: int, process, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while _running(db, name) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{count} trials never ran at once"
        time.sleep(0.1)
    time.sleep(0.5)  # into the trials' epochs


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its closing parenthesis
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Whether the process still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive:
            return []
        time.sleep(0.1)
    return [pid for pid in pids if _alive(pid)]


def _long_study(tmp_path: Path, name: str, trials: int) -> tuple[Path, str]:
    spec = write_spec(tmp_path, name, trials=trials, epochs=2000, samples=1200, random_trials=3)  # seconds a trial
    db = tmp_path / "s.db"
    storage = f"sqlite:///{db}"
    created = hpo("study", "create", str(spec), "--storage", storage)
    assert created.returncode == 0, created.stderr
    return db, storage


def test_sigterm_fails_the_running_trial_with_the_reason_and_exits_143(tmp_path):
    db, storage = _long_study(tmp_path, "term", trials=2)
    process = hpo_popen("study", "run", "term", "--trials", "2", "--storage", storage)
    _wait_for_running(db, "term", 1, process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    failed = [t for t in _trials(db, "term") if t.state.name == "FAIL"]
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"] == "terminated (SIGTERM)"
    # One line, with a hint that keeps the target and the storage.
    assert err.splitlines()[-1] == (
        f"Error: terminated (SIGTERM): trial {failed[0].number} was recorded as failed; "
        f"hpo study run term --trials 2 --storage {storage} continues the study")
    assert "Traceback" not in err

    again = hpo("study", "run", "term", "--storage", storage)
    assert again.returncode == 0, again.stderr
    trials = _trials(db, "term")
    assert sum(t.state.name in FINISHED for t in trials) == 2
    assert not [t for t in trials if t.state.name == "RUNNING"]


def test_sigterm_between_trials_loses_nothing_and_the_hint_leaves_out_the_environment_s_storage(tmp_path):
    spec = write_spec(tmp_path, "idle", trials=1, epochs=5000, samples=1200)
    db = tmp_path / "s.db"
    storage = f"sqlite:///{db}"
    assert hpo("study", "create", str(spec), "--storage", storage).returncode == 0
    busy = hpo_popen("study", "run", "idle", HPO_STORAGE=storage)
    _wait_for_running(db, "idle", 1, busy)
    # With the target's one trial running elsewhere, this run waits between trials.
    waiting = hpo_popen("study", "run", "idle", "--trials", "1", HPO_STORAGE=storage)
    assert waiting.stderr.readline().startswith("waiting: 0/1")
    waiting.send_signal(signal.SIGTERM)
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 143, err
    assert err.splitlines()[-1] == ("Error: terminated (SIGTERM) between trials, nothing lost; "
                                    "hpo study run idle --trials 1 continues the study")
    busy.send_signal(signal.SIGTERM)
    busy.communicate(timeout=60)
    assert busy.returncode == 143


def test_sigterm_to_the_parent_of_workers_fails_their_trials_and_ends_them(tmp_path):
    db, storage = _long_study(tmp_path, "group", trials=3)
    parent = hpo_popen("study", "run", "group", "--workers", "2", "--storage", storage)
    _wait_for_running(db, "group", 2, parent)
    workers = _children(parent.pid)
    assert len(workers) == 2
    parent.send_signal(signal.SIGTERM)
    out, err = parent.communicate(timeout=60)
    assert parent.returncode == 143, err
    assert err.splitlines()[-1].startswith("Error: terminated (SIGTERM): the running trials of this machine's")
    assert _wait_gone(workers, 5) == []
    failed = [t for t in _trials(db, "group") if t.state.name == "FAIL"]
    assert [t.user_attrs["fail_reason"] for t in failed] == ["terminated (SIGTERM)"] * 2

    again = hpo("study", "run", "group", "--workers", "2", "--storage", storage)
    assert again.returncode == 0, again.stderr
    trials = _trials(db, "group")
    assert sum(t.state.name in FINISHED for t in trials) == 3
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]


def test_sigkill_of_the_parent_ends_its_workers_within_seconds(tmp_path):
    db, storage = _long_study(tmp_path, "orphans", trials=3)
    parent = hpo_popen("study", "run", "orphans", "--workers", "2", "--storage", storage)
    _wait_for_running(db, "orphans", 2, parent)
    workers = _children(parent.pid)
    assert len(workers) == 2
    parent.send_signal(signal.SIGKILL)
    parent.communicate(timeout=30)
    assert _wait_gone(workers, 5) == [], "a worker outlived its killed parent"
    trials = _trials(db, "orphans")
    # Told by the kernel (SIGTERM), each worker recorded its trial as failed before it exited.
    assert not [t for t in trials if t.state.name == "RUNNING"]
    assert sum(t.state.name == "FAIL" for t in trials) == 2

    again = hpo("study", "run", "orphans", "--workers", "2", "--storage", storage)
    assert again.returncode == 0, again.stderr
    assert "3/3 finished" in again.stdout
    trials = _trials(db, "orphans")
    assert sum(t.state.name in FINISHED for t in trials) == 3
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]


def test_a_worker_whose_parent_is_gone_does_not_run(tmp_path):
    """The moment between a worker's start and its parent-death request: its check covers it."""
    db, storage = _long_study(tmp_path, "gone", trials=1)
    result = hpo("study", "run", "gone", "--events", "--storage", storage,
                 HPO_WORKER_PARENT=str(os.getpid() + 100000))  # not its parent: a process that died
    assert result.returncode == 143 and result.stdout == "" and result.stderr == ""
    assert _trials(db, "gone") == []
