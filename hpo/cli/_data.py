"""`hpo data …`: where the data sets are, download them, check them."""

from __future__ import annotations

import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from hpo.cli._common import JsonOption, group, print_json, print_table
from trainer import REGISTRY, DataError, cache_root, download, list_datasets, locate, verify

app = group(help="Find, download and check the data sets the trainer reads (MNIST, Fashion-MNIST, digits).")

# Built from the registry so the choices shown by --help never drift from it.
DatasetName = Enum("DatasetName", {name: name for name in REGISTRY}, type=str)  # type: ignore[misc]

NameArgument = Annotated[DatasetName, typer.Argument(help="The data set.", show_default=False)]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        file_okay=False,
        help="Look here first (DIR/NAME/FILE or DIR/FILE), then $HPO_DATA_DIR/NAME, "
        "the user cache and /usr/share/datasets/NAME.",
    ),
]

_STATUS = {
    "complete": "ok",
    "test-only": "test files only",
    "bundled": "bundled",
    "missing": "missing",
}


@app.command("list")
def list_command(data_dir: DataDirOption = None, json_: JsonOption = False) -> None:
    """Show each data set: whether its files are found and look whole, where, and how many samples it gives.

    A file whose size (or gzip trailer) does not match the registry's is shown as damaged; `hpo data
    verify NAME` checks the content itself.
    """
    locations = list_datasets(data_dir)
    if json_:
        print_json([_as_dict(loc) for loc in locations])
        return
    rows = [
        [
            loc.name,
            _status(loc),
            _samples(loc),
            str(loc.folder) if loc.folder else ("package" if loc.status == "bundled" else "-"),
        ]
        for loc in locations
    ]
    print_table(["name", "status", "samples (pool + test)", "location"], rows)
    for loc in locations:
        for file, problem in loc.problems.items():
            typer.echo(f"{loc.name}: {file}: {problem}; delete it and run 'hpo data fetch {loc.name}'")
        if loc.problems:
            continue
        if loc.status == "test-only":
            typer.echo(
                f"{loc.name}: no training files; the pool and the test split are two fixed, disjoint "
                f"halves of the t10k set (docs/data.md). 'hpo data fetch {loc.name}' gets the full set."
            )
        elif loc.status == "missing":
            typer.echo(f"{loc.name}: not found; 'hpo data fetch {loc.name}' downloads it into {cache_root()}.")


def _status(loc) -> str:
    return "damaged" if loc.problems else _STATUS[loc.status]


def _samples(loc) -> str:
    if loc.pool_size is None:
        return "-"
    return f"{loc.pool_size:,} + {loc.test_size:,}"


def _as_dict(loc) -> dict:
    return {
        "name": loc.name,
        "title": REGISTRY[loc.name].title,
        "status": "damaged" if loc.problems else loc.status,
        "problems": dict(loc.problems),
        "location": str(loc.folder) if loc.folder else None,
        "pool_size": loc.pool_size,
        "test_size": loc.test_size,
        "files": {role: str(path) for role, path in loc.files.items()},
        "searched": list(loc.searched),
    }


@app.command("fetch")
def fetch_command(
    name: NameArgument,
    dest: Annotated[
        Path | None,
        typer.Option(
            "--dest",
            file_okay=False,
            help="Data root to write into; files go to DEST/NAME/. Default: the user cache "
            "($XDG_CACHE_HOME/hpo/datasets or ~/.cache/hpo/datasets).",
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="URL of a folder holding the files. Default: $HPO_DATA_URL/NAME/ when set, "
            "else the public mirrors.",
        ),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Download a data set, checking every file's MD5 before keeping it."""
    info = REGISTRY[name.value]
    if info.bundled:
        if json_:
            print_json({"dataset": info.name, "bundled": True, "folder": None, "files": []})
            return
        typer.echo(f"{info.name}: bundled with hpo; nothing to download.")
        return
    reporter = _ProgressLine()
    try:
        folder = download(info.name, dest=dest, base_url=url, progress=reporter)
    finally:
        reporter.close()
    if json_:
        print_json({"dataset": info.name, "bundled": False, "folder": str(folder),
                    "files": sorted(info.files.values())})
        return
    typer.echo(f"{info.name}: {len(info.files)} files checked, in {folder}")
    if dest is not None:
        typer.echo(f"Use them with --data-dir {dest} or HPO_DATA_DIR={dest}.")


@app.command("verify")
def verify_command(name: NameArgument, data_dir: DataDirOption = None, json_: JsonOption = False) -> None:
    """Compare the files found against the known checksums (sha256 of the decompressed content)."""
    info = REGISTRY[name.value]
    checks = verify(info.name, data_dir)
    if json_:
        print_json({"dataset": info.name, "files": [
            {"file": c.file, "path": str(c.path), "status": c.status, "check": c.method, "detail": c.detail}
            for c in checks]})
    if not checks and not json_:
        typer.echo(f"{info.name}: bundled with hpo; nothing to verify.")
        return
    if not json_:
        print_table(["status", "check", "file"], [[c.status, c.method, str(c.path)] for c in checks])
        for check in checks:
            if check.status != "ok":
                typer.echo(f"{check.file}: {check.detail}")
    if locate(info.name, data_dir).status == "test-only" and not json_:
        typer.echo(f"{info.name}: training files absent; the test files stand in for both (docs/data.md).")
    bad = [c for c in checks if c.status in ("mismatch", "unreadable")]
    if bad:
        raise DataError(
            f"{len(bad)} of {len(checks)} {info.name} files failed the check ({', '.join(c.file for c in bad)}); "
            f"delete them and run 'hpo data fetch {info.name}'"
        )


class _ProgressLine:
    """Download progress on stderr: one rewritten line on a terminal, one line per file otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.open = False
        self.last = 0.0

    def __call__(self, file_name: str, done: int, total: int | None) -> None:
        if total is not None and done >= total:
            self._write(f"{file_name}  {_size(done)}  downloaded", end=True)
            return
        now = time.monotonic()
        if not self.tty or now - self.last < 0.1:
            return
        self.last = now
        of = f" of {_size(total)} ({100 * done // total}%)" if total else ""
        self._write(f"{file_name}  {_size(done)}{of}", end=False)

    def _write(self, text: str, end: bool) -> None:
        if self.tty:
            typer.echo(f"\r\x1b[K{text}", err=True, nl=end)
            self.open = not end
        else:
            if end:
                typer.echo(text, err=True)

    def close(self) -> None:
        if self.open:
            typer.echo("", err=True)
            self.open = False


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} kB"
    return f"{n / (1024 * 1024):.1f} MB"
