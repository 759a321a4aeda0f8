"""Every private Optuna name hpo uses is still there and still shaped as hpo expects.

hpo/_optuna_internals.py is the only module that touches Optuna's private API. On an Optuna upgrade
these tests name exactly what moved, so that one module is all there is to fix.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable

import optuna
import pytest
import sqlalchemy as sa
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import TrialState

from hpo import _claims
from hpo import _optuna_internals as internals
from hpo._retry import Retrier
from helpers import REPO


@pytest.fixture
def study(tmp_path) -> optuna.Study:
    return optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'i.db'}", direction="maximize")


def _params(function: Callable) -> list[str]:
    return list(inspect.signature(function).parameters)


def _heartbeat_thread(study: optuna.Study) -> str | None:
    from optuna.storages._heartbeat import get_heartbeat_thread

    if _params(get_heartbeat_thread)[:2] != ["trial_id", "storage"]:
        return f"its parameters are now {_params(get_heartbeat_thread)}"
    thread = get_heartbeat_thread(0, study._storage)
    if not (hasattr(thread, "__enter__") and hasattr(thread, "__exit__")):
        return "it no longer returns a context manager"
    return None


def _storage_attr(study: optuna.Study) -> str | None:
    return None if isinstance(study._storage, BaseStorage) else f"it is a {type(study._storage).__name__}"


def _study_id_attr(study: optuna.Study) -> str | None:
    if study._storage.get_study_id_from_name("s") != study._study_id:
        return "it is not the storage's id of the study"
    return None


def _cached_trials(study: optuna.Study) -> str | None:
    if not hasattr(study._thread_local, "cached_all_trials"):
        return "the study's thread-local state has no cached_all_trials"
    study.ask()
    internals.forget_cached_trials(study)
    if len(internals.cached_trials(study, (TrialState.RUNNING,))) != 1:
        return "Study._get_trials(use_cache=True) no longer fills the per-thread cache from the storage"
    study._thread_local.cached_all_trials = []  # a stale cache: what the sampler reads now
    if internals.cached_trials(study, (TrialState.RUNNING,)):
        return "Study._get_trials(use_cache=True) no longer reads the per-thread cache"
    if len(study.get_trials(deepcopy=False)) != 1:
        return "Study.get_trials now reads the per-thread cache"
    return None


def _trial_storage_attr(study: optuna.Study) -> str | None:
    trial = study.ask()
    if trial.storage is not study._storage:
        return "Trial.storage is not the study's storage"
    kept = []
    with internals.trial_params_held(trial, lambda *row: kept.append(row)):
        value = trial.suggest_float("x", 0.0, 1.0)
        again = trial.suggest_float("x", 0.0, 1.0)
    if [row[:2] for row in kept] != [("x", value)] or again != value:
        return "Trial.suggest_* no longer writes a new parameter through Trial.storage.set_trial_param"
    if study._storage.get_trial(trial._trial_id).params or trial.params != {"x": value}:
        return "a held parameter reached the storage, or the trial does not know it"
    return None


def _trial_id_attr(study: optuna.Study) -> str | None:
    trial = study.ask()
    frozen = study.get_trials(deepcopy=False)[0]
    if not (trial._trial_id == frozen._trial_id == study._storage.get_trial_id_from_study_id_trial_number(
            study._study_id, trial.number)):
        return "Trial._trial_id or FrozenTrial._trial_id is not the storage's trial id"
    return None


def _cached_storage_backend(study: optuna.Study) -> str | None:
    backend = getattr(study._storage, "_backend", None)
    if not isinstance(backend, RDBStorage):
        return f"the study's storage ({type(study._storage).__name__}) has no _backend RDBStorage"
    return None


def _models(study: optuna.Study) -> str | None:
    from optuna.storages._rdb import models  # noqa: F401 - the import itself is what is checked

    problems = []
    for name, columns in internals.COLUMNS.items():
        table = getattr(internals.TABLES, name)
        missing = [c for c in columns if c not in table.c]
        if missing:
            problems.append(f"table {table.name} lost {missing}")
        elif table.primary_key.columns.values()[0].name != columns[0]:
            problems.append(f"table {table.name}'s primary key is no longer {columns[0]}")
    engine = study._storage._backend.engine
    actual = set(sa.inspect(engine).get_table_names())
    gone = {getattr(internals.TABLES, name).name for name in internals.COLUMNS} - actual
    if gone:
        problems.append(f"the schema has no tables {sorted(gone)}")
    return "; ".join(problems) or None


def _value_codecs(study: optuna.Study) -> str | None:
    from optuna.storages._rdb.models import TrialIntermediateValueModel, TrialValueModel

    for value in (0.5, math.inf, -math.inf):
        if internals.stored_to_value(*internals.value_to_stored(value)) != value:
            return f"TrialValueModel no longer round-trips {value}"
    for value in (0.5, math.inf, -math.inf):
        if internals.stored_to_intermediate(*internals.intermediate_to_stored(value)) != value:
            return f"TrialIntermediateValueModel no longer round-trips {value}"
    if not math.isnan(internals.stored_to_intermediate(*internals.intermediate_to_stored(math.nan))):
        return "TrialIntermediateValueModel no longer round-trips NaN"
    for function in (TrialValueModel.stored_repr_to_value,
                     TrialIntermediateValueModel.stored_repr_to_intermediate_value):
        if len(_params(function)) != 2:
            return f"{function.__qualname__} now takes {_params(function)}"
    return None


def _stale_trials(study: optuna.Study) -> str | None:
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    if _params(BaseHeartbeat._get_stale_trial_ids) != ["self", "study_id"]:
        return f"BaseHeartbeat._get_stale_trial_ids now takes {_params(BaseHeartbeat._get_stale_trial_ids)}"
    if _params(is_heartbeat_enabled) != ["storage"]:
        return f"is_heartbeat_enabled now takes {_params(is_heartbeat_enabled)}"
    if is_heartbeat_enabled(study._storage) or internals.stale_trial_ids(study) != []:
        return "a storage without heartbeats now counts as sending them"
    return None


def _grpc_servicer(study: optuna.Study) -> str | None:
    from optuna.storages._grpc.auto_generated import api_pb2_grpc
    from optuna.storages._grpc.servicer import OptunaStorageProxyService

    if not hasattr(api_pb2_grpc, "add_StorageServiceServicer_to_server"):
        return "api_pb2_grpc.add_StorageServiceServicer_to_server is gone"
    if _params(OptunaStorageProxyService.__init__) != ["self", "storage"]:
        return f"OptunaStorageProxyService now takes {_params(OptunaStorageProxyService.__init__)}"
    return None


def _cached_storage_class(study: optuna.Study) -> str | None:
    from optuna.storages._cached_storage import _CachedStorage
    from optuna.storages._heartbeat import BaseHeartbeat

    rdb = study._storage._backend
    cached = _CachedStorage(rdb)
    if cached._backend is not rdb:
        return "its constructor no longer takes the RDBStorage it caches"
    if not isinstance(cached, BaseHeartbeat):
        return "it no longer passes heartbeats on"
    return None


def _heartbeat_base(study: optuna.Study) -> str | None:
    """Optuna decides whether heartbeats are on by this class: the retrying wrapper must pass."""
    from optuna.storages._heartbeat import BaseHeartbeat, HeartbeatThread, get_heartbeat_thread

    rdb = RDBStorage(study._storage._backend.url, heartbeat_interval=10)
    wrapped = internals.retrying(rdb, Retrier("s", 5))
    if not isinstance(rdb, BaseHeartbeat):
        return "RDBStorage no longer derives from it"
    if not isinstance(wrapped, BaseHeartbeat) or getattr(type(wrapped), "__abstractmethods__", None):
        return "the retrying wrapper does not implement it whole"
    if not isinstance(get_heartbeat_thread(0, wrapped), HeartbeatThread):
        return "Optuna does not see heartbeats on through the retrying wrapper"
    missing = [name for name in BaseHeartbeat.__abstractmethods__ if name not in vars(type(wrapped))]
    if missing:
        return f"the wrapper does not forward {missing}"
    return None


def _fallback_warning(study: optuna.Study) -> str | None:
    """hpo silences one misleading warning by its logger's name and its first words."""
    from optuna.storages._rdb import storage as module

    if module._logger.name != "optuna.storages._rdb.storage":
        return f"the logger is now {module._logger.name!r}"
    if "Caught an error from sqlalchemy" not in inspect.getsource(RDBStorage._get_trials):
        return "RDBStorage._get_trials words its fallback warning differently"
    return None


PRIVATE = {
    "optuna.storages._heartbeat.get_heartbeat_thread": _heartbeat_thread,
    "optuna.Study._storage": _storage_attr,
    "optuna.Study._study_id": _study_id_attr,
    "optuna.Study._thread_local.cached_all_trials": _cached_trials,
    "optuna.Trial._trial_id and FrozenTrial._trial_id": _trial_id_attr,
    "optuna.Trial.storage (what suggest_* writes through)": _trial_storage_attr,
    "optuna.storages._cached_storage._CachedStorage._backend": _cached_storage_backend,
    "optuna.storages._cached_storage._CachedStorage (constructor)": _cached_storage_class,
    "optuna.storages._heartbeat.BaseHeartbeat": _heartbeat_base,
    "optuna.storages._rdb.storage._logger (the fallback warning)": _fallback_warning,
    "optuna.storages._rdb.models (tables and columns)": _models,
    "optuna.storages._rdb.models value conversions": _value_codecs,
    "optuna.storages._heartbeat.BaseHeartbeat._get_stale_trial_ids, is_heartbeat_enabled": _stale_trials,
    "optuna.storages._grpc (servicer and its registration)": _grpc_servicer,
}


@pytest.mark.parametrize("name", PRIVATE)
def test_private_optuna_name_is_still_there(name, study):
    try:
        problem = PRIVATE[name](study)
    except (ImportError, AttributeError, TypeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        pytest.fail(f"{name} is gone or changed ({problem}); update hpo/_optuna_internals.py")


def test_the_internals_work_together_on_a_real_study(study):
    """Claim tickets, start one, heartbeat, set an attribute from the sampler's side."""
    study.enqueue_trial({"x": 2.0})
    study.enqueue_trial({})
    claims = _claims.claims_for(internals.study_storage(study))
    queued, fresh = (internals.trial_id(t) for t in study.get_trials(deepcopy=False))
    assert claims.claim(queued) and claims.claim(fresh) and not claims.claim(fresh)
    trials = {internals.trial_id(t): t for t in study.get_trials(deepcopy=False)}
    assert trials[queued].state == trials[fresh].state == TrialState.RUNNING
    assert trials[queued].number == 0 and trials[fresh].number == 1
    internals.forget_cached_trials(study)
    trial = optuna.Trial(study, queued)
    with internals.heartbeat(study, trial):
        assert trial.suggest_float("x", 0, 3) == 2.0
    internals.set_trial_user_attr(study, trials[fresh], "phase", "random")
    assert study.get_trials(deepcopy=False)[1].user_attrs == {"phase": "random"}
    assert internals.study_id(study) == internals.study_storage(study).get_study_id_from_name("s")
    assert internals.rdb_storage(internals.study_storage(study)) is not None
    assert internals.rdb_storage(optuna.storages.InMemoryStorage()) is None


PRIVATE_USE = re.compile(
    r"from optuna[\w.]*\._|import optuna[\w.]*\._|optuna(\.\w+)*\._[a-z]"
    r"|(?<!hpo)\._(storage|study_id|trial_id|thread_local|pop_waiting_trial_id|get_trials|backend"
    r"|cached_frozen_trial)\b")


def test_no_other_module_touches_optunas_private_api():
    offenders = []
    for path in sorted((REPO / "hpo").rglob("*.py")):
        if path.name == "_optuna_internals.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if PRIVATE_USE.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "private Optuna API outside hpo/_optuna_internals.py:\n" + "\n".join(offenders)


def test_a_storage_given_heartbeats_has_its_stale_trials_failed_by_optuna():
    """`with_heartbeats` makes a storage class Optuna treats as sending heartbeats (the proxy's client)."""
    stale: list[int] = []
    cls = internals.with_heartbeats(optuna.storages.InMemoryStorage, "Beating", {
        "record_heartbeat": lambda self, trial_id: None,
        "stale_trial_ids": lambda self, study_id: list(stale),
        "get_heartbeat_interval": lambda self: 1,
        "get_heartbeat_stale_trial_callback": lambda self: None})
    study = optuna.create_study(storage=cls())
    trial = study.ask()
    stale.append(internals.trial_id(trial))
    assert internals.stale_trial_ids(study) == stale
    optuna.storages.fail_stale_trials(study)
    assert study.trials[0].state == TrialState.FAIL


def test_the_proxy_server_serves_a_storage_to_optunas_client():
    import socket
    from concurrent.futures import ThreadPoolExecutor

    server = internals.grpc_proxy_server(optuna.storages.InMemoryStorage(), ThreadPoolExecutor(2))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert server.add_insecure_port(f"127.0.0.1:{port}") == port
    server.start()
    try:
        client = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=port)
        client.wait_server_ready(timeout=30)
        study = optuna.create_study(study_name="served", storage=client)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        assert len(study.trials) == 2
        client.close()
    finally:
        server.stop(0).wait()


def test_a_ctrl_c_while_the_heartbeat_thread_starts_leaves_no_thread_behind(tmp_path, monkeypatch):
    """Optuna's heartbeat thread is no daemon: one left beating keeps the process from exiting."""
    import threading

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'h.db'}", heartbeat_interval=1)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    before = set(threading.enumerate())
    start = threading.Thread.start

    def interrupted_start(self):  # the thread starts, and Ctrl-C comes while start() waits for it
        start(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", interrupted_start)
    with pytest.raises(KeyboardInterrupt):
        with internals.heartbeat(study, trial):
            pass
    monkeypatch.undo()
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    for thread in left:
        thread.join(timeout=5)
    assert not [t for t in left if t.is_alive()], "the heartbeat thread is still beating"
    assert storage.get_trial(internals.trial_id(trial)).state == TrialState.RUNNING  # only the thread stopped
