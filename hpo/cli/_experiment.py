"""`hpo experiment KIND`: the seed's experiments, each writing its figures, a JSON and a table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hpo.cli._common import JsonOption, group, print_json, print_table

app = group(
    help="Reproduce the seed's experiments: PNG figures and a JSON of every number drawn go to --out "
    "(default ./experiments/KIND), the key numbers print as a table.",
)

DataOption = Annotated[str, typer.Option(
    "--data", help="Data set to train on (mnist, fashion-mnist, digits); `hpo data list` shows what is installed.")]
DataDirOption = Annotated[Path | None, typer.Option(
    "--data-dir", help="Folder to look for the data files in first (then $HPO_DATA_DIR, the user cache, "
    "/usr/share/datasets).")]
OutOption = Annotated[Path | None, typer.Option(
    "--out", help="Folder for the figures and KIND.json. Default: ./experiments/KIND.")]
SeedOption = Annotated[int, typer.Option(
    "--seed", min=0, help="Seed of every random draw: splits, weights, batch order, dropout masks.")]
QuickOption = Annotated[bool, typer.Option(
    "--quick", help="A small budget (seconds instead of minutes), for tests and a first look.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines on stderr.")]

SUMMARIES = {
    "optimizers": "SGD, Momentum, Nesterov, AdaGrad, RMSProp and Adam: training loss on the data "
                  "(2,000 iterations) and paths on the 2-D toy x²/20 + y².",
    "activations": "Histograms of 5 layers' activations for 1,000 Gaussian inputs: sigmoid, tanh and ReLU "
                   "with std 1, std 0.01, Xavier and He.",
    "init": "Training loss with initial weights of std 0.01, Xavier and He (ReLU, SGD, 2,000 iterations).",
    "batchnorm": "Training accuracy with and without batch norm for 16 initial weight scales from 1 to 1e-4.",
    "overfit": "Train and test accuracy of 300 samples on a deep net: no regularization, weight decay 0.1, "
               "dropout 0.2.",
}


def _run(kind: str, data: str, data_dir: Path | None, out: Path | None, seed: int, quick: bool, as_json: bool,
         quiet: bool) -> None:
    from hpo.experiments import run_experiment  # matplotlib and the trainer load only when an experiment runs

    def progress(line: str) -> None:
        typer.echo(line, err=True)

    report = run_experiment(kind, data, out, seed, quick, data_dir=str(data_dir) if data_dir else None,
                            progress=None if quiet else progress)
    if as_json:
        print_json(report)
        return
    reports = report["experiments"] if kind == "all" else {kind: report}
    for index, (name, one) in enumerate(reports.items()):
        if kind == "all":
            typer.echo(("\n" if index else "") + f"== {name} ==")
        _show(one)


def _show(report: dict[str, Any]) -> None:
    print_table(report["table"]["headers"], report["table"]["rows"])
    typer.echo("")
    for claim in report["claims"]:
        mark = "holds" if claim["holds"] else "DOES NOT HOLD"
        typer.echo(f"[{mark}] {claim['claim']} {claim['evidence']}")
    figures = report["figures"]
    folder = Path(figures[0]).parent if figures else Path(".")
    names = ", ".join(Path(f).name for f in figures)
    typer.echo(f"\nWrote {names} and {report['kind']}.json to {folder}")


def _register(kind: str) -> None:
    """One command per experiment, so that each has its own help and only the options it uses."""
    if kind == "activations":
        def command(out: OutOption = None, seed: SeedOption = 0, quick: QuickOption = False,
                    as_json: JsonOption = False, quiet: QuietOption = False) -> None:
            _run(kind, "mnist", None, out, seed, quick, as_json, quiet)
    else:
        def command(data: DataOption = "mnist", data_dir: DataDirOption = None, out: OutOption = None,
                    seed: SeedOption = 0, quick: QuickOption = False, as_json: JsonOption = False,
                    quiet: QuietOption = False) -> None:
            _run(kind, data, data_dir, out, seed, quick, as_json, quiet)

    command.__name__ = kind
    command.__doc__ = SUMMARIES.get(kind) or (
        "Run every experiment, each into its own folder OUT/KIND (default ./experiments/KIND).")
    app.command(kind)(command)


for _kind in (*SUMMARIES, "all"):  # the order of hpo.experiments.KINDS (a test checks)
    _register(_kind)
