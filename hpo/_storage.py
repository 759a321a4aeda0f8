"""Storage URLs, the Optuna storage behind them, and a lock shared by every worker of a study.

SQLite is the default (one file, one machine, many processes); PostgreSQL or MySQL/MariaDB when
several machines share a study; an Optuna journal file (`journal:PATH`) also works.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from hpo._errors import StorageError

DEFAULT_STORAGE = "sqlite:///hpo.db"
STORAGE_ENV = "HPO_STORAGE"
HEARTBEAT_INTERVAL = 10  # seconds between a running trial's heartbeats
GRACE_PERIOD = 30  # seconds without a heartbeat before a RUNNING trial counts as dead
SQLITE_BUSY_TIMEOUT = 60  # seconds a writer waits for the SQLite lock instead of failing
URL_HELP = "use sqlite:///path/to/file.db, postgresql+psycopg://user@host/db or journal:PATH"


def resolve_url(url: str | None) -> str:
    """The storage URL to use: the flag, then $HPO_STORAGE, then the default SQLite file."""
    url = url or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
    return _normalise(url)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***; safe to print and to store."""
    if url.startswith("journal:"):
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Unparseable: hide whatever sits between ':' and '@' after the scheme.
        head, sep, tail = url.partition("://")
        if sep and "@" in tail:
            creds, _, host = tail.rpartition("@")
            user = creds.split(":", 1)[0]
            return f"{head}://{user}:***@{host}"
        return url


def _normalise(url: str) -> str:
    if url.startswith("journal:"):
        if not url[len("journal:"):]:
            raise StorageError(f"storage URL '{url}' names no journal file; {URL_HELP}")
        return url
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StorageError(f"storage URL '{mask_url(url)}' is not a valid URL; {URL_HELP}") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 is the installed driver
    elif backend == "mysql" and parsed.drivername == "mysql":
        parsed = parsed.set(drivername="mysql+pymysql")
    elif backend not in ("sqlite", "postgresql", "mysql", "mariadb"):
        raise StorageError(f"storage URL '{mask_url(url)}' uses unsupported backend '{backend}'; {URL_HELP}")
    if backend == "sqlite" and not parsed.database:
        raise StorageError(f"storage URL '{url}' names no database file; {URL_HELP}")
    return parsed.render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, None for other backends or in-memory SQLite."""
    if url.startswith("journal:"):
        return None
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def backend_name(url: str) -> str:
    return "journal" if url.startswith("journal:") else make_url(url).get_backend_name()


@dataclass(frozen=True)
class Heartbeat:
    """How running trials prove they are alive; `interval=None` switches the mechanism off."""

    interval: int | None = HEARTBEAT_INTERVAL
    grace_period: int = GRACE_PERIOD
    retry_stale: bool = True  # a trial whose worker died is re-run once with the same parameters


def open_storage(url: str, heartbeat: Heartbeat = Heartbeat()) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url`, with heartbeats and, on SQLite, WAL and a busy timeout.

    Raises StorageError with one line (password masked) when the URL or the server is bad.
    """
    url = _normalise(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = None
        if heartbeat.interval is not None and heartbeat.retry_stale:
            callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
        hb = {}
        if heartbeat.interval is not None:
            hb = dict(heartbeat_interval=heartbeat.interval, grace_period=heartbeat.grace_period,
                      heartbeat_stale_trial_callback=callback)
        if url.startswith("journal:"):
            path = Path(url[len("journal:"):])
            _ensure_parent(path, url)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
            return optuna.storages.JournalStorage(backend)
        engine_kwargs: dict = {}
        path = sqlite_path(url)
        if path is not None:
            _ensure_parent(path, url)
            _prepare_sqlite(path)
            engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}}
        else:
            engine_kwargs = {"pool_pre_ping": True, "connect_args": _connect_timeout(url)}
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **hb)
        except (SQLAlchemyError, ImportError, RuntimeError, ValueError) as exc:
            raise StorageError(_describe_failure(url, exc)) from None
        if path is not None:
            sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
            storage.engine.dispose()  # connections opened before the listener reconnect with it
        return storage


def _sqlite_pragmas(connection, _record) -> None:
    # In WAL mode, NORMAL syncs at checkpoints rather than at every commit: a crash of the
    # process loses nothing, a power cut may lose the last commits but never corrupts the file.
    # A trial commits once per epoch, so this is most of the storage cost of a short trial.
    cursor = connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _connect_timeout(url: str) -> dict:
    backend = backend_name(url)
    if backend == "postgresql":
        return {"connect_timeout": 10}
    if backend in ("mysql", "mariadb"):
        return {"connect_timeout": 10}
    return {}


def _ensure_parent(path: Path, url: str) -> None:
    parent = path.expanduser().resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the folder of {mask_url(url)}: {exc.strerror}") from None


def _prepare_sqlite(path: Path) -> None:
    """Switch the file to WAL once (it persists), so readers never block the workers' writes."""
    try:
        connection = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT)
        try:
            mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"{path} is not a usable SQLite database ({exc}); "
                           "point --storage at another file") from None


def _describe_failure(url: str, exc: BaseException) -> str:
    masked = mask_url(url)
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    detail = text[0] if text else type(exc).__name__
    password = make_url(url).password if not url.startswith("journal:") else None
    if password:
        detail = detail.replace(str(password), "***")
    if "Connection refused" in detail or "could not connect" in detail.lower():
        hint = "is the database server running and reachable?"
    elif "does not exist" in detail:
        hint = "create the database first, or name an existing one"
    elif "authentication" in detail.lower() or "password" in detail.lower():
        hint = "check the user name and password"
    elif isinstance(exc, ImportError) or "No module named" in detail:
        hint = "install the database driver (psycopg for PostgreSQL, pymysql for MySQL)"
    elif "version" in detail.lower() and "schema" in detail.lower():
        hint = "upgrade the schema with `optuna storage upgrade`"
    else:
        hint = URL_HELP
    return f"cannot open storage {masked}: {detail}; {hint}"


# --- A lock per study, shared by all workers on all machines -------------------------------
# Starting a trial (count what is done and running, then create the trial) must be atomic across
# workers, or two workers that both see 29 of 30 would both start one and overshoot the target.


@contextlib.contextmanager
def study_lock(url: str, study_name: str) -> Iterator[None]:
    """Hold the study's lock: a file lock for SQLite and journal files, an advisory lock on servers."""
    backend = backend_name(url)
    if backend == "journal" or (backend == "sqlite" and sqlite_path(url) is not None):
        path = Path(url[len("journal:"):]) if backend == "journal" else sqlite_path(url)
        with _file_lock(Path(f"{path}.lock")):
            yield
    elif backend == "postgresql":
        key = zlib.crc32(f"hpo:{study_name}".encode())
        with _server_lock(url, "SELECT pg_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)", key):
            yield
    elif backend in ("mysql", "mariadb"):
        key = f"hpo:{study_name}"[:64]
        with _server_lock(url, "SELECT GET_LOCK(:k, -1)", "SELECT RELEASE_LOCK(:k)", key):
            yield
    else:
        with _MEMORY_LOCK:
            yield


_MEMORY_LOCK = threading.Lock()
_ENGINES: dict[str, sqlalchemy.Engine] = {}


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _server_lock(url: str, acquire: str, release: str, key: object) -> Iterator[None]:
    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = sqlalchemy.create_engine(
            url, poolclass=sqlalchemy.pool.NullPool, connect_args=_connect_timeout(url))
    try:
        connection = engine.connect()
    except SQLAlchemyError as exc:
        raise StorageError(_describe_failure(url, exc)) from None
    with connection:
        connection.execute(sqlalchemy.text(acquire), {"k": key})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text(release), {"k": key})
            connection.commit()


def describe_url(url: str) -> URL | None:
    try:
        return None if url.startswith("journal:") else make_url(url)
    except (ArgumentError, ValueError):
        return None


# --- Writing a finished trial's records in one transaction ----------------------------------
# Optuna commits every report() and set_user_attr() on its own: for a 50-epoch trial of the
# seed's study that is 50+ commits, more time than the training itself. When the pruner does
# not need the values while the trial runs, they are written at its end in one transaction,
# into Optuna's own tables, exactly as Optuna would write them one by one.


def record_trial(trial: optuna.Trial, intermediate: dict[int, float], attrs: dict) -> None:
    """Store a running trial's intermediate values and user attributes at once."""
    storage = trial.study._storage
    backend = getattr(storage, "_backend", storage)  # under Optuna's cache
    if not isinstance(backend, optuna.storages.RDBStorage):
        for step, value in intermediate.items():
            trial.report(value, step)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    from optuna.storages._rdb import models

    values = models.TrialIntermediateValueModel
    user = models.TrialUserAttributeModel
    trial_id = trial._trial_id
    with backend.engine.begin() as connection:
        if intermediate:
            connection.execute(sqlalchemy.delete(values).where(
                values.trial_id == trial_id, values.step.in_(list(intermediate))))
            rows = []
            for step, value in intermediate.items():
                stored, kind = values.intermediate_value_to_stored_repr(float(value))
                rows.append({"trial_id": trial_id, "step": int(step), "intermediate_value": stored,
                             "intermediate_value_type": kind})
            connection.execute(sqlalchemy.insert(values), rows)
        if attrs:
            connection.execute(sqlalchemy.delete(user).where(
                user.trial_id == trial_id, user.key.in_(list(attrs))))
            connection.execute(sqlalchemy.insert(user), [
                {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                for key, value in attrs.items()])
