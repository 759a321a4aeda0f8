"""Study specs: the bundled ones parse, round-trip, and every bad spec gets its one-line message."""

from pathlib import Path

import pytest

from hpo import SpecError, load_spec, parse_spec
from hpo._spec import CategoricalParam, FloatParam

STUDIES = Path(__file__).resolve().parent.parent / "studies"

GOOD = """
[study]
name = "t"
[data]
dataset = "digits"
[search.lr]
type = "float"
low = 1e-4
high = 1e-1
log = true
"""


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.toml")), ids=lambda p: p.name)
def test_bundled_specs_parse_and_round_trip(path):
    spec = load_spec(path)
    assert parse_spec(spec.to_dict(), source="stored") == spec


def test_book_spec_is_the_seed_experiment():
    spec = load_spec(STUDIES / "book.toml")
    assert spec.data.dataset == "mnist" and spec.data.samples == 500
    assert spec.data.validation_fraction == 0.2
    assert spec.fixed["hidden_sizes"] == (100,) * 6
    assert spec.fixed["optimizer"] == "sgd" and spec.fixed["batch_size"] == 100
    assert spec.epochs == 50 and spec.trials == 100
    assert spec.param("lr") == FloatParam("lr", 1e-6, 1e-2, log=True)
    assert spec.param("weight_decay") == FloatParam("weight_decay", 1e-8, 1e-4, log=True)


def test_searched_and_fixed_fields_make_the_trainer_config():
    spec = load_spec(STUDIES / "mnist.toml")
    assert isinstance(spec.param("optimizer"), CategoricalParam)
    config = spec.train_config({"lr": 0.01, "weight_decay": 1e-5, "dropout": 0.2, "optimizer": "adam"},
                               seed=3, input_size=784, output_size=10)
    assert config.optimizer == "adam" and config.dropout == 0.2 and config.batch_norm
    assert config.hidden_sizes == (100,) * 4 and config.seed == 3


def test_hidden_layers_and_units_shorthand():
    spec = parse_spec({"study": {"name": "t"}, "model": {"hidden_layers": 3},
                       "search": {"hidden_units": {"type": "int", "low": 16, "high": 64}}})
    config = spec.train_config({"hidden_units": 32}, seed=0, input_size=64, output_size=10)
    assert config.hidden_sizes == (32, 32, 32)


def test_toml_text_round_trips(tmp_path):
    spec = load_spec(STUDIES / "book.toml")
    path = tmp_path / "again.toml"
    path.write_text(spec.to_toml())
    assert load_spec(path) == spec


BAD_SPECS = [
    ('[study]\nname = "t"\ncolour = "red"\n', r"\[study\] colour is not a known key"),
    ('[study]\nseed = 1\n', r"\[study\] name is required"),
    ('[study]\nname = "t"\n[data]\ndataset = "cifar"\n', r"\[data\] dataset must be one of mnist, fashion-mnist, digits; got 'cifar'"),
    ('[study]\nname = "t"\n[data]\nvalidation_fraction = 1.5\n', r"\[data\] validation_fraction must be in \(0, 1\); got 1.5"),
    ('[study]\nname = "t"\n[data]\nsamples = "many"\n', r"\[data\] samples must be an integer; got 'many'"),
    ('[study]\nname = "t"\n[training]\nepochs = 0\n', r"\[training\] epochs must be an integer >= 1; got 0"),
    ('[study]\nname = "t"\n[training]\noptimizer = "lbfgs"\n', r"\[training\] optimizer must be one of sgd, momentum, nesterov, adagrad, rmsprop, adam; got 'lbfgs'"),
    ('[study]\nname = "t"\n[search.lr]\ntype = "float"\nlow = 0.1\nhigh = 0.01\n', r"\[search.lr\] low must be < high; got low=0.1, high=0.01"),
    ('[study]\nname = "t"\n[search.lr]\ntype = "float"\nlow = 0.0\nhigh = 0.1\nlog = true\n', r"\[search.lr\] low must be > 0 when log = true; got 0.0"),
    ('[study]\nname = "t"\n[search.lr]\ntype = "gaussian"\n', r"\[search.lr\] type must be float, int or categorical; got 'gaussian'"),
    ('[study]\nname = "t"\n[search.colour]\ntype = "float"\nlow = 0\nhigh = 1\n', r"\[search.colour\] is not a searchable trainer field"),
    ('[study]\nname = "t"\n[search.optimizer]\ntype = "categorical"\nchoices = ["adam", "lbfgs"]\n', r"\[search.optimizer\] must be one of .*; got 'lbfgs'"),
    ('[study]\nname = "t"\n[training]\nlr = 0.1\n[search.lr]\ntype = "float"\nlow = 0.01\nhigh = 0.1\n', r"\[search.lr\] is also fixed in \[model\] or \[training\]"),
    ('[study]\nname = "t"\n[search.dropout]\ntype = "float"\nlow = 0.0\nhigh = 1.0\n', r"\[search.dropout\] must be in \[0, 1\); got 1.0"),
    ('[study]\nname = "t"\n[search.lr]\ntype = "float"\nlow = 0.01\n', r"\[search.lr\] high is required"),
    ('[study]\nname = "t"\n[search.optimizer]\ntype = "categorical"\nchoices = []\n', r"\[search.optimizer\] choices must be a non-empty list"),
    ('[study]\nname = "t"\n[sampler]\nkind = "cmaes"\n', r"\[sampler\] kind must be one of tpe, random; got 'cmaes'"),
    ('[study]\nname = "t"\n[pruner]\nkind = "patient"\n', r"\[pruner\] kind must be one of none, median, successive-halving, hyperband; got 'patient'"),
    ('[study]\nname = "t"\n[pruner]\nreduction_factor = 1\n', r"\[pruner\] reduction_factor must be an integer >= 2; got 1"),
    ('[study]\nname = "t"\n[model]\nbatch_norm = "yes"\n', r"\[model\] batch_norm must be true or false; got 'yes'"),
    ('[study]\nname = "t"\n[objective]\nfolds = 2\n', r"\[objective\] folds must be 1 \(a single validation split\) or 3 to 20; got 2"),
    ('[study]\nname = "t"\n[extra]\nx = 1\n', r"\[extra\] is not a known section"),
    ('[study\nname = "t"\n', r"not valid TOML"),
]


@pytest.mark.parametrize("text,message", BAD_SPECS, ids=[m[:40] for _, m in BAD_SPECS])
def test_bad_spec_gives_one_clear_line(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    assert str(info.value).startswith(str(path))  # names the file
    assert "\n" not in str(info.value)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "nope.toml")


def test_good_minimal_spec_uses_defaults(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(GOOD)
    spec = load_spec(path)
    assert spec.sampler.kind == "tpe" and spec.pruner.kind == "none" and spec.trials == 100
