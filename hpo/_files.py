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
from collections.abc import Iterator, Sequence
from pathlib import Path

from hpo._errors import HpoError

_MAX_STEM = 120
TEMPORARY_SUFFIX = ".tmp"


class OutputError(HpoError):
    """A file cannot be written where the user asked."""


def safe_stem(name: str) -> str:
    """`name` (a study name, perhaps someone else's) as one harmless file name stem: no folder
    separators, no leading dots or dashes, nothing but letters, digits, '.', '_' and '-'."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    stem = re.sub(r"\.{2,}", ".", stem)[:_MAX_STEM].strip("._-")
    return stem or "study"


def check_target(path: Path, what: str = "--out") -> Path:
    """`path` if it may be written: missing, or a regular file (replaced whole). A folder, a
    symbolic link, a device or a pipe is refused."""
    mode = _mode(path, what)
    if mode is None or stat.S_ISREG(mode):
        return path
    raise OutputError(f"{what} {path} is {_kind(mode)}; name a new or regular file instead")


def check_folder(path: Path, what: str = "--out") -> Path:
    """`path` if files may be put in it: missing (it is created when written to) or a folder
    (a symbolic link to one included: only files inside it are replaced, never the link).
    A regular file, a device or a pipe there is refused."""
    mode = _mode(path, what, follow=True)
    if mode is None or stat.S_ISDIR(mode):
        return path
    raise OutputError(f"{what} {path} is {_kind(mode)}; name a new folder or an existing one instead")


def make_folder(path: Path, what: str = "--out") -> Path:
    """Create the folder `path` (and its parents) after `check_folder`; an OSError is one line."""
    check_folder(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder {path}: {os_reason(exc)}") from None
    return path


@contextlib.contextmanager
def replacing(path: Path, what: str = "--out") -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success it replaces `path` at once,
    on any failure it is removed and an OSError becomes one line."""
    with replacing_all([path], what) as (temporary,):
        yield temporary


@contextlib.contextmanager
def replacing_all(paths: Sequence[Path], what: str = "--out") -> Iterator[tuple[Path, ...]]:
    """`replacing` for files that belong together (a CSV and its sidecar): each gets a temporary;
    only when all were written and flushed are they renamed into place, so a full disk leaves
    none of them half-written and none of the old ones replaced."""
    paths = [Path(p) for p in paths]
    for path in paths:
        check_target(path, what)
    temporaries: list[Path] = []
    try:
        try:
            for path in paths:
                path.parent.mkdir(parents=True, exist_ok=True)
                handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                                suffix=TEMPORARY_SUFFIX)
                os.close(handle)
                temporaries.append(Path(name))
            yield tuple(temporaries)
            for path, temporary in zip(paths, temporaries):
                with open(temporary, "rb+") as written:
                    os.fsync(written.fileno())
                if os.path.getsize(temporary) == 0:
                    raise OutputError(f"nothing was written to {path}")
                os.chmod(temporary, _mode_for(path))  # mkstemp makes the file private
            for path, temporary in zip(paths, temporaries):
                os.replace(temporary, path)
        except OSError as exc:
            where = next((p for p, t in zip(paths, temporaries) if exc.filename in (str(t), t)), paths[0])
            raise OutputError(f"cannot write {where}: {os_reason(exc)}") from None
    finally:
        for temporary in temporaries:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)


def write_file(path: Path, data: str | bytes, what: str = "--out") -> Path:
    """Write `data` (text as UTF-8, line ends as given) to `path` whole or not at all."""
    with replacing(path, what) as temporary:
        temporary.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def _mode(path: Path, what: str, follow: bool = False) -> int | None:
    try:
        return (os.stat if follow else os.lstat)(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputError(f"cannot use {what} {path}: {os_reason(exc)}") from None


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _mode_for(path: Path) -> int:
    """The permissions a replaced file keeps, or those a new file gets under the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def os_reason(exc: OSError) -> str:
    """Why a file could not be written, and the fix, for people."""
    if exc.errno == errno.ENOSPC:
        return "no space left on the device; free some space or write elsewhere"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded; free some space or write elsewhere"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied; choose a folder you can write to"
    if exc.errno == errno.EROFS:
        return "the file system is read-only; write elsewhere"
    if exc.errno == errno.ENOTDIR:
        return "a part of the path is a file, not a folder; choose another path"
    return exc.strerror or str(exc)
