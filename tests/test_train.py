"""fit and evaluate: epochs, determinism, divergence, callbacks, batches, config errors."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from trainer import (
    ConfigError,
    Dataset,
    EpochMetrics,
    TrainConfig,
    build_network,
    evaluate,
    fit,
    make_optimizer,
    seed_streams,
)


def blobs(n: int = 300, features: int = 5, classes: int = 3, seed: int = 0, dtype: str = "float32") -> Dataset:
    """Gaussian clusters, one per class: easy to learn, quick to train on."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (classes, features))
    y = np.arange(n) % classes
    x = centres[y] + 0.1 * rng.standard_normal((n, features))
    return Dataset(np.clip(x, 0, 1).astype(dtype), y.astype(np.int64))


def config(**changes) -> TrainConfig:
    fields = dict(input_size=5, hidden_sizes=(16, 16), output_size=3, optimizer="adam", lr=0.01, epochs=4,
                  batch_size=32, seed=1)
    fields.update(changes)
    return TrainConfig(**fields)


TRAIN, VALIDATION = blobs(300, seed=0), blobs(90, seed=0)  # same centres: validation of the same task


def without_seconds(history) -> dict:
    curves = history.as_dict()
    del curves["seconds"]
    return curves


def test_training_learns_and_records_every_epoch():
    result = fit(config(epochs=6), TRAIN, VALIDATION)
    history = result.history
    assert history.outcome == "completed" and history.stop_epoch is None and history.reason is None
    assert [e.epoch for e in history.epochs] == [1, 2, 3, 4, 5, 6]
    assert history.epochs[-1].train_loss < history.epochs[0].train_loss
    assert history.epochs[-1].val_accuracy > 0.95
    assert all(e.seconds > 0 for e in history.epochs)


@pytest.mark.parametrize("changes", [
    {}, {"batch_norm": True, "dropout": 0.3, "weight_decay": 1e-3, "optimizer": "momentum"},
])
def test_same_config_and_seed_give_the_same_history(changes):
    first = fit(config(**changes), TRAIN, VALIDATION).history
    second = fit(config(**changes), TRAIN, VALIDATION).history
    assert without_seconds(first) == without_seconds(second)
    other_seed = fit(config(seed=2, **changes), TRAIN, VALIDATION).history
    assert without_seconds(other_seed) != without_seconds(first)


def test_training_uses_no_global_randomness_and_leaves_the_data_alone():
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    x, y = TRAIN.x.copy(), TRAIN.y.copy()
    fit(config(epochs=1, dropout=0.5), TRAIN, VALIDATION)
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    np.testing.assert_array_equal(TRAIN.x, x)
    np.testing.assert_array_equal(TRAIN.y, y)


def test_logged_loss_is_the_loss_that_produced_each_gradient():
    """Replays fit's loop on the public pieces: one forward pass per step, its loss logged."""
    cfg = config(epochs=2, weight_decay=0.01, dropout=0.2, batch_norm=True)
    history = fit(cfg, TRAIN).history

    network = build_network(cfg)
    optimizer = make_optimizer(cfg, network.parameters())
    order_rng = np.random.default_rng(seed_streams(cfg.seed)[2])
    for epoch in history.epochs:
        order, losses = order_rng.permutation(len(TRAIN)), []
        for step in range(len(TRAIN) // cfg.batch_size):
            rows = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            losses.append(network.loss(TRAIN.x[rows], TRAIN.y[rows], train=True))
            network.backward()
            optimizer.step()
        assert epoch.train_loss == pytest.approx(np.mean(losses), rel=1e-12)


def test_an_epoch_is_whole_batches_and_the_remainder_waits_for_a_later_epoch():
    # 300 samples, batch 32: 9 steps of 32 = 288 samples an epoch, a different 12 left out each time.
    history = fit(config(epochs=2), TRAIN).history
    for epoch in history.epochs:
        assert (epoch.train_accuracy * 288) == pytest.approx(round(epoch.train_accuracy * 288), abs=1e-9)


def test_fewer_samples_than_a_batch_make_one_batch_of_all():
    tiny = blobs(10)
    history = fit(config(batch_size=100, epochs=2), tiny).history
    assert history.outcome == "completed"
    assert (history.epochs[0].train_accuracy * 10) == pytest.approx(round(history.epochs[0].train_accuracy * 10))


def test_huge_learning_rate_diverges_without_an_exception():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a NumPy overflow warning escapes
        history = fit(config(optimizer="sgd", lr=1e12, epochs=5), TRAIN, VALIDATION).history
    assert history.outcome == "diverged"
    assert history.stop_epoch == 1
    assert history.reason and history.reason.startswith("loss became ") and "at epoch 1 step " in history.reason
    assert history.epochs == []  # the diverged epoch did not finish; nothing NaN is reported


def test_divergence_in_a_later_epoch_keeps_the_finished_epochs():
    calls = []

    def blow_up(metrics, network):  # weights so large after epoch 1 that the next loss overflows
        calls.append(metrics.epoch)
        network.flat.values *= 1e30

    history = fit(config(epochs=4), TRAIN, VALIDATION, callback=blow_up).history
    assert history.outcome == "diverged" and history.stop_epoch == 2
    assert [e.epoch for e in history.epochs] == [1] and calls == [1]
    assert all(math.isfinite(e.val_accuracy) and math.isfinite(e.train_loss) for e in history.epochs)


@pytest.mark.parametrize("answer, reason", [
    ("pruned at epoch 2", "pruned at epoch 2"),
    (True, "stopped by the callback after epoch 2"),
])
def test_a_truthy_callback_answer_stops_training(answer, reason):
    seen: list[EpochMetrics] = []

    def callback(metrics, network):
        seen.append(metrics)
        return answer if metrics.epoch == 2 else None

    result = fit(config(epochs=5), TRAIN, VALIDATION, callback=callback)
    history = result.history
    assert history.outcome == "stopped" and history.stop_epoch == 2 and history.reason == reason
    assert [m.epoch for m in seen] == [1, 2] and history.epochs == seen
    assert result.network is not None


def test_falsy_callback_answers_let_training_continue():
    history = fit(config(epochs=3), TRAIN, callback=lambda m, n: False if m.epoch == 1 else "").history
    assert history.outcome == "completed" and len(history.epochs) == 3


def test_without_validation_the_validation_metrics_are_none():
    history = fit(config(epochs=1), TRAIN).history
    assert history.epochs[0].val_loss is None and history.epochs[0].val_accuracy is None


def test_history_as_dict_is_json_ready_lists_per_metric():
    history = fit(config(epochs=2), TRAIN, VALIDATION).history
    curves = json.loads(json.dumps(history.as_dict()))
    assert curves["epoch"] == [1, 2] and len(curves["val_accuracy"]) == 2
    assert curves["outcome"] == "completed" and curves["stop_epoch"] is None and curves["reason"] is None
    assert set(curves) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds",
                           "outcome", "stop_epoch", "reason"}


def test_fit_can_continue_training_a_given_network():
    first = fit(config(epochs=1), TRAIN)
    second = fit(config(epochs=1), TRAIN, network=first.network)
    assert second.network is first.network
    assert second.history.epochs[0].train_loss < first.history.epochs[0].train_loss


def test_evaluate_in_batches_matches_one_batch():
    network = fit(config(epochs=2, batch_norm=True, dropout=0.5), TRAIN).network
    loss, accuracy = evaluate(network, VALIDATION, batch_size=1000)
    for batch_size in (1, 7, 89, 90):
        batched = evaluate(network, VALIDATION, batch_size=batch_size)
        assert batched[0] == pytest.approx(loss, rel=1e-5) and batched[1] == accuracy
    scores = network.predict(VALIDATION.x)
    assert accuracy == np.mean(scores.argmax(axis=1) == VALIDATION.y)
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    assert loss == pytest.approx(-log_probs[np.arange(90), VALIDATION.y].mean(), rel=1e-5)


def test_evaluate_leaves_weight_decay_out():
    network = build_network(config(weight_decay=10.0))
    plain = build_network(config(weight_decay=0.0))
    assert evaluate(network, VALIDATION) == evaluate(plain, VALIDATION)


def test_float64_data_is_cast_once_for_a_float32_network():
    result = fit(config(epochs=1), blobs(300, dtype="float64"), blobs(90, dtype="float64"))
    assert result.network.dtype == np.float32
    assert result.history.outcome == "completed"


@pytest.mark.parametrize("changes, message", [
    ({"lr": 0}, "lr must be in (0, inf); got 0"),
    ({"lr": "fast"}, "lr must be a number in (0, inf); got 'fast'"),
    ({"dropout": 1.0}, "dropout must be in [0, 1); got 1.0"),
    ({"activation": "gelu"}, "activation must be one of relu, sigmoid, tanh; got 'gelu'"),
    ({"optimizer": "lbfgs"}, "optimizer must be one of sgd, momentum, nesterov, adagrad, rmsprop, adam; got 'lbfgs'"),
    ({"hidden_sizes": [100, 0]}, "hidden_sizes must be a list of positive integers; got (100, 0)"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1; got 0"),
    ({"init": "orthogonal"}, "init must be one of he, xavier, normal, zero; got 'orthogonal'"),
])
def test_config_errors_name_the_field_the_rule_and_the_value(changes, message):
    with pytest.raises(ConfigError) as caught:
        config(**changes)
    assert str(caught.value) == message


@pytest.mark.parametrize("changes, message", [
    ({"input_size": 784}, "input_size must be the number of features of the train data (5); got 784"),
    ({"output_size": 2}, "output_size must be greater than the largest train label (2); got 2 "
                         "(set output_size to at least 3)"),
])
def test_data_that_does_not_fit_the_config_is_a_config_error(changes, message):
    with pytest.raises(ConfigError) as caught:
        fit(config(**changes), TRAIN)
    assert str(caught.value) == message
