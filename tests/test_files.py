"""Files that commands write: safe names from study names, checked targets, whole-or-nothing writes."""

from __future__ import annotations

import os
import subprocess

import pytest

from hpo._files import OutputError, check_target, safe_stem, write_file


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
