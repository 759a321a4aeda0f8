"""What every command shares: how a group is built, the storage option, study hints, tables and JSON."""

from __future__ import annotations

import ipaddress

import json
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from hpo._format import fmt
from hpo._storage import DEFAULT_STORAGE, STORAGE_ENV, URL_HELP, mask_url
from hpo.cli._errors import OneLineErrors


def group(**settings: Any) -> typer.Typer:
    """A command group whose commands' failures become one line on stderr (`_errors.OneLineErrors`)."""
    return typer.Typer(cls=OneLineErrors, no_args_is_help=True, pretty_exceptions_enable=False,
                       rich_markup_mode=None,  # plain, greppable errors: "Error: Invalid value for ..."
                       **settings)


StorageOption = Annotated[
    str | None,
    typer.Option(
        "--storage",
        "-s",
        envvar=STORAGE_ENV,
        show_envvar=True,
        help=f"Storage URL ({URL_HELP}). Default: {DEFAULT_STORAGE} in the current folder.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The study's name.")]


def hint(command: str, *names: str, options: Sequence[str] = (), storage: str | None = None) -> str:
    """A command line to print for the user to run next, e.g. `hpo study run 'my study' --trials 50`.

    Every word is shell-quoted. `--storage` is added when the command was given one that the
    environment would not supply again, with any password masked. A name that starts with `-`
    goes after `--`, so that the command does not read it as an option.

    Args:
        command: the words after `hpo`, e.g. "study run".
        names: the positional arguments (study names).
        options: flags and their values, e.g. ("--trials", "50").
        storage: the --storage value the current command received (None: the default).
    """
    flags = [*options]
    if storage and storage != os.environ.get(STORAGE_ENV):
        flags += ["--storage", mask_url(storage)]
    words = [*flags, "--", *names] if any(n.startswith("-") for n in names) else [*names, *flags]
    return " ".join(["hpo", command, *map(shlex.quote, words)])


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=_json_default, allow_nan=False))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out=None) -> None:
    """A plain aligned table; numbers right-aligned."""
    out = out or sys.stdout
    cells = [[fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    numeric = [all(_looks_numeric(r[i]) for r in cells) and cells for i in range(len(headers))]
    line = "  ".join(h.rjust(w) if numeric[i] else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    print(line.rstrip(), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        text = "  ".join(c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
        print(text.rstrip(), file=out)


def _looks_numeric(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return cell == "-"


def is_loopback(host: str) -> bool:
    """Whether a server bound to `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
