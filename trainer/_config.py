"""The one frozen configuration that describes a network and how it is trained.

Each field's rule is a small object in `FIELD_RULES`: it checks a value, says the rule in the
words every message uses, and offers values that break it (for tests). Study specs reuse the
same rule objects for their own keys.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

ACTIVATIONS = ("relu", "sigmoid", "tanh")
INITIALIZERS = ("he", "xavier", "normal", "zero")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
DTYPES = ("float32", "float64")


class ConfigError(ValueError):
    """A configuration value breaks its rule; the message names field, rule and value.

    Attributes:
        field: the field name.
        rule: what the field must be, as the message says it after "must be".
        value: the value received.
        fix: how to mend it, or None.
    """

    def __init__(self, field: str, rule: str, value: object, fix: str | None = None):
        self.field, self.rule, self.value, self.fix = field, rule, value, fix
        message = f"{field} must be {rule}; got {value!r}"
        super().__init__(message + (f" ({fix})" if fix else ""))


class Rule:
    """What one value accepts.

    Attributes:
        kind: the value's type for people ("integer", "number", "string", ...).
        text: the rule as a message says it after "must be".
    """

    kind = "value"
    text = "a value"

    def validate(self, field: str, value: Any) -> Any:
        """The value as kept (a list becomes a tuple, a number a float); ConfigError if it breaks the rule."""
        raise NotImplementedError

    def bad_values(self) -> tuple[Any, ...]:
        """Values that break the rule, one per way of breaking it (for tests)."""
        raise NotImplementedError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Integer(Rule):
    """An integer in [low, high], both ends closed, except the values in `skip`.

    `wording` replaces the generated text where a rule reads better in its own words.
    """

    low: int | None = None
    high: int | None = None
    skip: tuple[int, ...] = ()
    wording: str = ""

    kind = "integer"

    @property
    def text(self) -> str:  # type: ignore[override]
        if self.wording:
            return self.wording
        if self.low is not None and self.high is not None:
            return f"an integer in [{self.low}, {self.high}]"
        if self.low is not None:
            return f"an integer >= {self.low}"
        if self.high is not None:
            return f"an integer <= {self.high}"
        return "an integer"

    def validate(self, field: str, value: Any) -> Any:
        if (
            not _is_int(value)
            or (self.low is not None and value < self.low)
            or (self.high is not None and value > self.high)
            or value in self.skip
        ):
            raise ConfigError(field, self.text, value)
        return value

    def bad_values(self) -> tuple[Any, ...]:
        bad: list[Any] = ["many", 2.5, True]
        if self.low is not None:
            bad.append(self.low - 1)
        if self.high is not None:
            bad.append(self.high + 1)
        return tuple(bad + list(self.skip))


@dataclass(frozen=True)
class Real(Rule):
    """A finite number in an interval; `closed` says which ends belong to it.

    closed: "both", "left", "right" or "neither". A missing end is infinite and open.
    """

    low: float | None = None
    high: float | None = None
    closed: str = "both"

    kind = "number"

    @property
    def interval(self) -> str:
        left = "[" if self.low is not None and self.closed in ("both", "left") else "("
        right = "]" if self.high is not None and self.closed in ("both", "right") else ")"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{left}{low}, {high}{right}"

    @property
    def text(self) -> str:  # type: ignore[override]
        return f"in {self.interval}"

    def _inside(self, value: float) -> bool:
        if self.low is not None:
            if value < self.low or (value == self.low and self.closed in ("right", "neither")):
                return False
        if self.high is not None:
            if value > self.high or (value == self.high and self.closed in ("left", "neither")):
                return False
        return True

    def validate(self, field: str, value: Any) -> Any:
        if not _is_number(value):
            raise ConfigError(field, f"a number {self.text}", value)
        if not math.isfinite(value) or not self._inside(value):
            raise ConfigError(field, self.text, value)
        return float(value)

    def bad_values(self) -> tuple[Any, ...]:
        bad: list[Any] = ["fast", True, math.nan]
        if self.low is not None:
            bad.append(self.low - 1.0 if self.closed in ("both", "left") else float(self.low))
        if self.high is not None:
            bad.append(self.high + 1.0 if self.closed in ("both", "right") else float(self.high))
        return tuple(bad)


@dataclass(frozen=True)
class OneOf(Rule):
    """One of a few strings."""

    choices: tuple[str, ...]

    kind = "string"

    @property
    def text(self) -> str:  # type: ignore[override]
        return "one of " + ", ".join(self.choices)

    def validate(self, field: str, value: Any) -> Any:
        if not isinstance(value, str) or value not in self.choices:
            raise ConfigError(field, self.text, value)
        return value

    def bad_values(self) -> tuple[Any, ...]:
        return ("unknown-" + self.choices[0], self.choices[0].upper() + "!", 3)


@dataclass(frozen=True)
class Flag(Rule):
    kind = "boolean"
    text = "true or false"

    def validate(self, field: str, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ConfigError(field, self.text, value)
        return value

    def bad_values(self) -> tuple[Any, ...]:
        return ("yes", 1)


@dataclass(frozen=True)
class Sizes(Rule):
    """A list (kept as a tuple) of positive integers; empty is allowed."""

    kind = "list of integers"
    text = "a list of positive integers"

    def validate(self, field: str, value: Any) -> Any:
        if isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, tuple) or not all(_is_int(v) and v >= 1 for v in value):
            raise ConfigError(field, self.text, value)
        return value

    def bad_values(self) -> tuple[Any, ...]:
        return ([0], [100, -1], [1.5], [True], "100")


# Every field of TrainConfig, in the order they are checked.
FIELD_RULES: dict[str, Rule] = {
    "input_size": Integer(low=1),
    "output_size": Integer(low=2),
    "hidden_sizes": Sizes(),
    "activation": OneOf(ACTIVATIONS),
    "init": OneOf(INITIALIZERS),
    "optimizer": OneOf(OPTIMIZERS),
    "dtype": OneOf(DTYPES),
    "batch_norm": Flag(),
    "init_std": Real(0, None, closed="neither"),
    "dropout": Real(0, 1, closed="left"),
    "weight_decay": Real(0, None, closed="left"),
    "lr": Real(0, None, closed="neither"),
    "momentum": Real(0, 1, closed="left"),
    "rho": Real(0, 1, closed="left"),
    "beta1": Real(0, 1, closed="left"),
    "beta2": Real(0, 1, closed="left"),
    "epochs": Integer(low=1),
    "batch_size": Integer(low=1),
    "seed": Integer(low=0),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run, so that one config and seed give one history.

    Field names are the names used in study specs and search spaces.
    """

    input_size: int = 784
    hidden_sizes: tuple[int, ...] = (100, 100, 100, 100, 100)
    output_size: int = 10
    activation: str = "relu"
    init: str = "he"
    init_std: float = 0.01  # used only when init == "normal"
    batch_norm: bool = False
    dropout: float = 0.0  # probability of dropping a hidden unit
    weight_decay: float = 0.0  # lambda in 1/2 * lambda * ||W||^2, weight matrices only
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9  # Momentum and Nesterov
    rho: float = 0.99  # RMSProp decay
    beta1: float = 0.9
    beta2: float = 0.999
    epochs: int = 10
    batch_size: int = 100
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        # Specs parsed from TOML give lists and ints; a frozen config holds tuples and floats.
        for name, rule in FIELD_RULES.items():
            object.__setattr__(self, name, rule.validate(name, getattr(self, name)))

    def replace(self, **changes: object) -> "TrainConfig":
        """A copy with some fields changed (validated like a new config)."""
        return dataclasses.replace(self, **changes)
