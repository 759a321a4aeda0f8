"""TrainConfig: its defaults, its rule objects, and the ConfigError every bad value gets."""

from __future__ import annotations

import dataclasses
import math

import pytest

from trainer import FIELD_RULES, ConfigError, Integer, OneOf, Real, TrainConfig


def test_every_field_has_exactly_one_rule():
    assert set(FIELD_RULES) == {f.name for f in dataclasses.fields(TrainConfig)}


def test_defaults_describe_the_seed_network():
    config = TrainConfig()
    assert config.input_size == 784 and config.output_size == 10
    assert config.hidden_sizes == (100,) * 5
    assert (config.activation, config.init, config.optimizer, config.dtype) == ("relu", "he", "sgd", "float32")
    assert config.lr == 0.01 and config.epochs == 10 and config.batch_size == 100
    assert config.dropout == 0.0 and config.weight_decay == 0.0 and not config.batch_norm


def test_defaults_obey_their_rules():
    config = TrainConfig()
    for name, rule in FIELD_RULES.items():
        assert rule.validate(name, getattr(config, name)) == getattr(config, name)


def test_values_are_kept_in_one_form():
    # TOML gives lists and ints; the frozen config holds tuples and floats.
    config = TrainConfig(hidden_sizes=[8, 4], lr=1, dropout=0)
    assert config.hidden_sizes == (8, 4)
    assert isinstance(config.lr, float) and isinstance(config.dropout, float)
    assert config.replace(lr=2).lr == 2.0


BAD = [(name, bad) for name, rule in FIELD_RULES.items() for bad in rule.bad_values()]


@pytest.mark.parametrize("name,bad", BAD, ids=[f"{n}={b!r}" for n, b in BAD])
def test_each_bad_value_gives_a_config_error_with_field_rule_and_value(name, bad):
    with pytest.raises(ConfigError) as caught:
        TrainConfig(**{name: bad})
    error = caught.value
    rule = FIELD_RULES[name]
    assert error.field == name
    assert error.rule in (rule.text, f"a number {rule.text}")
    expected = tuple(bad) if isinstance(bad, list) else bad
    assert repr(error.value) == repr(expected)
    assert str(error) == f"{name} must be {error.rule}; got {error.value!r}"


def test_a_fix_is_kept_and_said():
    error = ConfigError("output_size", "at least 3", 2, fix="set output_size to 3")
    assert (error.field, error.rule, error.value, error.fix) == ("output_size", "at least 3", 2, "set output_size to 3")
    assert str(error) == "output_size must be at least 3; got 2 (set output_size to 3)"


@pytest.mark.parametrize("rule,text", [
    (Real(0, 1, closed="left"), "in [0, 1)"),
    (Real(0, 1, closed="right"), "in (0, 1]"),
    (Real(0, 1, closed="both"), "in [0, 1]"),
    (Real(0, None, closed="neither"), "in (0, inf)"),
    (Real(None, 0, closed="both"), "in (-inf, 0]"),
    (Real(1e-8, 0.5, closed="both"), "in [1e-08, 0.5]"),
    (Integer(), "an integer"),
    (Integer(low=2), "an integer >= 2"),
    (Integer(low=2, high=9), "an integer in [2, 9]"),
    (Integer(high=9), "an integer <= 9"),
    (OneOf(("a", "b")), "one of a, b"),
])
def test_rules_say_their_ends(rule, text):
    assert rule.text == text


@pytest.mark.parametrize("rule,inside,outside", [
    (Real(0, 1, closed="left"), [0, 0.5, 0.999], [1, -0.1, math.inf]),
    (Real(0, 1, closed="right"), [1, 1e-12], [0, 1.5]),
    (Real(0, None, closed="neither"), [1e-300, 1e300], [0, -1, math.inf, math.nan]),
    (Integer(low=1, high=20, skip=(2,)), [1, 3, 20], [0, 2, 21, 3.0, True]),
    (OneOf(("sgd", "adam")), ["sgd"], ["SGD", None, 1]),
])
def test_rules_accept_inside_and_refuse_outside(rule, inside, outside):
    for value in inside:
        rule.validate("x", value)
    for value in outside:
        with pytest.raises(ConfigError):
            rule.validate("x", value)


def test_every_generated_bad_value_is_refused_by_its_rule():
    for rule in (Real(0, 1, closed="both"), Real(0, 1, closed="neither"), Integer(low=1, high=20, skip=(2,))):
        for bad in rule.bad_values():
            with pytest.raises(ConfigError):
                rule.validate("x", bad)
