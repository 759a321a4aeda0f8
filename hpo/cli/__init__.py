"""The `hpo` command line: the root app, and every mount of the command tree in one place.

Each module owns its group (a Typer it creates and fills); only this file mounts them, and no
module adds commands by being imported. Every group is built by `_common.group`, whose group
class maps failures to one line `Error: …` (`_errors.py`).
"""

from __future__ import annotations

import os

import optuna
import typer

from hpo._retry import RETRY_ENV, RETRY_SECONDS
from hpo._version import __version__
from hpo.cli import _analysis, _dashboard, _data, _experiment, _storage, _study, _transfer, _worker
from hpo.cli._common import group

app = group(name="hpo", help="Hyperparameter optimization of a NumPy trainer with Optuna.")
app.command("dashboard")(_dashboard.dashboard)
app.command("worker")(_worker.worker)

# `hpo study` gathers three modules' groups; their commands sit side by side under it.
study = group(help="Create, run, resume and inspect studies.")
study.add_typer(_study.app)  # create, run, list, show, best, confirm, fail-stale, delete
study.add_typer(_analysis.app)  # narrow, plot, evaluate, report
study.add_typer(_transfer.app)  # copy, export, import
study.add_typer(_worker.priority_app)  # priority

app.add_typer(study, name="study")
app.add_typer(_data.app, name="data")
app.add_typer(_storage.app, name="storage")
app.add_typer(_experiment.app, name="experiment")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hpo {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    storage_retry: float | None = typer.Option(
        None, "--storage-retry", min=0, envvar=RETRY_ENV, show_envvar=True, metavar="SECONDS",
        help=f"How long a command waits out an unreachable storage before it stops "
             f"(default {RETRY_SECONDS:g}; 0: never wait)."),
) -> None:
    """Hyperparameter optimization of a NumPy trainer with Optuna."""
    # Optuna's own log only where asked for (`hpo study run -v`): hpo reports for itself.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage_retry is not None:
        # For this process and for the workers it starts, which inherit the environment.
        os.environ[RETRY_ENV] = f"{storage_retry:g}"


def main() -> None:
    app()
