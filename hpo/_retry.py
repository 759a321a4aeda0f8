"""Riding out storage outages: every storage call that fails for a connection reason is retried
with backoff for a bounded time, then the worker stops with one line naming the storage.

A database restart, a failover or a dropped network link makes every call fail for a while and
then work again; a worker that waits instead of dying keeps its trial and the study's exact
target. Errors that are not about the connection (a constraint, a bad value, a finished trial)
are never retried.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

import optuna

from hpo._errors import StorageError

RETRY_ENV = "HPO_STORAGE_RETRY"
RETRY_SECONDS = 60.0  # how long a worker waits out an unreachable storage before it stops
_FIRST_PAUSE = 0.25
_MAX_PAUSE = 5.0

# What drivers say when the server went away or cannot be reached (PostgreSQL/psycopg,
# MySQL/MariaDB/PyMySQL, the gRPC proxy). Lower case; matched anywhere in the message.
_DISCONNECTED = (
    "connection refused", "could not connect", "connection reset", "connection timed out",
    "server closed the connection", "terminating connection", "connection is closed",
    "connection already closed", "the connection is lost", "consuming input failed",
    "the database system is starting up", "the database system is shutting down",
    "the database system is in recovery mode", "no connection to the server",
    "server has gone away", "lost connection", "can't connect", "broken pipe",
    "cannot connect", "connection to server", "ssl syscall error", "network is unreachable",
    "statusCode.unavailable".lower(), "failed to connect to all addresses", "socket closed",
)


def retry_seconds(value: float | None = None) -> float:
    """The bound: the given value, else $HPO_STORAGE_RETRY, else 60 s; 0 switches retrying off."""
    if value is not None:
        return float(value)
    text = os.environ.get(RETRY_ENV)
    if not text:
        return RETRY_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        raise StorageError(f"{RETRY_ENV}={text!r} is not a number of seconds; "
                           f"set it to e.g. 60, or 0 to switch retrying off") from None
    if not seconds >= 0:
        raise StorageError(f"{RETRY_ENV}={text!r} must be >= 0 seconds; set it to e.g. 60")
    return seconds


def mentions_disconnect(text: str) -> bool:
    """Whether a driver's message says the storage could not be reached."""
    text = text.lower()
    return any(marker in text for marker in _DISCONNECTED)


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says the storage could not be reached, rather than
    that the call itself was wrong."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if getattr(current, "connection_invalidated", False):  # SQLAlchemy: a disconnect
            return True
        if mentions_disconnect(str(current)):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def first_line(exc: BaseException) -> str:
    """The first line of what the driver error under `exc` says."""
    current: BaseException | None = exc
    deepest = exc
    for _ in range(10):
        if current is None:
            break
        deepest = getattr(current, "orig", None) or current
        current = current.__cause__ or current.__context__
    for candidate in (deepest, exc):
        lines = [line.strip() for line in str(candidate).strip().splitlines() if line.strip()]
        if lines:
            return lines[0]
    return type(exc).__name__


class Retrier:
    """Calls a function, retrying transient failures with capped exponential backoff until
    `seconds` have passed since the first failure of the current outage."""

    def __init__(self, storage_name: str, seconds: float,
                 on_wait: Callable[[str], None] | None = None,
                 translate: Callable[[BaseException], Exception | None] | None = None):
        self.storage_name = storage_name  # masked: safe to print
        self.seconds = seconds
        self.on_wait = on_wait
        # Turns a failure that is not transient into the project's own error (a read-only file,
        # say), or None to let it pass unchanged.
        self.translate = translate
        self.recovered: float | None = None  # monotonic time the last outage this process saw ended

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started: float | None = None
        pause = _FIRST_PAUSE
        while True:
            try:
                result = function(*args, **kwargs)
            except Exception as exc:
                if not is_transient(exc):
                    own = self.translate(exc) if self.translate else None
                    if own is not None:
                        raise own from exc
                    raise
                if self.seconds <= 0:
                    raise
                now = time.monotonic()
                if started is None:
                    started = now
                    if self.on_wait:
                        self.on_wait(f"storage {self.storage_name} unreachable ({first_line(exc)}); "
                                     f"retrying for up to {self.seconds:g} s")
                if now - started >= self.seconds:
                    raise StorageError(
                        f"storage {self.storage_name} unreachable for {self.seconds:g} s "
                        f"({first_line(exc)}); check that the database server is running, then run "
                        f"the command again (the study keeps every finished trial); "
                        f"hpo --storage-retry SECONDS or {RETRY_ENV} sets how long to wait") from exc
                time.sleep(min(pause, max(0.0, started + self.seconds - now)) * random.uniform(0.8, 1.0))
                pause = min(pause * 2, _MAX_PAUSE)
            else:
                if started is not None:
                    self.recovered = time.monotonic()
                return result


class RetryingStorage(optuna.storages.BaseStorage):
    """An Optuna storage whose every call rides out outages of the storage under it.

    `heartbeat_base` is the class Optuna checks to decide whether heartbeats are on; this
    class becomes a subclass of it only when the storage under it is one too.
    """

    def __init__(self, inner: optuna.storages.BaseStorage, retrier: Retrier):
        self._inner = inner
        self._retrier = retrier

    @property
    def inner(self) -> optuna.storages.BaseStorage:
        return self._inner

    @property
    def retrier(self) -> Retrier:
        return self._retrier

    def set_trial_state_values(self, trial_id: int, state: Any, values: Any = None) -> bool:
        attempts = [0]

        def attempt() -> bool:
            attempts[0] += 1
            try:
                return self._inner.set_trial_state_values(trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                # An earlier attempt reached the database although its answer was lost.
                if attempts[0] > 1 and self._inner.get_trial(trial_id).state == state:
                    return True
                raise

        return self._retrier.call(attempt)

    def __getattr__(self, name: str) -> Any:
        # Attributes that are not storage calls (an RDB storage's engine, for instance).
        return getattr(self.__dict__["_inner"], name)


def _forward(name: str) -> Callable[..., Any]:
    def method(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        return self._retrier.call(getattr(self._inner, name), *args, **kwargs)

    method.__name__ = name
    return method


def wrap(inner: optuna.storages.BaseStorage, retrier: Retrier,
         heartbeat_base: type | None) -> optuna.storages.BaseStorage:
    """`inner` behind a RetryingStorage; heartbeat calls are forwarded when `inner` has them."""
    if heartbeat_base is not None and isinstance(inner, heartbeat_base):
        return _HEARTBEAT_CLASSES[heartbeat_base](inner, retrier)
    return RetryingStorage(inner, retrier)


def retrier_of(storage: optuna.storages.BaseStorage) -> Retrier:
    """The Retrier of a wrapped storage, for work done past Optuna's calls (one transaction of
    hpo's own); a Retrier that never retries for any other storage."""
    if isinstance(storage, RetryingStorage):
        return storage.retrier
    return Retrier(type(storage).__name__, 0)


def _storage_methods(base: type) -> list[str]:
    return [name for name, value in vars(base).items()
            if callable(value) and not name.startswith("__")]


for _name in _storage_methods(optuna.storages.BaseStorage):
    if _name not in vars(RetryingStorage):
        setattr(RetryingStorage, _name, _forward(_name))
RetryingStorage.__abstractmethods__ = frozenset()

_HEARTBEAT_CLASSES: dict[type, type] = {}


def _record_heartbeat(self: RetryingStorage, trial_id: int) -> None:
    # Runs in Optuna's heartbeat thread, where an exception would only print a traceback and end
    # the thread. A heartbeat missed during an outage costs nothing while the outage is shorter
    # than the grace period; the worker's own next call reports a longer one.
    try:
        self._retrier.call(self._inner.record_heartbeat, trial_id)
    except Exception:
        pass


def _get_stale_trial_ids(self: RetryingStorage, study_id: int) -> list[int]:
    # Right after an outage every running trial looks dead: no worker could beat during it. Judge
    # none for two heartbeat intervals and a retry pause, time enough for the live workers'
    # heartbeats to land, so that a worker back first does not fail the others' live trials (they
    # would be run twice, and their workers could not record their results). A worker that really
    # died is judged later.
    interval = self.get_heartbeat_interval() or 0
    recovered = self._retrier.recovered
    if recovered is not None and time.monotonic() - recovered < 2 * interval + _MAX_PAUSE:
        return []
    return self._retrier.call(self._inner._get_stale_trial_ids, study_id)


def register_heartbeat_base(heartbeat_base: type) -> None:
    """Make the retrying class that also forwards `heartbeat_base`'s calls (Optuna keeps that
    class in a private module, so the caller that may import it hands it over)."""
    if heartbeat_base in _HEARTBEAT_CLASSES:
        return
    cls = type("RetryingHeartbeatStorage", (RetryingStorage, heartbeat_base),
               {"record_heartbeat": _record_heartbeat, "_get_stale_trial_ids": _get_stale_trial_ids})
    for name in _storage_methods(heartbeat_base):
        if name not in vars(RetryingStorage) and name not in vars(cls):
            setattr(cls, name, _forward(name))
    cls.__abstractmethods__ = frozenset()
    _HEARTBEAT_CLASSES[heartbeat_base] = cls
