"""Parameter updates: each optimizer is one row of the table in SEED.md, section 1.

Every optimizer works on the flat buffers of `FlatParameters`: the update is written once,
as a few NumPy operations on arrays, and applied to the whole buffer chunk by chunk.
State (a velocity, AdaGrad's h, Adam's moments) is a flat buffer per name laid out like the
parameters, so each parameter has its own state, shown by `state(parameter)`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ._config import OPTIMIZERS, ConfigError, TrainConfig
from ._layers import FlatParameters, Parameter, _aligned_zeros

__all__ = ["SGD", "AdaGrad", "Adam", "Momentum", "Nesterov", "Optimizer", "RMSProp", "make_optimizer"]

# Elements per chunk of an update. All the operations of one update run on a chunk before
# the next chunk starts, so the chunk's values, gradients, state and scratch stay in cache
# (5 arrays x 512 KB for float32); whole-buffer passes over a 784-512-512-10 net's 2.7 MB
# buffers were ~1.5x slower. Smaller chunks only add calls.
CHUNK = 1 << 17

EPS = 1e-7  # keeps AdaGrad, RMSProp and Adam from dividing by zero


class Optimizer:
    """Base class: `step()` applies `_update` to every chunk of the flat buffers.

    Subclasses name their state in `state_names` and write `_update(w, g, tmp, *state)`,
    where w, g and each state array are matching 1-D chunks and tmp is scratch of the
    same length. The update must change w and the state in place.

    Args:
        parameters: the parameters to update (a network's `parameters()`), or their
            `FlatParameters`.
        lr: learning rate eta.
    """

    state_names: tuple[str, ...] = ()

    def __init__(self, parameters: Iterable[Parameter] | FlatParameters, lr: float):
        self.flat = FlatParameters.of(parameters)
        self.lr = lr
        size, dtype = self.flat.size, self.flat.dtype
        self._state = {name: _aligned_zeros(size, dtype) for name in self.state_names}
        scratch = _aligned_zeros(min(size, CHUNK), dtype)
        self._chunks = []
        for start in range(0, size, CHUNK):
            part = slice(start, min(start + CHUNK, size))
            states = [self._state[name][part] for name in self.state_names]
            self._chunks.append((self.flat.values[part], self.flat.grads[part], scratch[: part.stop - start], *states))

    def step(self) -> None:
        """Update every parameter from its current gradient."""
        self._begin_step()
        for chunk in self._chunks:
            self._update(*chunk)

    def state(self, parameter: Parameter) -> dict[str, np.ndarray]:
        """The optimizer's state for one parameter: views shaped like the parameter."""
        part = self.flat.slice_of(parameter)
        return {name: self._state[name][part].reshape(parameter.shape) for name in self.state_names}

    def _begin_step(self) -> None:
        """Per-step scalars (Adam's bias correction); nothing by default."""

    def _update(self, w: np.ndarray, g: np.ndarray, tmp: np.ndarray, *state: np.ndarray) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr})"


class SGD(Optimizer):
    """W <- W - lr g."""

    def _update(self, w, g, tmp):
        np.multiply(g, self.lr, out=tmp)
        w -= tmp


class Momentum(Optimizer):
    """v <- a v - lr g;  W <- W + v  (v starts at 0, a = momentum)."""

    state_names = ("velocity",)

    def __init__(self, parameters, lr: float, momentum: float = 0.9):
        super().__init__(parameters, lr)
        self.momentum = momentum

    def _update(self, w, g, tmp, v):
        v *= self.momentum
        np.multiply(g, self.lr, out=tmp)
        v -= tmp
        w += v


class Nesterov(Optimizer):
    """Nesterov's look-ahead momentum: v <- a v - lr g;  W <- W + a v - lr g  (with the new v).

    This is the usual rewriting of Nesterov's accelerated gradient in which the stored W is
    the look-ahead point: the step is the momentum step a v plus a plain gradient step, so
    the gradient used next is taken where momentum is heading.
    """

    state_names = ("velocity",)

    def __init__(self, parameters, lr: float, momentum: float = 0.9):
        super().__init__(parameters, lr)
        self.momentum = momentum

    def _update(self, w, g, tmp, v):
        np.multiply(g, self.lr, out=tmp)  # lr g
        v *= self.momentum
        v -= tmp
        w -= tmp
        np.multiply(v, self.momentum, out=tmp)
        w += tmp


class AdaGrad(Optimizer):
    """h <- h + g*g;  W <- W - lr g / (sqrt(h) + 1e-7): frequently moved weights slow down."""

    state_names = ("h",)

    def _update(self, w, g, tmp, h):
        np.multiply(g, g, out=tmp)
        h += tmp
        _scaled_step(w, g, tmp, h, self.lr)


class RMSProp(Optimizer):
    """h <- rho h + (1 - rho) g*g, then as AdaGrad: old gradients fade, so steps do not die out."""

    state_names = ("h",)

    def __init__(self, parameters, lr: float, rho: float = 0.99):
        super().__init__(parameters, lr)
        self.rho = rho

    def _update(self, w, g, tmp, h):
        h *= self.rho
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.rho
        h += tmp
        _scaled_step(w, g, tmp, h, self.lr)


def _scaled_step(w, g, tmp, h, lr):
    """W <- W - lr g / (sqrt(h) + 1e-7), using tmp as scratch."""
    np.sqrt(h, out=tmp)
    tmp += EPS
    np.divide(g, tmp, out=tmp)
    tmp *= lr
    w -= tmp


class Adam(Optimizer):
    """Adam as in SEED.md, with step t counted from 1:

    m <- m + (1 - b1)(g - m);  v <- v + (1 - b2)(g^2 - v);
    lr_t = lr sqrt(1 - b2^t) / (1 - b1^t);  W <- W - lr_t m / (sqrt(v) + 1e-7).

    The state holds M = m / (1 - b1) and V = v / (1 - b2), which turns the moment updates
    into M <- b1 M + g and V <- b2 V + g^2: the same numbers in two fewer passes over the
    buffers. The step becomes W <- W - lr_t (1 - b1) / sqrt(1 - b2) * M / (sqrt(V) + eps'),
    with eps' = 1e-7 / sqrt(1 - b2).
    """

    state_names = ("M", "V")

    def __init__(self, parameters, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999):
        super().__init__(parameters, lr)
        self.beta1, self.beta2 = beta1, beta2
        self.t = 0
        self._eps = EPS / math.sqrt(1 - beta2)

    def _begin_step(self):
        self.t += 1
        lr_t = self.lr * math.sqrt(1 - self.beta2**self.t) / (1 - self.beta1**self.t)
        self._step_size = lr_t * (1 - self.beta1) / math.sqrt(1 - self.beta2)

    def _update(self, w, g, tmp, big_m, big_v):
        big_m *= self.beta1
        big_m += g
        big_v *= self.beta2
        np.multiply(g, g, out=tmp)
        big_v += tmp
        np.sqrt(big_v, out=tmp)
        tmp += self._eps
        np.divide(big_m, tmp, out=tmp)
        tmp *= self._step_size
        w -= tmp


def make_optimizer(config: TrainConfig, parameters: Iterable[Parameter] | FlatParameters) -> Optimizer:
    """The optimizer named by config.optimizer, with the config's hyperparameters."""
    name = config.optimizer
    if name == "sgd":
        return SGD(parameters, config.lr)
    if name == "momentum":
        return Momentum(parameters, config.lr, config.momentum)
    if name == "nesterov":
        return Nesterov(parameters, config.lr, config.momentum)
    if name == "adagrad":
        return AdaGrad(parameters, config.lr)
    if name == "rmsprop":
        return RMSProp(parameters, config.lr, config.rho)
    if name == "adam":
        return Adam(parameters, config.lr, config.beta1, config.beta2)
    raise ConfigError("optimizer", "one of " + ", ".join(OPTIMIZERS), name)
