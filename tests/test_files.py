"""Files that commands write: safe names from study names, checked targets, whole-or-nothing writes."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from hpo._files import (OutputError, check_folder, check_target, make_folder, replacing_all, safe_stem,
                        write_file)
from helpers import REPO, hpo, write_spec


@pytest.mark.parametrize("name, stem", [
    ("../x", "x"), ("a/b", "a_b"), ("/etc/passwd", "etc_passwd"), ("-rf", "rf"), ("..", "study"),
    ("a..b", "a.b"), ("my study", "my_study"), ("", "study"), ("ok-name_1.2", "ok-name_1.2"),
])
def test_a_study_name_becomes_one_safe_file_name(name, stem):
    assert safe_stem(name) == stem
    assert "/" not in safe_stem(name) and not safe_stem(name).startswith(".")


def test_a_regular_file_is_replaced_whole(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    write_file(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


@pytest.mark.parametrize("kind", ["folder", "symlink", "fifo"])
def test_anything_but_a_regular_file_is_refused(tmp_path, kind):
    target = tmp_path / "target"
    if kind == "folder":
        target.mkdir()
    elif kind == "symlink":
        (tmp_path / "real").write_text("keep")
        target.symlink_to(tmp_path / "real")
    else:
        os.mkfifo(target)
    with pytest.raises(OutputError, match="name a new or regular file"):
        write_file(target, "x")
    if kind == "symlink":
        assert (tmp_path / "real").read_text() == "keep"
        assert target.is_symlink()


def test_files_written_together_are_replaced_together_or_not_at_all(tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "a.study.json"
    first.write_text("old a")
    with pytest.raises(RuntimeError):
        with replacing_all([first, second]) as (one, two):
            one.write_text("new a")
            raise RuntimeError("the second file could not be made")
    assert first.read_text() == "old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]
    with replacing_all([first, second]) as (one, two):
        one.write_text("new a")
        two.write_text("new b")
    assert (first.read_text(), second.read_text()) == ("new a", "new b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "a.study.json"]


def test_an_empty_result_is_refused_and_the_old_file_kept(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(OutputError, match="nothing was written"):
        write_file(target, "")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_new_file_gets_the_umask_permissions_and_a_replaced_one_keeps_its_own(tmp_path):
    umask = os.umask(0o027)
    try:
        fresh = write_file(tmp_path / "fresh.txt", "x")
        kept = tmp_path / "kept.txt"
        kept.write_text("old")
        kept.chmod(0o600)
        write_file(kept, "new")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600


def test_an_output_folder_may_be_missing_a_folder_or_a_link_to_one_but_not_a_file(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for ok in ("missing", "real", "link"):
        assert check_folder(tmp_path / ok) == tmp_path / ok
    (tmp_path / "file").write_text("keep")
    with pytest.raises(OutputError, match="is a regular file; name a new folder or an existing one"):
        make_folder(tmp_path / "file")
    with pytest.raises(OutputError, match="a part of the path is a file, not a folder"):
        make_folder(tmp_path / "file" / "sub")
    assert (tmp_path / "file").read_text() == "keep"


def test_a_device_is_refused():
    with pytest.raises(OutputError, match="is a device"):
        check_target(os.devnull)


def test_an_unwritable_folder_is_one_line(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    with pytest.raises(OutputError, match="permission denied"):
        write_file(folder / "x.txt", "x")


def test_a_full_disk_leaves_nothing_behind(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        (mount / "kept.txt").write_text("kept")
        with pytest.raises(OutputError, match="no space left"):
            write_file(mount / "big.bin", b"x" * 200_000)
        assert sorted(p.name for p in mount.iterdir()) == ["kept.txt"]
        assert (mount / "kept.txt").read_text() == "kept"
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_read_only_file_system_is_one_line_and_keeps_the_old_file(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        (mount / "old.json").write_text("old")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        with pytest.raises(OutputError) as caught:
            write_file(mount / "old.json", "new")
        assert str(caught.value) == f"cannot write {mount / 'old.json'}: the file system is read-only; write elsewhere"
        assert (mount / "old.json").read_text() == "old"
        assert [p.name for p in mount.iterdir()] == ["old.json"]
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.slow
def test_what_the_commands_write_by_default_is_ignored_by_git(tmp_path):
    """Run in a git repository holding only the project's .gitignore and a spec, every file the
    commands leave behind by default is ignored: `git status` shows the spec alone."""
    shutil.copy(REPO / ".gitignore", tmp_path / ".gitignore")
    write_spec(tmp_path, "tiny", trials=3, epochs=2, samples=200, random_trials=2)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for args in (["study", "create", "tiny.toml"], ["study", "run", "tiny"], ["study", "export", "tiny"],
                 ["study", "export", "tiny", "--format", "csv"], ["study", "plot", "tiny", "--kind", "history"],
                 ["study", "report", "tiny"]):
        result = hpo(*args, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
    written = {p.name for p in tmp_path.iterdir()}
    assert {"hpo.db", "tiny.json", "tiny.csv", "tiny.study.json", "figures", "tiny-report.html"} <= written
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=tmp_path,
                            capture_output=True, text=True, check=True).stdout
    assert status.splitlines() == ["?? .gitignore", "?? tiny.toml"]
