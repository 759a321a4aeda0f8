"""The `hpo` command line: one sub-app per noun, mounted on the root."""

from __future__ import annotations

import typer

from hpo import __version__
from hpo.cli import _analysis, _transfer  # noqa: F401  (they add commands to `hpo study`)
from hpo.cli import _dashboard, _data, _experiment, _storage, _study

app = typer.Typer(
    name="hpo",
    help="Hyperparameter optimization of a NumPy trainer with Optuna.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain, greppable errors: "Error: Invalid value for ..."
)
app.add_typer(_study.app, name="study")
app.add_typer(_data.app, name="data")
app.add_typer(_storage.app, name="storage")
app.add_typer(_experiment.app, name="experiment")
_dashboard.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hpo {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Hyperparameter optimization of a NumPy trainer with Optuna."""


def main() -> None:
    app()
