"""Optimizers: the first steps match SEED.md's equations, worked out here element by element.

The expected values are computed in plain Python floats, one parameter element at a time,
straight from the table in SEED.md section 1; the implementation works on whole flat
buffers in NumPy. The gradient of each step is that of f(w) = sum(c * w^2) / 2 at the
current w, so later steps depend on earlier ones.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer import (
    OPTIMIZERS,
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    Nesterov,
    Parameter,
    RMSProp,
    TrainConfig,
    build_network,
    make_optimizer,
)

START = [1.0, -2.0, 0.5, 3.0]
CURVATURE = [1.0, 0.5, 4.0, 0.01]
LR = 0.1


def gradient(w: list[float]) -> list[float]:
    return [c * x for c, x in zip(CURVATURE, w)]


def by_hand(name: str, steps: int = 3, lr: float = LR, alpha: float = 0.9, rho: float = 0.99,
            beta1: float = 0.9, beta2: float = 0.999) -> list[list[float]]:
    """The values of w after each of `steps` updates, from SEED.md's table."""
    w = list(START)
    v = [0.0] * len(w)  # velocity (Momentum, Nesterov), or Adam's second moment
    h = [0.0] * len(w)
    m = [0.0] * len(w)
    after = []
    for t in range(1, steps + 1):
        g = gradient(w)
        for i in range(len(w)):
            if name == "sgd":
                w[i] = w[i] - lr * g[i]
            elif name == "momentum":
                v[i] = alpha * v[i] - lr * g[i]
                w[i] = w[i] + v[i]
            elif name == "nesterov":
                v[i] = alpha * v[i] - lr * g[i]
                w[i] = w[i] + alpha * v[i] - lr * g[i]
            elif name == "adagrad":
                h[i] = h[i] + g[i] * g[i]
                w[i] = w[i] - lr * g[i] / (math.sqrt(h[i]) + 1e-7)
            elif name == "rmsprop":
                h[i] = rho * h[i] + (1 - rho) * g[i] * g[i]
                w[i] = w[i] - lr * g[i] / (math.sqrt(h[i]) + 1e-7)
            elif name == "adam":
                m[i] = m[i] + (1 - beta1) * (g[i] - m[i])
                v[i] = v[i] + (1 - beta2) * (g[i] ** 2 - v[i])
                lr_t = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                w[i] = w[i] - lr_t * m[i] / (math.sqrt(v[i]) + 1e-7)
        after.append(list(w))
    return after


def run(optimizer_for, steps: int = 3) -> list[np.ndarray]:
    point = Parameter("w", np.array(START))
    optimizer = optimizer_for([point])
    after = []
    for _ in range(steps):
        point.grad[...] = np.array(CURVATURE) * point.value
        optimizer.step()
        after.append(point.value.copy())
    return after


@pytest.mark.parametrize("name, optimizer_for", [
    ("sgd", lambda p: SGD(p, LR)),
    ("momentum", lambda p: Momentum(p, LR, momentum=0.9)),
    ("nesterov", lambda p: Nesterov(p, LR, momentum=0.9)),
    ("adagrad", lambda p: AdaGrad(p, LR)),
    ("rmsprop", lambda p: RMSProp(p, LR, rho=0.99)),
    ("adam", lambda p: Adam(p, LR, beta1=0.9, beta2=0.999)),
])
def test_first_three_steps_match_the_equations(name, optimizer_for):
    for step, (got, expected) in enumerate(zip(run(optimizer_for), by_hand(name)), 1):
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=0, err_msg=f"{name}, step {step}")


def test_sgd_first_step_by_hand():
    assert run(lambda p: SGD(p, LR), steps=1)[0].tolist() == pytest.approx([0.9, -1.9, 0.3, 2.997])


def test_adam_first_step_moves_every_weight_by_about_lr():
    # After one step m = 0.1 g and v = 0.001 g^2; the bias correction undoes both factors,
    # leaving lr * g / (|g| + eps'): the smallest gradient (0.03) feels eps at 1e-4.
    step = np.array(START) - run(lambda p: Adam(p, LR), steps=1)[0]
    np.testing.assert_allclose(step, LR * np.sign(START), rtol=2e-4)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_make_optimizer_uses_the_config_hyperparameters(name):
    config = TrainConfig(optimizer=name, lr=LR, momentum=0.9, rho=0.99, beta1=0.9, beta2=0.999)
    for got, expected in zip(run(lambda p: make_optimizer(config, p)), by_hand(name)):
        np.testing.assert_allclose(got, expected, rtol=1e-13)


@pytest.mark.parametrize("name", ["momentum", "adagrad", "adam"])
def test_state_is_kept_per_parameter(name):
    """Updating two parameters together equals updating each alone."""
    config = TrainConfig(optimizer=name, lr=LR)
    rng = np.random.default_rng(0)
    values = [rng.standard_normal((3, 5)), rng.standard_normal(7)]
    grads = [[rng.standard_normal(v.shape) for v in values] for _ in range(3)]

    together = [Parameter(f"p{i}", v.copy()) for i, v in enumerate(values)]
    optimizer = make_optimizer(config, together)
    alone = [Parameter(f"p{i}", v.copy()) for i, v in enumerate(values)]
    optimizers = [make_optimizer(config, [p]) for p in alone]
    for step_grads in grads:
        for p, g in zip(together, step_grads):
            p.grad[...] = g
        optimizer.step()
        for p, o, g in zip(alone, optimizers, step_grads):
            p.grad[...] = g
            o.step()
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a.value, b.value, rtol=1e-14)
    state = optimizer.state(together[0])
    assert all(s.shape == (3, 5) for s in state.values()) and state


def test_optimizer_uses_the_network_buffers_without_copying():
    network = build_network(TrainConfig(input_size=6, hidden_sizes=(5,), output_size=3, batch_norm=True))
    optimizer = make_optimizer(TrainConfig(optimizer="adam"), network.parameters())
    assert optimizer.flat is network.flat


def test_update_spans_several_chunks():
    """A parameter larger than one chunk is updated everywhere, not just in the first chunk."""
    from trainer._optimizers import CHUNK

    point = Parameter("w", np.ones(CHUNK * 2 + 3, np.float32))
    optimizer = SGD([point], 0.5)
    point.grad[...] = 1.0
    optimizer.step()
    np.testing.assert_array_equal(point.value, 0.5)
