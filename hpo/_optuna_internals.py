"""Every use of Optuna's private API, behind one door.

hpo goes past Optuna's public API in these places, each for a reason the public API cannot meet:
- a run claims a ticket (`hpo/_claims.py`) and runs the sampler after the claim (`Study.ask`
  does both at once, so workers would queue behind each other's TPE);
- a running trial sends heartbeats while hpo's own loop runs it (only `Study.optimize` does that);
- whole studies are read and written table by table, a finished trial's per-epoch values in one
  transaction (Optuna commits every value on its own), and a new trial's parameters held back
  from `Trial.storage` until all are suggested, then written together;
- the sampler's phase counts finished trials in the study's per-thread cache, the read TPE makes
  anyway;
- every storage is wrapped so that its calls ride out outages (`hpo/_retry.py`): the wrapper keeps
  Optuna's trial cache under it and passes heartbeats on, both of which Optuna keeps private.

No other module imports a private Optuna name or touches a private attribute of an Optuna object.
tests/test_optuna_internals.py checks every name used here and says which one moved on an upgrade.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._heartbeat import BaseHeartbeat, get_heartbeat_thread, is_heartbeat_enabled
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

from hpo import _retry

# The class Optuna checks to decide whether a storage sends heartbeats: the retrying wrapper of a
# storage that does must be one too, or Optuna would silently switch heartbeats off.
_retry.register_heartbeat_base(BaseHeartbeat)


class _QuietDuringOutages(logging.Filter):
    """Drops the warning RDBStorage logs when a read fails and it tries a slower query: it blames
    too many query variables, and during an outage it is only the disconnect, which the retrying
    wrapper handles (and reports in one line if it lasts)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Caught an error from sqlalchemy") and _retry.mentions_disconnect(message))


logging.getLogger("optuna.storages._rdb.storage").addFilter(_QuietDuringOutages())


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (its number counts within the study; the id across the storage)."""
    return trial._trial_id


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage object a study reads and writes through (Optuna's cache around an RDBStorage)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    return study._study_id


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Sends the trial's heartbeats while the block runs; does nothing when heartbeats are off.

    The beating stops however the block ends, a Ctrl-C that comes while the thread starts
    included: Optuna's heartbeat thread is not a daemon, and left running it keeps the process
    from ever exiting (its `with` statement never reaches `__exit__` then).
    """
    beat = get_heartbeat_thread(trial._trial_id, study._storage)
    try:
        beat.start()
        yield
    finally:
        stop, thread = getattr(beat, "_stop_event", None), getattr(beat, "_thread", None)
        if stop is not None:
            stop.set()
        if thread is not None and thread.is_alive():
            thread.join()


def forget_cached_trials(study: optuna.Study) -> None:
    """Make the sampler read the trials afresh, as `Study.ask` does before it samples."""
    study._thread_local.cached_all_trials = None


def cached_trials(study: optuna.Study, states: tuple[TrialState, ...]) -> list[FrozenTrial]:
    """The study's trials in `states` from its per-thread cache, as samplers read them (filled from
    the storage on the first read after `forget_cached_trials`)."""
    return study._get_trials(deepcopy=False, states=states, use_cache=True)


def set_trial_user_attr(study: optuna.Study, trial: FrozenTrial, key: str, value: Any) -> None:
    """Set a user attribute from a sampler, which sees only a FrozenTrial."""
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


def rdb_storage(storage: BaseStorage) -> RDBStorage | None:
    """The RDBStorage behind `storage` (under the retrying wrapper and Optuna's cache, or itself);
    None for other storages."""
    if isinstance(storage, _retry.RetryingStorage):
        storage = storage.inner
    if isinstance(storage, _CachedStorage):
        storage = storage._backend
    return storage if isinstance(storage, RDBStorage) else None


def retrying(storage: BaseStorage, retrier: _retry.Retrier) -> BaseStorage:
    """`storage` with every call riding out outages; an RDBStorage gets Optuna's trial cache under
    the wrapper first (what `optuna.create_study` would add, had it been handed the bare storage)."""
    if isinstance(storage, RDBStorage):
        storage = _CachedStorage(storage)
    return _retry.wrap(storage, retrier, BaseHeartbeat)


# --- Heartbeats and stale trials on any storage ---------------------------------------------------
# Optuna fails dead workers' trials only on storages that subclass its private BaseHeartbeat (the
# RDB storage); the gRPC proxy's client does not. hpo claims stale trials itself (`hpo/_claims.py`)
# and gives the proxy's client heartbeats of its own (`hpo/_proxy.py`).


def stale_trial_ids(study: optuna.Study) -> list[int]:
    """The ids of the study's RUNNING trials whose heartbeats stopped; none when heartbeats are off."""
    storage = study._storage
    if not is_heartbeat_enabled(storage):
        return []
    return list(storage._get_stale_trial_ids(study._study_id))


def stale_callback(study: optuna.Study) -> Callable[[optuna.Study, FrozenTrial], None] | None:
    """What to do with a trial failed for stale heartbeats (queue its retry); None when nothing."""
    storage = study._storage
    return storage.get_heartbeat_stale_trial_callback() if is_heartbeat_enabled(storage) else None


def with_heartbeats(base: type, name: str, methods: dict[str, Any]) -> type:
    """A subclass of the storage class `base` that Optuna treats as sending heartbeats.

    `methods` holds record_heartbeat, stale_trial_ids(study_id), get_heartbeat_interval and
    get_heartbeat_stale_trial_callback; stale_trial_ids becomes Optuna's `_get_stale_trial_ids`.
    """
    namespace = dict(methods)
    namespace["_get_stale_trial_ids"] = namespace.pop("stale_trial_ids")
    return type(name, (base, BaseHeartbeat), namespace)


_GRPC_CONNECTION = ("_channel", "_stub", "_cache")  # what GrpcStorageProxy's `_setup` makes


class _OpenedOnFirstUse:
    """Stands for one part of a gRPC client's connection in a forked child, until first used."""

    def __init__(self, client: Any, part: str):
        self._client, self._part = client, part

    def __getattr__(self, name: str) -> Any:
        if self._part == "_channel" and name == "close":
            return lambda: None  # nothing opened yet: nothing to close
        client = self._client
        client.__setstate__({k: v for k, v in client.__dict__.items() if k not in _GRPC_CONNECTION})
        return getattr(getattr(client, self._part), name)


def reconnect_after_fork(client: Any) -> None:
    """In a forked child: the client (an Optuna `GrpcStorageProxy`) opens a channel of its own on
    first use; the parent's does not work here. Nothing of gRPC runs now, because a fork handler
    also runs between the fork and the exec of a subprocess started with `preexec_fn`, and gRPC
    started there can abort that child."""
    for part in _GRPC_CONNECTION:
        setattr(client, part, _OpenedOnFirstUse(client, part))


def grpc_proxy_server(storage: Any, thread_pool: Any) -> Any:
    """A gRPC server (not yet bound or started) that serves `storage` as Optuna's proxy does.

    `optuna.storages.run_grpc_proxy_server` binds, starts and blocks in one call, so a caller
    could neither report a port it cannot bind nor stop the server cleanly on SIGTERM.
    """
    import grpc
    from optuna.storages._grpc.auto_generated import api_pb2_grpc
    from optuna.storages._grpc.servicer import OptunaStorageProxyService

    # Without SO_REUSEPORT a second proxy on a port in use fails to bind instead of sharing it.
    server = grpc.server(thread_pool, options=[("grpc.so_reuseport", 0)])
    api_pb2_grpc.add_StorageServiceServicer_to_server(OptunaStorageProxyService(storage), server)
    return server


# --- Optuna's schema ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Tables:
    """The tables of Optuna's RDB schema that hpo reads and writes directly."""

    studies: sa.Table
    directions: sa.Table
    study_user_attrs: sa.Table
    study_system_attrs: sa.Table
    trials: sa.Table
    params: sa.Table
    values: sa.Table
    intermediate: sa.Table
    trial_user_attrs: sa.Table
    trial_system_attrs: sa.Table
    heartbeats: sa.Table


TABLES = Tables(
    studies=models.StudyModel.__table__,
    directions=models.StudyDirectionModel.__table__,
    study_user_attrs=models.StudyUserAttributeModel.__table__,
    study_system_attrs=models.StudySystemAttributeModel.__table__,
    trials=models.TrialModel.__table__,
    params=models.TrialParamModel.__table__,
    values=models.TrialValueModel.__table__,
    intermediate=models.TrialIntermediateValueModel.__table__,
    trial_user_attrs=models.TrialUserAttributeModel.__table__,
    trial_system_attrs=models.TrialSystemAttributeModel.__table__,
    heartbeats=models.TrialHeartbeatModel.__table__,
)

# The columns hpo reads or writes, per table (the first is the primary key, used for ordering).
COLUMNS: dict[str, tuple[str, ...]] = {
    "studies": ("study_id", "study_name"),
    "directions": ("study_direction_id", "study_id", "objective", "direction"),
    "study_user_attrs": ("study_user_attribute_id", "study_id", "key", "value_json"),
    "study_system_attrs": ("study_system_attribute_id", "study_id", "key", "value_json"),
    "trials": ("trial_id", "number", "study_id", "state", "datetime_start", "datetime_complete"),
    "params": ("param_id", "trial_id", "param_name", "param_value", "distribution_json"),
    "values": ("trial_value_id", "trial_id", "objective", "value", "value_type"),
    "intermediate": ("trial_intermediate_value_id", "trial_id", "step", "intermediate_value",
                     "intermediate_value_type"),
    "trial_user_attrs": ("trial_user_attribute_id", "trial_id", "key", "value_json"),
    "trial_system_attrs": ("trial_system_attribute_id", "trial_id", "key", "value_json"),
    "heartbeats": ("trial_heartbeat_id", "trial_id", "heartbeat"),
}


def value_to_stored(value: float) -> tuple[float | None, Any]:
    """A trial's value as Optuna stores it: (number or None, kind), so infinities survive SQL."""
    return models.TrialValueModel.value_to_stored_repr(value)


def stored_to_value(stored: float | None, kind: Any) -> float:
    return models.TrialValueModel.stored_repr_to_value(stored, kind)


def intermediate_to_stored(value: float) -> tuple[float | None, Any]:
    """An intermediate value as Optuna stores it: (number or None, kind), so NaN survives SQL."""
    return models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)


def stored_to_intermediate(stored: float | None, kind: Any) -> float:
    return models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(stored, kind)


@contextlib.contextmanager
def trial_params_held(trial: optuna.Trial, keep: Callable[[str, float, Any], None]) -> Iterator[None]:
    """Within the block, `trial.suggest_*` hands each new parameter (name, value as stored,
    distribution) to `keep` instead of the storage; the trial itself knows them at once, as after a
    write. Optuna's `Trial` writes through its `storage` attribute; every other call passes through."""
    storage = trial.storage
    trial.storage = _HeldParams(storage, keep)
    try:
        yield
    finally:
        trial.storage = storage


class _HeldParams:
    def __init__(self, storage: BaseStorage, keep: Callable[[str, float, Any], None]):
        self._storage = storage
        self._keep = keep

    def set_trial_param(self, trial_id: int, name: str, internal: float, distribution: Any) -> None:
        self._keep(name, internal, distribution)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


def value_kind(name: str) -> Any:
    """The kind of a stored trial value from its name as the database holds it."""
    return models.TrialValueModel.TrialValueType[name]


def intermediate_kind(name: str) -> Any:
    """The kind of a stored intermediate value from its name as the database holds it."""
    return models.TrialIntermediateValueModel.TrialIntermediateValueType[name]
