"""The portable study file: a study as JSON or CSV, written whole and checked whole when read.

JSON holds everything in one file; CSV holds one row per trial, with the study-level data in a
sidecar `NAME.study.json` next to it. Files are parsed as JSON and CSV only, never unpickled.
See docs/moving-studies.md.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, distribution_to_json, json_to_distribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hpo._errors import first_line
from hpo._records import StudyRecord, TrialRecord
from hpo._version import __version__

FORMAT = "hpo-study"
FORMAT_VERSION = 1
SIDECAR_SUFFIX = ".study.json"
UTC = datetime.timezone.utc

TRIAL_KEYS = ("number", "state", "values", "datetime_start", "datetime_complete", "params",
              "distributions", "intermediate_values", "user_attrs", "system_attrs")
STUDY_KEYS = ("name", "directions", "user_attrs", "system_attrs")
HEADER_KEYS = ("format", "version", "exported", "hpo_version", "optuna_version", "study")


class MalformedFile(ValueError):
    """A file that is not a usable study export; the message says where and why."""


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
    study = _parse_json(_read_text(sidecar), sidecar.name)
    record = _study_from_json(study, trials_in_file=False)
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


# JSON: one object; the trials one per line, so a diff or grep shows whole trials. Non-finite floats
# (a diverged loss curve) are written as NaN / Infinity / -Infinity, as Optuna stores them.

def to_json(record: StudyRecord) -> str:
    head = json.dumps(header(record), indent=2)
    trials = ",\n".join("    " + json.dumps(_trial_to_json(t)) for t in record.trials)
    return head[: -len("\n}")] + ',\n  "trials": [\n' + trials + ("\n" if trials else "") + "  ]\n}\n"


def header(record: StudyRecord) -> dict[str, Any]:
    """Everything but the trials: the head of a JSON export, the whole of a CSV export's sidecar."""
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
                                f"({first_line(exc)})") from None
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
        raise MalformedFile(f"{where}: {first_line(exc)}") from None
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
