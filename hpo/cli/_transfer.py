"""`hpo study copy | export | import`: move a study whole between storages and files.

The root (`hpo.cli`) mounts this group's commands under `hpo study`.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from hpo import _transfer
from hpo._files import check_target, safe_stem
from hpo._storage import URL_HELP, mask_url, resolve_url
from hpo.cli._common import NameArg, StorageOption, group, print_json

app = group()


class FileFormat(str, Enum):
    json = "json"
    csv = "csv"


NewNameOption = Annotated[str | None, typer.Option(
    "--name", help="Name of the new study (default: the same name).")]
CopyJson = Annotated[bool, typer.Option("--json", help=(
    "Print one JSON object for scripts: study (the new name), source (the name copied), from and to "
    "(the storages, passwords masked), trials, states, seconds."))]
ExportJson = Annotated[bool, typer.Option("--json", help=(
    "Print one JSON object for scripts: study, from (the storage, password masked), format, file, "
    "sidecar (CSV only, else null), trials, states, seconds."))]
ImportJson = Annotated[bool, typer.Option("--json", help=(
    "Print one JSON object for scripts: study, file, to (the storage, password masked), trials, states, "
    "seconds."))]


@app.command("copy")
def copy(
    name: NameArg,
    to: Annotated[str, typer.Option(
        "--to", help=f"Storage URL to copy into ({URL_HELP}).")],
    new_name: NewNameOption = None,
    storage: StorageOption = None,
    json_: CopyJson = False,
) -> None:
    """Copy a study with all its trials and attributes to another storage, in one transaction."""
    source = resolve_url(storage)
    target = resolve_url(to)
    done = _transfer.copy_study(name, source, target, new_name)
    if json_:
        print_json({"study": done.name, "source": name, "from": mask_url(source), "to": mask_url(target),
                    **_counts(done)})
        return
    typer.echo(f"Copied study '{name}' ({_trials_text(done)}) from {mask_url(source)} to "
               f"{mask_url(target)} as '{done.name}' in {done.seconds:.1f} s.")


@app.command("export")
def export(
    name: NameArg,
    format_: Annotated[FileFormat | None, typer.Option(
        "--format", "-f", help="json (one file, everything) or csv (a row per trial, plus a "
        "sidecar NAME.study.json). Default: from --out's suffix, else json.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="The file to write (a new or regular file, replaced whole); '-' prints JSON on "
        "stdout. Default: NAME.json or NAME.csv in the current folder, NAME made a safe file name.")] = None,
    storage: StorageOption = None,
    json_: ExportJson = False,
) -> None:
    """Write a study to a portable file that `hpo study import` reads back."""
    url = resolve_url(storage)
    fmt = format_.value if format_ else ("csv" if out and out.suffix == ".csv" else "json")
    if out is not None and str(out) == "-":
        if fmt == "csv":
            raise typer.BadParameter("a CSV export needs a file for its sidecar; use --out FILE.csv",
                                     param_hint="--out")
        if json_:
            raise typer.BadParameter("--out - prints the study itself as JSON; leave out --json",
                                     param_hint="--json")
        typer.echo(_transfer.to_json(_transfer.read_study(url, name)), nl=False)
        return
    # A name may come from someone else's file (import keeps it): never a path of its own.
    path = check_target(out) if out is not None else check_target(Path(f"{safe_stem(name)}.{fmt}"), "the file")
    done = _transfer.export_study(name, url, path, fmt)
    if json_:
        print_json({"study": name, "from": mask_url(url), "format": fmt, "file": str(done.files[0]),
                    "sidecar": str(done.files[1]) if len(done.files) > 1 else None, **_counts(done)})
        return
    files = " and ".join(str(f) for f in done.files)
    typer.echo(f"Exported study '{name}' ({_trials_text(done)}) to {files}.")


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(
        help="A file written by `hpo study export` (JSON, or CSV with its sidecar NAME.study.json).")],
    new_name: NewNameOption = None,
    storage: StorageOption = None,
    json_: ImportJson = False,
) -> None:
    """Create a study from an exported file (checked whole before anything is written)."""
    url = resolve_url(storage)
    done = _transfer.import_study(file, url, new_name)
    if json_:
        print_json({"study": done.name, "file": str(file), "to": mask_url(url), **_counts(done)})
        return
    typer.echo(f"Imported study '{done.name}' ({_trials_text(done)}) from {file} into {mask_url(url)}.")


def _trials_text(done: _transfer.Transfer) -> str:
    order = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
    states = ", ".join(f"{done.counts[s]} {s.lower()}" for s in order if done.counts.get(s))
    return f"{done.trials} trials: {states}" if states else "no trials"


def _counts(done: _transfer.Transfer) -> dict[str, Any]:
    return {"trials": done.trials, "states": {state.lower(): n for state, n in done.counts.items()},
            "seconds": round(done.seconds, 3)}
