"""Each layer alone: backward agrees with centred finite differences of forward, in float64.

The scalar checked is sum(forward(x) * R) for a fixed random R, so backward(R) must return
its gradient. Every comparison prints the largest relative error per array and asserts it
is below 1e-6.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from trainer import Affine, BatchNorm, Dropout, FlatParameters, Parameter, ReLU, Sigmoid, SoftmaxCrossEntropy, Tanh

TOLERANCE = 1e-6
# Five-point centred differences in float64: truncation error ~ STEP^4, rounding ~ 1e-16 / STEP.
# Plain two-point differences (error ~ STEP^2) blur gradient elements of ~1e-5 past 1e-6.
STEP = 1e-4
FLOOR = 1e-7  # below this, |analytic| + |numeric| is rounding noise: compare absolutely


def numerical_gradient(f: Callable[[], float], array: np.ndarray, step: float = STEP) -> np.ndarray:
    """d f / d array by five-point centred differences, nudging `array` in place and restoring it."""
    grad = np.zeros(array.shape)
    for index in np.ndindex(array.shape):
        original = array[index]
        values = []
        for offset in (2, 1, -1, -2):
            array[index] = original + offset * step
            values.append(f())
        array[index] = original
        far_up, up, down, far_down = values
        grad[index] = (8 * (up - down) - (far_up - far_down)) / (12 * step)
    return grad


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """max |a - n| / max(|a| + |n|, FLOOR) over the elements."""
    analytic, numeric = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    return float(np.max(np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), FLOOR)))


def assert_close_gradient(name: str, analytic: np.ndarray, numeric: np.ndarray) -> None:
    error = relative_error(analytic, numeric)
    print(f"{name}: max relative error {error:.2e}")
    assert error < TOLERANCE, f"{name}: max relative error {error:.2e} >= {TOLERANCE}"


def check_layer(layer, x: np.ndarray, rng: np.random.Generator, train: bool = True) -> None:
    """Compare backward with finite differences for the input and every parameter."""
    upstream = rng.standard_normal(layer.forward(x, train).shape)

    def objective() -> float:
        return float(np.sum(layer.forward(x, train) * upstream))

    objective()
    dx = layer.backward(upstream)
    analytic = {"x": None if dx is None else dx.copy()}
    analytic.update({p.name: p.grad.copy() for p in layer.parameters()})
    if dx is not None:
        assert_close_gradient(f"{type(layer).__name__} x", analytic["x"], numerical_gradient(objective, x))
    for p in layer.parameters():
        assert_close_gradient(p.name, analytic[p.name], numerical_gradient(objective, p.value))


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Gaussian values with |x| >= 0.1, so that no finite-difference step crosses ReLU's kink."""
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.1, np.sign(x) * 0.1 + x, x)


def test_affine_gradients(rng):
    layer = Affine(rng.standard_normal((5, 4)), rng.standard_normal(4))
    check_layer(layer, rng.standard_normal((6, 5)), rng)


def test_affine_without_input_gradient_returns_none_and_still_fills_parameter_gradients(rng):
    layer = Affine(rng.standard_normal((5, 4)), rng.standard_normal(4), input_grad=False)
    check_layer(layer, rng.standard_normal((6, 5)), rng)
    layer.forward(rng.standard_normal((6, 5)), True)
    assert layer.backward(rng.standard_normal((6, 4))) is None


@pytest.mark.parametrize("layer_type", [ReLU, Sigmoid, Tanh])
def test_activation_gradients(layer_type, rng):
    check_layer(layer_type(), away_from_zero(rng, (6, 5)), rng)


def test_relu_passes_gradient_only_where_active():
    layer = ReLU()
    layer.forward(np.array([[-1.0, 2.0, 0.0, 3.0]]), True)
    np.testing.assert_array_equal(layer.backward(np.array([[5.0, 6.0, 7.0, 8.0]])), [[0.0, 6.0, 0.0, 8.0]])


def test_sigmoid_is_stable_for_large_inputs():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = Sigmoid().forward(np.array([[-1000.0, 0.0, 1000.0]], np.float32))
    np.testing.assert_allclose(out, [[0.0, 0.5, 1.0]])


def test_batchnorm_gradients_in_training_mode(rng):
    layer = BatchNorm(4, "float64")
    layer.gamma.value[...] = rng.uniform(0.5, 2.0, 4)
    layer.beta.value[...] = rng.standard_normal(4)
    check_layer(layer, 3 * rng.standard_normal((8, 4)) + 1, rng)


def test_batchnorm_normalizes_each_feature_over_the_batch(rng):
    layer = BatchNorm(3, "float64", eps=0.0)
    out = layer.forward(rng.normal(5.0, 3.0, (50, 3)), True)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=0), 1.0, rtol=1e-12)


def test_batchnorm_inference_uses_running_statistics(rng):
    layer = BatchNorm(3, "float64", momentum=0.5)
    data = rng.normal(4.0, 2.0, (200, 3))
    for _ in range(60):  # momentum 0.5: the running estimates forget the start quickly
        layer.forward(data, True)
    np.testing.assert_allclose(layer.running_mean, data.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(layer.running_var, data.var(axis=0), rtol=1e-10)
    one_row = data[:1]
    expected = (one_row - data.mean(axis=0)) / np.sqrt(data.var(axis=0) + layer.eps)
    np.testing.assert_allclose(layer.forward(one_row, False), expected, rtol=1e-9)


def test_dropout_gradients_with_a_fixed_mask(rng):
    layer = Dropout(0.4, np.random.default_rng(0))
    layer.fixed_mask = rng.random((6, 5)) >= 0.4
    check_layer(layer, rng.standard_normal((6, 5)), rng)


def test_dropout_is_inverted_fresh_each_pass_and_identity_at_inference():
    layer = Dropout(0.2, np.random.default_rng(0))
    x = np.ones((400, 500), np.float32)
    first = layer.forward(x, True).copy()
    second = layer.forward(x, True).copy()
    assert not np.array_equal(first, second), "a fresh mask on every training pass"
    kept = first != 0
    assert abs(kept.mean() - 0.8) < 0.005
    np.testing.assert_allclose(first[kept], 1 / 0.8, rtol=1e-5)  # kept units are scaled up ...
    assert abs(first.mean() - 1.0) < 0.01  # ... so the expected output is the input
    assert layer.forward(x, False) is x


def test_dropout_masks_come_from_the_layer_generator():
    x = np.ones((10, 10))
    one, other = Dropout(0.5, np.random.default_rng(7)), Dropout(0.5, np.random.default_rng(7))
    np.testing.assert_array_equal(one.forward(x, True), other.forward(x, True))


def test_softmax_cross_entropy_gradient(rng):
    layer = SoftmaxCrossEntropy()
    scores = rng.standard_normal((6, 4))
    labels = rng.integers(0, 4, 6)
    layer.forward(scores, labels)
    analytic = layer.backward().copy()
    assert_close_gradient("softmax cross-entropy", analytic,
                          numerical_gradient(lambda: layer.forward(scores, labels), scores))


def test_softmax_cross_entropy_value_and_stability():
    layer = SoftmaxCrossEntropy()
    scores = np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # exp may underflow to 0: fine
        loss = layer.forward(scores, np.array([2, 0]))
    expected_first = -np.log(np.exp(3) / (np.exp(1) + np.exp(2) + np.exp(3)))
    assert loss == pytest.approx(expected_first / 2, rel=1e-12)
    assert np.isfinite(layer.forward(scores, np.array([2, 2])))  # log(0) never happens: about 2000/2


@pytest.mark.parametrize("layer", [
    Affine(np.ones((3, 2)), np.zeros(2)),
    ReLU(), Sigmoid(), Tanh(), BatchNorm(3, "float64"),
    Dropout(0.5, np.random.default_rng(0)),
], ids=lambda layer: type(layer).__name__)
def test_backward_never_edits_the_incoming_gradient(layer, rng):
    x = away_from_zero(rng, (4, 3))
    out = layer.forward(x, True)
    dout = rng.standard_normal(out.shape)
    kept = dout.copy()
    dx = layer.backward(dout)
    np.testing.assert_array_equal(dout, kept)
    assert dx is not dout


def test_flat_parameters_pack_views_with_weights_first_and_aligned(rng):
    bias = Parameter("b", rng.standard_normal(3))
    weight = Parameter("W", rng.standard_normal((5, 7)), decay=True)
    expected_bias, expected_weight = bias.value.copy(), weight.value.copy()
    flat = FlatParameters([bias, weight])
    assert flat.parameters == (bias, weight)
    np.testing.assert_array_equal(bias.value, expected_bias)
    np.testing.assert_array_equal(weight.value, expected_weight)
    assert np.shares_memory(weight.value, flat.values) and np.shares_memory(bias.grad, flat.grads)
    assert flat.slice_of(weight).start == 0 and flat.decay_size == weight.size
    for p in (bias, weight):
        assert p.value.ctypes.data % 64 == 0 and p.grad.ctypes.data % 64 == 0
    weight.value[0, 0] = 42.0
    assert flat.values[0] == 42.0


def test_flat_parameters_are_reused_not_repacked(rng):
    params = [Parameter("a", rng.standard_normal(3)), Parameter("b", rng.standard_normal(2))]
    flat = FlatParameters(params)
    assert FlatParameters.of(params) is flat
    with pytest.raises(ValueError, match="already packed"):
        FlatParameters(params[:1])
