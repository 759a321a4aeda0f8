"""The tests' command runner: a command forked from the preloaded `tests/zygote.py` behaves exactly
as `python -m hpo` started from scratch (same output, same exit code, its own folder and
environment), so that the suite may use it for speed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import cli_env, hpo, write_spec


def _spawned(*args, cwd, **env):
    return subprocess.run([sys.executable, "-m", "hpo", *args], cwd=cwd, env=cli_env(**env),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [
    ("--help",),
    ("study", "run", "--help"),
    ("study", "show", "absent"),
    ("study", "list", "--json"),
    ("study", "create", "missing.toml"),
    ("study", "frobnicate",),
    ("study", "run", "x", "--trials", "-3"),
])
def test_a_forked_command_prints_and_exits_as_a_fresh_one(args, tmp_path):
    forked = hpo(*args, cwd=tmp_path, HPO_STORAGE=f"sqlite:///{tmp_path / 'here.db'}")
    fresh = _spawned(*args, cwd=tmp_path, HPO_STORAGE=f"sqlite:///{tmp_path / 'here.db'}")
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)


def test_a_forked_command_runs_in_its_folder_with_its_environment(tmp_path):
    spec = write_spec(tmp_path, "where", trials=1, epochs=1, samples=200, random_trials=1)
    created = hpo("study", "create", spec.name, cwd=tmp_path, HPO_STORAGE="sqlite:///relative.db")
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "relative.db").is_file()  # the relative path is the command's folder's
    debug = hpo("study", "show", "absent", cwd=tmp_path, HPO_STORAGE="sqlite:///relative.db", HPO_DEBUG="1")
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    plain = hpo("study", "show", "absent", cwd=tmp_path, HPO_STORAGE="sqlite:///relative.db")
    assert plain.returncode == 1 and "Traceback" not in plain.stderr and len(plain.stderr.splitlines()) == 1


def test_a_command_that_outlives_its_timeout_is_killed(tmp_path):
    spec = write_spec(tmp_path, "long", trials=50, epochs=500, samples=1200, random_trials=5)
    url = f"sqlite:///{tmp_path / 'long.db'}"
    assert hpo("study", "create", str(spec), "--storage", url).returncode == 0
    with pytest.raises(subprocess.TimeoutExpired):
        hpo("study", "run", "long", "--storage", url, timeout=2)
