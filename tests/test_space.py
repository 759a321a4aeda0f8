"""The search space: Optuna distributions of spec parameters, and suggestions on real trials."""

from __future__ import annotations

import math

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FixedTrial

from hpo._space import distribution, distributions, suggest
from hpo._spec import CategoricalParam, FloatParam, IntParam, parse_spec

LR = FloatParam("lr", 1e-6, 1.0, log=True)
DROPOUT = FloatParam("dropout", 0.0, 0.5)
UNITS = IntParam("hidden_units", 16, 256)
LAYERS = IntParam("hidden_layers", 1, 64, log=True)
OPT = CategoricalParam("optimizer", ("sgd", "adam"))
NORM = CategoricalParam("batch_norm", (True, False))
SEARCH = (LR, DROPOUT, UNITS, LAYERS, OPT, NORM)


def draws(search, n=400, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    values = []
    for _ in range(n):
        trial = study.ask()
        values.append(suggest(trial, search))
        study.tell(trial, 0.0)
    return study, values


def test_each_kind_maps_to_its_distribution():
    assert distribution(LR) == FloatDistribution(1e-6, 1.0, log=True)
    assert distribution(DROPOUT) == FloatDistribution(0.0, 0.5)
    assert distribution(UNITS) == IntDistribution(16, 256)
    assert distribution(LAYERS) == IntDistribution(1, 64, log=True)
    assert distribution(OPT) == CategoricalDistribution(("sgd", "adam"))
    assert list(distributions(SEARCH)) == [p.name for p in SEARCH]


def test_suggestions_stay_in_range_with_their_types():
    study, values = draws(SEARCH, n=200)
    for v in values:
        assert list(v) == [p.name for p in SEARCH]
        assert 1e-6 <= v["lr"] <= 1.0 and 0.0 <= v["dropout"] <= 0.5
        assert type(v["hidden_units"]) is int and 16 <= v["hidden_units"] <= 256
        assert type(v["hidden_layers"]) is int and 1 <= v["hidden_layers"] <= 64
        assert v["optimizer"] in ("sgd", "adam")
        assert type(v["batch_norm"]) is bool
    # The trials record the spec's distributions, so narrowing and transfer see the same space.
    assert study.trials[0].distributions == distributions(SEARCH)


def test_log_floats_spread_over_decades_and_linear_floats_do_not():
    _, log_values = draws((LR,))
    _, linear_values = draws((FloatParam("lr", 1e-6, 1.0),))
    # Log-uniform on [1e-6, 1]: half the draws fall below 1e-3. Uniform: one in a thousand.
    below_log = sum(v["lr"] < 1e-3 for v in log_values) / len(log_values)
    below_linear = sum(v["lr"] < 1e-3 for v in linear_values) / len(linear_values)
    assert 0.4 < below_log < 0.6
    assert below_linear < 0.02


def test_log_ints_favour_small_values():
    _, values = draws((LAYERS,))
    small = sum(v["hidden_layers"] <= 8 for v in values) / len(values)
    assert small > 0.4  # linear on [1, 64] would give 1/8


def test_every_choice_is_drawn():
    _, values = draws((OPT, NORM), n=100)
    assert {v["optimizer"] for v in values} == {"sgd", "adam"}
    assert {v["batch_norm"] for v in values} == {True, False}


def test_fixed_values_are_replayed():
    given = {"lr": 3e-4, "dropout": 0.25, "hidden_units": 32, "hidden_layers": 4, "optimizer": "adam",
             "batch_norm": True}
    assert suggest(FixedTrial(given), SEARCH) == given


def test_a_parsed_spec_suggests_configs_the_trainer_accepts():
    spec = parse_spec({"study": {"name": "t"}, "model": {"hidden_layers": 2},
                       "search": {"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
                                  "hidden_units": {"type": "int", "low": 4, "high": 8},
                                  "activation": {"type": "categorical", "choices": ["relu", "tanh"]}}})
    _, values = draws(spec.search, n=20)
    for params in values:
        config = spec.train_config(params, seed=0, input_size=64, output_size=10)
        assert len(config.hidden_sizes) == 2 and 4 <= config.hidden_sizes[0] <= 8
        assert math.isclose(config.lr, params["lr"])
