"""The project's own exceptions: each carries one line that tells a user what is wrong and how to fix it."""

import signal


class HpoError(Exception):
    """Base of every error the CLI turns into one line `Error: …` and exit code 1."""


class SpecError(HpoError):
    """A study spec (TOML) breaks a rule."""


class StorageError(HpoError):
    """A storage URL is malformed, or the database behind it cannot be reached."""


class StudyError(HpoError):
    """A study is missing, exists already, or cannot do what was asked."""


class Interrupted(HpoError):
    """A signal stopped the work (Ctrl-C, SIGTERM); the running trial was recorded as failed.

    `signum` is the signal; a shell reports 128 + signum (130 for Ctrl-C, 143 for SIGTERM).
    """

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (of the driver's error under SQLAlchemy's wrapper)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
