"""The command tree as a whole: every command mounted once, every failure one line, bounds, hints.

The tree is walked from the root (`typer.main.get_command`), so a command added later is
checked without being listed here.
"""

from __future__ import annotations

import ast
import errno
import functools
import shlex
from collections import Counter

import optuna
import pytest
import sqlalchemy.exc
import typer
from typer.testing import CliRunner

import trainer
from hpo import HpoError, Interrupted
from hpo.cli import _dashboard, app
from hpo.cli._common import hint
from helpers import REPO, write_spec

runner = CliRunner()
CLI = REPO / "hpo" / "cli"

# `hpo --help` and `hpo study --help` list exactly these, in this order (single commands first).
COMMANDS = [
    "dashboard", "worker", "study create", "study run", "study list", "study show", "study best", "study confirm", "study fail-stale",
    "study delete", "study narrow", "study plot", "study evaluate", "study report", "study copy", "study export",
    "study import", "study priority", "data list", "data fetch", "data verify", "storage check", "storage serve",
    "experiment optimizers",
    "experiment activations", "experiment init", "experiment batchnorm", "experiment overfit", "experiment all",
]

# (command, option, min, max): every bound declared on an option.
BOUNDS = {
    ("study run", "--trials", 1, None), ("study run", "--timeout", 0, None),
    ("study run", "--heartbeat-interval", 1, None), ("study run", "--grace-period", 1, None),
    ("study create", "--heartbeat-interval", 1, None), ("study create", "--grace-period", 1, None),
    ("study run", "--workers", 1, None), ("study show", "--top", 1, None), ("study confirm", "--top", 1, None),
    ("study confirm", "--seeds", 1, None), ("study confirm", "--workers", 1, None),
    ("study fail-stale", "--grace-period", 1, None), ("study narrow", "--top", 2, None),
    ("study narrow", "--quantile", 0, 1), ("study narrow", "--margin", 0, 1), ("study narrow", "--trials", 1, None),
    ("study plot", "--top", 2, None), ("study plot", "--dpi", 1, None), ("study evaluate", "--seeds", 1, None),
    ("study report", "--top", 2, None), ("dashboard", "--port", 1, 65535),
    ("worker", "--poll", 0.1, None), ("storage serve", "--port", 0, 65535), ("storage serve", "--threads", 1, 256),
    *{(f"experiment {kind}", "--seed", 0, None) for kind in ("optimizers", "activations", "init", "batchnorm",
                                                              "overfit", "all")},
}


def invoke(*args: str, **env: str):
    return runner.invoke(app, list(args), env={"HPO_STORAGE": "", **env})


def leaves(command=None, path=()):
    """(path, click command) of every command under the root, groups left out."""
    command = command or typer.main.get_command(app)
    if not hasattr(command, "commands"):
        yield " ".join(path), command
        return
    for name, sub in command.commands.items():
        yield from leaves(sub, (*path, name))


def command_infos(typer_app: typer.Typer):
    """Every command registered on the app and the groups mounted on it, as Typer keeps them."""
    yield from typer_app.registered_commands
    for mounted in typer_app.registered_groups:
        yield from command_infos(mounted.typer_instance)


TREE = dict(leaves())


def required_args(command) -> list[str]:
    """Values that get past parsing: a data set name is a valid NAME, SPEC, FILE and URL to the parser."""
    value = next(iter(trainer.REGISTRY))
    args: list[str] = []
    for param in command.params:
        if param.required:
            given = "1" if param.type_descriptor.annotation is int else value  # a number (a priority) gets one
            args += [param.opts[0], given] if param.param_type_name == "option" else [given]
    return args


def break_command(monkeypatch, path: str, error: BaseException) -> None:
    """Make the command at `path` raise `error` from its body, as if a function it calls had."""
    function = TREE[path].callback.__wrapped__
    (info,) = [i for i in command_infos(app) if i.callback is function]

    @functools.wraps(function)  # Typer reads the parameters through __wrapped__
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(info, "callback", broken)


# --- The tree -----------------------------------------------------------------------------------


def test_the_tree_holds_every_command_once_in_order():
    assert list(TREE) == COMMANDS
    functions = Counter(command.callback.__wrapped__ for command in TREE.values())
    assert max(functions.values()) == 1
    # Every command a module registers is in the tree, and nothing else is.
    registered = Counter(info.callback for info in command_infos(app))
    assert registered == functions
    assert _dashboard.dashboard in functions


def test_help_lists_the_groups_and_the_study_commands():
    assert [line.split()[0] for line in _commands_section(invoke("--help").stdout)] == [
        "dashboard", "worker", "study", "data", "storage", "experiment"]
    study = [line.split()[0] for line in _commands_section(invoke("study", "--help").stdout)]
    assert study == [path.split()[1] for path in COMMANDS if path.startswith("study ")]


def _commands_section(text: str) -> list[str]:
    lines = text.split("Commands:\n", 1)[1].splitlines()
    return [line for line in lines if line.startswith("  ") and not line.startswith("   ")]


def test_no_module_adds_commands_by_being_imported():
    for path in CLI.glob("*.py"):
        text = path.read_text()
        assert "noqa: F401" not in text, path.name
        if path.name == "__init__.py":
            continue
        # Only the root mounts: no module reaches for another module's group.
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hpo.cli"):
                assert "app" not in {alias.name for alias in node.names}, f"{path.name} imports an app"


def test_every_command_that_reads_a_storage_takes_the_storage_option():
    for path, command in TREE.items():
        if path.startswith(("study ", "storage ", "dashboard")):
            options = {opt for param in command.params for opt in getattr(param, "opts", [])}
            assert "--storage" in options, path


# --- One line per failure -----------------------------------------------------------------------


FAILURES = [
    pytest.param(HpoError("the study is broken on purpose"), 1, "the study is broken on purpose", id="HpoError"),
    pytest.param(trainer.DataError("mnist: data files not found"), 1, "mnist: data files not found", id="DataError"),
    pytest.param(trainer.ConfigError("lr", "in (0, inf)", -1.0), 1, "lr must be in (0, inf); got -1.0",
                 id="ConfigError"),
    pytest.param(PermissionError(errno.EACCES, "Permission denied", "/srv/hpo/hpo.db"), 1,
                 "/srv/hpo/hpo.db: Permission denied; check its permissions, or choose another path",
                 id="PermissionError"),
    pytest.param(OSError(errno.ENOSPC, "No space left on device", "figures/lr.png"), 1,
                 "figures/lr.png: No space left on device; free some disk space and run the command again",
                 id="disk-full"),
    pytest.param(sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection\nSQL: …")),
                 1, "the storage failed: server closed the connection; check the database behind --storage "
                    "(`hpo storage check` connects and shows its schema)", id="SQLAlchemyError"),
    pytest.param(optuna.exceptions.StorageInternalError("An exception is raised during the commit."), 1,
                 "the storage failed: An exception is raised during the commit.; check the database behind "
                 "--storage (`hpo storage check` connects and shows its schema)", id="StorageInternalError"),
    pytest.param(Interrupted("interrupted: trial 3 was recorded as failed"), 130,
                 "interrupted: trial 3 was recorded as failed", id="Interrupted"),
    pytest.param(KeyboardInterrupt(), 130, "interrupted by the user (Ctrl-C)", id="Ctrl-C"),
]


@pytest.mark.parametrize("path", COMMANDS)
@pytest.mark.parametrize("error,code,message", FAILURES)
def test_a_failure_in_any_command_is_one_line_on_stderr(monkeypatch, path, error, code, message):
    break_command(monkeypatch, path, error)
    result = invoke(*path.split(), *required_args(TREE[path]))
    assert result.exit_code == code, result.output
    assert result.stderr == f"Error: {message}\n"
    assert result.stdout == ""


def test_an_error_nobody_expected_is_not_hidden(monkeypatch):
    break_command(monkeypatch, "study list", RuntimeError("a bug"))
    result = invoke("study", "list")
    assert isinstance(result.exception, RuntimeError)  # a bug keeps its traceback


def test_debug_variable_shows_the_traceback(monkeypatch):
    break_command(monkeypatch, "study list", HpoError("broken"))
    result = invoke("study", "list", HPO_DEBUG="1")
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.endswith("Error: broken\n")


def test_a_database_error_never_shows_the_password(monkeypatch):
    url = "postgresql+psycopg://alice:s3cret@db.example/hpo"
    driver = Exception(f"could not translate host name in {url}")
    break_command(monkeypatch, "study list", sqlalchemy.exc.OperationalError("SELECT 1", {}, driver))
    result = invoke("study", "list", "--storage", url)
    assert result.exit_code == 1
    assert "s3cret" not in result.output
    assert "alice:***@db.example" in result.stderr


def test_a_closed_pipe_is_left_to_typer(monkeypatch):
    break_command(monkeypatch, "study list", BrokenPipeError(errno.EPIPE, "Broken pipe"))
    assert invoke("study", "list").stderr == ""


def test_an_output_path_that_is_a_folder_is_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert invoke("study", "create", str(write_spec(tmp_path, "known")), "--storage", url).exit_code == 0
    folder = tmp_path / "taken"
    folder.mkdir()
    result = invoke("study", "export", "known", "--out", str(folder), "--storage", url)
    assert result.exit_code == 1
    assert result.stderr == f"Error: --out {folder} is a folder; name a new or regular file instead\n"


def test_a_database_that_is_not_optuna_is_one_line(tmp_path):
    import sqlite3

    db = tmp_path / "other.db"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE studies (x INTEGER)")
    result = invoke("study", "list", "--storage", f"sqlite:///{db}")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "no such column" in result.stderr
    assert len(result.stderr.splitlines()) == 1


# --- Bounds on the options ----------------------------------------------------------------------


def declared_bounds():
    for path, command in TREE.items():
        for param in command.params:
            if getattr(param, "min", None) is not None or getattr(param, "max", None) is not None:
                yield path, param.opts[0], param.min, param.max


def test_the_bounds_are_declared_on_the_options():
    assert set(declared_bounds()) == BOUNDS


def _bound_cases():
    for path, option, low, high in sorted(BOUNDS, key=str):
        if low is not None:
            yield pytest.param(path, option, low - 1, f"greater than or equal to {low}", id=f"{path} {option} < {low}")
        if high is not None:
            yield pytest.param(path, option, high + 1, f"less than or equal to {high}", id=f"{path} {option} > {high}")


@pytest.mark.parametrize("path,option,value,rule", list(_bound_cases()))
def test_a_value_past_a_bound_is_a_usage_error(monkeypatch, path, option, value, rule):
    break_command(monkeypatch, path, AssertionError("the command ran"))
    result = invoke(*path.split(), *required_args(TREE[path]), option, str(value))
    assert result.exit_code == 2, result.output
    stderr = " ".join(result.stderr.split())
    assert f"Invalid value for '{option}'" in stderr and f"Input should be {rule}" in stderr


@pytest.mark.parametrize("path,option,low,high", sorted(BOUNDS, key=str))
def test_a_value_on_a_bound_is_accepted(monkeypatch, path, option, low, high):
    break_command(monkeypatch, path, HpoError("reached the command"))
    for value in (v for v in (low, high) if v is not None):
        result = invoke(*path.split(), *required_args(TREE[path]), option, str(value))
        assert result.stderr == "Error: reached the command\n", (value, result.output)


# --- Hints --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["my study", "-rf", "it's"])
def test_printed_hints_quote_the_study_name_and_run_as_printed(tmp_path, name):
    url = f"sqlite:///{tmp_path / 's.db'}"
    spec = write_spec(tmp_path, "quoted", trials=1, epochs=1, samples=200)
    created = invoke("study", "create", str(spec), "--name", name, "--storage", url)
    assert created.exit_code == 0, created.output
    printed = created.stdout.split("Run it with: ", 1)[1].strip()
    assert printed == hint("study run", name, storage=url)
    words = shlex.split(printed)
    assert words[:3] == ["hpo", "study", "run"] and name in words
    ran = invoke(*words[1:])
    assert ran.exit_code == 0, ran.output
    assert ran.stdout.startswith(f"{name}: 1/1 finished")


def test_a_run_stopped_by_its_timeout_says_how_to_continue_with_the_same_flags(tmp_path):
    url = f"sqlite:///{tmp_path / 'my files' / 's.db'}"
    spec = write_spec(tmp_path, "slow")
    assert invoke("study", "create", str(spec), "--name", "a b", "--storage", url).exit_code == 0
    result = invoke("study", "run", "a b", "--trials", "3", "--timeout", "0", "--storage", url)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"Continue with: hpo study run 'a b' --trials 3 --storage '{url}'"


def test_a_hint_leaves_out_the_storage_that_came_from_the_environment(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert invoke("study", "create", str(write_spec(tmp_path, "env")), HPO_STORAGE=url).exit_code == 0
    result = invoke("study", "best", "env", HPO_STORAGE=url)
    assert result.stderr == "Error: study 'env' has no complete trial yet; run it with `hpo study run env`\n"


def test_a_hint_masks_the_password_of_the_storage():
    printed = hint("study run", "x", options=("--trials", "5"), storage="postgresql+psycopg://alice:s3cret@db/hpo")
    assert printed == "hpo study run x --trials 5 --storage 'postgresql+psycopg://alice:***@db/hpo'"


# --- hpo storage check --------------------------------------------------------------------------


def test_storage_check_takes_the_url_as_option_or_argument(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert invoke("study", "create", str(write_spec(tmp_path, "one")), "--storage", url).exit_code == 0
    for args in (["--storage", url], [url], ["-s", url]):
        result = invoke("storage", "check", *args)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"{url}: sqlite, schema ") and "1 studies" in result.stdout
    from_env = invoke("storage", "check", HPO_STORAGE=url)
    assert from_env.exit_code == 0 and "1 studies" in from_env.stdout


def test_storage_check_refuses_two_different_urls(tmp_path):
    result = invoke("storage", "check", f"sqlite:///{tmp_path / 'a.db'}", "--storage", f"sqlite:///{tmp_path / 'b.db'}")
    assert result.exit_code == 2
    assert "give the storage URL once, as an argument or with --storage" in " ".join(result.stderr.split())
    assert not list(tmp_path.iterdir())  # nothing was opened
