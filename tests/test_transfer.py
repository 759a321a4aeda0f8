"""Moving studies: `hpo study copy | export | import` keep every field; failures leave nothing; errors are one line.

Also `hpo storage check`. Source studies are built directly with Optuna on SQLite files; the
PostgreSQL tests use the real server, with unique study names deleted afterwards.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import math
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from typer.testing import CliRunner

from hpo import Heartbeat, StorageError, _transfer, open_storage
from hpo._files import safe_stem
from hpo.cli import _transfer as _transfer_cli  # noqa: F401 - registers copy/export/import on `hpo study`
from hpo.cli import app
from helpers import REPO, cli_env, hpo, postgres_or_fail, unique

runner = CliRunner()
UTC = datetime.timezone.utc

SPEC = {"study": {"name": "src", "seed": 0, "trials": 6}, "data": {"dataset": "digits", "samples": 400},
        "search": {"lr": {"type": "float", "low": 1e-3, "high": 0.5, "log": True}}}
LINEAGE = {"parent": "wide", "rule": "top-25%", "date": "2025-01-31"}
SPACE = {
    "lr": FloatDistribution(1e-3, 0.5, log=True),
    "hidden_units": IntDistribution(16, 256, step=16),
    "optimizer": CategoricalDistribution(["sgd", "momentum", "adam", None]),
}
T0 = datetime.datetime(2025, 3, 30, 0, 59, 58, 123456, tzinfo=UTC)


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"HPO_STORAGE": ""})


def run_hpo(*args: str, cwd: Path | None = None, **env: str):
    """`hpo ARGS` as a real subprocess; through a shim that mounts our commands until the root app does."""
    env.setdefault("PYTHONPATH", str(REPO))  # the package may not be installed; cwd may be elsewhere
    if "_transfer" in (REPO / "hpo" / "cli" / "__init__.py").read_text():
        return hpo(*args, cwd=cwd, **env)
    shim = "import sys; from hpo.cli import _transfer, app; sys.argv[0] = 'hpo'; app()"
    return subprocess.run([sys.executable, "-c", shim, *args], cwd=cwd, env=cli_env(**env),
                          capture_output=True, text=True, timeout=300)


def curves(seed: int, diverged: bool = False) -> dict[str, list[float]]:
    loss = [1.0 / (seed + e + 1) for e in range(5)]
    if diverged:
        loss[-2:] = [math.inf, math.nan]
    return {"train_loss": loss, "train_accuracy": [0.1 * e for e in range(5)],
            "val_loss": loss[::-1], "val_accuracy": [0.2 + 0.1 * e for e in range(5)]}


def make_trial(state: TrialState, n: int, value: float | None = None, params: dict | None = None,
               steps: dict | None = None, user: dict | None = None, system: dict | None = None):
    params = params if params is not None else {"lr": 0.01 * (n + 1), "hidden_units": 16 * (n + 1),
                                                "optimizer": ["sgd", "momentum", "adam", None][n % 4]}
    trial = optuna.trial.create_trial(
        state=state, value=value, params=params, distributions={k: SPACE[k] for k in params},
        intermediate_values=steps or {}, user_attrs=user or {}, system_attrs=system or {})
    trial.datetime_start = T0 + datetime.timedelta(minutes=n, microseconds=n)
    trial.datetime_complete = (trial.datetime_start + datetime.timedelta(seconds=7.5 + n)
                               if state.is_finished() else None)
    return trial


def build_source(url: str, name: str = "src") -> None:
    """A study with every trial state, NaN/inf values, retry attributes and the hpo study attributes."""
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    for key, value in {"spec": SPEC, "lineage": LINEAGE, "objective": "final-epoch validation accuracy",
                       "hpo_version": "0.1.0", "created": "2025-03-30T00:59:00+00:00"}.items():
        study.set_user_attr(key, value)
    storage = open_storage(url, Heartbeat(interval=None))
    storage.set_study_system_attr(storage.get_study_id_from_name(name), "hpo:workers", ["laptop", "server"])
    done = {"phase": "random", "epochs": 5, "seconds": 1.25, "seed": 7, "outcome": "completed"}
    study.add_trial(make_trial(TrialState.COMPLETE, 0, 0.91, steps={0: 0.5, 1: 0.7, 2: 0.91},
                               user={**done, "curves": curves(0)}))
    study.add_trial(make_trial(TrialState.PRUNED, 1, steps={0: 0.4, 1: math.nan, 2: -math.inf},
                               user={**done, "outcome": "diverged", "reason": "loss is nan at epoch 4",
                                     "diverged_epoch": 4, "curves": curves(1, diverged=True)}))
    study.add_trial(make_trial(TrialState.FAIL, 2, steps={0: 0.3},
                               user={"phase": "tpe", "fail_reason": "MemoryError: out of memory"}))
    study.add_trial(make_trial(TrialState.COMPLETE, 3, math.inf, params={"lr": 0.02},
                               system={"failed_trial": 2, "retry_history": [2]}, user={"phase": "tpe"}))
    study.add_trial(make_trial(TrialState.RUNNING, 4, steps={0: 0.2}, user={"phase": "tpe"}))
    study.enqueue_trial({"lr": 0.05, "optimizer": "adam"})  # WAITING, with Optuna's fixed_params


def canon(value: Any) -> Any:
    """NaN equals NaN here; everything else compares as it is."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {k: canon(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canon(v) for v in value]
    return value


def snapshot(url: str, name: str) -> dict[str, Any]:
    """Everything Optuna's public API shows of a study, field by field."""
    storage = open_storage(url, Heartbeat(interval=None))
    study = optuna.load_study(study_name=name, storage=storage)
    study_id = storage.get_study_id_from_name(name)
    trials = [{
        "number": t.number, "state": t.state, "values": canon(t.values),
        "datetime_start": t.datetime_start, "datetime_complete": t.datetime_complete,
        "params": canon(t.params), "distributions": t.distributions,
        "intermediate_values": canon(t.intermediate_values),
        "user_attrs": canon(t.user_attrs), "system_attrs": canon(t.system_attrs),
    } for t in study.get_trials(deepcopy=False)]
    return {"directions": study.directions, "user_attrs": canon(study.user_attrs),
            "system_attrs": canon(storage.get_study_system_attrs(study_id)), "trials": trials}


def assert_same_study(a: tuple[str, str], b: tuple[str, str]) -> None:
    one, two = snapshot(*a), snapshot(*b)
    for key in ("directions", "user_attrs", "system_attrs"):
        assert one[key] == two[key], key
    assert len(one["trials"]) == len(two["trials"])
    for x, y in zip(one["trials"], two["trials"]):
        for field, value in x.items():
            assert value == y[field], f"trial {x['number']}: {field}"


@pytest.fixture
def source(tmp_path) -> tuple[str, str]:
    url = f"sqlite:///{tmp_path / 'laptop.db'}"
    build_source(url)
    return url, "src"


@pytest.fixture
def postgres():
    """The test server's URL and a list to put study names in; those studies are deleted afterwards."""
    url = postgres_or_fail()
    names: list[str] = []
    yield url, names
    engine = sa.create_engine(url)
    with engine.begin() as db:  # in a few statements; optuna.delete_study takes seconds per 1,000 trials
        for name in names:
            drop_study(db, name)
    engine.dispose()


def drop_study(db: sa.Connection, name: str) -> None:
    study = "(SELECT study_id FROM studies WHERE study_name = :name)"
    trials = f"(SELECT trial_id FROM trials WHERE study_id IN {study})"
    for table in ("trial_params", "trial_values", "trial_intermediate_values", "trial_user_attributes",
                  "trial_system_attributes", "trial_heartbeats"):
        db.execute(sa.text(f"DELETE FROM {table} WHERE trial_id IN {trials}"), {"name": name})
    for table in ("trials", "study_directions", "study_user_attributes", "study_system_attributes"):
        db.execute(sa.text(f"DELETE FROM {table} WHERE study_id IN {study}"), {"name": name})
    db.execute(sa.text("DELETE FROM studies WHERE study_name = :name"), {"name": name})


def test_the_source_has_every_state(source):
    states = [t["state"] for t in snapshot(*source)["trials"]]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE,
                      TrialState.RUNNING, TrialState.WAITING]


# --- copy ---------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_copy_sqlite_to_postgres_and_back_keeps_every_field(source, postgres, tmp_path):
    pg, names = postgres
    on_server = unique("copied")
    names.append(on_server)
    result = invoke("study", "copy", "src", "--storage", source[0], "--to", pg, "--name", on_server)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Copied study 'src' (6 trials: 2 complete, 1 pruned, 1 fail, 1 running, "
                                    f"1 waiting) from {source[0]} to {pg} as '{on_server}' in ")
    assert_same_study(source, (pg, on_server))

    back = f"sqlite:///{tmp_path / 'back' / 'laptop.db'}"
    result = invoke("study", "copy", on_server, "--storage", pg, "--to", back, "--name", "src")
    assert result.exit_code == 0, result.output
    assert_same_study(source, (back, "src"))


def test_copy_between_sqlite_files_as_a_real_subprocess(source, tmp_path):
    target = f"sqlite:///{tmp_path / 'team.db'}"
    result = run_hpo("study", "copy", "src", "--to", target, "--name", "moved", HPO_STORAGE=source[0])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "as 'moved'" in result.stdout
    assert_same_study(source, (target, "moved"))


def test_copy_keeps_numbers_and_the_study_continues_where_it_stopped(source, tmp_path):
    target = f"sqlite:///{tmp_path / 'team.db'}"
    _transfer.copy_study("src", source[0], target)
    study = optuna.load_study(study_name="src", storage=target)
    assert [t.number for t in study.trials] == list(range(6))
    enqueued = study.ask()  # the WAITING trial is still queued, with its fixed params
    assert enqueued.number == 5
    assert enqueued.suggest_float("lr", 1e-3, 0.5, log=True) == 0.05
    assert study.ask().number == 6


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_copied_running_trial_is_retried_by_the_target_workers(source, tmp_path):
    # Nobody runs it in the target: with heartbeats on, the target fails it as stale.
    target = f"sqlite:///{tmp_path / 'team.db'}"
    _transfer.copy_study("src", source[0], target)
    storage = optuna.storages.RDBStorage(target, heartbeat_interval=1, grace_period=2)
    study = optuna.load_study(study_name="src", storage=storage)
    optuna.storages.fail_stale_trials(study)
    assert study.trials[4].state == TrialState.FAIL


def test_copy_through_a_journal_file_keeps_every_field(source, tmp_path):
    journal = f"journal:{tmp_path / 'study.log'}"
    _transfer.copy_study("src", source[0], journal)
    assert_same_study(source, (journal, "src"))
    back = f"sqlite:///{tmp_path / 'back.db'}"
    _transfer.copy_study("src", journal, back)
    assert_same_study(source, (back, "src"))


def test_copying_into_an_existing_name_is_a_clear_error_and_changes_nothing(source, tmp_path):
    target = f"sqlite:///{tmp_path / 'team.db'}"
    assert invoke("study", "copy", "src", "--storage", source[0], "--to", target).exit_code == 0
    result = invoke("study", "copy", "src", "--storage", source[0], "--to", target)
    assert result.exit_code == 1
    assert result.stderr == (f"Error: a study named 'src' already exists in {target}; choose another "
                             "name with --name NEW_NAME, or delete that study first\n")
    assert len(optuna.load_study(study_name="src", storage=target).trials) == 6


def test_copying_a_missing_study_is_a_clear_error(source, tmp_path):
    result = invoke("study", "copy", "nope", "--storage", source[0], "--to", f"sqlite:///{tmp_path / 't.db'}")
    assert result.exit_code == 1
    assert result.stderr == f"Error: no study named 'nope' in {source[0]}; `hpo study list` shows the studies there\n"


def test_a_failed_copy_to_sqlite_leaves_nothing(source, tmp_path):
    target = f"sqlite:///{tmp_path / 'team.db'}"
    record = _transfer.read_study(*source)
    record.trials[-1].user_attrs["bad"] = object()  # fails after the study and trials are inserted
    with pytest.raises(TypeError):
        _transfer.write_study(target, record)
    assert_target_is_empty(target)


@pytest.mark.postgres
def test_a_failed_copy_to_postgres_leaves_nothing(source, postgres):
    pg, names = postgres
    record = dataclasses.replace(_transfer.read_study(*source), name=unique("broken"))
    names.append(record.name)
    record.trials[-1].user_attrs["k" * 600] = 1  # longer than the key column: the server refuses it
    with pytest.raises(StorageError, match="nothing was written"):
        _transfer.write_study(pg, record)
    assert record.name not in [s.study_name for s in optuna.get_all_study_summaries(pg)]


def assert_target_is_empty(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.connect() as db:
        if not sa.inspect(db).has_table("studies"):
            return  # the storage was never opened
        for table in ("studies", "trials", "trial_params", "trial_intermediate_values", "trial_user_attributes"):
            assert db.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar() == 0, table
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_a_thousand_trials_copy_from_sqlite_to_postgres_whole(tmp_path, postgres):
    """The bulk path at the size of the benchmark (its timing is in BENCHMARKS.md, not here)."""
    pg, names = postgres
    source = f"sqlite:///{tmp_path / 'big.db'}"
    steps = {s: 0.5 + s / 100 for s in range(50)}
    attrs = {"curves": curves(3) | {k: [0.5] * 50 for k in ("train_loss", "val_loss")}, "phase": "tpe"}
    trials = [_transfer.TrialRecord(
        n, TrialState.COMPLETE, [0.9], T0, T0 + datetime.timedelta(seconds=30),
        {"lr": 0.01, "hidden_units": 32, "optimizer": "adam"}, dict(SPACE), steps, attrs)
        for n in range(1000)]
    _transfer.write_study(source, _transfer.StudyRecord("big", [optuna.study.StudyDirection.MAXIMIZE],
                                                        {"spec": SPEC}, {}, trials))
    names.append(target := unique("big"))
    _transfer.copy_study("big", source, pg, target)
    copied = optuna.load_study(study_name=target, storage=pg).trials
    assert [t.number for t in copied] == list(range(1000))
    for trial in (copied[0], copied[499], copied[999]):
        assert trial.params == {"lr": 0.01, "hidden_units": 32, "optimizer": "adam"}
        assert trial.intermediate_values == pytest.approx(steps)
        assert trial.user_attrs == attrs and trial.value == 0.9


# --- export and import --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_export_then_import_round_trips_every_field(source, tmp_path, fmt):
    out = tmp_path / f"src.{fmt}"
    result = invoke("study", "export", "src", "--storage", source[0], "--format", fmt, "--out", str(out))
    assert result.exit_code == 0, result.output
    target = f"sqlite:///{tmp_path / 'other.db'}"
    result = invoke("study", "import", str(out), "--storage", target, "--name", "again")
    assert result.exit_code == 0, result.output
    assert result.stdout == (f"Imported study 'again' (6 trials: 2 complete, 1 pruned, 1 fail, 1 running, "
                             f"1 waiting) from {out} into {target}.\n")
    assert_same_study(source, (target, "again"))


@pytest.mark.postgres
@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_import_into_postgres_round_trips_every_field(source, tmp_path, postgres, fmt):
    pg, names = postgres
    out = tmp_path / f"src.{fmt}"
    _transfer.export_study("src", source[0], out, fmt)
    names.append(name := unique("imported"))
    _transfer.import_study(out, pg, name)
    assert_same_study(source, (pg, name))


def test_json_export_is_one_object_with_one_line_per_trial(source, tmp_path):
    out = tmp_path / "src.json"
    assert invoke("study", "export", "src", "--storage", source[0], "--out", str(out)).exit_code == 0
    data = json.loads(out.read_text())
    assert (data["format"], data["version"]) == ("hpo-study", 1)
    assert data["study"]["user_attrs"]["spec"] == SPEC
    assert data["study"]["user_attrs"]["lineage"] == LINEAGE
    assert data["trials"][0]["distributions"]["lr"] == {
        "name": "FloatDistribution", "attributes": {"step": None, "low": 0.001, "high": 0.5, "log": True}}
    assert data["trials"][0]["datetime_start"] == "2025-03-30T00:59:58.123456+00:00"
    trial_lines = [line for line in out.read_text().splitlines() if line.startswith('    {"number"')]
    assert len(trial_lines) == 6


def test_json_export_to_stdout(source):
    result = invoke("study", "export", "src", "--storage", source[0], "--out", "-")
    assert result.exit_code == 0
    assert len(json.loads(result.stdout)["trials"]) == 6


def test_csv_export_is_a_plain_table_with_a_sidecar(source, tmp_path):
    out = tmp_path / "src.csv"
    result = invoke("study", "export", "src", "--storage", source[0], "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Exported study 'src' (6 trials: 2 complete, 1 pruned, 1 fail, 1 running, " \
                            f"1 waiting) to {out} and {tmp_path / 'src.study.json'}.\n"
    rows = list(csv.DictReader(out.open()))
    assert [r["number"] for r in rows] == ["0", "1", "2", "3", "4", "5"]
    assert [r["state"] for r in rows][:3] == ["COMPLETE", "PRUNED", "FAIL"]
    assert rows[0]["value"] == "0.91" and rows[1]["value"] == "" and rows[3]["value"] == "Infinity"
    assert rows[0]["params_lr"] == "0.01" and rows[0]["params_optimizer"] == '"sgd"'
    assert rows[3]["params_hidden_units"] == ""  # not a param of that trial
    assert json.loads(rows[0]["user_attrs_curves"]) == curves(0)
    assert rows[2]["user_attrs_fail_reason"] == '"MemoryError: out of memory"'
    sidecar = json.loads((tmp_path / "src.study.json").read_text())
    assert sidecar["study"]["user_attrs"]["spec"] == SPEC and "trials" not in sidecar


def test_importing_into_an_existing_name_is_a_clear_error(source, tmp_path):
    out = tmp_path / "src.json"
    _transfer.export_study("src", source[0], out, "json")
    result = invoke("study", "import", str(out), "--storage", source[0])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: a study named 'src' already exists in ")


def _edit(export: dict, change) -> str:
    change(export)
    return json.dumps(export)


def _trial(index: int, **fields):
    def change(export):
        export["trials"][index].update(fields)
    return change


MALFORMED_JSON = [
    ("not json", lambda e: "{ not json", "src.json is not valid JSON (line 1, column 3: "
                                         "Expecting property name enclosed in double quotes)"),
    ("other json", lambda e: '{"a": 1}', 'it is not an hpo study export (no "format": "hpo-study" at the top)'),
    ("newer", lambda e: _edit(e, lambda d: d.update(version=2)),
     "it was written by a newer hpo (format version 2; this one reads up to 1); upgrade hpo"),
    ("unknown key", lambda e: _edit(e, lambda d: d["study"].update(colour="red")),
     "\"study\" has unknown key 'colour'; known keys: name, directions, user_attrs, system_attrs"),
    ("bad direction", lambda e: _edit(e, lambda d: d["study"].update(directions=["up"])),
     '"study"."directions" must be a non-empty list of "minimize" or "maximize"; got [\'up\']'),
    ("bad state", lambda e: _edit(e, _trial(1, state="DONE")),
     "trial 1: state 'DONE' is not one of RUNNING, COMPLETE, PRUNED, FAIL, WAITING"),
    ("param outside", lambda e: _edit(e, _trial(0, params={"lr": 7.0, "hidden_units": 16, "optimizer": "sgd"})),
     "trial 0: The value 7.0 of parameter 'lr' isn't contained in the distribution"),
    ("bad distribution", lambda e: _edit(e, _trial(0, distributions={"lr": {"name": "Pickle"}})),
     "trial 0: the distribution of 'lr' is not an Optuna distribution"),
    ("complete without value", lambda e: _edit(e, _trial(0, values=None)),
     "trial 0: values should be set for a complete trial."),
    ("naive time", lambda e: _edit(e, _trial(0, datetime_start="2025-01-01T12:00:00")),
     "trial 0: datetime_start '2025-01-01T12:00:00' is not an ISO 8601 time with an offset"),
    ("gap", lambda e: _edit(e, _trial(5, number=9)),
     "trial numbers must run 0..5 without gaps; trial 9 appears but trial 5 is missing"),
    ("twice", lambda e: _edit(e, _trial(5, number=4)),
     "trial numbers must run 0..5 without gaps; trial 4 appears twice"),
    ("step", lambda e: _edit(e, _trial(0, intermediate_values={"first": 0.5})),
     "trial 0: intermediate value 'first': 0.5 is not a whole step and a number"),
]


@pytest.mark.parametrize("case,make,message", MALFORMED_JSON, ids=[c[0] for c in MALFORMED_JSON])
def test_malformed_json_is_rejected_with_one_line(source, tmp_path, case, make, message):
    good = tmp_path / "good.json"
    _transfer.export_study("src", source[0], good, "json")
    bad = tmp_path / "src.json"
    bad.write_text(make(json.loads(good.read_text())))
    target = f"sqlite:///{tmp_path / 'target.db'}"
    result = invoke("study", "import", str(bad), "--storage", target)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: cannot import {bad}: {message}")
    assert len(result.stderr.splitlines()) == 1
    assert_target_is_empty(target)


def test_a_pickle_is_rejected_not_loaded(tmp_path):
    bad = tmp_path / "study.pkl"
    bad.write_bytes(pickle.dumps({"format": "hpo-study"}))
    result = invoke("study", "import", str(bad), "--storage", f"sqlite:///{tmp_path / 't.db'}")
    assert result.exit_code == 1
    assert result.stderr == (f"Error: cannot import {bad}: it is binary, not a JSON or CSV export "
                             "(pickles are never loaded)\n")


def test_a_missing_file_is_one_line(tmp_path):
    result = invoke("study", "import", str(tmp_path / "nope.json"), "--storage", f"sqlite:///{tmp_path / 't.db'}")
    assert result.exit_code == 1
    assert result.stderr == f"Error: cannot import {tmp_path / 'nope.json'}: no such file\n"


@pytest.mark.parametrize("case,edit,message", [
    ("no sidecar", lambda csv_file, sidecar: sidecar.unlink(),
     "it is not JSON, and as CSV it needs its sidecar src.study.json"),
    ("bad cell", lambda csv_file, sidecar: csv_file.write_text(csv_file.read_text().replace('"""sgd"""', "sgd", 1)),
     "CSV line 2, column 'params_optimizer': not JSON (Expecting value): 'sgd'"),
    ("unknown column", lambda csv_file, sidecar: csv_file.write_text("colour," + csv_file.read_text()),
     "the CSV has an unknown column 'colour'"),
    ("short row", lambda csv_file, sidecar: csv_file.write_text(csv_file.read_text() + "6,COMPLETE\n"),
     "CSV line 8 has 2 cells for"),
    ("bad number", lambda csv_file, sidecar: csv_file.write_text(csv_file.read_text().replace("\n0,", "\nzero,", 1)),
     "CSV line 2: trials[0]: \"number\" must be a whole number >= 0; got 'zero'"),
])
def test_malformed_csv_is_rejected_with_one_line(source, tmp_path, case, edit, message):
    out = tmp_path / "src.csv"
    _transfer.export_study("src", source[0], out, "csv")
    edit(out, tmp_path / "src.study.json")
    result = invoke("study", "import", str(out), "--storage", f"sqlite:///{tmp_path / 't.db'}")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: cannot import {out}: {message}")
    assert len(result.stderr.splitlines()) == 1


def test_csv_export_to_stdout_is_a_bad_flag(source):
    result = invoke("study", "export", "src", "--storage", source[0], "--format", "csv", "--out", "-")
    assert result.exit_code == 2
    assert "a CSV export needs a file for its sidecar" in result.stderr


def test_export_as_a_real_subprocess_writes_name_dot_format_by_default(source, tmp_path):
    result = run_hpo("study", "export", "src", "--storage", source[0], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "src.json").exists()
    result = run_hpo("study", "import", "src.json", "--storage", f"sqlite:///{tmp_path / 'b.db'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("name", ["../x", "a/b", "/abs/path", "-rf", "..", "/"])
def test_the_default_export_file_is_one_safe_name_in_the_current_folder(tmp_path, name):
    """A study name is not a path, whoever chose it: the file lands in the current folder, nowhere else."""
    url = f"sqlite:///{tmp_path / 'laptop.db'}"
    build_source(url, name)
    work = tmp_path / "work" / "here"
    work.mkdir(parents=True)
    before = sorted(p for p in tmp_path.rglob("*") if p != work)
    result = run_hpo("study", "export", "--storage", url, "--json", "--", name, cwd=work)
    assert result.returncode == 0, result.stderr
    expected = f"{safe_stem(name)}.json"
    assert [p.name for p in work.iterdir()] == [expected]
    assert json.loads(result.stdout)["file"] == expected
    assert sorted(p for p in tmp_path.rglob("*") if p != work and work not in p.parents) == before
    assert not Path("/abs").exists()


def test_a_name_brought_in_by_import_never_becomes_a_path(source, tmp_path):
    theirs = tmp_path / "theirs.json"
    data = json.loads(_transfer.to_json(_transfer.read_study(source[0], "src")))
    data["study"]["name"] = "../../outside/evil"
    theirs.write_text(json.dumps(data))
    url = f"sqlite:///{tmp_path / 'mine.db'}"
    work = tmp_path / "work"
    work.mkdir()
    assert run_hpo("study", "import", str(theirs), "--storage", url, cwd=work).returncode == 0
    result = run_hpo("study", "export", "../../outside/evil", "--format", "csv", "--storage", url, cwd=work)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in work.iterdir()) == ["outside_evil.csv", "outside_evil.study.json"]
    assert not (tmp_path.parent / "outside").exists()


@pytest.mark.parametrize("kind", ["folder", "symlink", "device", "fifo"])
def test_export_onto_anything_but_a_regular_file_is_one_line_and_changes_nothing(source, tmp_path, kind):
    target = tmp_path / "out.json"
    if kind == "folder":
        target.mkdir()
    elif kind == "symlink":
        (tmp_path / "real.json").write_text("keep")
        target.symlink_to(tmp_path / "real.json")
    elif kind == "device":
        target = Path(os.devnull)
    else:
        os.mkfifo(target)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke("study", "export", "src", "--storage", source[0], "--out", str(target))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: --out {target} is a")
    assert result.stderr.endswith("; name a new or regular file instead\n")
    assert len(result.stderr.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if kind == "symlink":
        assert target.is_symlink() and (tmp_path / "real.json").read_text() == "keep"


def test_a_csv_export_writes_both_files_or_neither(source, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    out = folder / "trials.csv"
    out.write_text("old table")
    (folder / "trials.study.json").mkdir()  # the sidecar cannot be written
    result = invoke("study", "export", "src", "--storage", source[0], "--out", str(out))
    assert result.exit_code == 1
    assert "trials.study.json is a folder" in result.stderr
    assert out.read_text() == "old table"
    assert sorted(p.name for p in folder.iterdir()) == ["trials.csv", "trials.study.json"]


def test_export_keeps_the_permissions_of_the_file_it_replaces(source, tmp_path):
    out = tmp_path / "shared.json"
    out.write_text("{}")
    out.chmod(0o640)
    assert invoke("study", "export", "src", "--storage", source[0], "--out", str(out)).exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    fresh = tmp_path / "fresh.json"
    assert invoke("study", "export", "src", "--storage", source[0], "--out", str(fresh)).exit_code == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask


def test_json_of_export_import_and_copy(source, tmp_path, postgres):
    """One object each, the storage URLs masked: the password given for PostgreSQL is in no output."""
    pg_url, names = postgres
    secret = "s3cr3t-pw"
    parts = sa.engine.make_url(pg_url).set(password=secret)
    pg_secret = parts.render_as_string(hide_password=False)
    counts = {"complete": 2, "pruned": 1, "fail": 1, "running": 1, "waiting": 1}

    out = tmp_path / "src.csv"
    exported = run_hpo("study", "export", "src", "--storage", source[0], "--out", str(out), "--json")
    assert exported.returncode == 0, exported.stderr
    data = json.loads(exported.stdout)
    assert data.pop("seconds") >= 0
    assert data == {"study": "src", "from": source[0], "format": "csv", "file": str(out),
                    "sidecar": str(tmp_path / "src.study.json"), "trials": 6, "states": counts}

    new = unique("json-import")
    names.append(new)
    imported = run_hpo("study", "import", str(out), "--name", new, "--storage", pg_secret, "--json")
    assert imported.returncode == 0, imported.stderr
    data = json.loads(imported.stdout)
    assert data.pop("seconds") >= 0
    assert data.pop("to").startswith("postgresql+psycopg://postgres:***@")
    assert data == {"study": new, "file": str(out), "trials": 6, "states": counts}

    copied_name = unique("json-copy")
    names.append(copied_name)
    copied = run_hpo("study", "copy", new, "--storage", pg_secret, "--to", pg_secret, "--name", copied_name,
                     "--json")
    assert copied.returncode == 0, copied.stderr
    data = json.loads(copied.stdout)
    assert data["study"] == copied_name and data["source"] == new and data["trials"] == 6
    assert data["states"] == counts
    for result in (exported, imported, copied):
        assert secret not in result.stdout + result.stderr


def test_export_json_flag_with_stdout_is_a_bad_flag(source):
    result = invoke("study", "export", "src", "--storage", source[0], "--out", "-", "--json")
    assert result.exit_code == 2
    assert "--out - prints the study itself as JSON" in result.stderr


# --- hpo storage check --------------------------------------------------------------------------


def test_storage_check_shows_the_schema_version_and_the_studies(source):
    storage = optuna.storages.RDBStorage(source[0])
    schema = storage.get_current_version()
    storage.engine.dispose()
    result = invoke("storage", "check", source[0])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"{source[0]}: sqlite, schema {schema}, 1 studies"
    assert result.stdout.splitlines()[-1].split() == ["src", "6"]
    data = json.loads(invoke("storage", "check", source[0], "--json").stdout)
    assert data == {"url": source[0], "backend": "sqlite", "schema": schema,
                    "studies": [{"name": "src", "trials": 6}]}


def test_storage_check_of_a_journal_file(source, tmp_path):
    journal = f"journal:{tmp_path / 'j.log'}"
    _transfer.copy_study("src", source[0], journal)
    result = invoke("storage", "check", journal, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["studies"] == [{"name": "src", "trials": 6}]


@pytest.mark.postgres
def test_storage_check_on_postgres_lists_a_new_study(postgres):
    pg, names = postgres
    names.append(name := unique("check"))
    optuna.create_study(study_name=name, storage=pg)
    result = invoke("storage", "check", pg, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["backend"] == "postgresql" and data["schema"]
    assert {"name": name, "trials": 0} in data["studies"]


def test_storage_check_of_an_unreachable_server_masks_the_password():
    result = run_hpo("storage", "check", "postgresql+psycopg://alice:s3cret@127.0.0.1:1/db")
    assert result.returncode == 1
    assert "s3cret" not in result.stdout + result.stderr
    assert result.stderr.startswith("Error: cannot open storage postgresql+psycopg://alice:***@127.0.0.1:1/db: ")
    assert result.stderr.rstrip().endswith("is the database server running and reachable?")
    assert len(result.stderr.splitlines()) == 1
