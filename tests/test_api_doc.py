"""docs/api.md is run as it stands: its ```python blocks in order, in one namespace, in an empty
folder; their assert statements are the page's promises. Its table of functions is checked
against what `hpo` exports and against the command tree."""

from __future__ import annotations

import re

import pytest
import typer.main

import hpo
from hpo.cli import app
from helpers import REPO

PAGE = REPO / "docs" / "api.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```$", PAGE.read_text(), flags=re.S | re.M)


def documented_functions() -> dict[str, str]:
    """Function name -> the `hpo study` verb on its line of the page's table ('' for none)."""
    table = blocks("text")[0]
    found = {}
    for line in table.splitlines():
        verb = line[:19].removeprefix("hpo study ").strip()
        for name in re.findall(r"hpo\.(\w+)\(", line):
            found[name] = verb if name == re.findall(r"hpo\.(\w+)\(", line)[0] else ""
    return found


def study_verbs() -> set[str]:
    study = typer.main.get_command(app).commands["study"]
    return set(study.commands)


@pytest.mark.slow
def test_the_pages_example_runs_and_its_promises_hold(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    monkeypatch.delenv("HPO_DATA_DIR", raising=False)  # the bundled digits set, as a new user has it
    code = blocks("python")
    assert len(code) >= 7
    namespace: dict = {"__name__": "api_doc"}
    for number, block in enumerate(code, 1):
        try:
            exec(compile(block, f"{PAGE}:block {number}", "exec"), namespace)
        except Exception as exc:
            pytest.fail(f"block {number} of {PAGE.name} failed: {type(exc).__name__}: {exc}\n{block}")
    printed = capsys.readouterr().out
    assert "8/8 finished, best " in printed
    assert "refused: study 'api-demo-narrow' was evaluated on the test split" in printed
    assert (tmp_path / "demo.db").is_file() and (tmp_path / "api-demo.json").is_file()


def test_every_function_in_the_pages_table_is_exported_with_a_docstring():
    names = documented_functions()
    assert {"create", "open_study", "run", "narrow", "confirm", "evaluate", "best", "show", "trials",
            "best_trial", "ranked", "list_studies", "delete", "export", "copy"} <= set(names)
    for name in names:
        assert name in hpo.__all__, name
        assert (getattr(hpo, name).__doc__ or "").strip(), f"hpo.{name} has no docstring"


def test_a_function_named_for_a_command_is_that_command():
    """Where the table puts a verb beside a function, the function carries the verb's name and the
    verb exists under `hpo study`."""
    verbs = study_verbs()
    for name, verb in documented_functions().items():
        if verb:
            assert verb in verbs, f"`hpo study {verb}` does not exist"
            assert name == {"list": "list_studies"}.get(verb, verb), f"hpo.{name} sits beside `hpo study {verb}`"


def test_a_study_is_a_handle_or_a_name_and_anything_else_is_one_clear_error(tmp_path):
    storage = f"sqlite:///{tmp_path / 'api.db'}"
    spec = {"study": {"name": "s"}, "data": {"dataset": "digits"},
            "search": {"lr": {"type": "float", "low": 1e-3, "high": 0.5, "log": True}}}
    handle = hpo.create(spec, storage)
    assert hpo.best_trial(handle) is None and hpo.best_trial(handle.study) is None
    assert hpo.best_trial("s", storage=storage) is None
    assert hpo.show("s", storage=storage)["name"] == "s"
    with pytest.raises(TypeError, match="expected a StudyHandle .* or a study name; got int"):
        hpo.show(3, storage=storage)
    with pytest.raises(hpo.StudyError, match="no study named 'nope' in sqlite:///"):
        hpo.open_study("nope", storage)
    with pytest.raises(hpo.StudyError, match="has no complete trial yet"):
        hpo.best(handle)
    with pytest.raises(hpo.SpecError, match="epochs"):
        hpo.create({**spec, "study": {"name": "bad"}, "training": {"epochs": 0}}, storage)
