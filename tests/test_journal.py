"""A study on an Optuna journal file, run by two workers: exact target, at SQLite's pace.

hpo's lock beside the journal is not the file Optuna's JournalFileBackend locks, so neither waits
for the other's lock, nor breaks it ("Forcibly releasing the lock file").
"""

from __future__ import annotations

import time

import optuna
import pytest

from helpers import hpo, write_spec

pytestmark = [pytest.mark.slow]


def _timed_run(tmp_path, storage: str):
    spec = write_spec(tmp_path, "quick", trials=10, epochs=3, samples=400)
    created = hpo("study", "create", str(spec), "--storage", storage, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    started = time.monotonic()
    result = hpo("study", "run", "quick", "--workers", "2", "--storage", storage, cwd=tmp_path)
    return result, time.monotonic() - started


def test_two_workers_on_a_journal_reach_the_target_as_fast_as_on_sqlite(tmp_path):
    journal = tmp_path / "j.log"
    on_journal, journal_seconds = _timed_run(tmp_path, f"journal:{journal}")
    assert on_journal.returncode == 0, on_journal.stderr
    assert "quick: 10/10 finished" in on_journal.stdout
    assert "Forcibly releasing" not in on_journal.stdout + on_journal.stderr

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    trials = optuna.load_study(study_name="quick", storage=storage).get_trials(deepcopy=False)
    assert len(trials) == 10 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)

    on_sqlite, sqlite_seconds = _timed_run(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    assert on_sqlite.returncode == 0, on_sqlite.stderr
    # Generous: twice SQLite's time plus the workers' start-up; a stall on a lock takes 30 s or more.
    assert journal_seconds <= 2 * sqlite_seconds + 3, (journal_seconds, sqlite_seconds)
