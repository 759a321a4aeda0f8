"""Training with the loss of every step recorded, for the per-iteration curves of the book.

`trainer.fit` reports per epoch; the seed's optimizer and initialization comparisons plot
the loss of each of 2,000 iterations. This loop is fit's inner loop on the trainer's public
pieces (build_network, make_optimizer, Network.loss/backward): epochs of shuffled whole
batches, one forward pass per step, the recorded loss is the one that produced the gradient.
"""

from __future__ import annotations

import math

import numpy as np

import trainer


def train_steps(config: trainer.TrainConfig, train: trainer.Dataset, iterations: int
                ) -> tuple[trainer.Network, np.ndarray]:
    """Train for a number of steps (not epochs) and return the network and each step's loss.

    Weights and batch order come from config.seed (the trainer's own streams), so configs
    that differ only in the optimizer start from the same weights and see the same batches.
    A loss that is not finite ends training; the remaining steps are NaN.
    """
    network = trainer.build_network(config)
    optimizer = trainer.make_optimizer(config, network.parameters())
    order_rng = np.random.default_rng(trainer.seed_streams(config.seed)[2])
    x, y = np.asarray(train.x, dtype=config.dtype), train.y
    batch = min(config.batch_size, len(y))
    per_epoch = len(y) // batch
    losses = np.full(iterations, np.nan)
    order = np.empty(0, dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        for step in range(iterations):
            position = step % per_epoch
            if position == 0:
                order = order_rng.permutation(len(y))  # a new epoch: a fresh order
            rows = order[position * batch:(position + 1) * batch]
            loss = network.loss(x[rows], y[rows], train=True)  # (batch, input_size) -> scalar
            if not math.isfinite(loss):
                break
            network.backward()
            optimizer.step()
            losses[step] = loss
    return network, losses


def tail_mean(losses: np.ndarray, window: int) -> float:
    """The mean of the last `window` losses: a final loss not at the mercy of one batch."""
    tail = losses[-window:]
    return float(np.mean(tail)) if np.isfinite(tail).all() else math.nan
