"""Initial weights: their scale decides whether a deep net learns at all.

- "normal": Gaussian with a given std (config.init_std). With 0.01 and ReLU the signal
  shrinks layer by layer and a 5-layer net does not learn.
- "xavier": std 1/sqrt(fan_in), keeps the spread of sigmoid and tanh activations.
- "he": std sqrt(2/fan_in), the same for ReLU, which zeroes half of its inputs.
- "zero": all weights 0; every unit of a layer stays identical to the others forever.

Biases always start at zero.
"""

from __future__ import annotations

import math

import numpy as np

from ._config import INITIALIZERS, ConfigError

__all__ = ["initial_weights", "weight_std"]


def weight_std(init: str, fan_in: int, init_std: float = 0.01) -> float:
    """The standard deviation of the initial weights of a layer with `fan_in` inputs."""
    if init == "he":
        return math.sqrt(2.0 / fan_in)
    if init == "xavier":
        return math.sqrt(1.0 / fan_in)
    if init == "normal":
        return init_std
    if init == "zero":
        return 0.0
    raise ConfigError("init", "one of " + ", ".join(INITIALIZERS), init)


def initial_weights(init: str, fan_in: int, fan_out: int, rng: np.random.Generator,
                    dtype: str | np.dtype = "float32", init_std: float = 0.01) -> np.ndarray:
    """A (fan_in, fan_out) weight matrix, drawn directly in `dtype` (no float64 detour).

    Args:
        init: one of INITIALIZERS.
        fan_in, fan_out: inputs and outputs of the layer.
        rng: the Generator the weights are drawn from.
        dtype: "float32" or "float64".
        init_std: the std of "normal"; ignored by the others.
    """
    std = weight_std(init, fan_in, init_std)
    if std == 0.0:
        return np.zeros((fan_in, fan_out), dtype)
    weights = rng.standard_normal((fan_in, fan_out), dtype=dtype)
    weights *= std
    return weights
