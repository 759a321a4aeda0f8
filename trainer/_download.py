"""Checking a data set's files against the registry's checksums, and downloading them.

The only part of the trainer that touches the network.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainer._datasets import DataError, DatasetInfo, dataset_info
from trainer._idx import gunzip
from trainer._lookup import cache_root, require

DOWNLOAD_TIMEOUT = 60  # seconds without data before a mirror is given up
_CHUNK = 1 << 16

Progress = Callable[[str, int, "int | None"], None]


@dataclass(frozen=True)
class FileCheck:
    """The result of checking one file.

    Attributes:
        file: the registry file name.
        path: the file checked.
        status: "ok", "mismatch", "unverified" (no checksum known and the gzip is not the
            published one) or "unreadable".
        method: "sha256" (of the decompressed content) or "md5" (of the gzip file).
        expected, actual: the checksums compared (actual is None when unreadable).
        detail: one line for people.
    """

    file: str
    path: Path
    status: str
    method: str
    expected: str | None
    actual: str | None
    detail: str


def verify(name: str, data_dir: str | os.PathLike | None = None) -> list[FileCheck]:
    """Check the files that `locate` finds against the registry's checksums.

    Compares the sha256 of the decompressed content (distributors recompress the gzip
    files, so their MD5 differs); files without a known sha256 fall back to the MD5 of
    the gzip file.

    Returns:
        One FileCheck per file found; empty for bundled sets.

    Raises:
        DataError: the data set is unknown or its files are missing.
    """
    info = dataset_info(name)
    if info.bundled:
        return []
    location = require(name, data_dir)
    checks = []
    for role, path in location.files.items():
        file_name = info.files[role]
        checks.append(_check_file(info, file_name, path))
    return checks


def _check_file(info: DatasetInfo, file_name: str, path: Path) -> FileCheck:
    try:
        packed = path.read_bytes()
        content = gunzip(packed, path, f"delete it and run 'hpo data fetch {info.name}'")
    except (OSError, DataError) as exc:
        detail = str(exc) if isinstance(exc, DataError) else f"{path}: cannot read it ({exc.strerror or exc})"
        return FileCheck(file_name, path, "unreadable", "sha256", info.sha256.get(file_name), None, detail)
    sha = info.sha256.get(file_name)
    if sha:
        actual = hashlib.sha256(content).hexdigest()
        status = "ok" if actual == sha else "mismatch"
        detail = f"sha256 of the decompressed content {'matches' if status == 'ok' else 'differs: ' + actual}"
        return FileCheck(file_name, path, status, "sha256", sha, actual, detail)
    md5 = info.md5.get(file_name)
    actual = hashlib.md5(packed, usedforsecurity=False).hexdigest()
    if md5 and actual == md5:
        return FileCheck(file_name, path, "ok", "md5", md5, actual, "MD5 matches the published gzip file")
    detail = "no sha256 known for the content, and the gzip is not the published file (recompressed?)"
    return FileCheck(file_name, path, "unverified", "md5", md5, actual, detail)


# ---------------------------------------------------------------------------------------
# Download


def download(
    name: str,
    dest: str | os.PathLike | None = None,
    base_url: str | None = None,
    progress: Progress | None = None,
) -> Path:
    """Download a data set's files and check each before it is kept.

    A file is kept when the MD5 of the gzip matches the published one, or, for a mirror
    that recompressed it, when the sha256 of its content matches the registry. Each file
    is written to a temporary file in the destination folder and renamed into place only
    after the check, so a failure leaves no partial file. Files already present and
    correct are not downloaded again.

    Args:
        name: a registry name with files ("mnist", "fashion-mnist").
        dest: the data root; files go into DEST/NAME/. Default: `cache_root()`.
        base_url: a URL (http, https or file) of the folder holding the files. Default:
            `$HPO_DATA_URL/NAME/` when that is set, else the registry's mirrors in order.
        progress: called as progress(file_name, bytes_done, bytes_total_or_None) while
            a file downloads; the last call for a file has bytes_done == bytes_total.
            Files already in place and correct are not reported.

    Returns:
        The folder holding the files.

    Raises:
        DataError: bundled set, bad URL, network failure or checksum mismatch (one line).
    """
    info = dataset_info(name)
    if info.bundled:
        raise DataError(f"{name}: bundled with hpo; there is nothing to download")
    bases = _bases(info, base_url)
    folder = (Path(dest).expanduser() if dest is not None else cache_root()) / name
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{folder}: cannot create it ({exc.strerror or exc}); choose another --dest") from None
    try:
        for file_name in info.files.values():
            target = folder / file_name
            if target.is_file() and _accepted(info, file_name, target.read_bytes()) is None:
                continue
            _fetch(info, file_name, bases, folder, progress)
    except BaseException:
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise
    return folder


def _bases(info: DatasetInfo, base_url: str | None) -> list[str]:
    env = os.environ.get("HPO_DATA_URL", "")
    if base_url:
        bases, origin = [base_url], "--url"
    elif env:
        bases, origin = [env.rstrip("/") + f"/{info.name}/"], "HPO_DATA_URL"
    else:
        bases, origin = list(info.mirrors), "mirror"
    for base in bases:
        if urllib.parse.urlsplit(base).scheme not in ("http", "https", "file"):
            raise DataError(f"{origin} must be an http://, https:// or file:// URL; got {base!r}")
    return [base if base.endswith("/") else base + "/" for base in bases]


def _accepted(info: DatasetInfo, file_name: str, packed: bytes) -> str | None:
    """None when the downloaded bytes are the right file, else why not."""
    md5 = hashlib.md5(packed, usedforsecurity=False).hexdigest()
    expected_md5 = info.md5.get(file_name)
    if md5 == expected_md5:
        return None
    sha = info.sha256.get(file_name)
    if sha:
        try:
            content = gzip.decompress(packed) if packed[:2] == b"\x1f\x8b" else packed
        except (EOFError, OSError, zlib.error):
            content = b""
        if hashlib.sha256(content).hexdigest() == sha:
            return None  # recompressed by the mirror, same content
        return f"MD5 {md5} does not match the published {expected_md5}, nor does the content match its sha256"
    return f"MD5 {md5} does not match the published {expected_md5}"


def _fetch(info: DatasetInfo, file_name: str, bases: list[str], folder: Path, progress: Progress | None) -> None:
    target = folder / file_name
    errors = []
    for base in bases:
        url = base + file_name
        try:
            fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{file_name}.", suffix=".part")
        except OSError as exc:
            raise _unwritable(info, folder, exc) from None
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:  # unbuffered: closing has nothing left to fail on
                try:
                    problem = _stream(url, _Written(out), file_name, progress)
                except _WriteFailed as failed:
                    raise _unwritable(info, folder, failed.error) from None
                try:
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as exc:
                    raise _unwritable(info, folder, exc) from None
            if problem is None:
                problem = _accepted(info, file_name, Path(temp).read_bytes())
                if problem:
                    problem = f"{url}: {problem}"
            if problem is None:
                os.chmod(temp, 0o644)  # mkstemp makes it private; the data are not
                os.replace(temp, target)
                return
            errors.append(problem)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
    raise DataError(
        f"{info.name}: could not download {file_name}: {'; '.join(errors)}; nothing was kept in {folder}; "
        f"try again, or point --url or HPO_DATA_URL at another mirror"
    )


class _WriteFailed(Exception):
    """Writing the downloaded bytes failed: the destination's fault, not the mirror's."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


class _Written:
    """The temporary file, with its write errors told apart from the network's."""

    def __init__(self, out) -> None:
        self.out = out

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        try:
            while view:  # an unbuffered write may take part of the chunk
                view = view[self.out.write(view):]
        except OSError as exc:
            raise _WriteFailed(exc) from None


def _unwritable(info: DatasetInfo, folder: Path, exc: OSError) -> DataError:
    """No other mirror can help: the destination cannot take the file."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why, fix = "no space left on the device", "free some space or choose another --dest"
    else:
        why, fix = exc.strerror or str(exc), "choose another --dest"
    return DataError(f"{info.name}: cannot write into {folder}: {why}; nothing was kept; {fix}")


def _stream(url: str, out, file_name: str, progress: Progress | None) -> str | None:
    """Copy url into out; None on success, else the reason as one line."""
    request = urllib.request.Request(url, headers={"User-Agent": "hpo-data/1"})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
            done = 0
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(file_name, done, total)
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        return f"{url}: {exc.reason}"
    except (OSError, ValueError) as exc:  # timeouts, resets, malformed URLs
        return f"{url}: {exc}"
    if total is not None and done != total:
        return f"{url}: connection closed after {done:,} of {total:,} bytes"
    if progress and total is None:
        progress(file_name, done, done)
    return None
