"""The storage gateway: storage URLs, the Optuna storage behind them, and each study's lock.

A storage URL is parsed once, at the boundary, into a `StorageURL` (`resolve_storage`). One table,
`BACKENDS`, says what each kind of storage does: how its URL is normalised, how it is opened, how
a worker claims a trial on it, how a whole study is read and written in bulk. SQLite is the default
(one file, one machine, many processes); PostgreSQL or MySQL/MariaDB when several machines share a
study; an Optuna journal file (`journal:PATH`) also works. No other module looks inside a URL:
they pass the value on and print `StorageURL.masked`.

Every storage `open_storage` returns rides out outages (`hpo/_retry.py`: connection failures are
retried for a bound, then one line naming the storage); so do the study lock's connection and
`record_trial`'s transaction. A read-only SQLite file opens for reading, and a write on it is one
line saying the storage is read-only.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import fcntl
import json
import os
import re
import sqlite3
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from hpo import _optuna_internals as internals
from hpo._errors import StorageError, first_line
from hpo._retry import Retrier, is_transient, retrier_of, retry_seconds

DEFAULT_STORAGE = "sqlite:///hpo.db"
STORAGE_ENV = "HPO_STORAGE"
# For help texts and messages, so that no other module spells a URL scheme.
URL_HELP = ("use sqlite:///path/to/file.db, postgresql+psycopg://user@host/db, "
            "mysql+pymysql://user@host/db, grpc://HOST:PORT (`hpo storage serve`) or journal:PATH")
URL_EXAMPLE = "postgresql+psycopg://user@server/db"  # a shared server, as in "e.g. …"
HEARTBEAT_INTERVAL = 10  # seconds between a running trial's heartbeats
GRACE_PERIOD = 30  # seconds without a heartbeat before a RUNNING trial counts as dead
SQLITE_BUSY_TIMEOUT = 60  # seconds a writer waits for the SQLite lock instead of failing
CONNECT_TIMEOUT = 10  # seconds to reach a database server
GRPC_PORT = 13000  # of `hpo storage serve`, when a grpc:// URL names none
# hpo's own lock file beside a SQLite or journal file. Not `PATH.lock`: that is the lock file of
# Optuna's JournalFileBackend, which would wait for hpo's lock and then break it.
LOCK_SUFFIX = "-hpo.lock"

_JOURNAL = "journal:"
_SECRET_KEYS = frozenset({"password", "passwd", "pwd", "secret", "token", "key", "sslpassword"})


@dataclass(frozen=True)
class StorageURL:
    """A storage URL, parsed and normalised once. Make one with `resolve_storage`.

    `url` is the full URL for opening (it may hold a password: never print it); `masked` is the
    same with every secret replaced by ***, and is what str() and repr() show.
    """

    backend: str  # a key of BACKENDS
    url: str = field(repr=False)
    masked: str
    path: Path | None = None  # the file of a SQLite database or of a journal

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"StorageURL({self.masked!r})"

    @property
    def sqlite_path(self) -> Path | None:
        return self.path if self.backend == "sqlite" else None


def resolve_storage(value: str | StorageURL | None = None) -> StorageURL:
    """The storage to use: `value` (a command's flag), else $HPO_STORAGE, else `sqlite:///hpo.db`.

    Raises StorageError with one line (secrets masked) when the URL is malformed or its backend
    is not supported.
    """
    if isinstance(value, StorageURL):
        return value
    return _parse(value or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE)


def resolve_url(value: str | StorageURL | None) -> str:
    """The full URL string of `resolve_storage(value)`; prefer the StorageURL itself."""
    return resolve_storage(value).url


def backend_name(url: str | StorageURL) -> str:
    return _as_storage_url(url).backend


def _as_storage_url(url: str | StorageURL) -> StorageURL:
    return url if isinstance(url, StorageURL) else _parse(url)


def _parse(text: str) -> StorageURL:
    if text.startswith(_JOURNAL):
        return BACKENDS["journal"].parse(text, None)
    text = _quote_password(text)
    try:
        parsed = make_url(text)
    except (ArgumentError, ValueError):
        raise StorageError(f"storage URL '{mask_url(text)}' is not a valid URL; {URL_HELP}") from None
    backend = BACKENDS.get(parsed.get_backend_name())
    if backend is None:
        raise StorageError(f"storage URL '{mask_url(text)}' uses unsupported backend "
                           f"'{parsed.get_backend_name()}'; {URL_HELP}")
    return backend.parse(text, parsed)


# --- Secrets -------------------------------------------------------------------------------------
# A password may hold any character, an unescaped '@' included: it runs from the ':' after the user
# name to the last '@'. Masking by that rule hides at least what SQLAlchemy reads as the password
# (up to the first '@'), so a URL that cannot be parsed never leaks a part of its password either.


def _password_span(text: str) -> tuple[int, int] | None:
    """Where the password of `scheme://user:password@host…` lies in `text`, if it has one."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return None
    start = len(scheme) + len(sep)
    user = re.match(r"[^:/]*", rest).group()
    colon = start + len(user)
    at = text.rfind("@")
    if text[colon:colon + 1] != ":" or at <= colon:
        return None
    return colon + 1, at


def _query_spans(text: str, after: int) -> list[tuple[int, int]]:
    """Where the values of secret query parameters (password=, token=, …) lie in `text`."""
    question = text.find("?", after)
    if question < 0:
        return []
    spans = []
    offset = question + 1
    for part in re.split(r"([&;])", text[question + 1:]):
        key, equals, _value = part.partition("=")
        if equals and unquote(key).strip().lower() in _SECRET_KEYS:
            spans.append((offset + len(key) + 1, offset + len(part)))
        offset += len(part)
    return spans


def _secret_spans(text: str) -> list[tuple[int, int]]:
    password = _password_span(text)
    return ([password] if password else []) + _query_spans(text, password[1] if password else 0)


def mask_url(url: str | StorageURL) -> str:
    """The URL with every secret it can carry replaced by ***: the password in the user part,
    whatever characters it holds, and the values of query parameters password, passwd, pwd,
    secret, token, key and sslpassword (any case). Safe to print and to store; works on text that
    is not a valid URL as well."""
    if isinstance(url, StorageURL):
        return url.masked
    for start, end in reversed(_secret_spans(url)):
        url = url[:start] + "***" + url[end:]
    return url


def _secrets(text: str) -> list[str]:
    """The secrets of a URL as written and as decoded, longest first: to scrub from messages."""
    found = set()
    for start, end in _secret_spans(text):
        if end > start:
            found |= {text[start:end], unquote(text[start:end])}
    return sorted(found, key=len, reverse=True)


def _scrub(message: str, url: StorageURL) -> str:
    for secret in _secrets(url.url):
        message = message.replace(secret, "***")
    return message


def _quote_password(text: str) -> str:
    """An unescaped '@' in the password written as %40, so the URL opens the host it names."""
    span = _password_span(text)
    if span is None or "@" not in text[span[0]:span[1]]:
        return text
    start, end = span
    return text[:start] + quote(unquote(text[start:end]), safe="") + text[end:]


# --- Opening -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heartbeat:
    """How running trials prove they are alive; `interval=None` switches the mechanism off."""

    interval: int | None = HEARTBEAT_INTERVAL
    grace_period: int = GRACE_PERIOD
    retry_stale: bool = True  # a trial whose worker died is re-run once with the same parameters


def open_storage(url: str | StorageURL, heartbeat: Heartbeat = Heartbeat()) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url`, with heartbeats (on databases) and, on SQLite, WAL and a busy timeout.

    Every call on it rides out an outage of the storage for up to `retry_seconds()` (`hpo/_retry.py`),
    then raises StorageError naming the storage. Opening does not wait: a server that is down or a
    wrong URL is reported at once. A read-only SQLite file opens for reading; a write on it raises
    StorageError saying so. Raises StorageError with one line (secrets masked) when the URL or the
    server is bad.
    """
    url = _as_storage_url(url)
    retrier = _retrier(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = BACKENDS[url.backend].open(url, heartbeat)
    return internals.retrying(storage, retrier)


T = TypeVar("T")
_LIST_ATTEMPTS = 3


def listed(list_call: Callable[[], T]) -> T:
    """`list_call()` (a listing of a shared storage's studies), made again when it fails because
    another process deleted a study while it was being listed (Optuna raises KeyError then)."""
    for attempt in range(_LIST_ATTEMPTS):
        try:
            return list_call()
        except KeyError:
            if attempt == _LIST_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def schema_version(storage: optuna.storages.BaseStorage) -> str | None:
    """The Optuna schema version of an RDB storage from `open_storage`; None for a journal."""
    rdb = internals.rdb_storage(storage)
    return None if rdb is None else rdb.get_current_version()


def _retrier(url: StorageURL) -> Retrier:
    return Retrier(url.masked, retry_seconds(), translate=lambda exc: _read_only_refusal(url, exc))


def _read_only_refusal(url: StorageURL, exc: BaseException) -> StorageError | None:
    """A write refused by a read-only database, as one line saying what still works."""
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            return None
        text = str(current).lower()
        if "readonly database" in text or ("read-only" in text and "database" in text):
            return read_only_error(url)
        current = current.__cause__ or current.__context__
    return None


def read_only_error(url: StorageURL) -> StorageError:
    return StorageError(f"storage {url.masked} is read-only: list, show, best, plot, report and export "
                        f"work on it; to run, create or change studies, copy the file to a writable "
                        f"folder and use that copy")


def _heartbeat_kwargs(heartbeat: Heartbeat) -> dict[str, Any]:
    if heartbeat.interval is None:
        return {}
    callback = None
    if heartbeat.retry_stale:
        callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    return dict(heartbeat_interval=heartbeat.interval, grace_period=heartbeat.grace_period,
                heartbeat_stale_trial_callback=callback)


# Processes that open a new storage at the same moment all create Optuna's tables; all but the first
# fail on a table, a type or a version row the first has just made. Opening again then finds them.
_SCHEMA_ATTEMPTS = 8


class TrialReadingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, reading one trial in two statements where Optuna's takes six (its
    trial row, then each of five tables on its own), and ending one or setting an attribute (a
    heartbeat through the proxy is one) in a transaction of plain statements, a third of the time
    Optuna's object mapping takes. A trial is read three times on
    its way through a worker (its start and `Study.tell`, twice) and ended once: together, half of
    what a short trial costs the database (BENCHMARKS.md, "A fleet on one database")."""

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return read_trial(self.engine, trial_id)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        return set_state_sql(self.engine, trial_id, state, values)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        set_attr_sql(self.engine, internals.TABLES.trial_user_attrs, trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        set_attr_sql(self.engine, internals.TABLES.trial_system_attrs, trial_id, key, value)


def _rdb_storage(url: StorageURL, heartbeat: Heartbeat, engine_kwargs: dict,
                 open_url: str | None = None) -> optuna.storages.RDBStorage:
    for attempt in range(1, _SCHEMA_ATTEMPTS + 1):
        try:
            return TrialReadingRDBStorage(open_url or url.url, engine_kwargs=engine_kwargs,
                                          **_heartbeat_kwargs(heartbeat))
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError, ImportError, RuntimeError,
                ValueError) as exc:
            if attempt < _SCHEMA_ATTEMPTS and _lost_schema_race(exc):
                time.sleep(0.1 * attempt)
                continue
            if _read_only_refusal(url, exc):
                raise read_only_error(url) from None
            raise StorageError(_describe_failure(url, exc)) from None
    raise AssertionError("unreachable")


def _lost_schema_race(exc: BaseException) -> bool:
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            return False
        if isinstance(current, sqlalchemy.exc.IntegrityError):
            return True
        text = str(current).lower()
        if "already exists" in text or "duplicate key" in text or "duplicate entry" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


def _ensure_parent(url: StorageURL) -> None:
    parent = url.path.expanduser().resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the folder of {url.masked}: {exc.strerror}") from None


def _describe_failure(url: StorageURL, exc: BaseException) -> str:
    detail = _scrub(first_line(exc), url)
    if "Connection refused" in detail or "could not connect" in detail.lower():
        hint = "is the database server running and reachable?"
    elif "does not exist" in detail:
        hint = "create the database first, or name an existing one"
    elif "authentication" in detail.lower() or "password" in detail.lower():
        hint = "check the user name and password"
    elif isinstance(exc, ImportError) or "No module named" in detail:
        hint = "install its driver: pip install 'hpo-studies[postgres]' for PostgreSQL, 'hpo-studies[mysql]' for MySQL"
    elif "version" in detail.lower() and "schema" in detail.lower():
        hint = "upgrade the schema with `optuna storage upgrade`"
    else:
        hint = URL_HELP
    return f"cannot open storage {url.masked}: {detail}; {hint}"


# --- The backends --------------------------------------------------------------------------------
# Starting a trial (count what is done and running, then create the trial) must be atomic across
# workers, or two workers that both see 29 of 30 would both start one and overshoot the target:
# every backend claims trials under a lock that all processes on all machines see.


class Backend:
    """What one kind of storage does. A backend that cannot lock a study for all workers refuses."""

    name: str

    def parse(self, text: str, parsed: sqlalchemy.URL | None) -> StorageURL:
        raise NotImplementedError

    def open(self, url: StorageURL, heartbeat: Heartbeat) -> optuna.storages.BaseStorage:
        raise NotImplementedError

    def claim(self, url: StorageURL, study_name: str) -> contextlib.AbstractContextManager[None]:
        raise StorageError(f"storage {url.masked} has no lock that all workers share, so trials "
                           f"cannot be claimed safely; {URL_HELP}")

    def snapshot(self, engine: sqlalchemy.Engine) -> contextlib.AbstractContextManager[sqlalchemy.Connection]:
        """A connection whose reads all see the same moment, while workers may keep writing."""
        return _snapshot(engine, {}, begin=False)

    def insert_many(self, db: sqlalchemy.Connection, table: sqlalchemy.Table, rows: list[dict[str, Any]]) -> None:
        db.execute(sqlalchemy.insert(table), rows)


class _SQLite(Backend):
    name = "sqlite"

    def parse(self, text: str, parsed: sqlalchemy.URL | None) -> StorageURL:
        if not parsed.database:
            raise StorageError(f"storage URL '{mask_url(text)}' names no database file; {URL_HELP}")
        if parsed.database == ":memory:":
            raise StorageError(f"storage URL '{mask_url(text)}' is an in-memory database that no other "
                               f"command or worker sees; name a file: sqlite:///path/to/file.db")
        normal = parsed.render_as_string(hide_password=False)
        return StorageURL(self.name, normal, mask_url(normal), Path(parsed.database))

    def open(self, url: StorageURL, heartbeat: Heartbeat) -> optuna.storages.BaseStorage:
        if is_read_only(url):
            # Read through SQLite's own read-only mode; immutable, because a read-only folder has
            # no room for the lock and shared-memory files that a plain read would create.
            uri = f"sqlite:///file:{quote(str(url.path.resolve()))}?mode=ro&immutable=1&uri=true"
            return _rdb_storage(url, Heartbeat(interval=None), {}, open_url=uri)
        _ensure_parent(url)
        _prepare_sqlite(url.path)
        storage = _rdb_storage(url, heartbeat, {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}})
        sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
        storage.engine.dispose()  # connections opened before the listener reconnect with it
        return storage

    def claim(self, url: StorageURL, study_name: str) -> contextlib.AbstractContextManager[None]:
        if is_read_only(url):
            raise read_only_error(url)
        return _file_lock(lock_path(url))

    def snapshot(self, engine: sqlalchemy.Engine) -> contextlib.AbstractContextManager[sqlalchemy.Connection]:
        return _snapshot(engine, {}, begin=True)  # pysqlite opens no transaction for reads by itself


@dataclass(frozen=True)
class _Server(Backend):
    """A database server: PostgreSQL, MySQL or MariaDB. The study's lock is the server's own."""

    name: str
    driver: str  # the driver used when a URL names none
    acquire: str  # SQL taking the lock named :k, waiting as long as it takes; 1 once it is held
    release: str
    lock_key: Callable[[str], object]  # the lock's name for a study
    copy: bool = False  # bulk inserts by COPY (PostgreSQL through psycopg 3)

    def parse(self, text: str, parsed: sqlalchemy.URL | None) -> StorageURL:
        if parsed.drivername == self.name:
            parsed = parsed.set(drivername=self.driver)
        normal = parsed.render_as_string(hide_password=False)
        return StorageURL(self.name, normal, mask_url(normal))

    def open(self, url: StorageURL, heartbeat: Heartbeat) -> optuna.storages.BaseStorage:
        return _rdb_storage(url, heartbeat, {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}})

    def claim(self, url: StorageURL, study_name: str) -> contextlib.AbstractContextManager[None]:
        return _server_lock(url, self.acquire, self.release, self.lock_key(study_name))

    def snapshot(self, engine: sqlalchemy.Engine) -> contextlib.AbstractContextManager[sqlalchemy.Connection]:
        return _snapshot(engine, {"isolation_level": "REPEATABLE READ"}, begin=False)

    def insert_many(self, db: sqlalchemy.Connection, table: sqlalchemy.Table, rows: list[dict[str, Any]]) -> None:
        if self.copy and db.dialect.driver == "psycopg":
            _copy(db, table, rows)
        else:
            db.execute(sqlalchemy.insert(table), rows)


def _advisory_key(study_name: str) -> int:
    return zlib.crc32(f"hpo:{study_name}".encode())  # PostgreSQL names advisory locks by integers


def _named_key(study_name: str) -> str:
    return f"hpo:{study_name}"[:64]  # GET_LOCK names are at most 64 characters


# A year, as "wait as long as it takes": MariaDB answers a negative timeout with NULL, not the lock.
_GET_LOCK = "SELECT GET_LOCK(:k, 31536000)"


class _SafeJournalFile(optuna.storages.journal.JournalFileBackend):
    """Optuna's journal file, except that an append that fails (a full disk) leaves no partial
    record behind: the next append would run on from it and make the whole journal unreadable."""

    def __init__(self, path: Path):
        super().__init__(str(path))
        self._hpo_path = path

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        try:
            super().append_logs(logs)
        except OSError:
            cut_partial_journal_record(self._hpo_path)
            raise


def cut_partial_journal_record(path: Path | None) -> None:
    """Cut the partial last record a failed append (a full disk) leaves in a journal file.

    Optuna appends each record as one line; the next append would run on from the partial one,
    and the merged line, once another follows it, makes the whole journal unreadable. Cutting
    back to the last line end, under Optuna's own lock of the file, needs no free space.
    """
    if path is None or not path.exists():
        return
    lock = optuna.storages.journal.JournalFileSymlinkLock(str(path))
    try:
        lock.acquire()
    except OSError:
        return
    try:
        with open(path, "rb+") as journal:
            end = journal.seek(0, os.SEEK_END)
            keep = end
            while keep > 0:
                start = max(0, keep - 65536)
                journal.seek(start)
                block = journal.read(keep - start)
                if end == keep and block.endswith(b"\n"):
                    return  # whole: the last record ends its line
                newline = block.rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                keep = start
            journal.truncate(keep)
    except OSError:
        pass
    finally:
        lock.release()



class _Journal(Backend):
    """An Optuna journal file, read and written through Optuna's API (no SQL, no heartbeats)."""

    name = "journal"

    def parse(self, text: str, parsed: sqlalchemy.URL | None) -> StorageURL:
        path = text[len(_JOURNAL):]
        if not path:
            raise StorageError(f"storage URL '{text}' names no journal file; {URL_HELP}")
        return StorageURL(self.name, text, mask_url(text), Path(path))

    def open(self, url: StorageURL, heartbeat: Heartbeat) -> optuna.storages.BaseStorage:
        _ensure_parent(url)
        return optuna.storages.JournalStorage(_SafeJournalFile(url.path))

    def claim(self, url: StorageURL, study_name: str) -> contextlib.AbstractContextManager[None]:
        return _file_lock(lock_path(url))


class _Grpc(Backend):
    """hpo's gRPC storage proxy (`hpo storage serve`) in front of a database. Workers claim trials
    as tickets (`hpo/_claims.py`), each claim one atomic step that the proxy carries; there is no
    study lock through it."""

    name = "grpc"

    def parse(self, text: str, parsed: sqlalchemy.URL | None) -> StorageURL:
        if not parsed.host or parsed.database or parsed.username or parsed.query:
            raise StorageError(f"storage URL '{mask_url(text)}' must be grpc://HOST:PORT, the address "
                               f"that `hpo storage serve` listens on")
        host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
        normal = f"grpc://{host}:{parsed.port or GRPC_PORT}"
        return StorageURL(self.name, normal, normal)

    def open(self, url: StorageURL, heartbeat: Heartbeat) -> optuna.storages.BaseStorage:
        from hpo import _proxy  # gRPC is an extra: only this backend needs it

        parsed = make_url(url.url)
        host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
        callback = _heartbeat_kwargs(heartbeat).get("heartbeat_stale_trial_callback")
        return _proxy.connect(host, parsed.port, url.masked, heartbeat.interval, heartbeat.grace_period,
                              callback, CONNECT_TIMEOUT)

    def claim(self, url: StorageURL, study_name: str) -> contextlib.AbstractContextManager[None]:
        raise StorageError(f"storage {url.masked} is a gRPC proxy, which carries no study lock; "
                           "run this command on the database behind the proxy")


BACKENDS: dict[str, Backend] = {
    "sqlite": _SQLite(),
    "postgresql": _Server("postgresql", "postgresql+psycopg", "SELECT 1 FROM pg_advisory_lock(:k)",
                          "SELECT pg_advisory_unlock(:k)", _advisory_key, copy=True),
    "mysql": _Server("mysql", "mysql+pymysql", _GET_LOCK, "SELECT RELEASE_LOCK(:k)", _named_key),
    "mariadb": _Server("mariadb", "mariadb+pymysql", _GET_LOCK, "SELECT RELEASE_LOCK(:k)", _named_key),
    "journal": _Journal(),
    "grpc": _Grpc(),
}


def study_lock(url: str | StorageURL, study_name: str) -> contextlib.AbstractContextManager[None]:
    """Hold the study's lock, shared by every worker on every machine: a file lock beside a SQLite
    or journal file, an advisory lock on a database server. Raises StorageError for a storage
    without such a lock."""
    url = _as_storage_url(url)
    backend = BACKENDS.get(url.backend, Backend())
    return backend.claim(url, study_name)


def is_read_only(url: str | StorageURL) -> bool:
    """Whether a SQLite file exists and may not be written: by permissions (a file nobody may
    write counts even for root, who passes every permission check), or on a read-only mount.
    Its folder counts too: SQLite cannot write without creating files beside the database."""
    url = _as_storage_url(url)
    path = url.sqlite_path
    if path is None or not path.is_file():
        return False
    folder = path.resolve().parent
    return (not os.access(path, os.W_OK) or not os.access(folder, os.W_OK)
            or path.stat().st_mode & 0o222 == 0 or bool(os.statvfs(path).f_flag & os.ST_RDONLY))


def lock_path(url: str | StorageURL) -> Path:
    """The file hpo locks to claim trials beside a SQLite or journal file."""
    url = _as_storage_url(url)
    if url.path is None:
        raise StorageError(f"storage {url.masked} is not a file and has no lock file")
    return url.path.with_name(url.path.name + LOCK_SUFFIX)


def snapshot(engine: sqlalchemy.Engine) -> contextlib.AbstractContextManager[sqlalchemy.Connection]:
    """A connection to an RDB storage whose reads all see one moment, while workers keep writing."""
    return BACKENDS.get(engine.dialect.name, Backend()).snapshot(engine)


def insert_many(db: sqlalchemy.Connection, table: sqlalchemy.Table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows at once in the open transaction: COPY on PostgreSQL, an executemany elsewhere."""
    if rows:  # an empty parameter list would insert one row of defaults
        BACKENDS.get(db.dialect.name, Backend()).insert_many(db, table, rows)


def _sqlite_pragmas(connection, _record) -> None:
    # In WAL mode, NORMAL syncs at checkpoints rather than at every commit: a crash of the
    # process loses nothing, a power cut may lose the last commits but never corrupts the file.
    # A trial commits once per epoch, so this is most of the storage cost of a short trial.
    cursor = connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


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


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_ENGINES: dict[StorageURL, sqlalchemy.Engine] = {}


@contextlib.contextmanager
def _server_lock(url: StorageURL, acquire: str, release: str, key: object) -> Iterator[None]:
    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = sqlalchemy.create_engine(
            url.url, poolclass=sqlalchemy.pool.NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT})

    def take() -> tuple[sqlalchemy.Connection, object]:
        connection = engine.connect()
        try:
            taken = connection.execute(sqlalchemy.text(acquire), {"k": key}).scalar()
            connection.commit()
        except BaseException:
            connection.close()
            raise
        return connection, taken

    try:
        connection, taken = _retrier(url).call(take)
    except SQLAlchemyError as exc:
        raise StorageError(_describe_failure(url, exc)) from None
    with connection:
        if taken != 1:
            raise StorageError(f"storage {url.masked} did not grant the study's lock (it answered {taken!r}); "
                               "check that the user may take locks there")
        try:
            yield
        finally:
            try:
                connection.execute(sqlalchemy.text(release), {"k": key})
                connection.commit()
            except SQLAlchemyError as exc:
                # A server that lost the connection has released its session's locks with it.
                if not is_transient(exc):
                    raise


@contextlib.contextmanager
def _snapshot(engine: sqlalchemy.Engine, options: dict, begin: bool) -> Iterator[sqlalchemy.Connection]:
    with engine.connect().execution_options(**options) as connection:
        if begin:
            connection.exec_driver_sql("BEGIN")
        try:
            yield connection
        finally:
            connection.rollback()


def _copy(db: sqlalchemy.Connection, table: sqlalchemy.Table, rows: list[dict[str, Any]]) -> None:
    """PostgreSQL's bulk path (psycopg 3): psycopg's executemany would send one INSERT per row, and
    50,000 intermediate values then take seconds; COPY takes a tenth of one."""
    quote_name = db.dialect.identifier_preparer.quote
    columns = list(rows[0])
    statement = f"COPY {quote_name(table.name)} ({', '.join(quote_name(c) for c in columns)}) FROM STDIN"
    with db.connection.driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            # Optuna's enum columns hold the member names
            copy.write_row([v.name if isinstance(v, enum.Enum) else v for v in row.values()])


# --- Writing a finished trial's records in one transaction ----------------------------------
# Optuna commits every report() and set_user_attr() on its own: for a 50-epoch trial of the
# seed's study that is 50+ commits, more time than the training itself. When the pruner does
# not need the values while the trial runs, they are written at its end in one transaction,
# into Optuna's own tables, exactly as Optuna would write them one by one.


def record_trial(trial: optuna.Trial, intermediate: dict[int, float], attrs: dict) -> None:
    """Store a running trial's intermediate values and user attributes at once."""
    rdb = internals.rdb_storage(internals.study_storage(trial.study))
    if rdb is None:
        for step, value in intermediate.items():
            trial.report(value, step)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    # Deleting before inserting makes the transaction safe to repeat after an outage.
    retrier_of(internals.study_storage(trial.study)).call(
        _write_records, rdb.engine, internals.trial_id(trial), intermediate, attrs)


def one_statement_each(engine: sqlalchemy.Engine) -> sqlalchemy.Connection:
    """A connection whose statements each commit on their own: for reads, and for writes of one
    statement. On PostgreSQL this spares the BEGIN and the COMMIT or ROLLBACK around each use, two
    of its three round trips (bench/fleet.py). A read of several statements is no less consistent
    than in a transaction there: at READ COMMITTED every statement reads its own snapshot anyway.
    (MySQL/MariaDB's driver would pay a round trip to switch; SQLite has none to spare.)"""
    connection = engine.connect()
    if engine.dialect.name == "postgresql":
        return connection.execution_options(isolation_level="AUTOCOMMIT")
    return connection


def _read_committed(engine: sqlalchemy.Engine) -> sqlalchemy.Connection:
    """A connection for a transaction that deletes and inserts a trial's rows. On MySQL/MariaDB at
    READ COMMITTED: its default isolation makes the DELETE lock the gap around the trial's rows, and
    two workers ending trials at once then deadlock on their INSERTs. (PostgreSQL is at READ
    COMMITTED already, and setting it again would cost two round trips per transaction.)"""
    options = {"isolation_level": "READ COMMITTED"} if engine.dialect.name == "mysql" else {}
    return engine.connect().execution_options(**options)


def _write_records(engine: sqlalchemy.Engine, trial_id: int, intermediate: dict[int, float], attrs: dict) -> None:
    values = internals.TABLES.intermediate
    user = internals.TABLES.trial_user_attrs
    with _read_committed(engine) as connection, connection.begin():
        if intermediate:
            connection.execute(sqlalchemy.delete(values).where(
                values.c.trial_id == trial_id, values.c.step.in_(list(intermediate))))
            rows = []
            for step, value in intermediate.items():
                stored, kind = internals.intermediate_to_stored(float(value))
                rows.append({"trial_id": trial_id, "step": int(step), "intermediate_value": stored,
                             "intermediate_value_type": kind})
            connection.execute(sqlalchemy.insert(values), rows)
        if attrs:
            connection.execute(sqlalchemy.delete(user).where(
                user.c.trial_id == trial_id, user.c.key.in_(list(attrs))))
            connection.execute(sqlalchemy.insert(user), [
                {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                for key, value in attrs.items()])


# --- Writing a new trial's parameters in one transaction --------------------------------------
# Optuna writes each suggested parameter in a transaction of its own (reading the trial, a
# parameter of the same name elsewhere in the study, then inserting): for a 4-parameter space that
# is 16 statements and 4 commits per trial, most of what a short trial costs the storage
# (BENCHMARKS.md, "A fleet on one database"). A trial's parameters are all suggested before it
# trains, so they are written together: one transaction directly, one call through the proxy.

PARAMS_KEY = "hpo:params"  # asks `hpo storage serve` to write a trial's parameters; never stored


@contextlib.contextmanager
def params_in_one_write(trial: optuna.Trial) -> Iterator[None]:
    """Within the block, the trial's suggestions are kept; at its end they are stored at once.

    On a SQL database and through `hpo storage serve`; other storages (a journal, memory) are
    written as Optuna writes them, one by one, since their trials in memory are the trial's own
    objects and must not hold a parameter before the storage has accepted it.
    """
    storage = internals.study_storage(trial.study)
    rdb = internals.rdb_storage(storage)
    if rdb is None and not _is_proxy_client(storage):
        yield
        return
    pending: list[tuple[str, float, str]] = []
    with internals.trial_params_held(trial, lambda name, internal, distribution: pending.append(
            (name, float(internal), optuna.distributions.distribution_to_json(distribution)))):
        try:
            yield
        finally:
            if pending:
                write_params(storage, internals.trial_id(trial), pending)


def write_params(storage: optuna.storages.BaseStorage, trial_id: int, rows: list[tuple[str, float, str]]) -> None:
    """Store a running trial's parameters, given as (name, value as stored, distribution JSON), on a
    SQL database or through `hpo storage serve`."""
    rdb = internals.rdb_storage(storage)
    if rdb is not None:
        retrier_of(storage).call(write_params_sql, rdb.engine, trial_id, rows)
        return
    try:
        storage.set_trial_system_attr(trial_id, PARAMS_KEY, [list(row) for row in rows])
    except Exception as exc:
        # The protocol carries a ValueError (a distribution that disagrees with the study's) only
        # for Optuna's own parameter call; for this one it arrives as an unknown error with its text.
        code, details = getattr(exc, "code", None), getattr(exc, "details", None)
        if callable(code) and callable(details) and code().name == "UNKNOWN" and details():
            raise ValueError(details().removeprefix("Exception calling application: ")) from None
        raise


def _is_proxy_client(storage: optuna.storages.BaseStorage) -> bool:
    """A client of `hpo storage serve` (the gateway connects to no other proxy)."""
    return isinstance(getattr(storage, "inner", storage), optuna.storages.GrpcStorageProxy)


def write_params_sql(engine: sqlalchemy.Engine, trial_id: int, rows: list[tuple[str, float, str]]) -> None:
    """One transaction with Optuna's checks: the trial exists and is not finished, and each parameter's
    distribution agrees with the one it has in the study's other trials."""
    tables = internals.TABLES
    trials, params, studies = tables.trials, tables.params, tables.studies
    names = [name for name, _value, _distribution in rows]
    with _read_committed(engine) as connection, connection.begin():
        stored = sqlalchemy.select(sqlalchemy.func.count()).where(params.c.trial_id == trial_id).scalar_subquery()
        found = connection.execute(
            sqlalchemy.select(trials.c.state, trials.c.number, trials.c.study_id, studies.c.study_name,
                              stored.label("stored"))
            .join(studies, studies.c.study_id == trials.c.study_id)
            .where(trials.c.trial_id == trial_id)).one_or_none()
        if found is None:
            raise KeyError(f"No trial with trial_id {trial_id} exists.")
        if found.state.is_finished():
            raise optuna.exceptions.UpdateFinishedTrialError(
                f"Trial#{found.number} has already finished and can not be updated.")
        study = (engine.url.render_as_string(hide_password=True), found.study_id, found.study_name)
        _check_distributions(connection, study, trial_id, rows)
        if found.stored:  # a repeat of this transaction after an outage: its first run committed
            connection.execute(sqlalchemy.delete(params).where(params.c.trial_id == trial_id,
                                                               params.c.param_name.in_(names)))
        connection.execute(sqlalchemy.insert(params), [
            {"trial_id": trial_id, "param_name": name, "param_value": value, "distribution_json": distribution}
            for name, value, distribution in rows])


# (database, study id, study name, parameter, distribution JSON) found to agree with the study's
# earlier trials. A study's distributions never change, so a worker checks each of its own once,
# not with every trial's parameters: most of the cost of storing them.
_AGREED: set[tuple[str, int, str, str, str]] = set()
_AGREED_MAX = 10_000


def _check_distributions(connection: sqlalchemy.Connection, study: tuple[str, int, str], trial_id: int,
                         rows: list[tuple[str, float, str]]) -> None:
    """ValueError, as Optuna's, when a parameter's distribution disagrees with the study's."""
    rows = [row for row in rows if (*study, row[0], row[2]) not in _AGREED]
    if not rows:
        return
    params, trials = internals.TABLES.params, internals.TABLES.trials
    # One earlier parameter of each name (other trials: a repeated transaction finds its own).
    earlier = [sqlalchemy.select(params.c.param_name, params.c.distribution_json)
               .join(trials, trials.c.trial_id == params.c.trial_id)
               .where(trials.c.study_id == study[1], params.c.param_name == name,
                      params.c.trial_id != trial_id).limit(1).subquery() for name, _value, _distribution in rows]
    known = dict(connection.execute(sqlalchemy.union_all(
        *(sqlalchemy.select(sub.c.param_name, sub.c.distribution_json) for sub in earlier))).all())
    for name, _value, distribution in rows:
        if name in known:
            optuna.distributions.check_distribution_compatibility(
                optuna.distributions.json_to_distribution(known[name]),
                optuna.distributions.json_to_distribution(distribution))
    if len(_AGREED) > _AGREED_MAX:
        _AGREED.clear()
    # Only what agreed with a stored parameter: a study's first trial sets its distributions.
    _AGREED.update((*study, name, distribution) for name, _value, distribution in rows if name in known)


# --- Reading one trial in two statements ----------------------------------------------------------

_PARAM, _VALUE, _INTERMEDIATE, _USER, _SYSTEM = range(5)


def _trial_rows() -> sqlalchemy.CompoundSelect:
    """Every row of one trial's five tables as (kind, id, name, number, index, text)."""
    tables = internals.TABLES
    trial_id = sqlalchemy.bindparam("trial_id")
    text, number, index = sqlalchemy.String(), sqlalchemy.Double(), sqlalchemy.Integer()

    def rows(kind: int, table: sqlalchemy.Table, name: Any, value: Any, position: Any, json_text: Any):
        # Columns as they are (a cast of a number could lose digits: MySQL's FLOAT is single
        # precision), except names, which are text or an enum; NULLs typed for the union.
        none = sqlalchemy.null()
        return sqlalchemy.select(
            sqlalchemy.literal_column(str(kind)).label("kind"), table.c[table.primary_key.columns.keys()[0]].label("id"),
            sqlalchemy.cast(none if name is None else name, text).label("name"),
            (sqlalchemy.cast(none, number) if value is None else value).label("number"),
            (sqlalchemy.cast(none, index) if position is None else position).label("position"),
            (sqlalchemy.cast(none, text) if json_text is None else json_text).label("text"),
        ).where(table.c.trial_id == trial_id)

    params, values, intermediate = tables.params, tables.values, tables.intermediate
    user, system = tables.trial_user_attrs, tables.trial_system_attrs
    return sqlalchemy.union_all(
        rows(_PARAM, params, params.c.param_name, params.c.param_value, None, params.c.distribution_json),
        rows(_VALUE, values, values.c.value_type, values.c.value, values.c.objective, None),
        rows(_INTERMEDIATE, intermediate, intermediate.c.intermediate_value_type, intermediate.c.intermediate_value,
             intermediate.c.step, None),
        rows(_USER, user, user.c.key, None, None, user.c.value_json),
        rows(_SYSTEM, system, system.c.key, None, None, system.c.value_json))


_TRIAL_ROWS = _trial_rows()


def read_trial(engine: sqlalchemy.Engine, trial_id: int) -> FrozenTrial:
    """One trial as Optuna's `get_trial` returns it; KeyError when there is none."""
    trials = internals.TABLES.trials
    with one_statement_each(engine) as connection:
        trial = connection.execute(sqlalchemy.select(trials).where(trials.c.trial_id == trial_id)).one_or_none()
        if trial is None:
            raise KeyError(f"No trial with trial-id {trial_id} exists.")
        rows = sorted(connection.execute(_TRIAL_ROWS, {"trial_id": trial_id}), key=lambda r: (r.kind, r.id))
    distributions, params, user_attrs, system_attrs, intermediate = {}, {}, {}, {}, {}
    values: dict[int, float] = {}
    for row in rows:
        if row.kind == _PARAM:
            distribution = optuna.distributions.json_to_distribution(row.text)
            distributions[row.name] = distribution
            params[row.name] = distribution.to_external_repr(row.number)
        elif row.kind == _VALUE:
            values[row.position] = internals.stored_to_value(row.number, internals.value_kind(row.name))
        elif row.kind == _INTERMEDIATE:
            intermediate[row.position] = internals.stored_to_intermediate(
                row.number, internals.intermediate_kind(row.name))
        elif row.kind == _USER:
            user_attrs[row.name] = json.loads(row.text)
        else:
            system_attrs[row.name] = json.loads(row.text)
    return FrozenTrial(
        number=trial.number, state=trial.state, value=None,
        values=[values[i] for i in sorted(values)] if values else None,
        datetime_start=trial.datetime_start, datetime_complete=trial.datetime_complete,
        params=params, distributions=distributions, user_attrs=user_attrs, system_attrs=system_attrs,
        intermediate_values=intermediate, trial_id=trial.trial_id)


def set_state_sql(engine: sqlalchemy.Engine, trial_id: int, state: TrialState,
                  values: Sequence[float] | None = None) -> bool:
    """Optuna's `set_trial_state_values` in plain statements, with its checks and answers: KeyError
    for no such trial, UpdateFinishedTrialError for a finished one, False for a claim of a trial
    that is not WAITING (or that another writer made first), True otherwise."""
    trials, stored_values = internals.TABLES.trials, internals.TABLES.values
    try:
        with engine.begin() as connection:
            found = connection.execute(sqlalchemy.select(trials.c.state, trials.c.number)
                                       .where(trials.c.trial_id == trial_id).with_for_update()).one_or_none()
            if found is None:
                raise KeyError("Record does not exist.")
            current = found.state
            if current.is_finished():
                raise optuna.exceptions.UpdateFinishedTrialError(
                    f"Trial#{found.number} has already finished and can not be updated.")
            if values is not None:
                existing = set(connection.execute(sqlalchemy.select(stored_values.c.objective)
                                                  .where(stored_values.c.trial_id == trial_id)).scalars())
                for objective, value in enumerate(values):
                    stored, kind = internals.value_to_stored(value)
                    if objective in existing:
                        connection.execute(sqlalchemy.update(stored_values).where(
                            stored_values.c.trial_id == trial_id, stored_values.c.objective == objective)
                            .values(value=stored, value_type=kind))
                    else:
                        connection.execute(sqlalchemy.insert(stored_values).values(
                            trial_id=trial_id, objective=objective, value=stored, value_type=kind))
            if state == TrialState.RUNNING and current != TrialState.WAITING:
                return False
            now = datetime.datetime.now()
            changes: dict[str, Any] = {"state": state}
            if state == TrialState.RUNNING:
                changes["datetime_start"] = now
            if state.is_finished():
                changes["datetime_complete"] = now
            connection.execute(sqlalchemy.update(trials).where(trials.c.trial_id == trial_id).values(**changes))
    except sqlalchemy.exc.IntegrityError:
        return False
    return True


def set_attr_sql(engine: sqlalchemy.Engine, table: sqlalchemy.Table, trial_id: int, key: str, value: Any) -> None:
    """Optuna's `set_trial_user_attr` / `set_trial_system_attr` in plain statements: the same checks,
    and the same insert-or-update of the (trial, key) row."""
    trials = internals.TABLES.trials
    row = {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
    with engine.begin() as connection:
        found = connection.execute(sqlalchemy.select(trials.c.state, trials.c.number)
                                   .where(trials.c.trial_id == trial_id)).one_or_none()
        if found is None:
            raise KeyError("Record does not exist.")
        if found.state.is_finished():
            raise optuna.exceptions.UpdateFinishedTrialError(
                f"Trial#{found.number} has already finished and can not be updated.")
        dialect = engine.dialect.name
        if dialect == "mysql":
            from sqlalchemy.dialects import mysql

            insert = mysql.insert(table).values(**row)
            connection.execute(insert.on_duplicate_key_update(value_json=insert.inserted.value_json))
        elif dialect in ("sqlite", "postgresql"):
            from sqlalchemy.dialects import postgresql, sqlite

            insert = (sqlite if dialect == "sqlite" else postgresql).insert(table).values(**row)
            connection.execute(insert.on_conflict_do_update(index_elements=[table.c.trial_id, table.c.key],
                                                            set_={"value_json": insert.excluded.value_json}))
        else:
            updated = connection.execute(sqlalchemy.update(table).where(
                table.c.trial_id == trial_id, table.c.key == key).values(value_json=row["value_json"]))
            if not updated.rowcount:
                connection.execute(sqlalchemy.insert(table).values(**row))
