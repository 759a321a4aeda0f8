"""A full disk: every command that writes says so in one line, and leaves the storage and the folder whole.

A small tmpfs mounted by the test holds the working folder, the SQLite storage (with studies run
before the disk filled) and a data cache. A filler file then takes every free page. Each command
that writes must exit non-zero with exactly one line on stderr and no traceback; afterwards the
SQLite file passes `PRAGMA integrity_check`, the studies hold the trials they held, and no empty
or half-written file is left (no 0-byte file, no temporary). Mounting needs root (as in CI); the
tests skip with that reason elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import DATA_DIR, hpo, write_spec

pytestmark = pytest.mark.slow

SIZE = "64m"  # room for the Fashion-MNIST files of the last test
FILLER = "filler.bin"
MATPLOTLIB = "matplotlib"
# Files of the storage itself, which SQLite and hpo keep empty between writes.
STORAGE_COMPANIONS = ("hpo.db-wal", "hpo.db-shm", "hpo.db-hpo.lock")


@contextlib.contextmanager
def tmpfs(folder: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("a full disk is a small tmpfs mounted by the test, which needs root (as in CI)")
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0755", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(disk: Path) -> None:
    """Take every free page of the tmpfs."""
    chunk = b"\0" * (1 << 20)
    with open(disk / FILLER, "ab", buffering=0) as out:
        for size in (1 << 20, 1 << 12, 1):
            piece = chunk[:size]
            while True:
                try:
                    out.write(piece)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    assert os.statvfs(disk).f_bavail == 0


def free(disk: Path) -> None:
    (disk / FILLER).unlink(missing_ok=True)


def trial_counts(db: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return dict(connection.execute(
            "SELECT s.study_name, COUNT(t.trial_id) FROM studies s LEFT JOIN trials t ON t.study_id = s.study_id "
            "GROUP BY s.study_name").fetchall())


def integrity(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def settle(db: Path) -> None:
    """Fold the WAL into the database and free its pages: the next write needs new pages of the disk."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("VACUUM")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def folders(disk: Path) -> set[Path]:
    return {p.relative_to(disk) for p in disk.rglob("*") if p.is_dir() and MATPLOTLIB not in p.relative_to(disk).parts}


def files(disk: Path) -> dict[Path, int]:
    """Every file on the disk but the filler, the storage's companions and matplotlib's font cache
    (matplotlib's to write), with its size."""
    return {p.relative_to(disk): p.stat().st_size for p in disk.rglob("*")
            if p.is_file() and p.name != FILLER and p.name not in STORAGE_COMPANIONS
            and MATPLOTLIB not in p.relative_to(disk).parts}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """An HTTP server on 127.0.0.1 serving the real Fashion-MNIST files, for `hpo data fetch`."""
    root = tmp_path_factory.mktemp("site")
    (root / "fashion-mnist").symlink_to(DATA_DIR / "fashion-mnist")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fashion-mnist/"
    server.shutdown()
    server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    """The tmpfs, with a working folder holding a run study, a stale trial, an export and a spec."""
    with tmpfs(tmp_path_factory.mktemp("full") / "disk") as root:
        work = root / "work"
        work.mkdir()
        write_spec(work, "tiny", trials=8, epochs=2, samples=200, random_trials=2)
        write_spec(work, "other", trials=2, epochs=2, samples=200)
        for args in (["study", "create", "tiny.toml"], ["study", "run", "tiny"],
                     ["study", "export", "tiny", "--out", "kept.json"],
                     ["study", "copy", "tiny", "--to", "journal:j.log", "--name", "first"]):
            done = hpo(*args, cwd=work)
            assert done.returncode == 0, (args, done.stderr)
        _stale_trial(work)
        settle(work / "hpo.db")
        yield root


def _stale_trial(work: Path) -> None:
    """A RUNNING trial whose worker is gone: its last heartbeat two seconds old."""
    script = (
        "from hpo import _study, resolve_storage;"
        "h = _study.open_study('tiny', resolve_storage('sqlite:///hpo.db'));"
        "t = h.study.ask(); h.study._storage.record_heartbeat(t._trial_id)"  # as a worker's heartbeat thread
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=work, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    time.sleep(2.5)


def commands(root: Path, site: str) -> dict[str, list[str]]:
    return {
        "create": ["study", "create", "other.toml"],
        "run": ["study", "run", "tiny", "--trials", "6"],
        "narrow --into": ["study", "narrow", "tiny", "--top", "2", "--into", "tiny-child"],
        "confirm": ["study", "confirm", "tiny", "--top", "2", "--seeds", "1"],
        "plot": ["study", "plot", "tiny", "--kind", "history"],
        "export json": ["study", "export", "tiny"],
        "export csv": ["study", "export", "tiny", "--format", "csv"],
        "import": ["study", "import", "kept.json", "--name", "imported"],
        "copy": ["study", "copy", "tiny", "--to", f"sqlite:///{root / 'x.db'}"],
        "report": ["study", "report", "tiny"],
        "evaluate": ["study", "evaluate", "tiny", "--seeds", "1"],
        "fail-stale": ["study", "fail-stale", "tiny", "--grace-period", "1"],
        "data fetch": ["data", "fetch", "fashion-mnist", "--dest", str(root / "cache"), "--url", site],
        "experiment": ["experiment", "activations", "--quick", "--quiet", "--out", "activations"],
    }


COMMANDS = list(commands(Path("/"), "").keys())
# What the commands that write files say: the file, the cause, the fix.
SAYS = {
    "plot": "Error: cannot write figures/tiny/history.png: no space left on the device; free some space or "
            "write elsewhere",
    "export json": "Error: cannot write tiny.json: no space left on the device",
    "experiment": "Error: cannot write activations/activations.png: no space left on the device",
    "export csv": "Error: cannot write tiny.",
    "report": "Error: cannot write tiny-report.html: no space left on the device",
    "import": "Error: cannot write study 'imported' to sqlite:///hpo.db, nothing was written: database or disk is full",
    "data fetch": "Error: fashion-mnist: cannot write into {disk}/cache/fashion-mnist: no space left on the device; "
                  "nothing was kept; free some space or choose another --dest",
}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_on_a_full_disk_is_one_line_and_leaves_everything_whole(disk, site, command):
    """The disk fills while the storage is in use (another worker holds it open, so SQLite's WAL
    and shared-memory files exist): reads work, every write fails."""
    work, db = disk / "work", disk / "work" / "hpo.db"
    counts = trial_counts(db)
    before, made = files(disk), folders(disk)
    with contextlib.closing(sqlite3.connect(db)) as worker:
        worker.execute("SELECT COUNT(*) FROM trials").fetchone()
        fill(disk)
        try:
            # Matplotlib's font cache on the full disk too: its warning must not add a line.
            result = hpo(*commands(disk, site)[command], cwd=work, MPLCONFIGDIR=str(disk / MATPLOTLIB))
        finally:
            free(disk)
    assert result.returncode != 0, f"{command} succeeded on a full disk: {result.stdout}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert re.search(r"space|full", lines[0], re.IGNORECASE), f"the line does not name the cause: {lines[0]}"
    if command in SAYS:
        assert SAYS[command].format(disk=disk) in lines[0]
    assert integrity(db) == "ok"
    assert trial_counts(db) == counts
    after = files(disk)
    assert after == before, f"{command} left {set(after.items()) - set(before.items())}"
    assert all(after.values()), f"empty files: {[str(path) for path, size in after.items() if not size]}"
    assert folders(disk) - made <= {Path("cache")}, "a folder left behind"  # --dest's root is the user's
    settle(db)


@pytest.mark.parametrize("command", ["create", "export json", "copy"])
def test_a_storage_nobody_holds_open_on_a_full_disk_is_one_line_too(disk, site, command):
    """With no process holding the storage, SQLite cannot even make its WAL files: still one line."""
    work, db = disk / "work", disk / "work" / "hpo.db"
    counts = trial_counts(db)
    before = files(disk)
    fill(disk)
    try:
        result = hpo(*commands(disk, site)[command], cwd=work, MPLCONFIGDIR=str(disk / MATPLOTLIB))
    finally:
        free(disk)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert integrity(db) == "ok"
    assert trial_counts(db) == counts
    assert files(disk) == before
    settle(db)


def journal_trials(work: Path, journal: str) -> dict[str, int]:
    listed = hpo("study", "list", "--json", "--storage", f"journal:{journal}", cwd=work)
    assert listed.returncode == 0, listed.stderr
    return {study["name"]: study["finished"] for study in json.loads(listed.stdout)}


@pytest.mark.parametrize("journal", ["j.log", "new.log"])
def test_a_copy_into_a_journal_on_a_full_disk_is_one_line(disk, journal):
    """A journal is appended to, not rolled back: the studies in it stay readable and whole, a new
    journal file is removed, and the line says what is left to delete if the undoing failed too."""
    work = disk / "work"
    before = journal_trials(work, "j.log")
    assert before["first"] > 0
    held = contextlib.closing(sqlite3.connect(work / "hpo.db"))
    with held as worker:
        worker.execute("SELECT COUNT(*) FROM trials").fetchone()
        fill(disk)
        try:
            result = hpo("study", "copy", "tiny", "--to", f"journal:{journal}", "--name", "second", cwd=work)
        finally:
            free(disk)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot write study 'second' to journal:"), result.stderr
    assert "no space left on the device" in lines[0]
    assert (work / "j.log").read_bytes().endswith(b"\n"), "a partial record was left in the journal"
    after = journal_trials(work, "j.log")
    assert after["first"] == before["first"]
    if "second" in after:
        assert "delete study 'second' there" in lines[0]
        assert hpo("study", "delete", "second", "--yes", "--storage", "journal:j.log", cwd=work).returncode == 0
    # Writes after the failure keep the journal readable (a merged partial record would not).
    for name in ("third", "fourth"):
        assert hpo("study", "copy", "tiny", "--to", "journal:j.log", "--name", name, cwd=work).returncode == 0
    assert journal_trials(work, "j.log") == {**before, "third": before["first"], "fourth": before["first"]}
    for name in ("third", "fourth"):
        assert hpo("study", "delete", name, "--yes", "--storage", "journal:j.log", cwd=work).returncode == 0
    assert not (work / "new.log").exists()
    settle(work / "hpo.db")


def test_a_run_on_a_journal_on_a_full_disk_leaves_it_readable(disk):
    """Optuna appends a journal record as one line; a failed append must leave no partial line,
    or the next one runs on from it and every later command fails to read the journal."""
    work = disk / "work"
    spec = write_spec(work, "jrun", trials=2, epochs=2, samples=200)
    assert hpo("study", "create", str(spec), "--storage", "journal:run.log", cwd=work).returncode == 0
    assert hpo("study", "run", "jrun", "--quiet", "--storage", "journal:run.log", cwd=work).returncode == 0
    fill(disk)
    try:
        result = hpo("study", "run", "jrun", "--trials", "6", "--quiet", "--storage", "journal:run.log", cwd=work)
    finally:
        free(disk)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.stderr, result.stderr
    assert (work / "run.log").read_bytes().endswith(b"\n"), "a partial record was left in the journal"
    listed = journal_trials(work, "run.log")
    assert listed["jrun"] >= 2
    # Writes after the failure keep the journal readable (a merged partial record would not).
    other = write_spec(work, "jnext", trials=2, epochs=2, samples=200)
    again = hpo("study", "run", str(other), "--quiet", "--storage", "journal:run.log", cwd=work)
    assert again.returncode == 0, again.stderr
    assert journal_trials(work, "run.log") == {**listed, "jnext": 2}
    other.unlink()
    assert hpo("study", "delete", "jrun", "--yes", "--storage", "journal:run.log", cwd=work).returncode == 0
    (work / "run.log").unlink()
    for leftover in work.glob("run.log*"):
        leftover.unlink()
    spec.unlink()


def test_the_commands_write_when_there_is_room(disk, site):
    """The same commands succeed once the filler is gone: the failures above were the full disk's."""
    work = disk / "work"
    for command in ("export json", "plot", "data fetch"):
        result = hpo(*commands(disk, site)[command], cwd=work)
        assert result.returncode == 0, (command, result.stderr)
    assert (work / "tiny.json").stat().st_size > 0
    assert (work / "figures" / "tiny" / "history.png").stat().st_size > 0
    assert len(list((disk / "cache" / "fashion-mnist").iterdir())) == 4


