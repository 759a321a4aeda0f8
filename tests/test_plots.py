"""Figures: every kind drawn from a real small study, checked as PNG files and by their panels."""

from __future__ import annotations

import inspect
import math
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from hpo import _study
from hpo._confirm import confirm
from hpo._errors import StudyError
from hpo import _plots
from hpo._files import safe_stem
from hpo._plots import FIGURES, KINDS, drawer, panels, plot_curves, plot_ranges, render, render_all, save
from hpo._space import distributions
from hpo._spec import load_spec, parse_spec
from hpo.cli import app
from helpers import DATA_DIR, REPO, hpo, write_spec

PRUNER = """
[pruner]
kind = "median"
startup_trials = 3
warmup_epochs = 1
"""


def check_png(path, fig, dpi=90):
    """A real PNG of the figure's size in pixels, with something drawn on it."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)  # (height, width, channels) in [0, 1]
    width, height = fig.get_size_inches() * dpi
    assert abs(image.shape[0] - height) <= 1 and abs(image.shape[1] - width) <= 1
    ink = (image[..., :3] < 0.9).any(axis=2).mean()  # share of pixels that are not near-white
    assert 0.02 < ink < 0.6, f"{path.name}: {ink:.3f} of the pixels are drawn"
    assert path.stat().st_size < 300_000


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A tiny digits study really run (16 trials, median pruner) and confirmed."""
    folder = tmp_path_factory.mktemp("plots")
    spec = load_spec(write_spec(folder, "tiny", trials=16, epochs=4, samples=400, random_trials=6, extra=PRUNER))
    handle = _study.create(spec, f"sqlite:///{folder / 'plots.db'}")
    _study.run(handle, target=16, data_dir=str(DATA_DIR))
    confirm(handle, top=3, seeds=2, data_dir=str(DATA_DIR))
    return handle.study, folder


@pytest.mark.slow
def test_plot_all_renders_every_kind_from_a_real_study(real, tmp_path):
    study, folder = real
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    pruned = [t for t in study.get_trials() if t.state == TrialState.PRUNED]
    assert complete and pruned  # the figures below show both
    url = f"sqlite:///{folder / 'plots.db'}"
    result = CliRunner().invoke(app, ["study", "plot", "tiny", "--kind", "all", "--out", str(tmp_path),
                                      "--storage", url], env={"HPO_STORAGE": ""})
    assert result.exit_code == 0, result.output
    single = [kind for kind in KINDS if kind != "race"]  # a single-split study: the race figure says why not
    assert result.stdout.splitlines() == [
        f"{kind}: {tmp_path / (kind + '.png')}" if kind != "race"
        else "race: skipped (study 'tiny' is not raced ([objective] method = \"single\"))" for kind in KINDS]
    expected = {
        "ranges": ["pair:lr,weight_decay", "summary", "strip:lr", "strip:weight_decay", "strip:optimizer"],
        "curves": [f"curve:{k}" for k in range(1, len(complete) + 1)],
        "history": ["history"],
        "importance": ["importance"],
        "optimizers": ["optimizers"],
        "intermediate": ["intermediate"],
        "confirm": ["confirm"],
    }
    for kind in single:
        fig = render(study, kind)  # the figure the command saved, drawn again to count its panels
        assert panels(fig) == expected[kind], kind
        check_png(tmp_path / f"{kind}.png", fig)
    ranges = render(study, "ranges")
    assert sum(ax.get_label() == "<colorbar>" for ax in ranges.axes) == 1
    top = CliRunner().invoke(app, ["study", "plot", "tiny", "--kind", "curves", "--top", "4", "--out", str(tmp_path),
                                   "--storage", url], env={"HPO_STORAGE": ""})
    assert top.exit_code == 0 and top.stdout == f"curves: {tmp_path / 'curves.png'}\n"


# ---------------------------------------------------------------------------------------
# Made-up studies: fast, and the cases a real tiny study does not reach


def made_up(spec_path, n=24, confirmed=False, name=None, storage=None):
    """A study (in memory unless `storage` is given) with hpo's spec attribute and n trials: better as lr
    grows, some pruned."""
    spec = load_spec(spec_path)
    study = optuna.create_study(direction="maximize", study_name=name or spec.name, storage=storage)
    study.set_user_attr("spec", spec.to_dict())
    dists = distributions(spec.search)
    rng = np.random.default_rng(0)
    for i in range(n):
        params = {}
        for p in spec.search:
            if p.kind == "categorical":
                params[p.name] = p.choices[i % len(p.choices)]
            elif p.log:
                params[p.name] = float(10 ** rng.uniform(math.log10(p.low), math.log10(p.high)))
            else:
                params[p.name] = float(rng.uniform(p.low, p.high))
        lr = params.get("lr", 1e-3)
        value = round(float(np.clip(0.9 + 0.12 * math.log10(lr / spec.param("lr").high) + rng.normal(0, 0.02),
                                    0.05, 0.99)), 3)
        state = TrialState.PRUNED if i % 7 == 3 else TrialState.COMPLETE
        curve = [value * (1 - math.exp(-(e + 1) / 3)) for e in range(5)]
        study.add_trial(optuna.trial.create_trial(
            state=state, value=value if state == TrialState.COMPLETE else curve[1], params=params, distributions=dists,
            intermediate_values={e + 1: v for e, v in enumerate(curve[: 5 if state == TrialState.COMPLETE else 2])},
            user_attrs={"phase": "random" if i < 8 else "tpe", "epochs": 5,
                        "curves": {"val_accuracy": curve, "train_accuracy": [min(1, v + 0.05) for v in curve],
                                   "train_loss": [1.0] * 5, "val_loss": [1.0] * 5}}))
    if confirmed:
        best = sorted((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)[:3]
        table = [{"trial": t.number, "params": t.params, "original": t.value, "values": [t.value - 0.02, t.value - 0.04],
                  "mean": t.value - 0.03, "sd": 0.014, "min": t.value - 0.04, "max": t.value - 0.02, "diverged": 0}
                 for t in best]
        study.set_user_attr("confirmed", {**table[1], "seeds": 2, "top": 3, "date": "2026-01-01", "table": table})
    return study


BOOK = REPO / "studies" / "book.toml"


def test_ranges_of_the_book_space_flag_the_crowded_learning_rate(tmp_path):
    fig = plot_ranges(made_up(BOOK), top=5)
    assert panels(fig) == ["pair:lr,weight_decay", "summary", "strip:lr", "strip:weight_decay"]
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("best crowd the upper edge (0.01)" in t for t in texts)
    assert any(t == "hpo study narrow book --widen --into CHILD" for t in texts)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:4] == ["best 5", "old range", "narrowed range", "--widen (best crowd an edge)"]
    check_png(save(fig, tmp_path / "ranges.png"), fig)


def test_ranges_with_three_numeric_parameters_draw_every_pair(tmp_path):
    spec = write_spec(tmp_path, "three", extra='''
[search.dropout]
type = "float"
low = 0.0
high = 0.5
''')
    fig = plot_ranges(made_up(spec))
    labels = panels(fig)
    assert [x for x in labels if x.startswith("pair:")] == [
        "pair:lr,weight_decay", "pair:lr,dropout", "pair:weight_decay,dropout"]
    assert [x for x in labels if x.startswith("strip:")] == [
        "strip:lr", "strip:weight_decay", "strip:optimizer", "strip:dropout"]
    assert "summary" not in labels


def test_ranges_still_draw_when_narrowing_is_impossible():
    fig = plot_ranges(made_up(BOOK, n=4))
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("no narrowing: only 3 complete trials" in t for t in texts)


def test_curves_are_titled_best_k_with_their_value_and_mark_the_confirmed():
    study = made_up(BOOK, confirmed=True)
    fig = plot_curves(study, top=8)
    assert panels(fig) == [f"curve:{k}" for k in range(1, 9)]
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_label().startswith("curve:")]
    ranked = _study.ranked(study)
    assert titles[0].startswith(f"Best-1 ({ranked[0].value:.3f})")
    assert sum("★" in t for t in titles) == 3
    ax = fig.axes[0]
    assert [line.get_linestyle() for line in ax.get_lines()] == ["-", "--"]  # validation solid, train dashed


def test_importance_needs_two_parameters(tmp_path):
    spec = tmp_path / "one.toml"
    spec.write_text(BOOK.read_text().replace("[search.weight_decay]", "[model.x]").split("[model.x]")[0]
                    + "[sampler]\nrandom_trials = 5\n")
    study = made_up(spec)
    with pytest.raises(StudyError, match=r"^study 'book' searches 1 parameter\(s\); importances compare at least 2$"):
        render(study, "importance")


@pytest.mark.parametrize("kind,message", [
    ("optimizers", "study 'book' does not search the optimizer (it is fixed to 'sgd'); the optimizers figure "
                   "compares the choices of a searched optimizer"),
    ("confirm", "study 'book' has no confirmed choice; run `hpo study confirm book` first"),
    ("race", 'study \'book\' is not raced ([objective] method = "single")'),
    ("nonsense", "unknown figure kind 'nonsense'; known: ranges, curves, history, importance, optimizers, "
                 "intermediate, confirm, race"),
])
def test_figures_that_do_not_apply_say_why(kind, message):
    with pytest.raises(StudyError) as caught:
        render(made_up(BOOK), kind)
    assert str(caught.value) == message


def test_every_declared_kind_has_a_title_a_caption_and_a_drawer():
    assert KINDS == tuple(FIGURES) and len(KINDS) == len(set(KINDS))
    for name, kind in FIGURES.items():
        assert kind.name == name
        assert kind.title and kind.caption.endswith(".")
        draw = drawer(name)
        assert draw is kind.draw is getattr(_plots, draw.__name__) and draw.__name__.startswith("plot_")
        # The best-K reaches exactly the drawers that take it.
        assert ("top" in inspect.signature(draw).parameters) == kind.takes_top


def test_a_kind_is_declared_by_its_drawing_function_alone():
    """Every `plot_*` function of `hpo/_plots.py` is a kind, and the command line and the report
    take their kinds from there: a decorated function is all a new kind needs."""
    from hpo._report import build
    from hpo.cli._analysis import Kind

    functions = [f for name, f in vars(_plots).items() if name.startswith("plot_") and inspect.isfunction(f)]
    assert [kind.draw for kind in FIGURES.values()] == functions  # in the order of the file
    assert [k.value for k in Kind] == [*KINDS, "all"]
    assert inspect.signature(build).parameters["kinds"].default == KINDS
    with pytest.raises(ValueError, match="figure kind 'ranges' is declared twice"):
        _plots.figure("ranges", title="again", caption="Again.")(plot_ranges)
    assert FIGURES["ranges"].draw is plot_ranges and len(FIGURES) == len(KINDS)


def test_the_kinds_are_listed_without_importing_matplotlib():
    code = ("import sys, hpo.cli, hpo._plots as p; from hpo.cli._analysis import Kind; "
            "print(len(p.KINDS), len(Kind), 'matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(KINDS)), str(len(KINDS) + 1), "False"]


def test_the_best_k_reaches_the_kinds_that_take_it():
    study = made_up(BOOK)
    assert len([p for p in panels(render(study, "curves", top=3)) if p.startswith("curve:")]) == 3
    assert len([p for p in panels(render(study, "curves")) if p.startswith("curve:")]) == _plots.CURVES_TOP


def test_plot_all_skips_what_does_not_apply_and_draws_the_rest(tmp_path):
    done = render_all(made_up(BOOK), tmp_path, kinds=("history", "optimizers", "confirm"))
    assert [(d.kind, d.path is None) for d in done] == [("history", False), ("optimizers", True), ("confirm", True)]
    assert done[1].skipped.startswith("study 'book' does not search the optimizer")
    assert [p.name for p in tmp_path.iterdir()] == ["history.png"]


def test_a_single_kind_that_does_not_apply_is_an_error():
    with pytest.raises(StudyError, match="has no confirmed choice"):
        render_all(made_up(BOOK), Path("unused"), kinds=("confirm",))


def test_confirm_figure_shows_mean_sd_and_the_single_run(tmp_path):
    fig = render(made_up(BOOK, confirmed=True), "confirm")
    ax = fig.axes[0]
    assert len(ax.get_xticks()) == 3
    assert ax.get_title(loc="left").startswith("book: confirmed over 2 seeds — choice #")
    check_png(save(fig, tmp_path / "confirm.png"), fig)


def test_history_marks_the_random_and_tpe_phases():
    fig = render(made_up(BOOK), "history")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["random (log scales)", "TPE", "pruned (last reported)", "best so far"]
    assert any(t.get_text() == " TPE from here →" for t in fig.axes[0].texts)


def test_a_study_without_a_spec_is_refused():
    with pytest.raises(StudyError, match="was not created by hpo"):
        render(optuna.create_study(study_name="bare"), "history")


def test_figures_do_not_change_global_matplotlib_state():
    before = dict(matplotlib.rcParams)
    render(made_up(BOOK), "importance")  # Optuna's plot switches to the ggplot style inside
    render(made_up(BOOK), "ranges")
    assert dict(matplotlib.rcParams) == before
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []


def test_spec_round_trip_used_by_the_figures():
    assert parse_spec(load_spec(BOOK).to_dict()).search == load_spec(BOOK).search


def test_plot_command_on_a_study_without_trials_is_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    _study.create(load_spec(BOOK), url)
    result = CliRunner().invoke(app, ["study", "plot", "book", "--out", str(tmp_path), "--storage", url],
                                env={"HPO_STORAGE": ""})
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: no figure applies to study 'book' yet: study 'book' has 0 complete trial(s); the ranges figure "
        "needs at least 2 (run it with `hpo study run book`)")


# ---------------------------------------------------------------------------------------
# Where the files go


@pytest.mark.parametrize("name", ["../x", "a/b", "/abs/path", "-rf"])
def test_the_default_folder_is_one_safe_name_under_figures(tmp_path, name):
    """A study name is not a path, whoever chose it (an import keeps someone else's)."""
    url = f"sqlite:///{tmp_path / 'plots.db'}"
    made_up(BOOK, n=8, name=name, storage=url)
    work = tmp_path / "work"
    work.mkdir()
    result = hpo("study", "plot", "--kind", "history", "--storage", url, "--", name, cwd=work)
    assert result.returncode == 0, result.stderr
    folder = work / "figures" / safe_stem(name)
    assert result.stdout == f"history: {folder.relative_to(work) / 'history.png'}\n"
    assert [p.relative_to(work) for p in sorted(work.rglob("*"))] == [
        Path("figures"), folder.relative_to(work), folder.relative_to(work) / "history.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["work", *(p.name for p in tmp_path.glob("plots.db*"))])


def test_an_out_that_is_a_file_is_refused_and_kept(tmp_path):
    url = f"sqlite:///{tmp_path / 'plots.db'}"
    made_up(BOOK, n=8, storage=url)
    out = tmp_path / "figures.png"
    out.write_bytes(b"keep")
    result = CliRunner().invoke(app, ["study", "plot", "book", "--out", str(out), "--storage", url],
                                env={"HPO_STORAGE": ""})
    assert result.exit_code == 1
    assert result.stderr == f"Error: --out {out} is a regular file; name a new folder or an existing one instead\n"
    assert out.read_bytes() == b"keep"


def test_a_link_in_the_out_folder_is_refused_and_left_alone(tmp_path):
    url = f"sqlite:///{tmp_path / 'plots.db'}"
    made_up(BOOK, n=8, storage=url)
    out = tmp_path / "figs"
    out.mkdir()
    (tmp_path / "elsewhere.png").write_bytes(b"keep")
    (out / "history.png").symlink_to(tmp_path / "elsewhere.png")
    result = CliRunner().invoke(app, ["study", "plot", "book", "--kind", "history", "--out", str(out),
                                      "--storage", url], env={"HPO_STORAGE": ""})
    assert result.exit_code == 1
    assert result.stderr == (f"Error: the figure {out / 'history.png'} is a symbolic link; name a new or regular "
                             "file instead\n")
    assert (tmp_path / "elsewhere.png").read_bytes() == b"keep"
    assert [p.name for p in out.iterdir()] == ["history.png"]


def test_a_figure_replaces_an_old_one_whole(tmp_path):
    path = tmp_path / "history.png"
    path.write_bytes(b"old")
    fig = _plots.plot_history(made_up(BOOK, n=8))
    save(fig, path)
    check_png(path, fig)
    assert [p.name for p in tmp_path.iterdir()] == ["history.png"]
