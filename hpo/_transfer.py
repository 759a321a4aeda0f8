"""Move a study whole: to another storage (copy), and to and from a portable file (export, import).

A study travels as a StudyRecord (`_records.py`): its name, directions and attributes, and every
trial with its number, state, values, datetimes, params with distributions, intermediate values and
attributes. Between two databases the record is read with one query per table (all reads in one
snapshot) and written table by table into Optuna's schema (one bulk insert per table), the study row
included, in one transaction on the target: a failed copy leaves nothing behind. Optuna's own
`copy_study` writes trial by trial, one transaction each. A journal file is read and written through
Optuna's storage API instead; there a failed write deletes the half-written study. The file formats
are in `_studyfile.py`. See docs/moving-studies.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.distributions import BaseDistribution, distribution_to_json, json_to_distribution
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from hpo import _optuna_internals as internals
from hpo._errors import StorageError, StudyError, first_line
from hpo._records import StudyRecord, TrialRecord
from hpo._storage import (Heartbeat, StorageURL, cut_partial_journal_record, insert_many, open_storage,
                          resolve_storage, snapshot)
from hpo._files import check_target, os_reason, replacing_all
from hpo._studyfile import MalformedFile, header, read_file, sidecar_path, to_csv, to_json

__all__ = [
    "MalformedFile", "StudyRecord", "Transfer", "TrialRecord", "copy_study", "export_study",
    "import_study", "read_file", "read_study", "sidecar_path", "to_csv", "to_json", "write_study",
]

UTC = datetime.timezone.utc
TABLES = internals.TABLES


@dataclass(frozen=True)
class Transfer:
    """What a copy, an export or an import moved, and how long it took."""

    name: str
    trials: int
    counts: dict[str, int]
    seconds: float
    files: tuple[Path, ...] = ()


# --- Reading and writing storages ----------------------------------------------------------------


def read_study(url: str | StorageURL, name: str) -> StudyRecord:
    """The whole study `name` from the storage at `url`.

    Raises StudyError when there is no such study, StorageError when the storage cannot be read.
    """
    url = resolve_storage(url)
    with _opened(url) as storage:
        rdb = internals.rdb_storage(storage)
        try:
            if rdb is not None:
                return _read_rdb(rdb.engine, name, url)
            return _read_api(storage, name, url)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot read study '{name}' from {url.masked}: {first_line(exc)}") from None


def write_study(url: str | StorageURL, record: StudyRecord) -> None:
    """Create the study `record.name` in the storage at `url` with all its trials, or nothing.

    An existing study of that name is a StudyError. Trial numbers are kept; trial ids are new.
    A trial that was RUNNING gets a heartbeat as of its start (on a database target), so the
    target's workers see it as stale, fail it and retry it once, as for a worker that died.
    """
    url = resolve_storage(url)
    with _new_file_removed_on_failure(url.path), _opened(url) as storage:
        rdb = internals.rdb_storage(storage)
        if rdb is not None:
            _write_rdb(rdb.engine, record, url)
        else:
            _write_api(storage, record, url)


@contextlib.contextmanager
def _new_file_removed_on_failure(path: Path | None) -> Iterator[None]:
    """A SQLite or journal file that the failed write created is removed (a full disk leaves an
    empty database file otherwise); a file that was there before is left to the storage."""
    created = path is not None and not path.exists()
    try:
        yield
    except BaseException:
        if created:
            for companion in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(OSError):
                    Path(f"{path}{companion}").unlink()
        raise


def copy_study(name: str, from_url: str | StorageURL, to_url: str | StorageURL,
               new_name: str | None = None) -> Transfer:
    """Copy study `name` with everything in it from one storage to another (as `new_name`)."""
    started = time.perf_counter()
    record = read_study(from_url, name)
    record = dataclasses.replace(record, name=new_name or name)
    write_study(to_url, record)
    return Transfer(record.name, len(record.trials), record.counts(), time.perf_counter() - started)


@contextlib.contextmanager
def _opened(url: StorageURL) -> Iterator[BaseStorage]:
    storage = open_storage(url, Heartbeat(interval=None))
    try:
        yield storage
    finally:
        rdb = internals.rdb_storage(storage)
        if rdb is not None:
            rdb.engine.dispose()


def _missing(name: str, url: StorageURL) -> StudyError:
    return StudyError(f"no study named '{name}' in {url.masked}; `hpo study list` shows the studies there")


def _exists(name: str, url: StorageURL) -> StudyError:
    return StudyError(f"a study named '{name}' already exists in {url.masked}; "
                      "choose another name with --name NEW_NAME, or delete that study first")


def _read_rdb(engine: sa.Engine, name: str, url: StorageURL) -> StudyRecord:
    with snapshot(engine) as db:
        study_id = db.execute(sa.select(TABLES.studies.c.study_id).where(TABLES.studies.c.study_name == name)).scalar()
        if study_id is None:
            raise _missing(name, url)
        directions = list(db.execute(sa.select(TABLES.directions.c.direction)
                                     .where(TABLES.directions.c.study_id == study_id)
                                     .order_by(TABLES.directions.c.objective)).scalars())
        user_attrs = _read_attrs(db, TABLES.study_user_attrs, TABLES.study_user_attrs.c.study_id == study_id)
        system_attrs = _read_attrs(db, TABLES.study_system_attrs, TABLES.study_system_attrs.c.study_id == study_id)

        trials: dict[int, TrialRecord] = {}
        for row in db.execute(sa.select(TABLES.trials).where(TABLES.trials.c.study_id == study_id)
                              .order_by(TABLES.trials.c.number, TABLES.trials.c.trial_id)):
            trials[row.trial_id] = TrialRecord(row.number, row.state, None, _from_db(row.datetime_start),
                                               _from_db(row.datetime_complete))
        study_trials = sa.select(TABLES.trials.c.trial_id).where(TABLES.trials.c.study_id == study_id)

        def rows(table: sa.Table, *order: sa.Column) -> Iterable[sa.Row]:
            return db.execute(sa.select(table).where(table.c.trial_id.in_(study_trials)).order_by(*order))

        distributions: dict[str, BaseDistribution] = {}  # one object per distinct JSON text
        for row in rows(TABLES.params, TABLES.params.c.param_id):
            trial = trials[row.trial_id]
            dist = distributions.get(row.distribution_json)
            if dist is None:
                dist = distributions[row.distribution_json] = json_to_distribution(row.distribution_json)
            trial.params[row.param_name] = dist.to_external_repr(row.param_value)
            trial.distributions[row.param_name] = dist
        for row in rows(TABLES.values, TABLES.values.c.trial_id, TABLES.values.c.objective):
            trial = trials[row.trial_id]
            trial.values = (trial.values or []) + [internals.stored_to_value(row.value, row.value_type)]
        for row in rows(TABLES.intermediate, TABLES.intermediate.c.trial_id, TABLES.intermediate.c.step):
            trials[row.trial_id].intermediate_values[row.step] = internals.stored_to_intermediate(
                row.intermediate_value, row.intermediate_value_type)
        for row in rows(TABLES.trial_user_attrs, TABLES.trial_user_attrs.c.trial_user_attribute_id):
            trials[row.trial_id].user_attrs[row.key] = json.loads(row.value_json)
        for row in rows(TABLES.trial_system_attrs, TABLES.trial_system_attrs.c.trial_system_attribute_id):
            trials[row.trial_id].system_attrs[row.key] = json.loads(row.value_json)
    return StudyRecord(name, directions, user_attrs, system_attrs, list(trials.values()))


def _read_attrs(db: sa.Connection, table: sa.Table, where: Any) -> dict[str, Any]:
    primary = table.primary_key.columns.values()[0]
    return {row.key: json.loads(row.value_json)
            for row in db.execute(sa.select(table.c.key, table.c.value_json).where(where).order_by(primary))}


def _read_api(storage: BaseStorage, name: str, url: StorageURL) -> StudyRecord:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        raise _missing(name, url) from None
    trials = [
        TrialRecord(t.number, t.state, list(t.values) if t.values is not None else None,
                    _aware(t.datetime_start), _aware(t.datetime_complete), dict(t.params),
                    dict(t.distributions), dict(t.intermediate_values), dict(t.user_attrs),
                    dict(t.system_attrs))
        for t in sorted(storage.get_all_trials(study_id, deepcopy=False), key=lambda t: t.number)
    ]
    return StudyRecord(name, list(storage.get_study_directions(study_id)),
                       dict(storage.get_study_user_attrs(study_id)),
                       dict(storage.get_study_system_attrs(study_id)), trials)


def _write_rdb(engine: sa.Engine, record: StudyRecord, url: StorageURL) -> None:
    name = record.name
    try:
        with engine.begin() as db:
            if db.execute(sa.select(TABLES.studies.c.study_id).where(TABLES.studies.c.study_name == name)).first():
                raise _exists(name, url)
            study_id = db.execute(sa.insert(TABLES.studies).values(study_name=name)).inserted_primary_key[0]
            insert_many(db, TABLES.directions, [{"study_id": study_id, "objective": i, "direction": d}
                                     for i, d in enumerate(record.directions)])
            insert_many(db, TABLES.study_user_attrs, _attr_rows(record.user_attrs, study_id=study_id))
            insert_many(db, TABLES.study_system_attrs, _attr_rows(record.system_attrs, study_id=study_id))
            trial_ids = _insert_trials(db, study_id, record.trials)

            params, values, steps, user_attrs, system_attrs, heartbeats = [], [], [], [], [], []
            for trial_id, trial in zip(trial_ids, record.trials):
                for param, value in trial.params.items():
                    dist = trial.distributions[param]
                    params.append({"trial_id": trial_id, "param_name": param,
                                   "param_value": dist.to_internal_repr(value),
                                   "distribution_json": distribution_to_json(dist)})
                for objective, value in enumerate(trial.values or ()):
                    stored, kind = internals.value_to_stored(value)
                    values.append({"trial_id": trial_id, "objective": objective, "value": stored,
                                   "value_type": kind})
                for step, value in trial.intermediate_values.items():
                    stored, kind = internals.intermediate_to_stored(value)
                    steps.append({"trial_id": trial_id, "step": step, "intermediate_value": stored,
                                  "intermediate_value_type": kind})
                user_attrs += _attr_rows(trial.user_attrs, trial_id=trial_id)
                system_attrs += _attr_rows(trial.system_attrs, trial_id=trial_id)
                if trial.state == TrialState.RUNNING:
                    # Nobody runs this trial in the target: make it look like a dead worker's.
                    start = trial.datetime_start or datetime.datetime.now(UTC)
                    heartbeats.append({"trial_id": trial_id, "heartbeat": _to_db(start)})
            insert_many(db, TABLES.params, params)
            insert_many(db, TABLES.values, values)
            insert_many(db, TABLES.intermediate, steps)
            insert_many(db, TABLES.trial_user_attrs, user_attrs)
            insert_many(db, TABLES.trial_system_attrs, system_attrs)
            insert_many(db, TABLES.heartbeats, heartbeats)
    except IntegrityError:
        if _study_exists(engine, name):  # another copy took the name between our check and insert
            raise _exists(name, url) from None
        raise
    except (SQLAlchemyError, engine.dialect.loaded_dbapi.Error) as exc:  # COPY raises the driver's errors
        raise StorageError(f"cannot write study '{name}' to {url.masked}, nothing was written: "
                           f"{first_line(exc)}") from None


def _study_exists(engine: sa.Engine, name: str) -> bool:
    with engine.connect() as db:
        studies = TABLES.studies
        return db.execute(sa.select(studies.c.study_id).where(studies.c.study_name == name)).first() is not None


def _insert_trials(db: sa.Connection, study_id: int, trials: list[TrialRecord]) -> list[int]:
    """Insert the trials in number order; their new ids, in the same order."""
    rows = [{"number": t.number, "study_id": study_id, "state": t.state,
             "datetime_start": _to_db(t.datetime_start), "datetime_complete": _to_db(t.datetime_complete)}
            for t in trials]
    if not rows:
        return []
    if db.dialect.insert_executemany_returning_sort_by_parameter_order:
        statement = sa.insert(TABLES.trials).returning(TABLES.trials.c.trial_id, sort_by_parameter_order=True)
        return list(db.execute(statement, rows).scalars())
    # MySQL has no INSERT … RETURNING: one statement per trial, still in the one transaction.
    return [db.execute(sa.insert(TABLES.trials).values(**row)).inserted_primary_key[0] for row in rows]


def _attr_rows(attrs: dict[str, Any], **owner: int) -> list[dict[str, Any]]:
    return [{**owner, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]


def _write_api(storage: BaseStorage, record: StudyRecord, url: StorageURL) -> None:
    name = record.name
    try:
        study_id = storage.create_new_study(record.directions, name)
    except optuna.exceptions.DuplicatedStudyError:
        raise _exists(name, url) from None
    except OSError as exc:  # a journal file on a full disk
        cut_partial_journal_record(url.path)
        raise StorageError(f"cannot write study '{name}' to {url.masked}: {os_reason(exc)}") from None
    try:
        for key, value in record.user_attrs.items():
            storage.set_study_user_attr(study_id, key, value)
        for key, value in record.system_attrs.items():
            storage.set_study_system_attr(study_id, key, value)
        for trial in record.trials:  # in number order, so the storage numbers them the same
            storage.create_new_trial(study_id, template_trial=_frozen(trial))
    except BaseException as exc:
        cut_partial_journal_record(url.path)
        try:
            storage.delete_study(study_id)  # not one transaction here: remove what was written
        except OSError:
            cut_partial_journal_record(url.path)
            if not isinstance(exc, Exception):  # Ctrl-C stays Ctrl-C
                raise exc from None
            # What stopped the write (a full disk) stops its undoing too: say what is left.
            raise StorageError(f"cannot write study '{name}' to {url.masked}: {_why(exc)}; the part written could "
                               f"not be removed: once there is room, delete study '{name}' there "
                               "(`hpo study delete`)") from None
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write study '{name}' to {url.masked}, nothing was kept: "
                               f"{os_reason(exc)}") from None
        raise


def _why(exc: BaseException) -> str:
    return os_reason(exc) if isinstance(exc, OSError) else first_line(exc)


def _frozen(trial: TrialRecord) -> FrozenTrial:
    return FrozenTrial(
        number=trial.number, state=trial.state, value=None, values=trial.values,
        datetime_start=trial.datetime_start, datetime_complete=trial.datetime_complete,
        params=trial.params, distributions=trial.distributions, user_attrs=trial.user_attrs,
        system_attrs=trial.system_attrs, intermediate_values=trial.intermediate_values, trial_id=-1)


# Optuna's tables hold naive UTC; its FrozenTrials hold naive local time.

def _from_db(value: datetime.datetime | None) -> datetime.datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _to_db(value: datetime.datetime | None) -> datetime.datetime | None:
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None)


def _aware(value: datetime.datetime | None) -> datetime.datetime | None:
    return None if value is None else value.astimezone(UTC)


# --- Files ---------------------------------------------------------------------------------------


def export_study(name: str, url: str | StorageURL, path: Path, fmt: str) -> Transfer:
    """Write study `name` to `path` as `fmt`: "json", or "csv" plus its sidecar (see `sidecar_path`).

    Files are written whole or not at all (temporary files renamed into place once all are
    written); a target that is not a regular file, or a full disk, is an OutputError of one line.
    """
    started = time.perf_counter()
    path = Path(path)
    files: tuple[Path, ...] = (path, sidecar_path(path)) if fmt == "csv" else (path,)
    for file in files:  # refused before the study is read, not after
        check_target(file)
    record = read_study(url, name)
    texts = [to_csv(record), json.dumps(header(record), indent=2) + "\n"] if fmt == "csv" else [to_json(record)]
    with replacing_all(files) as temporaries:
        for temporary, text in zip(temporaries, texts):
            temporary.write_bytes(text.encode("utf-8"))
    return Transfer(name, len(record.trials), record.counts(), time.perf_counter() - started, files)


def import_study(path: Path, url: str | StorageURL, name: str | None = None) -> Transfer:
    """Create a study from an export (JSON, or CSV with its sidecar) in the storage at `url`.

    The file is checked whole before anything is written; a malformed one is a StudyError of one
    line naming the file and the fault. Files are parsed as JSON and CSV only, never unpickled.
    """
    started = time.perf_counter()
    try:
        record = read_file(path)
    except MalformedFile as exc:
        raise StudyError(f"cannot import {path}: {exc}") from None
    if name:
        record = dataclasses.replace(record, name=name)
    write_study(url, record)
    return Transfer(record.name, len(record.trials), record.counts(), time.perf_counter() - started, (path,))


