"""The one frozen configuration that describes a network and how it is trained."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

ACTIVATIONS = ("relu", "sigmoid", "tanh")
INITIALIZERS = ("he", "xavier", "normal", "zero")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
DTYPES = ("float32", "float64")


class ConfigError(ValueError):
    """A configuration value breaks its rule; the message names field, rule and value."""

    def __init__(self, field: str, rule: str, value: object, fix: str | None = None):
        self.field, self.rule, self.value = field, rule, value
        message = f"{field} must be {rule}; got {value!r}"
        super().__init__(message + (f" ({fix})" if fix else ""))


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
        # Specs parsed from TOML give lists; a frozen config holds tuples.
        if isinstance(self.hidden_sizes, list):
            object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        _check_int(self, "input_size", low=1)
        _check_int(self, "output_size", low=2)
        if not isinstance(self.hidden_sizes, tuple):
            raise ConfigError("hidden_sizes", "a list of positive integers", self.hidden_sizes)
        for size in self.hidden_sizes:
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ConfigError("hidden_sizes", "a list of positive integers", self.hidden_sizes)
        _check_choice(self, "activation", ACTIVATIONS)
        _check_choice(self, "init", INITIALIZERS)
        _check_choice(self, "optimizer", OPTIMIZERS)
        _check_choice(self, "dtype", DTYPES)
        if not isinstance(self.batch_norm, bool):
            raise ConfigError("batch_norm", "true or false", self.batch_norm)
        _check_float(self, "init_std", "in (0, inf)", lambda v: v > 0)
        _check_float(self, "dropout", "in [0, 1)", lambda v: 0 <= v < 1)
        _check_float(self, "weight_decay", "in [0, inf)", lambda v: v >= 0)
        _check_float(self, "lr", "in (0, inf)", lambda v: v > 0)
        _check_float(self, "momentum", "in [0, 1)", lambda v: 0 <= v < 1)
        _check_float(self, "rho", "in [0, 1)", lambda v: 0 <= v < 1)
        _check_float(self, "beta1", "in [0, 1)", lambda v: 0 <= v < 1)
        _check_float(self, "beta2", "in [0, 1)", lambda v: 0 <= v < 1)
        _check_int(self, "epochs", low=1)
        _check_int(self, "batch_size", low=1)
        _check_int(self, "seed", low=0)

    def replace(self, **changes: object) -> "TrainConfig":
        """A copy with some fields changed (validated like a new config)."""
        return dataclasses.replace(self, **changes)


FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


def _check_int(config: TrainConfig, name: str, low: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(name, f"an integer >= {low}", value)


def _check_float(config: TrainConfig, name: str, rule: str, ok) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, f"a number {rule}", value)
    if not math.isfinite(value) or not ok(value):
        raise ConfigError(name, rule, value)
    object.__setattr__(config, name, float(value))


def _check_choice(config: TrainConfig, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise ConfigError(name, "one of " + ", ".join(choices), value)
