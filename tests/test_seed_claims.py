"""The claims of SEED.md sections 2 and 3, checked on the trainer with real MNIST images.

Data: the MNIST training pool through the trainer's public data API, from $HPO_DATA_DIR
(the shared copy when unset). 2,000 samples are drawn and split in half: 1,000 to train on
and 1,000 to validate on. A missing data set is a failure, not a skip.

Shared budget of the training claims (SEED's 5-layer net): 784-[100]x5-10, ReLU, plain
SGD with lr 0.1, batch 100, 20 epochs (200 steps), seed 0; about 0.3 s a run.
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import trainer
from helpers import DATA_DIR
from trainer import ReLU, Sigmoid, Tanh, TrainConfig, build_network, fit

CHANCE = 0.2  # the most frequent digit is ~11% of the samples; "near chance" is below this
LEARNS = 0.80


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """These GEMMs are small: extra BLAS threads only wait on each other (3x slower on a busy machine)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def mnist() -> tuple[trainer.Dataset, trainer.Dataset]:
    pool = trainer.load_training_pool("mnist", data_dir=DATA_DIR)
    return trainer.split_train_validation(pool, n_samples=2_000, validation_fraction=0.5, seed=0)


def five_layer_net(**changes) -> TrainConfig:
    fields = dict(input_size=784, hidden_sizes=(100,) * 5, output_size=10, activation="relu", init="he",
                  optimizer="sgd", lr=0.1, batch_size=100, epochs=20, seed=0)
    fields.update(changes)
    return TrainConfig(**fields)


def final_val_accuracy(config: TrainConfig, data) -> float:
    history = fit(config, *data).history
    assert history.outcome == "completed", history.reason
    return history.epochs[-1].val_accuracy


def test_relu_net_with_std_001_stays_at_chance_while_he_learns(mnist):
    small = final_val_accuracy(five_layer_net(init="normal", init_std=0.01), mnist)
    he = final_val_accuracy(five_layer_net(init="he"), mnist)
    print(f"validation accuracy: std 0.01 {small:.3f}, He {he:.3f}")
    assert small < CHANCE
    assert he > LEARNS


def test_batch_norm_learns_from_an_initial_scale_where_the_plain_net_does_not(mnist):
    plain = final_val_accuracy(five_layer_net(init="normal", init_std=0.01), mnist)
    normalized = final_val_accuracy(five_layer_net(init="normal", init_std=0.01, batch_norm=True), mnist)
    print(f"validation accuracy at std 0.01: without batch norm {plain:.3f}, with {normalized:.3f}")
    assert plain < CHANCE
    assert normalized > LEARNS


def test_zero_init_keeps_every_unit_of_a_layer_identical(mnist):
    # Sigmoid, so that zero weights still pass 0.5 forward and the layers do move. In float64:
    # a BLAS may sum the columns of one product in different orders (edge tiles, vector
    # lanes), so "identical" units differ by rounding; float32 showed 7e-6 of the largest
    # weight on one machine, float64 left none (0.0) there. Broken symmetry would differ by
    # the weights' own size.
    config = five_layer_net(init="zero", activation="sigmoid", epochs=3, dtype="float64")
    network = fit(config, *mnist).network
    weights = {p.name: p.value for p in network.parameters() if p.name.endswith("weight")}
    for name, w in weights.items():
        units = w if name.startswith("hidden") else w.T  # hidden: columns; output: rows per hidden unit
        spread = np.abs(units - units[:, :1]).max()
        print(f"{name}: largest weight {np.abs(w).max():.2e}, largest difference between units {spread:.1e}")
        assert spread <= 1e-10 * np.abs(w).max()
    assert np.abs(weights["hidden5.affine.weight"]).max() > 1e-5, "training did change the weights"


def activations(activation: str, init: str, init_std: float = 0.01) -> list[np.ndarray]:
    """The chapter's histogram experiment: 1,000 Gaussian inputs of width 100, 5 layers of 100."""
    x = np.random.default_rng(0).standard_normal((1000, 100)).astype(np.float32)
    network = build_network(TrainConfig(input_size=100, hidden_sizes=(100,) * 5, output_size=10,
                                        activation=activation, init=init, init_std=init_std))
    outputs = []
    for layer in network.layers:
        x = layer.forward(x)
        if isinstance(layer, (ReLU, Sigmoid, Tanh)):
            outputs.append(x.copy())
    return outputs


def test_sigmoid_activations_pile_up_at_the_ends_with_std_1_and_crowd_at_half_with_std_001():
    for layer in activations("sigmoid", "normal", init_std=1.0):
        assert np.mean((layer < 0.1) | (layer > 0.9)) > 0.6  # U-shaped histograms
    for layer in activations("sigmoid", "normal", init_std=0.01):
        assert np.abs(layer - 0.5).max() < 0.15  # every unit says about the same
    for layer in activations("sigmoid", "xavier"):
        assert layer.std() > 0.1 and np.mean((layer < 0.1) | (layer > 0.9)) < 0.05


def test_relu_activations_vanish_with_std_001_drift_with_xavier_and_stay_with_he():
    small = [a.std() for a in activations("relu", "normal", init_std=0.01)]
    xavier = [a.std() for a in activations("relu", "xavier")]
    he = [a.std() for a in activations("relu", "he")]
    print(f"std of layers 1 and 5: std 0.01 {small[0]:.1e} -> {small[-1]:.1e}, "
          f"Xavier {xavier[0]:.2f} -> {xavier[-1]:.2f}, He {he[0]:.2f} -> {he[-1]:.2f}")
    assert small[-1] < 1e-4
    assert xavier[-1] < 0.5 * xavier[0]
    assert 0.7 < he[-1] / he[0] < 1.5
