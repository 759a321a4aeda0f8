"""Where a data set's files are: an explicit folder, `$HPO_DATA_DIR`, the per-user cache
(`$XDG_CACHE_HOME/hpo/datasets` or `~/.cache/hpo/datasets`) and `/usr/share/datasets`
(Debian's `dataset-*` packages), in that order. Nothing here reads a file. See docs/data.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trainer._datasets import REGISTRY, STANDIN_POOL_SIZE, DataError, dataset_info

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
    """

    name: str
    status: str
    folder: Path | None
    files: Mapping[str, Path]
    searched: tuple[str, ...]
    pool_size: int | None
    test_size: int | None


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
            return Location(name, "complete", folder, found, tuple(searched), info.pool_size, info.test_size)
        if info.test_only_standin and all(r in found for r in test_roles):
            searched.append(f"{folder} ({label}: test files only)")
            files = {r: found[r] for r in test_roles}
            standin_test = info.test_size - STANDIN_POOL_SIZE
            return Location(name, "test-only", folder, files, tuple(searched), STANDIN_POOL_SIZE, standin_test)
        if found:
            missing = ", ".join(f for r, f in info.files.items() if r not in found)
            searched.append(f"{folder} ({label}: incomplete, missing {missing})")
        else:
            searched.append(f"{folder} ({label})")
    return Location(name, "missing", None, {}, tuple(searched), None, None)


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
