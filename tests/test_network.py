"""Networks built from a config: structure, initial weights, dtype, weight decay, whole-net gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest

from test_layers import assert_close_gradient, numerical_gradient
from trainer import (
    ACTIVATIONS,
    Affine,
    BatchNorm,
    Dropout,
    ReLU,
    Sigmoid,
    Tanh,
    TrainConfig,
    build_network,
    initial_weights,
)


def small_config(**changes) -> TrainConfig:
    fields = dict(input_size=5, hidden_sizes=(6, 5, 4), output_size=3, batch_norm=True, dropout=0.3,
                  weight_decay=0.1, dtype="float64", seed=3)
    fields.update(changes)
    return TrainConfig(**fields)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_whole_net_gradients(activation, rng):
    """3 hidden layers with batch norm, dropout (fixed masks) and weight decay, in float64."""
    network = build_network(small_config(activation=activation))
    x, labels = rng.standard_normal((8, 5)), rng.integers(0, 3, 8)
    for layer in network.layers:
        if isinstance(layer, Dropout):
            layer.fixed_mask = rng.random((8, layer_width(network, layer))) >= layer.p
    for p in network.parameters():  # move off the initial gamma = 1, beta = 0, bias = 0
        p.value += 0.1 * rng.standard_normal(p.shape)
    assert not any(p.name.startswith("hidden") and p.name.endswith("bias") for p in network.parameters())

    def loss() -> float:
        return network.loss(x, labels, train=True)

    if activation == "relu":  # no finite-difference step may cross the kink at 0
        closest = min(np.abs(a).min() for a in activation_inputs(network, x))
        assert closest > 1e-3, f"a unit sits {closest:.1e} from ReLU's kink: pick another seed"
    loss()
    network.backward()
    analytic = {p.name: p.grad.copy() for p in network.parameters()}
    for p in network.parameters():
        assert_close_gradient(f"{activation} {p.name}", analytic[p.name], numerical_gradient(loss, p.value))


def activation_inputs(network, x: np.ndarray) -> list[np.ndarray]:
    """The input of every activation layer in a training-mode forward pass."""
    inputs, out = [], x
    for layer in network.layers:
        if isinstance(layer, (ReLU, Sigmoid, Tanh)):
            inputs.append(out.copy())
        out = layer.forward(out, True)
    return inputs


def layer_width(network, layer) -> int:
    index = network.layers.index(layer)
    affine = next(l for l in reversed(network.layers[:index]) if isinstance(l, Affine))
    return affine.weight.shape[1]


def test_hidden_blocks_and_output_layer():
    network = build_network(small_config(activation="tanh"))
    kinds = [type(layer) for layer in network.layers]
    block = [Affine, BatchNorm, Tanh, Dropout]
    assert kinds == block * 3 + [Affine]
    plain = build_network(small_config(batch_norm=False, dropout=0.0))
    assert [type(layer) for layer in plain.layers] == [Affine, ReLU] * 3 + [Affine]
    first, *others = [l for l in network.layers if isinstance(l, Affine)]
    assert not first.input_grad and all(l.input_grad for l in others)


def test_parameters_come_from_the_layers_in_order():
    network = build_network(small_config())
    expected = [p for layer in network.layers for p in layer.parameters()]
    assert network.parameters() == expected
    assert [p.name for p in network.parameters()[:4]] == [
        "hidden1.affine.weight", "hidden1.batchnorm.gamma", "hidden1.batchnorm.beta", "hidden2.affine.weight"]
    assert [p.name for p in network.parameters()[-2:]] == ["output.affine.weight", "output.affine.bias"]
    decayed = {p.name for p in network.parameters() if p.decay}
    assert decayed == {"hidden1.affine.weight", "hidden2.affine.weight", "hidden3.affine.weight",
                       "output.affine.weight"}


def test_affine_before_batch_norm_has_no_bias_the_batch_mean_would_cancel_it(rng):
    network = build_network(small_config(batch_norm=True))
    plain = build_network(small_config(batch_norm=False))
    hidden = [l for l in network.layers[:-1] if isinstance(l, Affine)]
    assert all(l.bias is None for l in hidden) and network.layers[-1].bias is not None
    assert all(l.bias is not None for l in plain.layers if isinstance(l, Affine))
    layer = BatchNorm(4, "float64")  # the claim itself: a shift before batch norm changes nothing
    x = rng.standard_normal((6, 4))
    np.testing.assert_allclose(layer.forward(x + 3.0, True).copy(), layer.forward(x, True), atol=1e-12)


def test_no_hidden_layers_is_softmax_regression():
    network = build_network(TrainConfig(input_size=4, hidden_sizes=(), output_size=3))
    assert [type(layer) for layer in network.layers] == [Affine]
    assert not network.layers[0].input_grad


@pytest.mark.parametrize("init, expected_std", [
    ("he", math.sqrt(2 / 400)), ("xavier", math.sqrt(1 / 400)), ("normal", 0.05), ("zero", 0.0),
])
def test_initial_weight_scale(init, expected_std):
    weights = initial_weights(init, 400, 300, np.random.default_rng(0), "float32", init_std=0.05)
    assert weights.dtype == np.float32 and weights.shape == (400, 300)
    assert weights.std() == pytest.approx(expected_std, rel=0.01, abs=1e-12)
    assert abs(weights.mean()) <= 0.01 * expected_std  # 120,000 draws: the mean is within ~0.003 std


def test_biases_start_at_zero_and_batchnorm_at_identity():
    network = build_network(small_config())
    for p in network.parameters():
        if p.name.endswith("bias") or p.name.endswith("beta"):
            assert not p.value.any(), p.name
        if p.name.endswith("gamma"):
            assert (p.value == 1).all()


def test_float32_network_has_only_float32_parameters_and_activations(rng):
    network = build_network(small_config(dtype="float32", hidden_sizes=(16, 16)))
    assert network.dtype == np.float32
    assert all(p.value.dtype == np.float32 and p.grad.dtype == np.float32 for p in network.parameters())
    out = rng.random((10, 5)).astype(np.float32)
    for layer in network.layers:
        out = layer.forward(out, True)
        assert out.dtype == np.float32, type(layer).__name__
    labels = rng.integers(0, 3, 10)
    network.loss(rng.random((10, 5)), labels, train=True)  # float64 input is cast at the boundary
    network.backward()
    assert network.flat.grads.dtype == np.float32
    assert network.predict(rng.random((3, 5))).dtype == np.float32


def test_same_seed_same_weights_other_seed_other_weights():
    def weights(seed):
        return build_network(small_config(seed=seed)).flat.values.copy()

    np.testing.assert_array_equal(weights(1), weights(1))
    assert not np.array_equal(weights(1), weights(2))


def test_dropout_does_not_change_the_initial_weights():
    """Weights, dropout masks and batch order come from separate streams of the seed."""
    with_dropout = build_network(small_config(dropout=0.5))
    without = build_network(small_config(dropout=0.0))
    np.testing.assert_array_equal(with_dropout.flat.values, without.flat.values)


def test_weight_decay_adds_half_lambda_squared_norm_of_weights_only(rng):
    x, labels = rng.standard_normal((7, 5)), rng.integers(0, 3, 7)
    decayed = build_network(small_config(dropout=0.0))
    plain = build_network(small_config(dropout=0.0, weight_decay=0.0))
    for p in decayed.parameters():  # non-zero biases and BN parameters, which must not decay
        p.value += 0.3
    plain.flat.values[...] = decayed.flat.values

    weights = [p.value for p in decayed.parameters() if p.name.endswith("weight")]
    penalty = 0.5 * 0.1 * sum(float(np.sum(w * w)) for w in weights)
    assert decayed.loss(x, labels, train=True) - plain.loss(x, labels, train=True) == pytest.approx(penalty, rel=1e-12)

    decayed.backward()
    plain.backward()
    for d, p in zip(decayed.parameters(), plain.parameters()):
        extra = 0.1 * d.value if d.name.endswith("weight") else 0.0
        np.testing.assert_allclose(d.grad - p.grad, extra, atol=1e-12, err_msg=d.name)


def test_predict_is_batch_size_independent_and_returns_a_new_array(rng):
    network = build_network(small_config(dtype="float32"))
    x = rng.random((53, 5)).astype(np.float32)
    network.loss(x, rng.integers(0, 3, 53), train=True)  # running statistics move off their start
    whole = network.predict(x)
    assert whole.shape == (53, 3)
    # float32: a BLAS may order the sums differently for other row counts, so allow rounding
    np.testing.assert_allclose(network.predict(x, batch_size=7), whole, rtol=1e-5, atol=1e-6)
    kept = whole.copy()
    network.predict(2 * x[:10])  # other inputs through the same layers
    np.testing.assert_array_equal(whole, kept)  # the first result was not overwritten
    assert network.predict(x[:0]).shape == (0, 3)


def test_inference_folds_batch_norm_into_the_affine_and_matches_layer_by_layer(rng):
    network = build_network(small_config(dtype="float64"))
    x = rng.random((20, 5))
    network.loss(x, rng.integers(0, 3, 20), train=True)  # running statistics move off their start
    for p in network.parameters():  # gamma, beta and weights away from their initial values
        p.value += 0.1 * rng.standard_normal(p.shape)
    expected = x
    for layer in network.layers:
        expected = layer.forward(expected, False)
    expected = expected.copy()  # the output layer's buffer, which the folded pass reuses
    np.testing.assert_allclose(network.forward(x), expected, rtol=1e-12)
    assert not any(isinstance(layer, (BatchNorm, Dropout)) for layer in network._inference_layers())


def test_inference_is_deterministic_training_is_not(rng):
    network = build_network(small_config(dtype="float64"))
    x = rng.random((20, 5))
    np.testing.assert_array_equal(network.forward(x).copy(), network.forward(x).copy())
    assert not np.array_equal(network.forward(x, train=True).copy(), network.forward(x, train=True).copy())


def test_describe_lists_layers():
    text = build_network(small_config()).describe()
    assert text.splitlines()[0] == "Affine [weight (5, 6)]"
    assert "Dropout" in text and "SoftmaxCrossEntropy" in text


@pytest.mark.parametrize("layer_type", [Sigmoid, Tanh, ReLU])
def test_activation_names_map_to_layers(layer_type):
    name = layer_type.__name__.lower()
    network = build_network(small_config(activation=name))
    assert any(type(layer) is layer_type for layer in network.layers)
