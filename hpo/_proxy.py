"""Optuna's gRPC storage proxy, served by hpo and used through `grpc://HOST:PORT` storage URLs.

Many workers then share one database through a few of its connections: the proxy holds the only
connection pool, with Optuna's in-process cache of finished trials in front of it. hpo's proxy
adds four things to Optuna's:
- the claims of `hpo/_claims.py` run on the database as the single conditional statements they
  are (Optuna's proxy would claim with `SELECT … FOR UPDATE`, which SQLite ignores);
- a signature, so that a worker refuses a proxy that does not claim that way;
- heartbeats, which Optuna's proxy client does not send: a running trial's worker beats, the proxy
  writes its own clock's time into the trial's system attribute `hpo:heartbeat`, and any worker
  fails a RUNNING trial whose last beat the proxy says is older than the grace period. One clock
  reads and writes them all, so the workers' machines' clocks do not matter;
- the study's lock for what still needs one (`hpo study confirm` queues its runs once each, however
  many commands queue them at once): the proxy takes it on the database behind it and queues them.

A gRPC channel does not survive `fork`: a forked child opens channels of its own on first use.
"""

from __future__ import annotations

import collections
import errno
import json
import os
import signal
import socket
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import TrialState

from hpo import _optuna_internals as internals
from hpo._claims import (
    QUEUE_KEY, TOP_UP_KEY, claim_counted_sql, claim_sql, fail_sql, look_sql, queue_once_now, top_up_sql,
)
from hpo._errors import HpoError, StorageError
from hpo._retry import retrier_of
from hpo._storage import (
    PARAMS_KEY, Heartbeat, StorageURL, one_statement_each, open_storage, study_lock, write_params_sql,
)

DEFAULT_PORT = 13000
STOP_POLL_SECONDS = 0.2  # how soon the proxy notices Ctrl-C or SIGTERM
DEFAULT_THREADS = 8  # at most this many database connections, whatever the number of workers
HEARTBEAT_KEY = "hpo:heartbeat"
# Asking the proxy for the id of this study name returns SIGNATURE: a study id no database gives.
SIGNATURE_NAME = "\x00hpo-storage-proxy"
SIGNATURE = -20130
# The requests a worker may make of the proxy change with hpo; a worker asks for the name of the
# version it speaks, which a proxy of an older hpo does not know.
# 2: a claim and its count in one request. 3: the proxy stamps heartbeats with its own clock and
# answers the ages of a study's running trials (a worker of 2 would stamp them with its own).
# 4: the proxy queues configurations once each under the study's lock (`hpo study confirm`).
PROTOCOL = 4
PROTOCOL_NAME = f"{SIGNATURE_NAME}/{PROTOCOL}"
SERVED_NAMES = (SIGNATURE_NAME, f"{SIGNATURE_NAME}/3", PROTOCOL_NAME)  # 3 asks nothing 4 changed


class ProxyError(HpoError):
    """The proxy cannot serve: a storage it cannot carry, an address it cannot bind."""


# --- The server -----------------------------------------------------------------------------------


class ClaimingStorage:
    """The storage the proxy serves: the database's, with hpo's claims as conditional statements."""

    def __init__(self, inner: optuna.storages.BaseStorage, url: StorageURL):
        rdb = internals.rdb_storage(inner)
        self._inner = inner
        self._url = url  # the database's, for the study locks taken here
        self._engine = rdb.engine
        # hpo's own transactions ride out a database restart as the wrapped storage's calls do.
        self._retry = retrier_of(inner).call
        # SQLite ignores FOR UPDATE: a worker's own end of a trial and another's failing it as
        # stale must not interleave. (Server databases lock the row themselves; one short lock
        # per finished trial costs them nothing worth a case of its own.)
        self._finish_lock = threading.Lock()

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        if state == TrialState.RUNNING:
            return self._retry(claim_sql, self._engine, trial_id)
        with self._finish_lock:
            if state == TrialState.FAIL and values is None:
                if self._retry(fail_sql, self._engine, trial_id):
                    return True
                if self._inner.get_trial(trial_id).state == TrialState.WAITING:
                    return self._inner.set_trial_state_values(trial_id, state, values)
                raise optuna.exceptions.UpdateFinishedTrialError(f"trial {trial_id} has already finished")
            return self._inner.set_trial_state_values(trial_id, state, values)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        if study_id < 0:  # a worker's claim of trial `trial_number` of study -study_id, and its count
            occupied = self._retry(claim_counted_sql, self._engine, -study_id, trial_number)
            return -1 if occupied is None else occupied
        return self._inner.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def get_study_id_from_name(self, study_name: str) -> int:
        if study_name in SERVED_NAMES:
            return SIGNATURE
        return self._inner.get_study_id_from_name(study_name)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        if study_id < 0:  # a worker's look at study -study_id (`ProxyClaims.look`)
            counts, tickets = self._retry(look_sql, self._engine, -study_id)
            return {"counts": counts, "tickets": [[t.trial_id, t.number, t.chosen] for t in tickets]}
        return self._inner.get_study_system_attrs(study_id)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        if key == TOP_UP_KEY:  # a worker's request, carried by the one call the protocol has for it
            self._retry(top_up_sql, self._engine, study_id, int(value["target"]), int(value["batch"]))
            return
        if key == QUEUE_KEY:  # a worker's runs to queue once each (`ProxyClaims.queue_once`)
            name = self._inner.get_study_name_from_id(study_id)
            with study_lock(self._url, name):
                queue_once_now(optuna.Study(study_name=name, storage=self._inner), value["runs"], value["key"])
            return
        self._inner.set_study_system_attr(study_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if key == PARAMS_KEY:  # a worker's new trial's parameters, all at once (`write_params`)
            self._retry(write_params_sql, self._engine, trial_id, [tuple(row) for row in value])
            return
        if key == HEARTBEAT_KEY:  # stamped here: one clock, the one `running_ages` reads them by
            value = time.time()
        self._inner.set_trial_system_attr(trial_id, key, value)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        if study_id < 0:  # a worker's stale check of study -study_id (`_stale_trial_ids`)
            return {"running": self._retry(running_ages_sql, self._engine, -study_id, time.time())}
        return self._inner.get_study_user_attrs(study_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def serve(storage: "ClaimingStorage", host: str, port: int, threads: int = DEFAULT_THREADS,
          on_ready: Callable[[int], None] | None = None, grace: float = 5.0) -> None:
    """Serve `storage` (an SQL database from `open_storage`) on host:port until Ctrl-C or SIGTERM.

    Args:
        storage: the database's, from `open_database`.
        host: the address to listen on.
        port: the port; 0 picks a free one.
        threads: the requests served at once, and so the most database connections used.
        on_ready: called with the port once the proxy listens.
        grace: seconds that requests under way get to finish when the proxy stops.
    """
    _check_free(host, port)
    server = internals.grpc_proxy_server(storage, ThreadPoolExecutor(max_workers=threads))
    bound = server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    if bound == 0:
        raise ProxyError(f"cannot serve on {host}:{port}: the address cannot be bound; check --host "
                         "(an address of this machine, e.g. 127.0.0.1) and --port")
    server.start()
    # Ctrl-C and SIGTERM only note that they came. An exception raised by a signal handler while
    # the main thread waits on one of Python's thread locks can leave that lock released twice
    # ("release unlocked lock"), and the proxy's exit a traceback instead of its one line.
    stopping: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: stopping.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        if on_ready:
            on_ready(bound)
        while not stopping:
            server.wait_for_termination(timeout=STOP_POLL_SECONDS)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        server.stop(grace).wait()


def _check_free(host: str, port: int) -> None:
    """ProxyError with one line when host:port cannot be bound (gRPC would only log it)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ProxyError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; check --host "
                         "(an address or name of this machine, e.g. 127.0.0.1)") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            hint = ("another program uses that port; pick another with --port" if exc.errno == errno.EADDRINUSE
                    else "check --host (an address of this machine, e.g. 127.0.0.1)")
            raise ProxyError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; {hint}") from None


def open_database(url: StorageURL, connections: int = DEFAULT_THREADS) -> ClaimingStorage:
    """The database storage the proxy serves, with at most `connections` connections open (and one
    more for a moment to take a study's lock); ProxyError with one line for anything else."""
    if url.path is not None and url.sqlite_path is None:  # checked before opening creates the file
        raise ProxyError(f"the gRPC proxy cannot serve the journal {url.masked}: Optuna's proxy serves SQL "
                         "databases only; serve SQLite, PostgreSQL or MySQL, or give workers the journal itself")
    storage = open_storage(url, Heartbeat(interval=None))  # the workers send the heartbeats
    if internals.rdb_storage(storage) is None:
        raise ProxyError(f"the gRPC proxy cannot serve {url.masked}: it serves SQL databases only "
                         "(SQLite, PostgreSQL, MySQL/MariaDB); give it the database's own URL")
    _fixed_pool(internals.rdb_storage(storage).engine, connections)
    return ClaimingStorage(storage, url)


def _fixed_pool(engine: sqlalchemy.Engine, size: int) -> None:
    """Exactly `size` pooled connections, none beyond: a pool that opens overflow connections and
    closes them again under load holds more than `size` at moments, and the point of the proxy is
    a small, steady number. New connections still come from the engine's own pool (its connect
    arguments and listeners), detached from it."""
    original = engine.pool

    def connect():
        connection = original.connect()
        connection.detach()
        return connection.dbapi_connection

    engine.pool = sqlalchemy.pool.QueuePool(connect, pool_size=size, max_overflow=0,
                                            timeout=3600, dialect=engine.dialect)
    original.dispose()  # the connections opening the storage took


# --- The client -----------------------------------------------------------------------------------


def running_ages_sql(engine: sqlalchemy.Engine, study_id: int, now: float) -> list[list[float]]:
    """[trial id, seconds since its last heartbeat] of each running trial of the study, in one query.

    Killed before its first heartbeat, a trial counts from its start. A retry carries its failed
    trial's system attributes, that trial's last heartbeat included, which is not its own: a beat
    from before the trial's start does not count. Start and beats are this machine's clock's: the
    claim (`claim_sql`) and the heartbeats are stamped here.
    """
    trials, attrs = internals.TABLES.trials, internals.TABLES.trial_system_attrs
    beat = (sqlalchemy.select(attrs.c.value_json)
            .where(attrs.c.trial_id == trials.c.trial_id, attrs.c.key == HEARTBEAT_KEY).scalar_subquery())
    with one_statement_each(engine) as connection:
        rows = connection.execute(sqlalchemy.select(trials.c.trial_id, trials.c.datetime_start, beat).where(
            trials.c.study_id == study_id, trials.c.state == TrialState.RUNNING)).all()
    ages = []
    for trial_id, started, beat_json in rows:
        start = started.timestamp() if started else now
        last = json.loads(beat_json) if beat_json else None
        last = max(float(last), start) if isinstance(last, (int, float)) else start
        ages.append([trial_id, now - last])
    return ages


def _record_heartbeat(self, trial_id: int) -> None:
    # A trial's first beat comes as it starts, when its claim's start time (the proxy's clock too)
    # already says as much: `running_ages_sql` counts from the start until a beat comes.
    started = self.__dict__.setdefault("_beating", collections.deque(maxlen=256))  # this client's latest trials
    if trial_id not in started:
        started.append(trial_id)
        return
    self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, 0)  # the proxy stamps it with its clock


def _stale_trial_ids(self, study_id: int) -> list[int]:
    # One small query on the proxy, not every running trial read whole by every worker.
    return [int(trial_id) for trial_id, age in self.get_study_user_attrs(-study_id)["running"]
            if age > self.grace_period]


def _heartbeat_interval(self) -> int | None:
    return self.interval


def _stale_callback(self):
    return self.stale_callback


_CLIENT_CLASS: list[type] = []
_CLIENTS: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _client_class() -> type:
    if not _CLIENT_CLASS:
        from optuna.storages import GrpcStorageProxy

        _CLIENT_CLASS.append(internals.with_heartbeats(GrpcStorageProxy, "HeartbeatGrpcStorageProxy", {
            "record_heartbeat": _record_heartbeat, "stale_trial_ids": _stale_trial_ids,
            "get_heartbeat_interval": _heartbeat_interval,
            "get_heartbeat_stale_trial_callback": _stale_callback}))
        os.register_at_fork(after_in_child=_fresh_channels)
    return _CLIENT_CLASS[0]


def _fresh_channels() -> None:
    for client in list(_CLIENTS):
        internals.reconnect_after_fork(client)


def connect(host: str, port: int, masked: str, interval: int | None, grace_period: int,
            stale_callback: Any, timeout: float) -> optuna.storages.BaseStorage:
    """A client of hpo's proxy at host:port, with heartbeats when `interval` is set.

    Raises StorageError with one line when nothing answers there, or when what answers is not
    `hpo storage serve` (a plain Optuna proxy in front of SQLite would let two workers claim one
    trial).
    """
    client = _client_class()(host=host, port=port)
    client.interval = interval
    client.grace_period = grace_period
    client.stale_callback = stale_callback
    try:
        client.wait_server_ready(timeout=timeout)
    except ConnectionError:
        client.close()
        raise StorageError(f"cannot reach the storage proxy at {masked} within {timeout:g} s; is "
                           f"`hpo storage serve` running there, and the port open?") from None
    if _signature(client, PROTOCOL_NAME) != SIGNATURE:
        older = _signature(client, SIGNATURE_NAME) == SIGNATURE
        client.close()
        if older:
            raise StorageError(f"{masked} is `hpo storage serve` of an older hpo than this one; restart "
                               f"the proxy with the hpo that the workers run")
        raise StorageError(f"{masked} is a gRPC storage proxy, but not `hpo storage serve`: its claims "
                           f"are not known to be atomic; serve the database with `hpo storage serve`")
    _CLIENTS.add(client)
    return client


def _signature(client: Any, name: str) -> int | None:
    try:
        return client.get_study_id_from_name(name)
    except KeyError:
        return None
