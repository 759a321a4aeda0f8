"""MySQL/MariaDB end to end, on the machine's MariaDB (127.0.0.1:3306, root, no password, db test):
create a study, run it with two workers, show it, copy it to SQLite."""

from __future__ import annotations

import json

import optuna
import pytest

from helpers import hpo, unique, write_spec
from test_claims import mysql_or_fail

pytestmark = [pytest.mark.slow]


def test_a_mariadb_study_end_to_end(tmp_path):
    url = mysql_or_fail()
    name = unique("maria")
    spec = write_spec(tmp_path, "m", trials=12, epochs=2, samples=300, random_trials=4)
    created = hpo("study", "create", str(spec), "--name", name, "--storage", url)
    assert created.returncode == 0, created.stderr
    try:
        run = hpo("study", "run", name, "--workers", "2", "--quiet", "--storage", url)
        assert run.returncode == 0, run.stderr
        assert f"{name}: 12/12 finished" in run.stdout

        shown = hpo("study", "show", name, "--json", "--storage", url)
        assert shown.returncode == 0, shown.stderr
        document = json.loads(shown.stdout)
        assert document["counts"]["COMPLETE"] + document["counts"]["PRUNED"] == 12
        assert document["counts"]["RUNNING"] == document["counts"]["WAITING"] == document["counts"]["FAIL"] == 0

        copy = f"sqlite:///{tmp_path / 'copy.db'}"
        copied = hpo("study", "copy", name, "--to", copy, "--storage", url)
        assert copied.returncode == 0, copied.stderr
        original = optuna.load_study(study_name=name, storage=url)
        local = optuna.load_study(study_name=name, storage=copy)
        assert [(t.number, t.state, t.value, t.params) for t in local.trials] == \
               [(t.number, t.state, t.value, t.params) for t in original.trials]
        assert local.user_attrs["spec"] == original.user_attrs["spec"]
        assert len(local.trials) == 12  # exactly the target: no spare ticket, nothing beyond it
    finally:
        hpo("study", "delete", name, "--yes", "--storage", url)


def test_a_mysql_url_without_a_driver_scheme_opens_with_pymysql():
    url = mysql_or_fail()
    bare = url.replace("mysql+pymysql://", "mysql://")
    result = hpo("storage", "check", bare, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["backend"] == "mysql"
