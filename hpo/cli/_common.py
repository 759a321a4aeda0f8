"""What every command shares: the storage option, error mapping, tables and JSON output."""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import typer

from hpo._errors import HpoError, Interrupted
from hpo._format import fmt
from hpo._storage import DEFAULT_STORAGE, STORAGE_ENV, resolve_url

DEBUG_ENV = "HPO_DEBUG"

StorageOption = Annotated[
    str | None,
    typer.Option(
        "--storage",
        "-s",
        envvar=STORAGE_ENV,
        show_envvar=True,
        help=f"Storage URL (sqlite:///file.db, postgresql+psycopg://user@host/db, journal:PATH). "
        f"Default: {DEFAULT_STORAGE} in the current folder.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]

F = TypeVar("F", bound=Callable[..., Any])


def storage_url(option: str | None) -> str:
    """The storage URL of a command: the flag, $HPO_STORAGE, then the default file."""
    return resolve_url(option)


def handles_errors(command: F) -> F:
    """Map the project's exceptions to one line on stderr and exit code 1 (130 for Ctrl-C).

    Set HPO_DEBUG=1 to see the traceback as well.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise
        except Interrupted as exc:
            fail(str(exc), code=130)
        except KeyboardInterrupt:
            fail("interrupted by the user (Ctrl-C)", code=130)
        except Exception as exc:
            if not _is_ours(exc):
                raise
            fail(str(exc))

    return wrapper  # type: ignore[return-value]


def _is_ours(exc: Exception) -> bool:
    import trainer

    return isinstance(exc, (HpoError, trainer.DataError, trainer.ConfigError))


def fail(message: str, code: int = 1) -> None:
    if os.environ.get(DEBUG_ENV):
        traceback.print_exc()
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


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
