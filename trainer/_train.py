"""Training: the fit loop, per-epoch metrics and callback, how a run ends, and evaluation."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ._config import ConfigError, TrainConfig
from ._network import Network, build_network, seed_streams
from ._optimizers import Optimizer, make_optimizer

__all__ = ["EpochMetrics", "FitResult", "History", "evaluate", "fit"]

Outcome = Literal["completed", "stopped", "diverged"]


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch did.

    Attributes:
        epoch: 1-based.
        train_loss: mean over the epoch's steps of the loss that produced each gradient
            (training mode, weight-decay term included).
        train_accuracy: share of the epoch's training samples classified correctly by the
            training-mode forward pass of their step.
        val_loss: mean cross-entropy on the validation data in inference mode, without the
            weight-decay term (so runs with different weight decay compare); None without
            validation data.
        val_accuracy: share of validation samples classified correctly; None without them.
        seconds: wall time of the epoch, validation included.
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float


@dataclass
class History:
    """The epochs of a run and how it ended.

    Attributes:
        epochs: one EpochMetrics per finished epoch.
        outcome: "completed" (all epochs ran), "stopped" (the callback asked) or "diverged"
            (the loss or the parameters stopped being finite).
        stop_epoch: the epoch in which training stopped or diverged; None if completed. A
            diverged epoch is not finished, so it has no EpochMetrics.
        reason: why it stopped or diverged, for people; None if completed.
    """

    epochs: list[EpochMetrics] = field(default_factory=list)
    outcome: Outcome = "completed"
    stop_epoch: int | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: one list per metric (epoch, train_loss, ...), then the outcome fields."""
        metrics = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")
        curves: dict[str, Any] = {name: [getattr(e, name) for e in self.epochs] for name in metrics}
        curves.update(outcome=self.outcome, stop_epoch=self.stop_epoch, reason=self.reason)
        return curves


@dataclass
class FitResult:
    """The trained network and the history of its training."""

    network: Network
    history: History


Callback = Callable[[EpochMetrics, Network], "None | bool | str"]


def fit(config: TrainConfig, train: Any, validation: Any = None, callback: Callback | None = None,
        network: Network | None = None) -> FitResult:
    """Train a network as the config says and record every epoch.

    Each epoch is one pass over the training data in a fresh random order (from a Generator
    seeded by config.seed), in batches of config.batch_size. Every batch is a whole batch:
    the last `n % batch_size` samples of each epoch's order are left out of that epoch (a
    different few each epoch), so every step has the same size; with fewer samples than
    batch_size the one batch is the whole data. A step is one forward pass, one backward
    pass and one optimizer update.

    A loss that is not finite stops training at once with outcome "diverged"; so do
    parameters or a validation loss that are not finite at the end of an epoch. No
    exception is raised for divergence.

    Args:
        config: the run's configuration; the same config and seed give the same history
            (apart from the seconds).
        train: the training Dataset (x (n, input_size) floats, y (n,) integer labels).
        validation: a Dataset evaluated in inference mode after every epoch, or None.
        callback: called after every epoch as callback(metrics, network). A truthy return
            stops training with outcome "stopped"; a string return is kept as the reason.
        network: a network built from this config to train further (with a fresh
            optimizer); a new one by default.

    Returns:
        FitResult(network, history).

    Raises:
        ConfigError: the data does not fit the config (feature count, labels).
    """
    x, y = _arrays(config, train, "train")
    if validation is not None:
        validation = _Arrays(*_arrays(config, validation, "validation"))
    network = network if network is not None else build_network(config)
    optimizer = make_optimizer(config, network.parameters())
    order_rng = np.random.default_rng(seed_streams(config.seed)[2])

    n = len(y)
    batch = min(config.batch_size, n)
    history = History()
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        try:
            with _quiet_overflow():
                train_loss, train_accuracy = _train_epoch(network, optimizer, x, y, order_rng.permutation(n),
                                                          batch, epoch)
                val_loss = val_accuracy = None
                if validation is not None:
                    val_loss, val_accuracy = evaluate(network, validation)
                    if not math.isfinite(val_loss):
                        raise _Diverged(f"validation loss became {val_loss} at epoch {epoch}")
        except _Diverged as diverged:
            history.outcome, history.stop_epoch, history.reason = "diverged", epoch, str(diverged)
            break
        metrics = EpochMetrics(epoch, train_loss, train_accuracy, val_loss, val_accuracy,
                               time.perf_counter() - started)
        history.epochs.append(metrics)
        answer = callback(metrics, network) if callback is not None else None
        if answer:
            reason = answer if isinstance(answer, str) else f"stopped by the callback after epoch {epoch}"
            history.outcome, history.stop_epoch, history.reason = "stopped", epoch, reason
            break
    return FitResult(network, history)


class _Diverged(Exception):
    """A loss or the parameters stopped being finite; the message says where."""


def _quiet_overflow() -> np.errstate:
    """Divergence is detected and reported; NumPy's overflow warnings would only repeat it."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore")


def _train_epoch(network: Network, optimizer: Optimizer, x: np.ndarray, y: np.ndarray, order: np.ndarray,
                 batch: int, epoch: int) -> tuple[float, float]:
    """One pass in whole batches over the rows in `order`: (mean loss, accuracy) of its steps."""
    steps = len(order) // batch
    loss_sum, hits = 0.0, 0
    for step in range(steps):
        rows = order[step * batch : (step + 1) * batch]
        xb, yb = x[rows], y[rows]  # (batch, input_size), (batch,)
        loss = network.loss(xb, yb, train=True)
        if not math.isfinite(loss):
            raise _Diverged(f"loss became {loss} at epoch {epoch} step {step + 1}")
        hits += network.correct(yb)
        network.backward()
        optimizer.step()
        loss_sum += loss
    if not np.isfinite(network.flat.values).all():
        raise _Diverged(f"parameters became non-finite at epoch {epoch}")
    return loss_sum / steps, hits / (steps * batch)


def evaluate(network: Network, dataset: Any, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy (without weight decay) and accuracy in inference mode, batch by batch.

    Args:
        network: the network to evaluate.
        dataset: a Dataset (x, y).
        batch_size: rows per forward pass; bounds the memory used, not the result.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError("batch_size", "an integer >= 1", batch_size)
    x, y = np.asarray(dataset.x, dtype=network.dtype), dataset.y
    n = len(y)
    if n == 0:
        raise ConfigError("dataset", "a dataset with at least one sample", "0 samples")
    loss_sum, hits = 0.0, 0
    with _quiet_overflow():
        for start in range(0, n, batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            loss_sum += network.data_loss(xb, yb) * len(yb)
            hits += network.correct(yb)
    return loss_sum / n, hits / n


@dataclass(frozen=True)
class _Arrays:
    """Validation data already checked and cast to the network's dtype."""

    x: np.ndarray
    y: np.ndarray


def _arrays(config: TrainConfig, dataset: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's x in the config's dtype (cast once) and y, checked against the config."""
    x, y = np.asarray(dataset.x), np.asarray(dataset.y)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ConfigError(what, "a dataset with x (n, features) and y (n,)", f"x {x.shape}, y {y.shape}")
    if len(y) == 0:
        raise ConfigError(what, "a dataset with at least one sample", "0 samples")
    if x.shape[1] != config.input_size:
        raise ConfigError("input_size", f"the number of features of the {what} data ({x.shape[1]})",
                          config.input_size)
    if not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(what, "a dataset with integer class labels", f"labels of dtype {y.dtype}")
    low, high = int(y.min()), int(y.max())
    if low < 0:
        raise ConfigError(what, "a dataset with class labels >= 0", f"label {low}")
    if high >= config.output_size:
        raise ConfigError("output_size", f"greater than the largest {what} label ({high})", config.output_size,
                          fix=f"set output_size to at least {high + 1}")
    return np.asarray(x, dtype=config.dtype), y
