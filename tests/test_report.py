"""`hpo study report`: one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import re
from html.parser import HTMLParser

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from hpo import _study
from hpo._child import create_child, narrow_study
from hpo._plots import FIGURES
from hpo._report import build
from hpo._space import distributions
from hpo._spec import load_spec
from hpo._transfer import copy_study
from hpo.cli import app
from helpers import REPO


class Collect(HTMLParser):
    """Tags and images of a page; fails on tags that are closed without being opened."""

    VOID = {"meta", "img", "br", "link", "hr"}

    def __init__(self):
        super().__init__()
        self.open, self.images, self.headings, self.heading = [], [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in self.VOID:
            self.open.append(tag)
        if tag == "h2":
            self.heading = ""

    def handle_endtag(self, tag):
        assert self.open and self.open.pop() == tag, f"</{tag}> closes nothing"
        if tag == "h2":
            self.headings.append(self.heading)
            self.heading = None

    def handle_data(self, data):
        if self.heading is not None:
            self.heading += data


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A book study with made-up trials, confirmed and evaluated, and a narrowed child."""
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'report.db'}"
    spec = load_spec(REPO / "studies" / "book.toml")
    handle = _study.create(spec, url)
    dists = distributions(spec.search)
    made = []
    for i in range(16):
        lr, wd = 10.0 ** (-6 + 4 * (i + 0.5) / 16), 10.0 ** (-8 + 4 * ((i * 5) % 16 + 0.5) / 16)
        value = round(0.1 + 0.045 * i, 3)
        made.append(optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=value, params={"lr": lr, "weight_decay": wd}, distributions=dists,
            intermediate_values={1: value / 2, 2: value},
            user_attrs={"phase": "random" if i < 10 else "tpe", "epochs": 2,
                        "curves": {"val_accuracy": [value / 2, value], "train_accuracy": [0.3, value + 0.02]}}))
    handle.study.add_trials(made)
    table = [{"trial": n, "params": made[n].params, "original": made[n].value, "values": [0.7, 0.72],
              "mean": 0.71, "sd": 0.014, "min": 0.7, "max": 0.72, "diverged": 0} for n in (15, 14)]
    handle.study.set_user_attr("confirmed", {**table[0], "seeds": 2, "top": 2, "date": "2026-01-02", "table": table})
    handle.study.set_user_attr("test_result", {
        "mean": 0.6931, "std": 0.0123, "trial": 15, "params": made[15].params, "source": "confirmed",
        "validation": 0.71, "n_train": 500, "n_test": 5000, "date": "2026-01-03T00:00:00+00:00", "forced": False,
        "seeds": [{"seed": 1, "accuracy": 0.68, "loss": 1.0, "outcome": "completed", "epochs": 50},
                  {"seed": 2, "accuracy": 0.7062, "loss": 0.9, "outcome": "completed", "epochs": 50}]})
    create_child(handle, narrow_study(handle, top=4), "book-child", trials=5)
    return handle


def test_report_is_one_self_contained_page_with_every_section(family):
    page = build(family)
    parser = Collect()
    parser.feed(page)
    assert parser.open == []
    assert parser.headings == ["Test result", "Lineage", "Best trials", "Narrowed ranges",
                               "Confirmed configurations", "Figures", "Spec"]
    assert len(parser.images) == 6  # every kind but optimizers (the book spec fixes SGD)
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"(src|href)=['\"]https?:", page)
    assert "test accuracy 0.6931 ± 0.0123 over 2 seeds" in page
    assert "A root study" in page and "Children: <b>book-child</b>" in page
    assert "optimizers: not drawn (study &#x27;book&#x27; does not search the optimizer" in page
    assert "Best-1" in page and "crowds the upper edge" in page
    assert "race: not drawn (study &#x27;book&#x27; is not raced" in page
    assert "[search.lr]" in page  # the spec, as TOML
    for name, kind in FIGURES.items():  # each kind is drawn with its caption, or says why not
        drawn = f"<figure id='fig-{name}'>" in page
        assert drawn == (name not in ("optimizers", "race"))
        if drawn:
            assert html.escape(kind.caption) in page


def test_report_of_a_child_shows_its_lineage(family):
    child = _study.open_study("book-child", family.url)
    page = build(child, kinds=())
    assert "Narrowed from <b>book</b>" in page
    assert "best 4 of 16 complete trials (--top 4), margin 0.1" in page
    assert "Not evaluated on the test split yet" in page
    assert "Confirmed configurations" not in page


@pytest.mark.slow
def test_report_command_writes_the_file(family, tmp_path):
    out = tmp_path / "pages" / "book.html"
    result = CliRunner().invoke(app, ["study", "report", "book", "--out", str(out), "--storage", family.url],
                                env={"HPO_STORAGE": ""})
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"Wrote {re.escape(str(out))} \(\d+ KB\)\.\n", result.stdout)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


@pytest.mark.slow
def test_the_default_report_is_one_safe_name_in_the_current_folder(family, tmp_path, monkeypatch):
    """A study name is not a path, whoever chose it (an import keeps someone else's)."""
    url = f"sqlite:///{tmp_path / 'theirs.db'}"
    copy_study("book", family.url, url, "../../x")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = CliRunner().invoke(app, ["study", "report", "../../x", "--storage", url], env={"HPO_STORAGE": ""})
    assert result.exit_code == 0, result.output
    assert [p.name for p in work.iterdir()] == ["x-report.html"]
    assert not (tmp_path.parent / "x-report.html").exists()


@pytest.mark.parametrize("kind", ["folder", "symlink"])
def test_a_report_onto_anything_but_a_regular_file_is_one_line(family, tmp_path, kind):
    out = tmp_path / "book.html"
    if kind == "folder":
        out.mkdir()
    else:
        (tmp_path / "real.html").write_text("keep")
        out.symlink_to(tmp_path / "real.html")
    result = CliRunner().invoke(app, ["study", "report", "book", "--out", str(out), "--storage", family.url],
                                env={"HPO_STORAGE": ""})
    assert result.exit_code == 1
    assert result.stderr == (f"Error: --out {out} is a {'folder' if kind == 'folder' else 'symbolic link'}; "
                             "name a new or regular file instead\n")
    expected = ["book.html"] if kind == "folder" else ["book.html", "real.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == expected
