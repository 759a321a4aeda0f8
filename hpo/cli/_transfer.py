"""`hpo study copy | export | import`: move a study whole between storages and files.

The root (`hpo.cli`) mounts this group's commands under `hpo study`.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from hpo import _transfer
from hpo._storage import URL_HELP, mask_url, resolve_url
from hpo.cli._common import NameArg, StorageOption, group

app = group()


class FileFormat(str, Enum):
    json = "json"
    csv = "csv"


NewNameOption = Annotated[str | None, typer.Option(
    "--name", help="Name of the new study (default: the same name).")]


@app.command("copy")
def copy(
    name: NameArg,
    to: Annotated[str, typer.Option(
        "--to", help=f"Storage URL to copy into ({URL_HELP}).")],
    new_name: NewNameOption = None,
    storage: StorageOption = None,
) -> None:
    """Copy a study with all its trials and attributes to another storage, in one transaction."""
    source = resolve_url(storage)
    target = resolve_url(to)
    done = _transfer.copy_study(name, source, target, new_name)
    typer.echo(f"Copied study '{name}' ({_trials_text(done)}) from {mask_url(source)} to "
               f"{mask_url(target)} as '{done.name}' in {done.seconds:.1f} s.")


@app.command("export")
def export(
    name: NameArg,
    format_: Annotated[FileFormat | None, typer.Option(
        "--format", "-f", help="json (one file, everything) or csv (a row per trial, plus a "
        "sidecar NAME.study.json). Default: from --out's suffix, else json.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="The file to write; '-' prints JSON on stdout. Default: NAME.json or "
        "NAME.csv in the current folder.")] = None,
    storage: StorageOption = None,
) -> None:
    """Write a study to a portable file that `hpo study import` reads back."""
    url = resolve_url(storage)
    fmt = format_.value if format_ else ("csv" if out and out.suffix == ".csv" else "json")
    if out is not None and str(out) == "-":
        if fmt == "csv":
            raise typer.BadParameter("a CSV export needs a file for its sidecar; use --out FILE.csv",
                                     param_hint="--out")
        typer.echo(_transfer.to_json(_transfer.read_study(url, name)), nl=False)
        return
    path = out or Path(f"{name}.{fmt}")
    done = _transfer.export_study(name, url, path, fmt)
    files = " and ".join(str(f) for f in done.files)
    typer.echo(f"Exported study '{name}' ({_trials_text(done)}) to {files}.")


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(
        help="A file written by `hpo study export` (JSON, or CSV with its sidecar NAME.study.json).")],
    new_name: NewNameOption = None,
    storage: StorageOption = None,
) -> None:
    """Create a study from an exported file (checked whole before anything is written)."""
    url = resolve_url(storage)
    done = _transfer.import_study(file, url, new_name)
    typer.echo(f"Imported study '{done.name}' ({_trials_text(done)}) from {file} into {mask_url(url)}.")


def _trials_text(done: _transfer.Transfer) -> str:
    order = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
    states = ", ".join(f"{done.counts[s]} {s.lower()}" for s in order if done.counts.get(s))
    return f"{done.trials} trials: {states}" if states else "no trials"
