"""Files that commands write: safe default names, checked targets, whole-or-nothing writes.

A file appears complete or not at all: it is written to a temporary file beside the target,
flushed to disk, then renamed over it. A full disk, a read-only folder or a target that is not
a regular file is one line naming the file and the fix, and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from hpo._errors import HpoError

_MAX_STEM = 120


class OutputError(HpoError):
    """A file cannot be written where the user asked."""


def safe_stem(name: str) -> str:
    """`name` (a study name, perhaps someone else's) as one harmless file name stem: no folder
    separators, no leading dots, nothing but letters, digits, '.', '_' and '-'."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    stem = re.sub(r"\.{2,}", ".", stem)[:_MAX_STEM].strip("._-")
    return stem or "study"


def check_target(path: Path, what: str = "--out") -> Path:
    """`path` if it may be written: missing, or a regular file (replaced whole). A folder, a
    symbolic link, a device or a pipe is refused."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise OutputError(f"cannot use {what} {path}: {_reason(exc)}") from None
    if stat.S_ISREG(mode):
        return path
    kind = ("a folder" if stat.S_ISDIR(mode) else "a symbolic link" if stat.S_ISLNK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    raise OutputError(f"{what} {path} is {kind}; name a new or regular file instead")


@contextlib.contextmanager
def replacing(path: Path, what: str = "--out") -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success it replaces `path` at once,
    on any failure it is removed and an OSError becomes one line."""
    path = Path(path)
    check_target(path, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
    try:
        yield Path(temporary)
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        if os.path.getsize(temporary) == 0:
            raise OutputError(f"nothing was written to {path}")
        os.replace(temporary, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def write_file(path: Path, data: str | bytes, what: str = "--out") -> Path:
    """Write `data` to `path` whole or not at all."""
    with replacing(path, what) as temporary:
        if isinstance(data, str):
            temporary.write_text(data, encoding="utf-8")
        else:
            temporary.write_bytes(data)
    return Path(path)


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device; free some space or write elsewhere"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded; free some space or write elsewhere"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied; choose a folder you can write to"
    if exc.errno == errno.EROFS:
        return "the file system is read-only; write elsewhere"
    if exc.errno == errno.ENOTDIR:
        return "a part of the path is not a folder"
    return exc.strerror or str(exc)
