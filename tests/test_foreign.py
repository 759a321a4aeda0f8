"""A storage shared with plain Optuna programs: hpo lists every study in it and never crashes.

Real components: a SQLite file on disk holding an hpo study beside studies made by Optuna alone
(one minimized, one with two objectives, one with no trial), and the CLI as a real subprocess.
"""

from __future__ import annotations

import json

import optuna
import pytest

from helpers import hpo, write_spec
from hpo import create, load_spec
from hpo._inventory import NOT_HPO, list_studies


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("shared")
    url = f"sqlite:///{folder / 'shared.db'}"
    create(load_spec(write_spec(folder, "ours", trials=2, epochs=1, samples=200)), url)

    minimize = optuna.create_study(study_name="loss", storage=url, direction="minimize")
    for value in (3.0, 1.0, 2.0):  # the best is the smallest: trial 1
        minimize.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=value))
    pareto = optuna.create_study(study_name="pareto", storage=url, directions=["minimize", "maximize"])
    pareto.add_trial(optuna.trial.create_trial(params={}, distributions={}, values=[1.0, 2.0]))
    optuna.create_study(study_name="empty", storage=url, direction="maximize")
    return url


def test_every_study_is_listed_with_foreign_ones_marked_and_their_best_by_direction(shared):
    rows = {row.name: row for row in list_studies(shared)}
    assert set(rows) == {"ours", "loss", "pareto", "empty"}
    assert rows["ours"].by_hpo and rows["ours"].dataset == "digits" and rows["ours"].kind == "search"
    assert {rows[name].kind for name in ("loss", "pareto", "empty")} == {"not hpo"}
    assert not rows["loss"].by_hpo and rows["loss"].dataset == NOT_HPO
    assert (rows["loss"].best_value, rows["loss"].best_number) == (1.0, 1)
    assert rows["pareto"].dataset == f"{NOT_HPO}, 2 objectives"
    assert rows["pareto"].directions == ("minimize", "maximize")
    assert rows["pareto"].best_value is None  # two objectives have a front, not one best
    assert rows["empty"].finished == 0 and rows["empty"].best_value is None


@pytest.mark.slow
def test_the_cli_lists_a_shared_storage_as_a_table_and_as_json(shared):
    table = hpo("study", "list", "--storage", shared)
    assert table.returncode == 0, table.stderr
    assert table.stderr == ""
    lines = {line.split()[0]: line for line in table.stdout.splitlines()[2:]}
    assert set(lines) == {"ours", "loss", "pareto", "empty"}
    assert NOT_HPO in lines["loss"] and "2 objectives" in lines["pareto"]
    listed = hpo("study", "list", "--storage", shared, "--json")
    assert listed.returncode == 0, listed.stderr
    by_name = {row["name"]: row for row in json.loads(listed.stdout)}
    assert by_name["loss"]["best_value"] == 1.0 and by_name["loss"]["by_hpo"] is False
    assert by_name["pareto"]["directions"] == ["minimize", "maximize"]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["show", "best", "plot", "run"])
@pytest.mark.parametrize("name", ["loss", "pareto", "empty"])
def test_a_command_on_a_foreign_study_says_in_one_line_that_hpo_did_not_create_it(shared, command, name,
                                                                                    tmp_path):
    result = hpo("study", command, name, "--storage", shared, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"Error: study '{name}' in ") and result.stderr.count("\n") == 1
    assert "not created by hpo" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written for it
