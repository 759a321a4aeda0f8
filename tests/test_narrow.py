"""The narrowing rule, the child studies it creates, and `hpo study narrow`."""

from __future__ import annotations

import ast
import json
import math
import sqlite3

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from hpo import _study
from hpo._child import create_child, narrow_study, warm_start_trials
from hpo._errors import StudyError
from hpo._narrow import DEFAULT_MARGIN, describe, narrow, select_best, trainer_check
from hpo._space import distributions
from hpo._spec import CategoricalParam, FloatParam, IntParam, load_spec
from hpo.cli import app
from helpers import REPO

LR = FloatParam("lr", 1e-6, 1.0, log=True)
DROPOUT = FloatParam("dropout", 0.0, 0.8)
UNITS = IntParam("hidden_units", 16, 256)
OPT = CategoricalParam("optimizer", ("sgd", "momentum", "adam"))


def trials(search, rows, states=None):
    """Numbered frozen trials: rows of (value, {param: value}), in the order they ran."""
    study = optuna.create_study(direction="maximize")
    dists = distributions(tuple(search))
    for i, (value, params) in enumerate(rows):
        state = (states or {}).get(i, TrialState.COMPLETE)
        study.add_trial(optuna.trial.create_trial(
            state=state, value=value if state != TrialState.FAIL else None, params=params,
            distributions={k: dists[k] for k in params}))
    return study.get_trials(deepcopy=False)


def filler(n, **params):
    """n poor trials with the given parameters."""
    return [(0.1, dict(params)) for _ in range(n)]


# ---------------------------------------------------------------------------------------
# Selecting the best trials


def test_the_rule_reads_and_writes_no_study():
    """The narrowing maths imports nothing that opens storage or creates studies (that is hpo/_child.py)."""
    tree = ast.parse((REPO / "hpo" / "_narrow.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert imported <= {"__future__", "math", "collections.abc", "dataclasses", "typing", "optuna.trial",
                        "hpo._errors", "hpo._spec"}, imported


def test_top_k_selects_the_best_by_value_with_ties_included():
    # A tie with the last selected trial is selected too: which of two equal trials ran first
    # must not change the ranges.
    rows = [(0.5, {"lr": 1e-3}), (0.9, {"lr": 1e-2}), (0.8, {"lr": 1e-4}), (0.8, {"lr": 1e-5}), (0.2, {"lr": 1e-6})]
    best, rule, n = select_best(trials([LR], rows), top=2)
    assert [t.number for t in best] == [1, 2, 3]
    assert rule == "best 3 of 5 complete trials (--top 2, 1 more tied)"
    assert n == 5


def test_quantile_and_the_default_best_fifth():
    rows = [(i / 20, {"lr": 10.0 ** (-6 + i / 4)}) for i in range(20)]
    best, rule, _ = select_best(trials([LR], rows), quantile=0.3)
    assert [t.number for t in best] == [19, 18, 17, 16, 15, 14]
    assert rule == "best 6 of 20 complete trials (top 30%)"
    best, rule, _ = select_best(trials([LR], rows))
    assert len(best) == 4 and rule == "best 4 of 20 complete trials (top 20%)"


def test_pruned_and_failed_trials_never_count_as_best():
    rows = [(0.99, {"lr": 1e-6}), (None, {"lr": 1e-5}), *[(0.1 * i, {"lr": 10.0 ** -i}) for i in range(1, 7)]]
    found = trials([LR], rows, states={0: TrialState.PRUNED, 1: TrialState.FAIL})
    best, _, n = select_best(found, top=2)
    assert n == 6
    assert [t.number for t in best] == [7, 6]


# ---------------------------------------------------------------------------------------
# Numeric ranges


def test_log_parameter_is_narrowed_in_log_space_and_rounded_outward():
    rows = [(0.9, {"lr": 1e-4}), (0.8, {"lr": 1e-2}), *filler(4, lr=1e-6)]
    result = narrow([LR], trials([LR], rows), top=2, margin=0.1)
    p = result.param("lr")
    # best span 1e-4 .. 1e-2 is 2 decades; 0.2 decades more on each side: 10^-4.2 and 10^-1.8,
    # rounded outward to 3 digits
    assert (p.new.low, p.new.high) == (6.3e-5, 0.0159)
    assert p.new.log and p.crowded == () and p.widened is None
    assert describe(p.new) == "6.3e-05 .. 0.0159 (log)"


def test_linear_parameter_margin_is_a_fraction_of_the_span():
    rows = [(0.9, {"dropout": 0.2}), (0.8, {"dropout": 0.4}), *filler(4, dropout=0.7)]
    p = narrow([DROPOUT], trials([DROPOUT], rows), top=2, margin=0.25).param("dropout")
    assert (p.new.low, p.new.high) == (0.15, 0.45)


def test_margin_zero_gives_exactly_the_span_of_the_best():
    rows = [(0.9, {"lr": 3.3e-4}), (0.8, {"lr": 2.7e-3}), *filler(4, lr=1e-6)]
    p = narrow([LR], trials([LR], rows), top=2, margin=0).param("lr")
    assert (p.new.low, p.new.high) == (3.3e-4, 2.7e-3)


def test_ranges_are_clipped_to_the_old_range():
    rows = [(0.9, {"dropout": 0.01}), (0.8, {"dropout": 0.3}), *filler(4, dropout=0.7)]
    p = narrow([DROPOUT], trials([DROPOUT], rows), top=2, margin=0.5).param("dropout")
    assert p.new.low == 0.0  # 0.01 - 0.145 would be below the old low
    assert p.new.high == pytest.approx(0.445)


def test_integers_are_rounded_outward():
    rows = [(0.9, {"hidden_units": 40}), (0.8, {"hidden_units": 101}), *filler(4, hidden_units=250)]
    p = narrow([UNITS], trials([UNITS], rows), top=2, margin=0.1).param("hidden_units")
    assert (p.new.low, p.new.high) == (33, 108)  # 33.9 and 107.1, outward
    assert isinstance(p.new, IntParam) and isinstance(p.new.low, int)


def test_log_integers_are_narrowed_in_log_space():
    param = IntParam("hidden_units", 1, 1000, log=True)
    rows = [(0.9, {"hidden_units": 10}), (0.8, {"hidden_units": 100}), *filler(4, hidden_units=1)]
    p = narrow([param], trials([param], rows), top=2, margin=0.1).param("hidden_units")
    assert (p.new.low, p.new.high) == (7, 126)  # 10^0.9 = 7.9 and 10^2.1 = 125.9, outward


def test_categoricals_keep_the_choices_of_the_best_in_their_order():
    rows = [(0.9, {"optimizer": "adam"}), (0.85, {"optimizer": "sgd"}), (0.8, {"optimizer": "adam"}),
            *filler(4, optimizer="momentum")]
    p = narrow([OPT], trials([OPT], rows), top=3).param("optimizer")
    assert p.new.choices == ("sgd", "adam")
    assert p.bins == (("sgd", "sgd", 1), ("momentum", "momentum", 0), ("adam", "adam", 2))


def test_log_bins_count_the_best_per_decade():
    param = FloatParam("lr", 1e-6, 1e-2, log=True)
    rows = [(0.9, {"lr": 2e-3}), (0.8, {"lr": 5e-3}), (0.7, {"lr": 3e-5}), *filler(4, lr=1e-6)]
    p = narrow([param], trials([param], rows), top=3).param("lr")
    assert [count for _, _, count in p.bins] == [0, 1, 0, 2]
    assert p.bins[0][:2] == (1e-6, pytest.approx(1e-5))


# ---------------------------------------------------------------------------------------
# Edges


def test_best_crowding_the_upper_edge_offers_a_decade_more():
    # The seed's own case: the best learning rates sit at the top of 1e-6 .. 1e-2.
    lr = FloatParam("lr", 1e-6, 1e-2, log=True)
    rows = [(0.8, {"lr": 9.5e-3}), (0.79, {"lr": 8.1e-3}), (0.78, {"lr": 6e-3}), *filler(5, lr=1e-5)]
    p = narrow([lr], trials([lr], rows), top=3).param("lr")
    assert p.crowded == ("high",)
    assert p.widened == FloatParam("lr", p.new.low, 0.1, log=True)
    assert p.new.high <= 1e-2


def test_best_crowding_the_lower_edge_of_a_linear_range_offers_one_span_more():
    units = IntParam("hidden_units", 100, 200)
    rows = [(0.8, {"hidden_units": 100}), (0.79, {"hidden_units": 104}), *filler(5, hidden_units=190)]
    p = narrow([units], trials([units], rows), top=2).param("hidden_units")
    assert p.crowded == ("low",)
    assert (p.widened.low, p.widened.high) == (0, p.new.high)
    check = trainer_check(load_spec(REPO / "studies" / "book.toml"))
    p = narrow([units], trials([units], rows), top=2, check=check).param("hidden_units")
    assert p.widened.low == 50  # a layer of 0 units is refused, so the step is halved


def test_a_widened_edge_the_trainer_refuses_is_pulled_back_or_dropped():
    spec = load_spec(REPO / "studies" / "book.toml")
    check = trainer_check(spec)
    dropout = FloatParam("dropout", 0.0, 0.5)
    rows = [(0.8, {"dropout": 0.49}), (0.79, {"dropout": 0.45}), *filler(5, dropout=0.05)]
    p = narrow([dropout], trials([dropout], rows), top=2, check=check).param("dropout")
    assert p.widened.high == 0.75  # 1.0 is not a dropout; half the way is
    wd = FloatParam("weight_decay", 0.0, 1e-3)
    rows = [(0.8, {"weight_decay": 0.0}), (0.79, {"weight_decay": 2e-5}), *filler(5, weight_decay=9e-4)]
    p = narrow([wd], trials([wd], rows), top=2, check=check).param("weight_decay")
    assert p.crowded == ("low",) and p.widened is None  # no weight decay below zero


def test_best_spread_over_the_whole_range_do_not_crowd_its_edges():
    # One best value near the edge of a parameter that hardly matters is not a wall to push.
    wd = FloatParam("weight_decay", 1e-8, 1e-4, log=True)
    rows = [(0.8, {"weight_decay": 9e-5}), (0.79, {"weight_decay": 2e-6}), (0.78, {"weight_decay": 3e-7}),
            (0.77, {"weight_decay": 4e-8}), *filler(4, weight_decay=1e-6)]
    p = narrow([wd], trials([wd], rows), top=4).param("weight_decay")
    assert p.crowded == ()


# ---------------------------------------------------------------------------------------
# Errors: one line each


def _many(n, **params):
    return [(0.1 + i / 100, dict(params)) for i in range(n)]


@pytest.mark.parametrize("search,rows,kwargs,message", [
    ([LR], _many(3, lr=1e-3), {}, "only 3 complete trials; narrowing needs at least 5 (run more trials first)"),
    ([LR], [(0.5, {"lr": 10.0 ** -i}) for i in range(6)], {"top": 7},
     "--top 7 is more than the 6 complete trials; use --top 6 or fewer"),
    ([LR], _many(6, lr=1e-3), {"top": 3},
     "lr: the best 3 trials all have lr = 0.001, so there is no range to narrow to; use more of the best "
     "trials (--top/--quantile) or fix lr in the spec"),
    ([LR], _many(6, lr=1e-3), {"top": 1}, "--top must be a whole number >= 2 (a range needs two trials); got 1"),
    ([LR], _many(6, lr=1e-3), {"quantile": 1.5},
     "--quantile must be in (0, 1], the share of complete trials to keep; got 1.5"),
    ([LR], _many(6, lr=1e-3), {"quantile": 0.5, "top": 3}, "give --top or --quantile, not both"),
    ([LR], _many(6, lr=1e-3), {"margin": -0.1}, "--margin must be in [0, 1], a fraction of each range's span; got -0.1"),
    ([], _many(6), {}, "the study searches no parameter, so there is nothing to narrow"),
])
def test_errors_are_one_clear_line(search, rows, kwargs, message):
    with pytest.raises(StudyError) as caught:
        narrow(search, trials(search or [LR], rows), **kwargs)
    assert str(caught.value) == message


# ---------------------------------------------------------------------------------------
# Child studies


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The book spec with 20 made-up trials: the best at the top of the learning-rate range."""
    path = tmp_path_factory.mktemp("narrow") / "template.db"
    url = f"sqlite:///{path}"
    spec = load_spec(REPO / "studies" / "book.toml")
    handle = _study.create(spec, url)
    dists = distributions(spec.search)
    made = []
    for i in range(20):
        lr = 10.0 ** (-6 + 4 * (i + 0.5) / 20)  # 1.3e-6 .. 7.9e-3, better as it grows
        wd = 10.0 ** (-8 + 4 * ((i * 7) % 20 + 0.5) / 20)
        state = TrialState.PRUNED if i == 3 else TrialState.COMPLETE
        value = round(0.1 + 0.035 * i, 4)
        made.append(optuna.trial.create_trial(
            state=state, value=value, params={"lr": lr, "weight_decay": wd}, distributions=dists,
            intermediate_values={1: value / 2, 2: value},
            user_attrs={"phase": "random" if i < 10 else "tpe", "epochs": 2,
                        "curves": {"val_accuracy": [value / 2, value], "train_accuracy": [0.2, 0.3]}}))
    handle.study.add_trials(made)
    return path


@pytest.fixture
def parent(template, tmp_path):
    """A fresh copy of the template study (SQLite's backup copies a consistent database)."""
    path = tmp_path / "narrow.db"
    with sqlite3.connect(template) as source, sqlite3.connect(path) as target:
        source.backup(target)
    return _study.open_study("book", f"sqlite:///{path}")


def test_child_searches_the_new_ranges_and_records_its_lineage(parent):
    narrowing = narrow_study(parent, top=4)
    child = create_child(parent, narrowing, "book-narrow", trials=10)
    reopened = _study.open_study("book-narrow", parent.url)
    assert reopened.spec.search == narrowing.search()
    assert reopened.spec.data == parent.spec.data and reopened.spec.fixed == parent.spec.fixed
    lineage = reopened.study.user_attrs["lineage"]
    assert lineage["parent"] == "book"
    assert lineage["rule"] == "best 4 of 19 complete trials (--top 4), margin 0.1"
    assert lineage["ranges"]["lr"]["old"] == [1e-6, 1e-2]
    assert lineage["ranges"]["lr"]["new"] == [narrowing.param("lr").new.low, narrowing.param("lr").new.high]
    assert lineage["warm_start"] == child.warm_start and lineage["date"]
    assert reopened.spec.trials == child.warm_start + 10
    assert [r.parent for r in _study.list_studies(parent.url) if r.name == "book-narrow"] == ["book"]


def test_child_is_warm_started_with_the_parents_trials_inside_the_new_ranges(parent):
    narrowing = narrow_study(parent, top=4)
    inside = warm_start_trials(parent, narrowing)
    assert {16, 17, 18, 19} <= {t.number for t in inside}
    child = create_child(parent, narrowing, "warm")
    copied = child.handle.trials()
    assert len(copied) == len(inside) == child.warm_start
    by_origin = {t.user_attrs["warm_start"]["trial"]: t for t in copied}
    for original in inside:
        copy = by_origin[original.number]
        assert copy.user_attrs["warm_start"] == {"study": "book", "trial": original.number}
        assert copy.value == original.value and copy.state == original.state
        assert copy.params == original.params
        assert copy.intermediate_values == original.intermediate_values
        assert copy.user_attrs["curves"] == original.user_attrs["curves"]
        assert copy.distributions == distributions(narrowing.search())
    assert child.new_trials == parent.spec.trials  # default: the parent's [study] trials


def test_widened_child_searches_past_the_crowded_edge(parent):
    narrowing = narrow_study(parent, top=4)
    assert [p.name for p in narrowing.crowded] == ["lr"]
    child = create_child(parent, narrowing, "wide", widen=True)
    lr = child.handle.spec.param("lr")
    assert lr.high == pytest.approx(0.1) and lr.low == narrowing.param("lr").new.low
    assert child.handle.study.user_attrs["lineage"]["rule"].endswith("; widened lr")
    assert child.handle.study.user_attrs["lineage"]["ranges"]["lr"]["widened"] is True


def test_a_child_narrows_again_the_same_way(parent):
    first = create_child(parent, narrow_study(parent, top=6), "gen1", trials=5)
    second_narrowing = narrow_study(first.handle, top=3, margin=0)
    second = create_child(first.handle, second_narrowing, "gen2", trials=5)
    assert second.handle.study.user_attrs["lineage"]["parent"] == "gen1"
    lr1, lr2 = first.handle.spec.param("lr"), second.handle.spec.param("lr")
    assert lr1.low <= lr2.low and lr2.high <= lr1.high
    assert second.warm_start >= 3


def test_narrowing_a_study_names_it_in_the_error(parent):
    with pytest.raises(StudyError, match=r"^cannot narrow 'book': --top 30 is more than the 19 complete trials"):
        narrow_study(parent, top=30)


def test_a_taken_child_name_is_refused(parent):
    with pytest.raises(StudyError) as caught:
        create_child(parent, narrow_study(parent, top=4), "book")
    assert str(caught.value) == (f"a study named 'book' already exists in {parent.url}; "
                                 "choose another name for the child (--into)")


# ---------------------------------------------------------------------------------------
# The command


runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args), env={"HPO_STORAGE": ""})


def test_narrow_prints_old_and_new_ranges_and_offers_to_widen(parent):
    result = invoke("study", "narrow", "book", "--top", "4", "--storage", parent.url)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("Narrowing 'book': best 4 of 19 complete trials (--top 4), margin 0.1\n")
    lr = narrow_study(parent, top=4).param("lr")
    line = next(line for line in out.splitlines() if line.startswith("lr "))
    assert "1e-06 .. 0.01 (log)" in line and describe(lr.new) in line
    assert "0 · 0 · 0 · 4 per decade" in line and "upper edge" in line
    assert "lr: the best trials crowd the upper edge of the old range" in out
    assert f"  Widen instead (lr {describe(lr.widened)}):\n  hpo study narrow book --top 4 --widen --into book-wide --storage {parent.url}\n" in out
    assert _study.list_studies(parent.url)[0].name == "book" and len(_study.list_studies(parent.url)) == 1


def test_narrow_into_creates_the_child_and_says_how_to_run_it(parent):
    result = invoke("study", "narrow", "book", "--quantile", "0.25", "--into", "kid", "--trials", "7",
                    "--storage", parent.url)
    assert result.exit_code == 0, result.output
    kid = _study.open_study("kid", parent.url)
    warm = len(kid.trials())
    assert f"Created study 'kid' in {parent.url}" in result.stdout
    assert f"target {warm + 7} ({warm} + 7 new)" in result.stdout
    assert result.stdout.rstrip().endswith(f"Run it with: hpo study run kid --storage {parent.url}")
    show = invoke("study", "show", "kid", "--storage", parent.url)
    assert "Narrowed from 'book' (best 5 of 19 complete trials (top 25%), margin 0.1" in show.stdout


def test_narrow_json(parent):
    result = invoke("study", "narrow", "book", "--top", "4", "--json", "--storage", parent.url)
    data = json.loads(result.stdout)
    assert data["best_trials"] == [19, 18, 17, 16]
    assert data["ranges"]["lr"]["crowded"] == ["high"] and data["child"] is None


@pytest.mark.parametrize("args,code,message", [
    (["--top", "1"], 2, "Invalid value for '--top' / '-k': Input should be greater than or equal to 2"),
    (["--quantile", "1.5"], 2, "Invalid value for '--quantile': Input should be less than or equal to 1"),
    (["--quantile", "0"], 1, "--quantile must be in (0, 1], the share of complete trials to keep; got 0.0"),
    (["--margin", "2"], 2, "Invalid value for '--margin': Input should be less than or equal to 1"),
    (["--top", "3", "--quantile", "0.5"], 2, "give --top or --quantile, not both"),
    (["--trials", "5"], 2, "--trials sets the child's trials; add --into CHILD"),
    (["--top", "40"], 1, "Error: cannot narrow 'book': --top 40 is more than the 19 complete trials; use --top 19 or fewer"),
])
def test_narrow_bad_arguments(parent, args, code, message):
    result = invoke("study", "narrow", "book", *args, "--storage", parent.url)
    assert result.exit_code == code, result.output
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_narrow_an_empty_study_is_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    _study.create(load_spec(REPO / "studies" / "book.toml"), url)
    result = invoke("study", "narrow", "book", "--storage", url)
    assert result.exit_code == 1
    assert result.stderr.strip() == ("Error: cannot narrow 'book': only 0 complete trials; narrowing needs at "
                                     "least 5 (run more trials first)")


def test_default_margin_is_a_tenth():
    assert DEFAULT_MARGIN == 0.1 and math.isclose(narrow.__defaults__[2], 0.1)
