"""Study specs: the bundled ones parse, round-trip, and every bad spec gets its one-line message."""

import re
import tomllib
from pathlib import Path

import pytest

from hpo import SpecError, load_spec, parse_spec
from hpo._spec import SEARCHABLE, SECTIONS, TRAINER, CategoricalParam, FloatParam, keys, reference
from helpers import hpo
from trainer import REGISTRY

REPO = Path(__file__).resolve().parent.parent
STUDIES = REPO / "studies"

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


def test_a_raced_spec_reads_its_settings_from_objective_and_sampler(tmp_path):
    from hpo._racing import RaceSettings

    spec = load_spec(STUDIES / "book-raced.toml")
    assert spec.objective.raced and not load_spec(STUDIES / "book.toml").objective.raced
    settings = RaceSettings.of(spec)
    assert (settings.folds, settings.repeats, settings.margin, settings.prune_margin, settings.prune_epochs,
            settings.startup, settings.sampler) == (5, 1, 0.08, 0.15, (10, 20), 10, "tpe")
    assert parse_spec(tomllib.loads(spec.to_toml())) == spec


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
    # A bad fixed value is reported under its own key, not under the first searched one.
    ('[study]\nname = "t"\n[model]\nhidden_sizes = [0]\n[search.lr]\ntype = "float"\nlow = 0.01\nhigh = 0.1\n',
     r"\[model\] hidden_sizes must be a list of positive integers; got \[0\]$"),
    ('[study]\nname = "t"\n[data]\nsamples = 5000\n', r"\[data\] samples must be in \[2, 1438\], the pool size of digits; got 5000 "
     r"\(use at most 1438, or leave samples out for the whole pool\)$"),
    ('[study]\nname = "t"\n[data]\nsamples = 1\n', r"\[data\] samples must be in \[2, 1438\], the pool size of digits; got 1"),
    ('[study]\nname = "t"\n[model]\nhidden_layers = -1\n', r"\[model\] hidden_layers must be an integer >= 0; got -1$"),
    ('[study]\nname = "t"\n[search.hidden_units]\ntype = "categorical"\nchoices = [32, "wide"]\n',
     r"\[search.hidden_units\] must be an integer >= 1; got 'wide'$"),
    ('[study]\nname = "t"\n[search.epochs]\ntype = "float"\nlow = 1\nhigh = 9\n',
     r"\[search.epochs\] type must be int for an integer key; got 'float' \(use type = \"int\"\)$"),
    # A race runs one fold at a time and stops runs itself.
    ('[study]\nname = "t"\n[objective]\nmethod = "race"\n',
     r"\[objective\] folds must be 3 to 20 when method = \"race\" .*; got 1 \(folds = 5 is what docs/search.md"),
    ('[study]\nname = "t"\n[objective]\nmethod = "race"\nfolds = 5\n[pruner]\nkind = "median"\n',
     r"\[pruner\] kind must be \"none\" when \[objective\] method = \"race\"; got 'median' \(the race stops"),
    ('[study]\nname = "t"\n[training]\nepochs = 10\n[objective]\nmethod = "race"\nfolds = 5\n',
     r"\[objective\] prune_epochs must be below \[training\] epochs = 10; got \[10, 20\]"),
    ('[study]\nname = "t"\n[sampler]\nmultivariate = false\n[objective]\nmethod = "race"\nfolds = 5\n',
     r"\[sampler\] multivariate must be true when \[objective\] method = \"race\"; got False"),
    ('[study]\nname = "t"\n[objective]\nmethod = "raced"\n', r"\[objective\] method must be one of single, race; got 'raced'"),
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


def test_a_spec_file_may_start_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load_spec(path).name == "t"


def test_samples_above_the_pool_are_refused_at_create(tmp_path):
    spec = tmp_path / "big.toml"
    spec.write_text('[study]\nname = "big"\n[data]\ndataset = "digits"\nsamples = 1439\n')
    result = hpo("study", "create", str(spec), "--storage", f"sqlite:///{tmp_path / 's.db'}")
    assert result.returncode == 1
    assert result.stderr == (f"Error: {spec}: [data] samples must be in [2, 1438], the pool size of digits; "
                             "got 1439 (use at most 1438, or leave samples out for the whole pool)\n")


def test_the_pool_sizes_are_the_registry_s():
    for name, info in REGISTRY.items():
        most = {"study": {"name": "t"}, "data": {"dataset": name, "samples": info.pool_size}}
        assert parse_spec(most).data.samples == info.pool_size
        with pytest.raises(SpecError, match=rf"the pool size of {name}"):
            parse_spec({**most, "data": {"dataset": name, "samples": info.pool_size + 1}})


# Everything below is generated from the key declarations: a key added there is parsed,
# checked, stored, written as TOML and documented without another edit.

def document(section, name, value):
    doc = {"study": {"name": "t"}}
    doc.setdefault(section, {})[name] = value
    return doc


BAD_VALUES = [(k, bad) for k in keys() for bad in k.rule.bad_values()]


@pytest.mark.parametrize("k,bad", BAD_VALUES, ids=[f"{k.section}.{k.name}={bad!r}" for k, bad in BAD_VALUES])
def test_every_generated_bad_value_is_refused_naming_section_and_key(k, bad):
    with pytest.raises(SpecError) as info:
        parse_spec(document(k.section, k.name, bad), source="s.toml")
    shown = list(bad) if isinstance(bad, (list, tuple)) else bad
    message = str(info.value)
    assert message.startswith(f"s.toml: {k.label} must be ")
    assert k.rule.text in message and message.endswith(f"; got {shown!r}")


SEARCHED_BAD = [(TRAINER[name], bad) for name in SEARCHABLE for bad in TRAINER[name].rule.bad_values()
                if isinstance(bad, (str, int, float, bool))]


@pytest.mark.parametrize("k,bad", SEARCHED_BAD, ids=[f"search.{k.name}={bad!r}" for k, bad in SEARCHED_BAD])
def test_a_bad_choice_of_a_searched_key_is_refused_naming_the_search_table(k, bad):
    doc = {"study": {"name": "t"}, "search": {k.name: {"type": "categorical", "choices": [bad]}}}
    with pytest.raises(SpecError, match=r"^s\.toml: \[search\." + k.name + r"\] must be ") as info:
        parse_spec(doc, source="s.toml")
    assert k.rule.text in str(info.value)


@pytest.mark.parametrize("k", keys(), ids=lambda k: f"{k.section}.{k.name}")
def test_every_declared_key_round_trips_through_the_stored_form_and_toml(k, tmp_path):
    spec = parse_spec(document(k.section, k.name, k.sample))
    stored = spec.to_dict()
    expected = list(k.sample) if isinstance(k.sample, tuple) else k.sample
    assert stored[k.section][k.name] == expected
    assert parse_spec(stored) == spec
    path = tmp_path / "again.toml"
    path.write_text(spec.to_toml())
    assert load_spec(path) == spec
    assert f"| {k.name} |" in reference()


def test_dataclass_defaults_are_the_declared_ones():
    spec = parse_spec({"study": {"name": "t"}})
    holders = {"study": spec, "data": spec.data, "sampler": spec.sampler, "pruner": spec.pruner,
               "objective": spec.objective}
    assert set(holders) == set(SECTIONS)
    for section, holder in holders.items():
        for k in keys(section):
            if not k.required:
                assert getattr(holder, k.name) == k.default, k.label
    # A key left out is left out of the stored form too, so old studies keep their exact form.
    assert "samples" not in spec.to_dict()["data"] and spec.data.samples is None
    assert spec.fixed == {} and spec.train_config({}, seed=0, input_size=4, output_size=2).lr == TRAINER["lr"].default


def test_required_keys_say_how_to_add_them():
    for k in keys():
        if k.required:
            doc = {"study": {"name": "t"}}
            del doc[k.section][k.name]
            with pytest.raises(SpecError, match=re.escape(f"{k.label} is required (add {k.name} = ")):
                parse_spec(doc)


def test_the_spec_reference_in_docs_is_the_generated_one():
    # Regenerate with: python -c "from hpo._spec import reference; open('docs/spec.md', 'w').write(reference())"
    assert (REPO / "docs" / "spec.md").read_text() == reference()


def test_stored_specs_keep_their_exact_form():
    # The stored form of a spec that sets every section: the layout studies in storage already have.
    # A key declared later may join it at its default; nothing already there may change.
    pinned = {
        "study": {"name": "mnist", "seed": 0, "trials": 100,
                  "description": "MNIST: learning rate, weight decay, dropout and optimizer, with pruning"},
        "data": {"dataset": "mnist", "samples": 5000, "validation_fraction": 0.2, "split_seed": 0},
        "model": {"hidden_sizes": [100, 100, 100, 100], "activation": "relu", "init": "he", "batch_norm": True},
        "training": {"epochs": 20, "batch_size": 100},
        "search": {
            "lr": {"type": "float", "low": 1e-5, "high": 0.1, "log": True},
            "weight_decay": {"type": "float", "low": 1e-8, "high": 0.01, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5, "log": False},
            "optimizer": {"type": "categorical", "choices": ["sgd", "momentum", "adagrad", "rmsprop", "adam"]},
        },
        "sampler": {"kind": "tpe", "random_trials": 20, "multivariate": True},
        "pruner": {"kind": "median", "startup_trials": 10, "warmup_epochs": 4, "min_epochs": 1,
                   "reduction_factor": 3},
        "objective": {"repeats": 1, "folds": 1},
    }
    stored = load_spec(STUDIES / "mnist.toml").to_dict()
    assert list(stored) == list(pinned)
    for section, values in pinned.items():
        assert {k: v for k, v in stored[section].items() if k in values} == values
        added = {k.name: k for k in keys(section) if k.name in stored[section] and k.name not in values}
        assert {name: stored[section][name] for name in added} == {
            name: list(k.default) if isinstance(k.default, tuple) else k.default for name, k in added.items()}
        assert set(stored[section]) == set(values) | set(added)
