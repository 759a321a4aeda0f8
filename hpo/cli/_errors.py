"""The one place where a failure becomes one line `Error: …` on stderr and an exit code.

Every command group of the CLI is built with `OneLineErrors` (see `_common.group`), so a command
mounted anywhere under the root cannot lose the mapping. Typer's own usage errors (exit 2),
`typer.Exit` and anything not listed here pass through untouched. HPO_DEBUG=1 prints the
traceback as well.
"""

from __future__ import annotations

import errno
import os
import traceback
import urllib.parse
from typing import Any, NoReturn

import optuna
import sqlalchemy.exc
import typer
from typer.core import TyperGroup

import trainer
from hpo._errors import HpoError, Interrupted
from hpo._storage import STORAGE_ENV

DEBUG_ENV = "HPO_DEBUG"
INTERRUPTED = 130  # what a shell reports for a process ended by Ctrl-C

_OS_FIXES = {
    errno.EACCES: "check its permissions, or choose another path",
    errno.EPERM: "check its permissions, or choose another path",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.ENOSPC: "free some disk space and run the command again",
    errno.EDQUOT: "free some disk space and run the command again",
}


class OneLineErrors(TyperGroup):
    """A command group that turns the failures of the commands under it into one line on stderr."""

    def invoke(self, ctx: typer.Context) -> Any:
        given = list(ctx.args)  # the command line below this group, to mask any password it holds
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            _fail("interrupted by the user (Ctrl-C)", INTERRUPTED)
        except Exception as exc:
            message = describe(exc)
            if message is None:
                raise
            _fail(_without_passwords(message, given), exc.exit_code if isinstance(exc, Interrupted) else 1)


def describe(exc: BaseException) -> str | None:
    """The one-line message for a failure the CLI reports itself, None for any other exception."""
    if isinstance(exc, (HpoError, trainer.DataError, trainer.ConfigError)):
        return str(exc)
    if isinstance(exc, (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)):
        return _database_message(exc)
    if isinstance(exc, OSError) and exc.errno != errno.EPIPE:  # a closed pipe is Typer's to handle
        return _os_message(exc)
    return None


def _os_message(exc: OSError) -> str:
    reason = exc.strerror or _first_line(exc)
    # Of a rename's two files, the second is the one the user named; the first is a temporary file.
    file = exc.filename2 if exc.filename2 is not None else exc.filename
    text = f"{file}: {reason}" if file is not None else reason
    fix = _OS_FIXES.get(exc.errno)
    return f"{text}; {fix}" if fix else text


def _database_message(exc: BaseException) -> str:
    # Optuna wraps the driver's error in a generic sentence; the driver's own first line says more.
    cause = exc.__cause__ if isinstance(exc.__cause__, sqlalchemy.exc.SQLAlchemyError) else exc
    detail = _first_line(getattr(cause, "orig", None) or cause)
    return (f"the storage failed: {detail}; check the database behind --storage "
            "(`hpo storage check` connects and shows its schema)")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _without_passwords(message: str, given: list[str]) -> str:
    """The message with the password of every URL in it, in the command line or in $HPO_STORAGE masked."""
    for text in (*message.split(), *given, os.environ.get(STORAGE_ENV) or ""):
        password = _password(text.strip("'\"()<>,;"))
        if password and password != "***":
            # Only where it sits in a URL: a short password would otherwise mask letters of words.
            message = message.replace(f":{password}@", ":***@")
    return message


def _password(text: str) -> str | None:
    if "://" not in text:
        return None
    try:
        return urllib.parse.urlsplit(text).password
    except ValueError:
        return None


def _fail(message: str, code: int) -> NoReturn:
    if os.environ.get(DEBUG_ENV):
        traceback.print_exc()
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)
