"""Move a study whole: to another storage (copy), and to and from a portable file (export, import).

A study travels as a StudyRecord: its name, directions and attributes, and every trial with its
number, state, values, datetimes, params with distributions, intermediate values and attributes.
Between two databases the record is read with one query per table (all reads in one snapshot) and
written table by table into Optuna's schema (SQLAlchemy Core executemany; COPY on PostgreSQL), the
study row included, in one transaction on the target: a failed copy leaves nothing behind. Optuna's
own `copy_study` writes trial by trial, one transaction each. A journal file (`journal:PATH`) is read
and written through Optuna's storage API instead; there a failed write deletes the half-written study.

Files: JSON holds everything in one file; CSV holds one row per trial, with the study-level data
in a sidecar `NAME.study.json` next to it. See docs/moving-studies.md.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import enum
import io
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.distributions import BaseDistribution, distribution_to_json, json_to_distribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._rdb import models
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from hpo import __version__
from hpo._errors import StorageError, StudyError
from hpo._storage import Heartbeat, mask_url, open_storage

FORMAT = "hpo-study"
FORMAT_VERSION = 1
SIDECAR_SUFFIX = ".study.json"
UTC = datetime.timezone.utc

STUDIES = models.StudyModel.__table__
DIRECTIONS = models.StudyDirectionModel.__table__
STUDY_USER_ATTRS = models.StudyUserAttributeModel.__table__
STUDY_SYSTEM_ATTRS = models.StudySystemAttributeModel.__table__
TRIALS = models.TrialModel.__table__
PARAMS = models.TrialParamModel.__table__
VALUES = models.TrialValueModel.__table__
INTERMEDIATE = models.TrialIntermediateValueModel.__table__
TRIAL_USER_ATTRS = models.TrialUserAttributeModel.__table__
TRIAL_SYSTEM_ATTRS = models.TrialSystemAttributeModel.__table__
HEARTBEATS = models.TrialHeartbeatModel.__table__


@dataclass
class TrialRecord:
    """One trial as it travels. Datetimes are timezone-aware UTC; params in their external form."""

    number: int
    state: TrialState
    values: list[float] | None
    datetime_start: datetime.datetime | None
    datetime_complete: datetime.datetime | None
    params: dict[str, Any] = field(default_factory=dict)
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    intermediate_values: dict[int, float] = field(default_factory=dict)
    user_attrs: dict[str, Any] = field(default_factory=dict)
    system_attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyRecord:
    """A whole study, independent of any storage; trials sorted by number."""

    name: str
    directions: list[StudyDirection]
    user_attrs: dict[str, Any]
    system_attrs: dict[str, Any]
    trials: list[TrialRecord]

    def counts(self) -> dict[str, int]:
        counts = {state.name: 0 for state in TrialState}
        for trial in self.trials:
            counts[trial.state.name] += 1
        return counts


@dataclass(frozen=True)
class Transfer:
    """What a copy, an export or an import moved, and how long it took."""

    name: str
    trials: int
    counts: dict[str, int]
    seconds: float
    files: tuple[Path, ...] = ()


# --- Reading and writing storages ----------------------------------------------------------------


def read_study(url: str, name: str) -> StudyRecord:
    """The whole study `name` from the storage at `url`.

    Raises StudyError when there is no such study, StorageError when the storage cannot be read.
    """
    with _opened(url) as storage:
        try:
            if isinstance(storage, RDBStorage):
                return _read_rdb(storage.engine, name, url)
            return _read_api(storage, name, url)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot read study '{name}' from {mask_url(url)}: {_first_line(exc)}") from None


def write_study(url: str, record: StudyRecord) -> None:
    """Create the study `record.name` in the storage at `url` with all its trials, or nothing.

    An existing study of that name is a StudyError. Trial numbers are kept; trial ids are new.
    A trial that was RUNNING gets a heartbeat as of its start (on a database target), so the
    target's workers see it as stale, fail it and retry it once, as for a worker that died.
    """
    with _opened(url) as storage:
        if isinstance(storage, RDBStorage):
            _write_rdb(storage.engine, record, url)
        else:
            _write_api(storage, record, url)


def copy_study(name: str, from_url: str, to_url: str, new_name: str | None = None) -> Transfer:
    """Copy study `name` with everything in it from one storage to another (as `new_name`)."""
    started = time.perf_counter()
    record = read_study(from_url, name)
    record = dataclasses.replace(record, name=new_name or name)
    write_study(to_url, record)
    return Transfer(record.name, len(record.trials), record.counts(), time.perf_counter() - started)


@contextlib.contextmanager
def _opened(url: str) -> Iterator[BaseStorage]:
    storage = open_storage(url, Heartbeat(interval=None))
    try:
        yield storage
    finally:
        if isinstance(storage, RDBStorage):
            storage.engine.dispose()


def _missing(name: str, url: str) -> StudyError:
    return StudyError(f"no study named '{name}' in {mask_url(url)}; `hpo study list` shows the studies there")


def _exists(name: str, url: str) -> StudyError:
    return StudyError(f"a study named '{name}' already exists in {mask_url(url)}; "
                      "choose another name with --name NEW_NAME, or delete that study first")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextlib.contextmanager
def _snapshot(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection whose reads all see the same moment, while workers may keep writing."""
    backend = engine.dialect.name
    options = {"isolation_level": "REPEATABLE READ"} if backend in ("postgresql", "mysql", "mariadb") else {}
    with engine.connect().execution_options(**options) as connection:
        if backend == "sqlite":
            connection.exec_driver_sql("BEGIN")  # pysqlite opens no transaction for reads by itself
        try:
            yield connection
        finally:
            connection.rollback()


def _read_rdb(engine: sa.Engine, name: str, url: str) -> StudyRecord:
    with _snapshot(engine) as db:
        study_id = db.execute(sa.select(STUDIES.c.study_id).where(STUDIES.c.study_name == name)).scalar()
        if study_id is None:
            raise _missing(name, url)
        directions = list(db.execute(sa.select(DIRECTIONS.c.direction)
                                     .where(DIRECTIONS.c.study_id == study_id)
                                     .order_by(DIRECTIONS.c.objective)).scalars())
        user_attrs = _read_attrs(db, STUDY_USER_ATTRS, STUDY_USER_ATTRS.c.study_id == study_id)
        system_attrs = _read_attrs(db, STUDY_SYSTEM_ATTRS, STUDY_SYSTEM_ATTRS.c.study_id == study_id)

        trials: dict[int, TrialRecord] = {}
        for row in db.execute(sa.select(TRIALS).where(TRIALS.c.study_id == study_id)
                              .order_by(TRIALS.c.number, TRIALS.c.trial_id)):
            trials[row.trial_id] = TrialRecord(row.number, row.state, None, _from_db(row.datetime_start),
                                               _from_db(row.datetime_complete))
        study_trials = sa.select(TRIALS.c.trial_id).where(TRIALS.c.study_id == study_id)

        def rows(table: sa.Table, *order: sa.Column) -> Iterable[sa.Row]:
            return db.execute(sa.select(table).where(table.c.trial_id.in_(study_trials)).order_by(*order))

        distributions: dict[str, BaseDistribution] = {}  # one object per distinct JSON text
        for row in rows(PARAMS, PARAMS.c.param_id):
            trial = trials[row.trial_id]
            dist = distributions.get(row.distribution_json)
            if dist is None:
                dist = distributions[row.distribution_json] = json_to_distribution(row.distribution_json)
            trial.params[row.param_name] = dist.to_external_repr(row.param_value)
            trial.distributions[row.param_name] = dist
        for row in rows(VALUES, VALUES.c.trial_id, VALUES.c.objective):
            trial = trials[row.trial_id]
            trial.values = (trial.values or []) + [
                models.TrialValueModel.stored_repr_to_value(row.value, row.value_type)]
        for row in rows(INTERMEDIATE, INTERMEDIATE.c.trial_id, INTERMEDIATE.c.step):
            trials[row.trial_id].intermediate_values[row.step] = (
                models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(
                    row.intermediate_value, row.intermediate_value_type))
        for row in rows(TRIAL_USER_ATTRS, TRIAL_USER_ATTRS.c.trial_user_attribute_id):
            trials[row.trial_id].user_attrs[row.key] = json.loads(row.value_json)
        for row in rows(TRIAL_SYSTEM_ATTRS, TRIAL_SYSTEM_ATTRS.c.trial_system_attribute_id):
            trials[row.trial_id].system_attrs[row.key] = json.loads(row.value_json)
    return StudyRecord(name, directions, user_attrs, system_attrs, list(trials.values()))


def _read_attrs(db: sa.Connection, table: sa.Table, where: Any) -> dict[str, Any]:
    primary = table.primary_key.columns.values()[0]
    return {row.key: json.loads(row.value_json)
            for row in db.execute(sa.select(table.c.key, table.c.value_json).where(where).order_by(primary))}


def _read_api(storage: BaseStorage, name: str, url: str) -> StudyRecord:
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


def _write_rdb(engine: sa.Engine, record: StudyRecord, url: str) -> None:
    name = record.name
    try:
        with engine.begin() as db:
            if db.execute(sa.select(STUDIES.c.study_id).where(STUDIES.c.study_name == name)).first():
                raise _exists(name, url)
            study_id = db.execute(sa.insert(STUDIES).values(study_name=name)).inserted_primary_key[0]
            _insert(db, DIRECTIONS, [{"study_id": study_id, "objective": i, "direction": d}
                                     for i, d in enumerate(record.directions)])
            _insert(db, STUDY_USER_ATTRS, _attr_rows(record.user_attrs, study_id=study_id))
            _insert(db, STUDY_SYSTEM_ATTRS, _attr_rows(record.system_attrs, study_id=study_id))
            trial_ids = _insert_trials(db, study_id, record.trials)

            params, values, steps, user_attrs, system_attrs, heartbeats = [], [], [], [], [], []
            for trial_id, trial in zip(trial_ids, record.trials):
                for param, value in trial.params.items():
                    dist = trial.distributions[param]
                    params.append({"trial_id": trial_id, "param_name": param,
                                   "param_value": dist.to_internal_repr(value),
                                   "distribution_json": distribution_to_json(dist)})
                for objective, value in enumerate(trial.values or ()):
                    stored, kind = models.TrialValueModel.value_to_stored_repr(value)
                    values.append({"trial_id": trial_id, "objective": objective, "value": stored,
                                   "value_type": kind})
                for step, value in trial.intermediate_values.items():
                    stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
                    steps.append({"trial_id": trial_id, "step": step, "intermediate_value": stored,
                                  "intermediate_value_type": kind})
                user_attrs += _attr_rows(trial.user_attrs, trial_id=trial_id)
                system_attrs += _attr_rows(trial.system_attrs, trial_id=trial_id)
                if trial.state == TrialState.RUNNING:
                    # Nobody runs this trial in the target: make it look like a dead worker's.
                    start = trial.datetime_start or datetime.datetime.now(UTC)
                    heartbeats.append({"trial_id": trial_id, "heartbeat": _to_db(start)})
            _insert(db, PARAMS, params)
            _insert(db, VALUES, values)
            _insert(db, INTERMEDIATE, steps)
            _insert(db, TRIAL_USER_ATTRS, user_attrs)
            _insert(db, TRIAL_SYSTEM_ATTRS, system_attrs)
            _insert(db, HEARTBEATS, heartbeats)
    except IntegrityError:
        if _study_exists(engine, name):  # another copy took the name between our check and insert
            raise _exists(name, url) from None
        raise
    except (SQLAlchemyError, engine.dialect.loaded_dbapi.Error) as exc:  # COPY raises the driver's errors
        raise StorageError(f"cannot write study '{name}' to {mask_url(url)}, nothing was written: "
                           f"{_first_line(exc)}") from None


def _study_exists(engine: sa.Engine, name: str) -> bool:
    with engine.connect() as db:
        return db.execute(sa.select(STUDIES.c.study_id).where(STUDIES.c.study_name == name)).first() is not None


def _insert(db: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows at once: COPY on PostgreSQL, an executemany elsewhere; in the open transaction."""
    if not rows:  # an empty parameter list would insert one row of defaults
        return
    if db.dialect.name == "postgresql" and db.dialect.driver == "psycopg":
        _copy(db, db.connection.driver_connection, table, rows)
    else:
        db.execute(sa.insert(table), rows)


def _copy(db: sa.Connection, driver: Any, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """PostgreSQL's bulk path (psycopg 3): psycopg's executemany would send one INSERT per row, and
    50,000 intermediate values then take seconds; COPY takes a tenth of one."""
    quote = db.dialect.identifier_preparer.quote
    columns = list(rows[0])
    statement = f"COPY {quote(table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            # Optuna's enum columns hold the member names
            copy.write_row([v.name if isinstance(v, enum.Enum) else v for v in row.values()])


def _insert_trials(db: sa.Connection, study_id: int, trials: list[TrialRecord]) -> list[int]:
    """Insert the trials in number order; their new ids, in the same order."""
    rows = [{"number": t.number, "study_id": study_id, "state": t.state,
             "datetime_start": _to_db(t.datetime_start), "datetime_complete": _to_db(t.datetime_complete)}
            for t in trials]
    if not rows:
        return []
    if db.dialect.insert_executemany_returning_sort_by_parameter_order:
        statement = sa.insert(TRIALS).returning(TRIALS.c.trial_id, sort_by_parameter_order=True)
        return list(db.execute(statement, rows).scalars())
    # MySQL has no INSERT … RETURNING: one statement per trial, still in the one transaction.
    return [db.execute(sa.insert(TRIALS).values(**row)).inserted_primary_key[0] for row in rows]


def _attr_rows(attrs: dict[str, Any], **owner: int) -> list[dict[str, Any]]:
    return [{**owner, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]


def _write_api(storage: BaseStorage, record: StudyRecord, url: str) -> None:
    try:
        study_id = storage.create_new_study(record.directions, record.name)
    except optuna.exceptions.DuplicatedStudyError:
        raise _exists(record.name, url) from None
    try:
        for key, value in record.user_attrs.items():
            storage.set_study_user_attr(study_id, key, value)
        for key, value in record.system_attrs.items():
            storage.set_study_system_attr(study_id, key, value)
        for trial in record.trials:  # in number order, so the storage numbers them the same
            storage.create_new_trial(study_id, template_trial=_frozen(trial))
    except BaseException:
        storage.delete_study(study_id)  # not one transaction here: remove what was written
        raise


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

TRIAL_KEYS = ("number", "state", "values", "datetime_start", "datetime_complete", "params",
              "distributions", "intermediate_values", "user_attrs", "system_attrs")
STUDY_KEYS = ("name", "directions", "user_attrs", "system_attrs")
HEADER_KEYS = ("format", "version", "exported", "hpo_version", "optuna_version", "study")


class MalformedFile(ValueError):
    """A file that is not a usable study export; the message says where and why."""


def export_study(name: str, url: str, path: Path, fmt: str) -> Transfer:
    """Write study `name` to `path` as `fmt`: "json", or "csv" plus its sidecar (see `sidecar_path`).

    Files are written whole or not at all (a temporary file renamed into place).
    """
    started = time.perf_counter()
    record = read_study(url, name)
    if fmt == "csv":
        sidecar = sidecar_path(path)
        _write_file(sidecar, json.dumps(_header(record), indent=2) + "\n")
        _write_file(path, to_csv(record))
        files: tuple[Path, ...] = (path, sidecar)
    else:
        _write_file(path, to_json(record))
        files = (path,)
    return Transfer(name, len(record.trials), record.counts(), time.perf_counter() - started, files)


def import_study(path: Path, url: str, name: str | None = None) -> Transfer:
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


def sidecar_path(csv_path: Path) -> Path:
    """Where the study-level data of a CSV export lives: `x.csv` -> `x.study.json`."""
    return csv_path.with_name(csv_path.stem + SIDECAR_SUFFIX) if csv_path.suffix == ".csv" \
        else csv_path.with_name(csv_path.name + SIDECAR_SUFFIX)


def read_file(path: Path) -> StudyRecord:
    """A study from an export file, JSON or CSV (told apart by content). Raises MalformedFile."""
    text = _read_text(path)
    if text.lstrip().startswith("{"):
        data = _parse_json(text, path.name)
        return _study_from_json(data, trials_in_file=True)
    sidecar = sidecar_path(path)
    if not sidecar.exists():
        raise MalformedFile(f"it is not JSON, and as CSV it needs its sidecar {sidecar.name} "
                            "(written by `hpo study export --format csv`) next to it")
    header = _parse_json(_read_text(sidecar), sidecar.name)
    record = _study_from_json(header, trials_in_file=False)
    record.trials = _trials_from_csv(text, len(record.directions))
    _check_numbers(record.trials)
    return record


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MalformedFile("no such file") from None
    except UnicodeDecodeError:
        raise MalformedFile("it is binary, not a JSON or CSV export (pickles are never loaded)") from None
    except OSError as exc:
        raise MalformedFile(exc.strerror or str(exc)) from None


def _parse_json(text: str, label: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedFile(f"{label} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None


def _write_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# JSON: one object; the trials one per line, so a diff or grep shows whole trials. Non-finite floats
# (a diverged loss curve) are written as NaN / Infinity / -Infinity, as Optuna stores them.

def to_json(record: StudyRecord) -> str:
    head = json.dumps(_header(record), indent=2)
    trials = ",\n".join("    " + json.dumps(_trial_to_json(t)) for t in record.trials)
    return head[: -len("\n}")] + ',\n  "trials": [\n' + trials + ("\n" if trials else "") + "  ]\n}\n"


def _header(record: StudyRecord) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "exported": datetime.datetime.now(UTC).isoformat(timespec="seconds"),
        "hpo_version": __version__,
        "optuna_version": optuna.__version__,
        "study": {"name": record.name, "directions": [d.name.lower() for d in record.directions],
                  "user_attrs": record.user_attrs, "system_attrs": record.system_attrs},
    }


def _trial_to_json(trial: TrialRecord) -> dict[str, Any]:
    return {
        "number": trial.number,
        "state": trial.state.name,
        "values": trial.values,
        "datetime_start": _iso(trial.datetime_start),
        "datetime_complete": _iso(trial.datetime_complete),
        "params": trial.params,
        "distributions": {k: _distribution_json(d) for k, d in trial.distributions.items()},
        "intermediate_values": {str(step): v for step, v in trial.intermediate_values.items()},
        "user_attrs": trial.user_attrs,
        "system_attrs": trial.system_attrs,
    }


def _distribution_json(dist: BaseDistribution) -> Any:
    return json.loads(distribution_to_json(dist))


def _iso(value: datetime.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _study_from_json(data: Any, trials_in_file: bool) -> StudyRecord:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MalformedFile(f'it is not an hpo study export (no "format": "{FORMAT}" at the top)')
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise MalformedFile(f'"version" must be a whole number >= 1; got {version!r}')
    if version > FORMAT_VERSION:
        raise MalformedFile(f"it was written by a newer hpo (format version {version}; "
                            f"this one reads up to {FORMAT_VERSION}); upgrade hpo")
    allowed = HEADER_KEYS + (("trials",) if trials_in_file else ())
    _no_unknown_keys(data, allowed, "the file")
    study = _expect(data, "study", dict, "the file")
    _no_unknown_keys(study, STUDY_KEYS, '"study"')
    name = _expect(study, "name", str, '"study"')
    if not name:
        raise MalformedFile('"study"."name" is empty')
    directions = _expect(study, "directions", list, '"study"')
    if not directions or not all(d in ("minimize", "maximize") for d in directions):
        raise MalformedFile(f'"study"."directions" must be a non-empty list of "minimize" or "maximize"; '
                            f"got {directions!r}")
    record = StudyRecord(
        name=name,
        directions=[StudyDirection[d.upper()] for d in directions],
        user_attrs=_expect(study, "user_attrs", dict, '"study"'),
        system_attrs=_expect(study, "system_attrs", dict, '"study"'),
        trials=[],
    )
    if trials_in_file:
        trials = _expect(data, "trials", list, "the file")
        record.trials = [_trial_from_json(t, i, len(directions)) for i, t in enumerate(trials)]
        _check_numbers(record.trials)
    return record


def _trial_from_json(data: Any, index: int, n_objectives: int) -> TrialRecord:
    where = f"trials[{index}]"
    if not isinstance(data, dict):
        raise MalformedFile(f"{where} is not an object")
    number = data.get("number")
    if isinstance(number, int) and not isinstance(number, bool) and number >= 0:
        where = f"trial {number}"
    else:
        raise MalformedFile(f'{where}: "number" must be a whole number >= 0; got {number!r}')
    _no_unknown_keys(data, TRIAL_KEYS, where)
    state_name = _expect(data, "state", str, where)
    if state_name not in TrialState.__members__:
        raise MalformedFile(f"{where}: state {state_name!r} is not one of {', '.join(TrialState.__members__)}")
    state = TrialState[state_name]

    values = data.get("values")
    if values is not None:
        if not isinstance(values, list) or not all(_is_number(v) for v in values):
            raise MalformedFile(f'{where}: "values" must be null or a list of numbers; got {values!r}')
        if len(values) != n_objectives:
            raise MalformedFile(f"{where}: {len(values)} values for a study of {n_objectives} objective(s)")
        values = [float(v) for v in values]

    start = _datetime(data.get("datetime_start"), where, "datetime_start")
    complete = _datetime(data.get("datetime_complete"), where, "datetime_complete")
    if state != TrialState.WAITING and start is None:
        raise MalformedFile(f"{where}: a {state.name} trial needs a datetime_start")
    if state.is_finished() != (complete is not None):
        rule = "needs" if state.is_finished() else "cannot have"
        raise MalformedFile(f"{where}: a {state.name} trial {rule} a datetime_complete")

    distributions = {}
    for param, spec in _expect(data, "distributions", dict, where).items():
        try:
            distributions[param] = json_to_distribution(json.dumps(spec))
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedFile(f"{where}: the distribution of {param!r} is not an Optuna distribution "
                                f"({_first_line(exc)})") from None
    params = _expect(data, "params", dict, where)

    steps = {}
    for step, value in _expect(data, "intermediate_values", dict, where).items():
        if not (isinstance(step, str) and step.lstrip("-").isdigit()) or not _is_number(value):
            raise MalformedFile(f"{where}: intermediate value {step!r}: {value!r} is not a whole step and a number")
        steps[int(step)] = float(value)

    trial = TrialRecord(number, state, values, start, complete, params, distributions, steps,
                        _expect(data, "user_attrs", dict, where), _expect(data, "system_attrs", dict, where))
    try:  # Optuna's own rules: values match the state, params lie in their distributions
        optuna.trial.create_trial(state=state, values=values, params=params, distributions=distributions,
                                  intermediate_values=steps)
    except (ValueError, TypeError) as exc:
        raise MalformedFile(f"{where}: {_first_line(exc)}") from None
    return trial


def _check_numbers(trials: list[TrialRecord]) -> None:
    """Trial numbers must be 0..N-1 once each, as Optuna numbers the next trial N."""
    trials.sort(key=lambda t: t.number)
    for expected, trial in enumerate(trials):
        if trial.number != expected:
            problem = "twice" if trial.number < expected else f"but trial {expected} is missing"
            raise MalformedFile(f"trial numbers must run 0..{len(trials) - 1} without gaps; "
                                f"trial {trial.number} appears {problem}")


def _expect(data: dict, key: str, kind: type, where: str) -> Any:
    if key not in data:
        raise MalformedFile(f'{where} has no "{key}"')
    value = data[key]
    if not isinstance(value, kind):
        names = {dict: "an object", list: "a list", str: "a string"}
        raise MalformedFile(f'{where}: "{key}" must be {names.get(kind, kind.__name__)}; '
                            f"got {type(value).__name__}")
    return value


def _no_unknown_keys(data: dict, known: tuple[str, ...], where: str) -> None:
    unknown = [k for k in data if k not in known]
    if unknown:
        raise MalformedFile(f"{where} has unknown key {unknown[0]!r}; known keys: {', '.join(known)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _datetime(value: Any, where: str, key: str) -> datetime.datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise MalformedFile(f"{where}: {key} {value!r} is not an ISO 8601 time with an offset, "
                            "e.g. 2025-01-31T12:00:00+00:00")
    return parsed.astimezone(UTC)


# CSV: one row per trial. Columns: number, state, value (value_0, value_1, … with several
# objectives), datetime_start, datetime_complete, params_<name>…, distributions,
# intermediate_values, user_attrs_<key>…, system_attrs_<key>…. Every cell but number, state and
# the datetimes holds JSON (so a string param reads "adam" with its quotes); an empty cell means
# the trial has no such param, attribute or value.

PARAM_PREFIX, USER_PREFIX, SYSTEM_PREFIX = "params_", "user_attrs_", "system_attrs_"


def to_csv(record: StudyRecord) -> str:
    value_columns = _value_columns(len(record.directions))
    params = _keys(t.params for t in record.trials)
    user = _keys(t.user_attrs for t in record.trials)
    system = _keys(t.system_attrs for t in record.trials)
    header = ["number", "state", *value_columns, "datetime_start", "datetime_complete",
              *[PARAM_PREFIX + p for p in params], "distributions", "intermediate_values",
              *[USER_PREFIX + k for k in user], *[SYSTEM_PREFIX + k for k in system]]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for t in record.trials:
        values = t.values if t.values is not None else [None] * len(value_columns)
        writer.writerow([
            t.number, t.state.name, *[_cell(v, v is not None) for v in values],
            _iso(t.datetime_start) or "", _iso(t.datetime_complete) or "",
            *[_cell(t.params.get(p), p in t.params) for p in params],
            json.dumps({k: _distribution_json(d) for k, d in t.distributions.items()}),
            json.dumps({str(s): v for s, v in t.intermediate_values.items()}),
            *[_cell(t.user_attrs.get(k), k in t.user_attrs) for k in user],
            *[_cell(t.system_attrs.get(k), k in t.system_attrs) for k in system],
        ])
    return out.getvalue()


def _value_columns(n_objectives: int) -> list[str]:
    return ["value"] if n_objectives == 1 else [f"value_{i}" for i in range(n_objectives)]


def _keys(dicts: Iterable[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for d in dicts:
        seen.update(dict.fromkeys(d))
    return list(seen)


def _cell(value: Any, present: bool) -> str:
    return json.dumps(value) if present else ""


def _trials_from_csv(text: str, n_objectives: int) -> list[TrialRecord]:
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # a cell holds whole loss curves
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise MalformedFile(f"it is not valid CSV ({exc})") from None
    finally:
        csv.field_size_limit(limit)
    if not rows:
        raise MalformedFile("it is empty")
    header, body = rows[0], rows[1:]
    value_columns = _value_columns(n_objectives)
    fixed = ["number", "state", *value_columns, "datetime_start", "datetime_complete",
             "distributions", "intermediate_values"]
    for column in fixed:
        if column not in header:
            raise MalformedFile(f"the CSV has no column {column!r} (its header: {','.join(header)[:80]})")
    for column in header:
        if column not in fixed and not column.startswith((PARAM_PREFIX, USER_PREFIX, SYSTEM_PREFIX)):
            raise MalformedFile(f"the CSV has an unknown column {column!r}")

    trials = []
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise MalformedFile(f"CSV line {line} has {len(row)} cells for {len(header)} columns")
        cells = dict(zip(header, row))

        def parse(column: str) -> Any:
            try:
                return json.loads(cells[column])
            except json.JSONDecodeError as exc:
                raise MalformedFile(f"CSV line {line}, column {column!r}: not JSON ({exc.msg}): "
                                    f"{cells[column][:40]!r}") from None

        def grouped(prefix: str) -> dict[str, Any]:
            return {c[len(prefix):]: parse(c) for c in header if c.startswith(prefix) and cells[c] != ""}

        try:
            number: Any = int(cells["number"])
        except ValueError:
            number = cells["number"]
        given = [cells[c] != "" for c in value_columns]
        if any(given) and not all(given):
            raise MalformedFile(f"CSV line {line}: some of {', '.join(value_columns)} are empty")
        data = {
            "number": number,
            "state": cells["state"],
            "values": [parse(c) for c in value_columns] if all(given) else None,
            "datetime_start": cells["datetime_start"] or None,
            "datetime_complete": cells["datetime_complete"] or None,
            "params": grouped(PARAM_PREFIX),
            "distributions": parse("distributions"),
            "intermediate_values": parse("intermediate_values"),
            "user_attrs": grouped(USER_PREFIX),
            "system_attrs": grouped(SYSTEM_PREFIX),
        }
        try:
            trials.append(_trial_from_json(data, line - 2, n_objectives))
        except MalformedFile as exc:
            raise MalformedFile(f"CSV line {line}: {exc}") from None
    return trials
