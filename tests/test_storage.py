"""The storage gateway: URLs parsed once, secrets masked everywhere, one backend table, the study's lock.

Real components: SQLite and journal files on disk, the PostgreSQL server (skipped when it is
unreachable, except in CI), separate processes claiming trials under the lock.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
import sqlalchemy

from hpo import StorageError, create, load_spec, run
from hpo import _optuna_internals as internals
from hpo._storage import (
    BACKENDS,
    DEFAULT_STORAGE,
    STORAGE_ENV,
    URL_HELP,
    Backend,
    Heartbeat,
    StorageURL,
    TrialReadingRDBStorage,
    is_read_only,
    lock_path,
    mask_url,
    open_storage,
    params_in_one_write,
    read_trial,
    resolve_storage,
    resolve_url,
    study_lock,
    write_params_sql,
)
from hpo._retry import RETRY_ENV, Retrier, RetryingStorage, is_transient, retrier_of, retry_seconds
from helpers import REPO, cli_env, hpo, postgres_or_fail, unique, write_spec
from pgserver import private_server as private_cluster
from test_claims import storage  # noqa: F401 - the fixture: every backend, the proxy included

# --- Parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, backend, url, masked, path", [
    ("sqlite:///runs/hpo.db", "sqlite", "sqlite:///runs/hpo.db", "sqlite:///runs/hpo.db", "runs/hpo.db"),
    ("sqlite:////tmp/a b/x.db", "sqlite", "sqlite:////tmp/a b/x.db", "sqlite:////tmp/a b/x.db", "/tmp/a b/x.db"),
    # a bare scheme gets the installed driver
    ("postgresql://me@server/hpo", "postgresql", "postgresql+psycopg://me@server/hpo",
     "postgresql+psycopg://me@server/hpo", None),
    ("postgresql+psycopg://me:s3cret@server:5433/hpo", "postgresql",
     "postgresql+psycopg://me:s3cret@server:5433/hpo", "postgresql+psycopg://me:***@server:5433/hpo", None),
    ("mysql://root@127.0.0.1/test", "mysql", "mysql+pymysql://root@127.0.0.1/test",
     "mysql+pymysql://root@127.0.0.1/test", None),
    ("mariadb://root:pw@127.0.0.1/test", "mariadb", "mariadb+pymysql://root:pw@127.0.0.1/test",
     "mariadb+pymysql://root:***@127.0.0.1/test", None),
    ("journal:runs/study.log", "journal", "journal:runs/study.log", "journal:runs/study.log", "runs/study.log"),
])
def test_a_url_is_parsed_once_into_its_backend_full_url_masked_form_and_file(text, backend, url, masked, path):
    parsed = resolve_storage(text)
    assert parsed.backend == backend
    assert parsed.url == url
    assert parsed.masked == masked
    assert parsed.path == (Path(path) if path else None)
    assert parsed.sqlite_path == (Path(path) if backend == "sqlite" else None)
    assert resolve_storage(parsed) is parsed  # a parsed value passes through untouched
    assert resolve_url(text) == url


def test_an_unescaped_at_sign_in_the_password_stays_in_the_password():
    parsed = resolve_storage("postgresql://u:p@ss@db.example/hpo")
    assert parsed.url == "postgresql+psycopg://u:p%40ss@db.example/hpo"  # opens db.example, not "ss@db.example"
    assert parsed.masked == "postgresql+psycopg://u:***@db.example/hpo"


def test_the_flag_wins_then_the_environment_then_the_default_file(monkeypatch, tmp_path):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    assert resolve_storage(None).url == DEFAULT_STORAGE
    monkeypatch.setenv(STORAGE_ENV, f"sqlite:///{tmp_path / 'env.db'}")
    assert resolve_storage(None).path == tmp_path / "env.db"
    assert resolve_storage(f"journal:{tmp_path / 'flag.log'}").backend == "journal"


def test_printing_a_storage_url_never_shows_its_password():
    parsed = resolve_storage("postgresql://alice:hunter2@server/hpo?sslpassword=k3y")
    for shown in (str(parsed), repr(parsed), f"{parsed}", f"{parsed!r}", mask_url(parsed)):
        assert "hunter2" not in shown and "k3y" not in shown
    assert str(parsed) == "postgresql+psycopg://alice:***@server/hpo?sslpassword=***"


@pytest.mark.parametrize("text, message", [
    ("nonsense", f"storage URL 'nonsense' is not a valid URL; {URL_HELP}"),
    ("oracle://scott:tiger@server/db", f"storage URL 'oracle://scott:***@server/db' uses unsupported backend "
                                       f"'oracle'; {URL_HELP}"),
    ("redis://u:p@ss@server/0", f"storage URL 'redis://u:***@server/0' uses unsupported backend 'redis'; {URL_HELP}"),
    ("sqlite://", f"storage URL 'sqlite://' names no database file; {URL_HELP}"),
    ("sqlite:///:memory:", "storage URL 'sqlite:///:memory:' is an in-memory database that no other command "
                           "or worker sees; name a file: sqlite:///path/to/file.db"),
    ("journal:", f"storage URL 'journal:' names no journal file; {URL_HELP}"),
])
def test_a_bad_url_is_one_line_naming_the_fault_with_the_password_masked(text, message):
    with pytest.raises(StorageError) as caught:
        resolve_storage(text)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_a_server_that_refuses_gives_one_line_without_any_part_of_the_password():
    password = "p@ss:w%rd"
    with pytest.raises(StorageError) as caught:
        open_storage(f"postgresql+psycopg://alice:{password}@127.0.0.1:1/db", Heartbeat(interval=None))
    message = str(caught.value)
    assert message.startswith("cannot open storage postgresql+psycopg://alice:***@127.0.0.1:1/db: ")
    assert "\n" not in message
    for part in (password, "p@ss", "w%rd", "p%40ss"):
        assert part not in message


# --- Masking ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, masked", [
    ("postgresql://u:p@ss@host/db", "postgresql://u:***@host/db"),
    ("postgresql://u:p:ss@host:5432/db", "postgresql://u:***@host:5432/db"),
    ("postgresql://u:100%@host/db", "postgresql://u:***@host/db"),
    ("postgresql://u:p%40s%3As@host/db", "postgresql://u:***@host/db"),
    ("postgresql://u:a@b:c%d@e@host/db", "postgresql://u:***@host/db"),
    ("postgresql://u:p/ss?x@host/db", "postgresql://u:***@host/db"),
    ("mysql+pymysql://u:@host/db", "mysql+pymysql://u:***@host/db"),
    ("postgresql://u@host/db", "postgresql://u@host/db"),
    ("postgresql://host:5432/db", "postgresql://host:5432/db"),
    ("postgresql://host/db?password=x&sslmode=require", "postgresql://host/db?password=***&sslmode=require"),
    ("postgresql://host/db?PassWord=x;TOKEN=y", "postgresql://host/db?PassWord=***;TOKEN=***"),
    ("mysql://h/db?passwd=a&pwd=b&secret=c&key=d&sslpassword=e&keyfile=f",
     "mysql://h/db?passwd=***&pwd=***&secret=***&key=***&sslpassword=***&keyfile=f"),
    ("postgresql://u:p@ss@host/db?token=t@k", "postgresql://u:***@k"),  # ambiguous: hides more, never less
    ("sqlite:///runs/a@b.db", "sqlite:///runs/a@b.db"),
    ("journal:/tmp/j.log", "journal:/tmp/j.log"),
    ("not a url: u:p@x", "not a url: u:p@x"),
])
def test_mask_url_hides_every_secret_a_url_can_carry(text, masked):
    assert mask_url(text) == masked


# --- The backend table ---------------------------------------------------------------------------


def test_the_backend_table_names_each_supported_backend_once():
    assert set(BACKENDS) == {"sqlite", "postgresql", "mysql", "mariadb", "journal", "grpc"}
    for name, backend in BACKENDS.items():
        assert backend.name == name


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_has_its_own_claim(name):
    """Inheriting Backend.claim would refuse every run on that backend."""
    assert type(BACKENDS[name]).claim is not Backend.claim


def test_a_backend_without_a_shared_lock_is_refused_not_given_an_in_process_lock(tmp_path):
    unknown = StorageURL("oracle", "oracle://scott:tiger@server/db", "oracle://scott:***@server/db")
    with pytest.raises(StorageError) as caught:
        with study_lock(unknown, "s"):
            pass
    assert str(caught.value) == (f"storage oracle://scott:***@server/db has no lock that all workers share, "
                                 f"so trials cannot be claimed safely; {URL_HELP}")


def test_the_journal_lock_is_not_the_lock_file_of_optunas_journal_backend(tmp_path):
    url = resolve_storage(f"journal:{tmp_path / 'j.log'}")
    assert lock_path(url) == tmp_path / "j.log-hpo.lock"
    assert lock_path(url) != tmp_path / "j.log.lock"  # JournalFileBackend's lock (symlink or O_EXCL file)
    storage = open_storage(url)
    done = threading.Event()

    def write():
        storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "s")
        done.set()

    with study_lock(url, "s"):
        writer = threading.Thread(target=write)
        writer.start()
        writer.join(timeout=20)  # a write takes milliseconds; a shared lock file would block it
        assert done.is_set(), "Optuna's journal write waited for hpo's study lock"
    assert not (tmp_path / "j.log.lock").exists()


# --- Opening -------------------------------------------------------------------------------------


def test_a_sqlite_file_opens_in_wal_mode_with_normal_sync(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'new' / 's.db'}")  # the folder is created
    rdb = internals.rdb_storage(storage)
    assert rdb is not None
    with sqlite3.connect(tmp_path / "new" / "s.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with rdb.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_a_file_that_is_not_sqlite_is_refused_in_one_line(tmp_path):
    bogus = tmp_path / "notes.db"
    bogus.write_text("just some text, not a database\n" * 100)
    with pytest.raises(StorageError) as caught:
        open_storage(f"sqlite:///{bogus}")
    assert str(caught.value).startswith(f"{bogus} is not a usable SQLite database (")
    assert "\n" not in str(caught.value)


@pytest.mark.postgres
def test_postgresql_opens_with_heartbeats():
    url = resolve_storage(postgres_or_fail())
    storage = open_storage(url)
    assert internals.rdb_storage(storage) is not None
    assert storage.get_heartbeat_interval() == Heartbeat().interval
    optuna.get_all_study_names(storage)  # the schema is there and readable


# --- The study's lock ------------------------------------------------------------------------------


MYSQL_URL = os.environ.get("HPO_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test")


def _mysql_or_skip() -> str:
    """MySQL/MariaDB is optional (its driver is not a dependency): skipped when absent, even in CI."""
    pytest.importorskip("pymysql")
    try:
        open_storage(MYSQL_URL, Heartbeat(interval=None))
    except StorageError as exc:
        pytest.skip(f"MySQL at {MYSQL_URL} unreachable: {exc}")
    return MYSQL_URL


def _lockable(kind: str, tmp_path: Path) -> StorageURL:
    if kind == "sqlite":
        return resolve_storage(f"sqlite:///{tmp_path / 's.db'}")
    if kind == "journal":
        return resolve_storage(f"journal:{tmp_path / 'j.log'}")
    if kind == "mysql":
        return resolve_storage(_mysql_or_skip())
    return resolve_storage(postgres_or_fail())


@pytest.mark.parametrize("kind", ["sqlite", "journal", "mysql", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_the_study_lock_keeps_a_second_holder_waiting_until_the_first_lets_go(kind, tmp_path):
    url = _lockable(kind, tmp_path)
    order = []

    def second():
        with study_lock(url, "shared"):
            order.append("second")

    with study_lock(url, "shared"):
        other = threading.Thread(target=second)
        other.start()
        other.join(timeout=1)  # without the lock, the second holder would be done by now
        order.append("first")
    other.join(timeout=60)
    assert order == ["first", "second"]


CLAIMER = """
import sys, time
import optuna
from hpo import _optuna_internals as internals
from hpo._storage import open_storage, study_lock
url, name, target = sys.argv[1], sys.argv[2], int(sys.argv[3])
study = optuna.load_study(study_name=name, storage=open_storage(url))
while True:
    with study_lock(url, name):
        if len(study.get_trials(deepcopy=False)) >= target:
            break
        time.sleep(0.005)  # widen the window between counting and creating
        trial_id = internals.study_storage(study).create_new_trial(internals.study_id(study))
    study.tell(optuna.Trial(study, trial_id), 1.0)
"""


@pytest.mark.slow
def test_two_processes_claiming_under_the_lock_on_sqlite_never_overshoot(tmp_path):
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    optuna.create_study(study_name="claims", storage=open_storage(url), direction="maximize")
    args = [sys.executable, "-c", CLAIMER, url, "claims", "40"]
    env = cli_env(PYTHONPATH=str(REPO))
    workers = [subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for worker in workers:
        assert worker.wait(timeout=300) == 0, worker.stderr.read()
        worker.stderr.close()
    trials = optuna.load_study(study_name="claims", storage=url).get_trials(deepcopy=False)
    assert len(trials) == 40
    assert [t.number for t in trials] == list(range(40))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_no_module_but_the_gateway_looks_inside_a_storage_url():
    """Scheme strings and URL parsing live in hpo/_storage.py alone; others use StorageURL."""
    offenders = []
    for path in sorted((REPO / "hpo").rglob("*.py")):
        if path.name == "_storage.py" and path.parent.name == "hpo":
            continue
        text = path.read_text()
        for needle in ("sqlite:", '"sqlite"', "postgresql", "mysql", "mariadb", "journal:", '"journal"',
                       "make_url", "startswith(\"journal"):
            if needle in text:
                offenders.append(f"{path.relative_to(REPO)}: {needle}")
    assert not offenders, offenders


def test_the_default_storage_is_a_sqlite_file_in_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    url = resolve_storage()
    assert url.path == Path("hpo.db")
    open_storage(url)
    assert (tmp_path / "hpo.db").exists() and os.path.getsize(tmp_path / "hpo.db") > 0


# --- Riding out outages ------------------------------------------------------------------------------

CLOSED_PORT_URL = "postgresql+psycopg://alice:p@ss:w%rd@127.0.0.1:1/db"  # nothing listens on port 1


def _counted(function):
    calls = []

    def counted():
        calls.append(1)
        return function()

    return counted, calls


def _sqlite_rdb(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}", Heartbeat(interval=None))
    return storage, internals.rdb_storage(storage)


@pytest.mark.parametrize("fault", ["integrity", "bad query", "finished trial"])
def test_a_call_that_fails_for_a_reason_other_than_the_connection_fails_at_once(fault, tmp_path):
    storage, rdb = _sqlite_rdb(tmp_path)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "s")
    trial_id = storage.create_new_trial(study_id)
    storage.set_trial_state_values(trial_id, optuna.trial.TrialState.COMPLETE, [1.0])
    studies = internals.TABLES.studies

    def integrity():
        with rdb.engine.begin() as connection:
            connection.execute(studies.insert(), {"study_id": study_id, "study_name": "again"})

    def bad_query():
        with rdb.engine.connect() as connection:
            connection.exec_driver_sql("SELECT nothing FROM no_such_table")

    def finished_trial():
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)

    faults = {"integrity": integrity, "bad query": bad_query, "finished trial": finished_trial}
    function, calls = _counted(faults[fault])
    waits = []
    with pytest.raises(Exception) as caught:
        Retrier("s", 30, on_wait=waits.append).call(function)
    assert not isinstance(caught.value, StorageError)
    assert not is_transient(caught.value)
    assert len(calls) == 1 and waits == []


def test_a_connection_that_fails_is_retried_until_the_server_answers(tmp_path):
    refused = sqlalchemy.create_engine(CLOSED_PORT_URL.replace("p@ss:w%rd", "pw"))
    _storage, rdb = _sqlite_rdb(tmp_path)
    engines = [refused, refused, rdb.engine]  # two attempts refused by the driver, then a server

    def connect():
        with engines.pop(0).connect() as connection:
            return connection.exec_driver_sql("SELECT 1").scalar()

    function, calls = _counted(connect)
    waits = []
    assert Retrier("s", 30, on_wait=waits.append).call(function) == 1
    assert len(calls) == 3
    assert len(waits) == 1 and waits[0].startswith("storage s unreachable (")


def test_an_outage_past_the_bound_ends_with_one_line_naming_the_storage_masked(monkeypatch):
    monkeypatch.setenv(RETRY_ENV, "1")
    with pytest.raises(StorageError) as caught:
        with study_lock(CLOSED_PORT_URL, "s"):
            pass
    message = str(caught.value)
    assert message.startswith("storage postgresql+psycopg://alice:***@127.0.0.1:1/db unreachable for 1 s (")
    assert "--storage-retry" in message and RETRY_ENV in message and "\n" not in message
    for part in ("p@ss:w%rd", "p@ss", "w%rd", "p%40ss"):
        assert part not in message


@pytest.mark.parametrize("value, seconds", [(None, 60.0), ("7.5", 7.5), ("0", 0.0)])
def test_the_retry_bound_comes_from_the_environment_or_defaults_to_a_minute(value, seconds, monkeypatch):
    if value is None:
        monkeypatch.delenv(RETRY_ENV, raising=False)
    else:
        monkeypatch.setenv(RETRY_ENV, value)
    assert retry_seconds() == seconds


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_bad_retry_bound_in_the_environment_is_one_line(value, monkeypatch):
    monkeypatch.setenv(RETRY_ENV, value)
    with pytest.raises(StorageError) as caught:
        retry_seconds()
    assert str(caught.value).startswith(f"{RETRY_ENV}={value!r} ") and "\n" not in str(caught.value)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_every_storage_is_wrapped_and_keeps_heartbeats_and_optunas_cache(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'w.db'}")
    assert isinstance(storage, RetryingStorage)
    assert retrier_of(storage).storage_name == f"sqlite:///{tmp_path / 'w.db'}"
    assert type(storage.inner).__name__ == "_CachedStorage"
    assert storage.get_heartbeat_interval() == Heartbeat().interval
    study = optuna.create_study(storage=storage, direction="maximize")
    trial = study.ask()
    with internals.heartbeat(study, trial):  # Optuna sees heartbeats on: it starts the thread
        pass
    rdb = internals.rdb_storage(storage)
    with rdb.engine.connect() as connection:
        beats = connection.execute(internals.TABLES.heartbeats.select()).fetchall()
    assert len(beats) == 1
    assert isinstance(open_storage(f"journal:{tmp_path / 'j.log'}"), RetryingStorage)


# --- Read-only files -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_db(tmp_path_factory) -> Path:
    """A SQLite file holding one hpo study with two complete trials."""
    folder = tmp_path_factory.mktemp("finished")
    url = f"sqlite:///{folder / 'study.db'}"
    handle = create(load_spec(write_spec(folder, "done", trials=2, epochs=1, samples=200, random_trials=2)), url)
    assert run(handle).finished == 2
    storage = internals.rdb_storage(open_storage(url))
    storage.engine.dispose()
    with sqlite3.connect(folder / "study.db") as connection:  # fold the WAL into the file
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return folder / "study.db"


@contextlib.contextmanager
def _read_only_copy(finished_db: Path, tmp_path: Path, how: str):
    folder = tmp_path / "ro"
    folder.mkdir()
    if how == "mount":
        if os.geteuid() != 0:
            pytest.skip("mounting a read-only file system needs root")
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
                                 capture_output=True, text=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        shutil.copy(finished_db, folder / "study.db")
        if how == "mount":
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        else:
            (folder / "study.db").chmod(0o444)
            folder.chmod(0o555)
        yield folder / "study.db"
    finally:
        if how == "mount":
            subprocess.run(["umount", str(folder)], check=False)
        else:
            folder.chmod(0o755)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["permissions", "mount"])
def test_a_read_only_sqlite_file_serves_every_read_command(finished_db, tmp_path, how):
    with _read_only_copy(finished_db, tmp_path, how) as db:
        before = db.read_bytes()
        url = f"sqlite:///{db}"
        assert is_read_only(url)
        out = tmp_path / "out"
        out.mkdir()
        for args in (["list"], ["show", "done"], ["best", "done"], ["plot", "done", "--out", str(out)],
                     ["export", "done", "--out", str(out / "done.json")],
                     ["report", "done", "--out", str(out / "r.html")]):
            result = hpo("study", *args, "--storage", url, cwd=out)
            assert result.returncode == 0, (args, result.stderr)
            assert "Traceback" not in result.stderr
        assert "done" in hpo("study", "list", "--storage", url).stdout
        assert (out / "done.json").stat().st_size > 0 and list(out.glob("*.png"))
        assert db.read_bytes() == before
        assert sorted(p.name for p in db.parent.iterdir()) == ["study.db"]  # no WAL, no lock file


@pytest.mark.slow
@pytest.mark.parametrize("args", [["create", "SPEC"], ["run", "done", "--trials", "3"], ["delete", "done", "--yes"],
                                  ["fail-stale", "done"]], ids=lambda a: a[0])
def test_a_write_command_on_a_read_only_file_says_so_in_one_line(finished_db, tmp_path, args):
    spec = write_spec(tmp_path, "other", trials=1, epochs=1, samples=200)
    with _read_only_copy(finished_db, tmp_path, "permissions") as db:
        before = db.read_bytes()
        url = f"sqlite:///{db}"
        result = hpo("study", *[str(spec) if a == "SPEC" else a for a in args], "--storage", url, cwd=tmp_path)
        assert result.returncode == 1, result.stdout
        assert result.stderr == f"Error: storage {url} is read-only: list, show, best, plot, report and export " \
                                f"work on it; to run, create or change studies, copy the file to a writable " \
                                f"folder and use that copy\n"
        assert db.read_bytes() == before


# --- Concurrent first use of a new storage ---------------------------------------------------------------


@pytest.fixture
def private_server():
    yield from private_cluster()


def _race_creates(tmp_path: Path, url: str, names: list[str]) -> list[subprocess.CompletedProcess]:
    spec = write_spec(tmp_path, "race", trials=1, epochs=1, samples=200)
    args = [[sys.executable, "-m", "hpo", "study", "create", str(spec), "--name", name, "--storage", url]
            for name in names]
    processes = [subprocess.Popen(a, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for a in args]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=300), *p.communicate()) for p in processes]


def _check_race(results: list[subprocess.CompletedProcess], same_name: bool) -> None:
    for result in results:
        assert "Traceback" not in result.stderr
        assert result.returncode == 0 or (
            same_name and result.returncode == 1
            and result.stderr.startswith("Error: a study named 'race' already exists")
        ), result.stderr
    assert sum(r.returncode == 0 for r in results) == (1 if same_name else len(results))


@pytest.mark.slow
@pytest.mark.parametrize("same_name", [False, True], ids=["different names", "same name"])
def test_creates_racing_on_a_new_sqlite_file_never_meet_the_schema(tmp_path, same_name):
    names = ["race"] * 3 if same_name else ["race-a", "race-b", "race-c"]
    _check_race(_race_creates(tmp_path, f"sqlite:///{tmp_path / 'new.db'}", names), same_name)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("same_name", [False, True], ids=["different names", "same name"])
def test_creates_racing_on_a_new_postgresql_database_never_meet_the_schema(tmp_path, private_server, same_name):
    names = ["race"] * 3 if same_name else ["race-a", "race-b", "race-c"]
    _check_race(_race_creates(tmp_path, private_server.url, names), same_name)


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_a_bad_storage_retry_flag_is_a_usage_error(value, tmp_path):
    result = hpo("--storage-retry", value, "study", "list", "--storage", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 2
    assert "--storage-retry" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_the_storage_retry_flag_is_the_bound_of_the_command_and_its_workers(tmp_path):
    """The flag sets the environment variable the command and every worker it starts read."""
    result = subprocess.run(
        [sys.executable, "-c", "import os, sys\nfrom hpo.cli import app\n"
         "try:\n    app(['--storage-retry', '2.5', 'storage', 'check', sys.argv[1]])\n"
         "except SystemExit:\n    pass\n"
         f"print(os.environ['{RETRY_ENV}'])", f"sqlite:///{tmp_path / 'x.db'}"],
        env=cli_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "2.5"


def test_right_after_an_outage_no_running_trial_is_judged_dead(tmp_path):
    """During an outage no worker can send heartbeats, so for a while after it none is judged by
    them; a trial whose worker really died is judged once that while has passed."""
    storage = open_storage(f"sqlite:///{tmp_path / 'h.db'}", Heartbeat(interval=1, grace_period=1))
    study = optuna.create_study(storage=storage, direction="maximize")
    trial_id = storage.create_new_trial(internals.study_id(study))
    storage.record_heartbeat(trial_id)
    time.sleep(2.5)  # past the grace period: the trial's worker looks dead
    retrier = retrier_of(storage)
    assert internals.stale_trial_ids(study) == [trial_id]
    retrier.recovered = time.monotonic()  # an outage just ended
    assert internals.stale_trial_ids(study) == []
    retrier.recovered = time.monotonic() - 60
    assert internals.stale_trial_ids(study) == [trial_id]


# --- A new trial's parameters in one write ------------------------------------------------------


def _fresh_study(url: str) -> optuna.Study:
    from hpo import Heartbeat

    return optuna.create_study(study_name=unique("params"), storage=open_storage(url, Heartbeat(interval=None)),
                               direction="maximize")


def _suggest_four(trial: optuna.Trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-4, 0.5, log=True), "units": trial.suggest_int("units", 16, 256),
            "opt": trial.suggest_categorical("opt", ["sgd", "adam"]), "lr_again": trial.suggest_float("lr", 1e-4, 0.5, log=True)}


def test_a_trials_parameters_are_stored_at_once_as_optuna_stores_them(storage):
    study = _fresh_study(storage)
    try:
        plain = study.ask()
        _suggest_four(plain)  # Optuna's own writes, one by one
        trial = study.ask()
        with params_in_one_write(trial):
            suggested = _suggest_four(trial)
            assert trial.params == {k: v for k, v in suggested.items() if k != "lr_again"}
            # Held until the block ends, except on a journal, which is written as Optuna writes it.
            held = study.get_trials(deepcopy=False)[1].params
            assert held == (trial.params if storage.startswith("journal:") else {})
        assert suggested["lr_again"] == suggested["lr"]
        stored, reference = study.get_trials(deepcopy=False)[1], study.get_trials(deepcopy=False)[0]
        assert stored.params == trial.params
        assert stored.distributions == reference.distributions
        study.tell(trial, 0.5)
        assert study.best_trial.params == trial.params
    finally:
        optuna.delete_study(study_name=study.study_name, storage=internals.study_storage(study))


def test_parameters_written_at_once_get_optunas_checks(storage):
    study = _fresh_study(storage)
    try:
        first = study.ask()
        first.suggest_float("x", 0.0, 1.0)
        agreeing = study.ask()  # checked against the first, and remembered as agreeing
        with params_in_one_write(agreeing):
            agreeing.suggest_float("x", 0.0, 1.0)
        clash = study.ask()
        with pytest.raises(ValueError, match="distribution"):
            with params_in_one_write(clash):
                clash.suggest_int("x", 0, 10)  # an int where the study has a float
        assert [t.params for t in study.get_trials(deepcopy=False)[1:]] == [agreeing.params, {}]
        if storage.startswith("journal:"):
            return  # written one by one: the trial below is still running at its suggestion
        late = study.ask()  # failed as stale by another worker before its parameters are stored
        with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
            with params_in_one_write(late):
                late.suggest_float("x", 0.0, 1.0)
                assert internals.study_storage(study).set_trial_state_values(
                    internals.trial_id(late), optuna.trial.TrialState.FAIL)
        assert study.get_trials(deepcopy=False)[3].params == {}
    finally:
        optuna.delete_study(study_name=study.study_name, storage=internals.study_storage(study))


def test_writing_the_parameters_again_after_a_lost_answer_stores_them_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    study = _fresh_study(url)
    trial = study.ask()
    rows = [("x", 0.25, optuna.distributions.distribution_to_json(optuna.distributions.FloatDistribution(0, 1)))]
    engine = internals.rdb_storage(internals.study_storage(study)).engine
    write_params_sql(engine, internals.trial_id(trial), rows)
    write_params_sql(engine, internals.trial_id(trial), rows)  # the retry of a commit whose answer was lost
    assert study.get_trials(deepcopy=False)[0].params == {"x": 0.25}


# --- Reading one trial in two statements ----------------------------------------------------------


def _sql_database(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'r.db'}"
    if kind == "mysql":
        from test_claims import mysql_or_fail

        return mysql_or_fail()
    return postgres_or_fail()


def _comparable(trial: optuna.trial.FrozenTrial) -> dict:
    seen = {key: getattr(trial, key) for key in (
        "number", "state", "values", "datetime_start", "datetime_complete", "params", "distributions",
        "user_attrs", "system_attrs")}
    seen["param_order"] = list(trial.params)
    seen["intermediate_values"] = {step: "nan" if value != value else value
                                   for step, value in trial.intermediate_values.items()}
    seen["trial_id"] = internals.trial_id(trial)
    return seen


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "mysql"])
def test_a_trial_is_read_exactly_as_optuna_reads_it(kind, tmp_path):
    url = _sql_database(kind, tmp_path)
    optunas = optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name=unique("read"), storage=optunas, direction="maximize")
    try:
        study.enqueue_trial({"x": 0.5}, user_attrs={"from": "queue"})
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_int("n", 1, 64, log=True)
        trial.suggest_categorical("c", ["a", None, 3])
        trial.set_user_attr("curve", {"val": [0.1, 0.123456789012345]})
        for step, value in enumerate([float("nan"), float("inf"), -float("inf"), 0.123456789012345]):
            trial.report(value, step)
        study.tell(trial, float("-inf"))
        pruned = study.ask()
        pruned.report(0.25, 7)
        study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
        done = study.ask()
        done.suggest_float("x", 0.0, 1.0)
        study.tell(done, 0.987654321098765)
        study.ask()  # running, nothing stored yet
        study.enqueue_trial({"x": 0.25})  # waiting, with its parameters fixed
        engine = optunas.engine
        for stored in study.get_trials(deepcopy=False):
            trial_id = internals.trial_id(stored)
            assert _comparable(read_trial(engine, trial_id)) == _comparable(optunas.get_trial(trial_id))
        with pytest.raises(KeyError, match="No trial"):
            read_trial(engine, 10**9)
    finally:
        optuna.delete_study(study_name=study.study_name, storage=optunas)


def test_every_sql_storage_reads_trials_in_two_statements(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 't.db'}")
    study = optuna.create_study(study_name="t", storage=storage, direction="maximize")
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("a", 1)
    statements = []
    engine = internals.rdb_storage(storage).engine
    sqlalchemy.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    assert storage.get_trial(internals.trial_id(trial)).params == trial.params
    assert len(statements) == 2


def _outcome(call) -> object:
    try:
        return call()
    except (KeyError, optuna.exceptions.UpdateFinishedTrialError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _side_by_side(kind: str, tmp_path: Path, play) -> dict:
    """What `play(store, study_id)` gives on Optuna's own RDB storage and on hpo's, on one database."""
    url = _sql_database(kind, tmp_path)
    seen = {}
    for who, store in {"optuna": optuna.storages.RDBStorage(url), "hpo": TrialReadingRDBStorage(url)}.items():
        study_id = store.create_new_study([optuna.study.StudyDirection.MAXIMIZE], unique(f"side-{who}"))
        try:
            seen[who] = play(store, study_id)
        finally:
            store.delete_study(study_id)
    return seen


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "mysql"])
def test_a_trials_state_and_values_are_set_exactly_as_optuna_sets_them(kind, tmp_path):
    """The same calls on Optuna's own RDB storage and on hpo's give the same answers and trials."""
    def play(store, study_id):
        waiting = store.create_new_trial(study_id, optuna.trial.create_trial(state=TrialState.WAITING))
        running = store.create_new_trial(study_id)
        other = store.create_new_trial(study_id)
        answers = [
            _outcome(lambda: store.set_trial_state_values(waiting, TrialState.RUNNING)),  # a claim: True
            _outcome(lambda: store.set_trial_state_values(waiting, TrialState.RUNNING)),  # again: False
            _outcome(lambda: store.set_trial_state_values(running, TrialState.COMPLETE, [float("inf")])),
            _outcome(lambda: store.set_trial_state_values(running, TrialState.FAIL)),  # finished
            _outcome(lambda: store.set_trial_state_values(other, TrialState.RUNNING, [0.25])),  # values, no claim
            _outcome(lambda: store.set_trial_state_values(other, TrialState.COMPLETE, [0.123456789012345])),
            _outcome(lambda: store.set_trial_state_values(10**9, TrialState.COMPLETE, [1.0])),
        ]
        trials = [_comparable(t) for t in store.get_all_trials(study_id, deepcopy=False)]
        for trial in trials:  # the clock differs between the two runs; that each is set does not
            trial["datetime_start"] = trial["datetime_start"] is not None
            trial["datetime_complete"] = trial["datetime_complete"] is not None
            del trial["trial_id"]
        return answers, trials

    seen = _side_by_side(kind, tmp_path, play)
    assert seen["hpo"] == seen["optuna"]
    assert seen["hpo"][0][:3] == [True, False, True]


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "mysql"])
def test_a_trials_attributes_are_set_exactly_as_optuna_sets_them(kind, tmp_path):
    def play(store, study_id):
        running, done = store.create_new_trial(study_id), store.create_new_trial(study_id)
        store.set_trial_state_values(done, TrialState.COMPLETE, [1.0])
        answers = [
            _outcome(lambda: store.set_trial_user_attr(running, "phase", "random")),
            _outcome(lambda: store.set_trial_user_attr(running, "phase", "tpe")),  # replaced
            _outcome(lambda: store.set_trial_system_attr(running, "beat", 1.5)),
            _outcome(lambda: store.set_trial_system_attr(running, "beat", {"at": [2.5]})),
            _outcome(lambda: store.set_trial_user_attr(done, "late", 1)),
            _outcome(lambda: store.set_trial_system_attr(10**9, "beat", 1)),
        ]
        return answers, [(t.user_attrs, t.system_attrs) for t in store.get_all_trials(study_id, deepcopy=False)]

    seen = _side_by_side(kind, tmp_path, play)
    assert seen["hpo"] == seen["optuna"]
    assert seen["hpo"][1][0] == ({"phase": "tpe"}, {"beat": {"at": [2.5]}})


# --- A shared storage's studies come and go --------------------------------------------------------


class _DeletesAfterListing(optuna.storages.BaseStorage):
    """A real storage whose every listing of studies is followed, before anyone reads them, by
    another client deleting one of the listed studies: what a shared database does to a reader."""

    def __init__(self, inner: optuna.storages.BaseStorage, victim: str) -> None:
        self._inner, self._victim = inner, victim

    def get_all_studies(self):
        studies = self._inner.get_all_studies()
        with contextlib.suppress(KeyError):
            self._inner.delete_study(self._inner.get_study_id_from_name(self._victim))
        return studies

    def __getattr__(self, name):
        return getattr(self._inner, name)


for _name in optuna.storages.BaseStorage.__abstractmethods__ - {"get_all_studies"}:
    setattr(_DeletesAfterListing, _name, lambda self, *a, _n=_name, **k: getattr(self._inner, _n)(*a, **k))
_DeletesAfterListing.__abstractmethods__ = frozenset()


@pytest.fixture
def two_studies(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    for name in ("stays", "goes"):
        create(load_spec(write_spec(tmp_path, name, trials=2, epochs=1, samples=200, random_trials=2)), url)
    return url


def test_a_study_deleted_by_another_client_while_listed_is_left_out(two_studies, monkeypatch):
    from hpo import _fleet, _inventory, _notes

    def shared():
        return _DeletesAfterListing(open_storage(two_studies, Heartbeat(interval=None)), "goes")

    # The dashboard's refresh of every study's note.
    assert _notes.refresh_all(shared()) == 1
    create(load_spec(write_spec(Path(two_studies[len("sqlite:///"):]).parent, "goes", trials=2, epochs=1,
                                samples=200, random_trials=2)), two_studies)
    # The worker's choice of study.
    assert [c.name for c in _fleet.candidates(shared())] == ["stays"]
    create(load_spec(write_spec(Path(two_studies[len("sqlite:///"):]).parent, "goes", trials=2, epochs=1,
                                samples=200, random_trials=2)), two_studies)
    # `hpo study list`.
    monkeypatch.setattr(_inventory, "open_storage", lambda url, heartbeat: shared())
    assert [row.name for row in _inventory.list_studies(two_studies)] == ["stays"]


def test_a_listing_that_meets_a_deleted_study_is_made_again_then_gives_up():
    from hpo._storage import listed

    calls = []

    def flaky(fails):
        def call():
            calls.append(1)
            if len(calls) <= fails:
                raise KeyError("Record does not exist.")
            return ["listed"]
        return call

    assert listed(flaky(2)) == ["listed"] and len(calls) == 3
    calls.clear()
    with pytest.raises(KeyError):
        listed(flaky(3))
    assert len(calls) == 3
