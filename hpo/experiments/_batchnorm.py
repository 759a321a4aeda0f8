"""Batch normalization against the initial weight scale: training accuracy with and without BN.

The seed (section 3): with BN, learning is faster and far less sensitive to the initial
weight scale; it learns even where the same net without BN does not learn at all. The
book's run: 1,000 training samples, 5 hidden layers of 100 (ReLU), SGD lr 0.01, batch 100,
20 epochs, 16 weight scales np.logspace(0, -4, 16) as the std of every weight matrix.
Accuracy is measured on the 1,000 training samples in inference mode after every epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import trainer
from hpo.experiments._common import (COLORS, Progress, Report, display_name, figure, load_pool, plotting,
                                     save_figure, say, sizes, take, write_json)

TRAIN_SAMPLES = 1_000
HIDDEN = (100,) * 5  # the book's batch_norm_test.py: hidden_size_list=[100] * 5
VALIDATION_FRACTION = 0.2  # only used to draw the training samples; the validation part is unused
LEARNS = 0.5  # a run "learns" when its final training accuracy is above this


@dataclass(frozen=True)
class Budget:
    epochs: int
    scales: int


FULL = Budget(epochs=20, scales=16)
QUICK = Budget(epochs=6, scales=16)


def run(data: str, out: Path, seed: int, quick: bool, data_dir: str | None = None,
        progress: Progress | None = None) -> Report:
    budget = QUICK if quick else FULL
    pool = load_pool(data, data_dir)
    train, _ = take(pool, TRAIN_SAMPLES, VALIDATION_FRACTION, seed)
    scales = np.logspace(0, -4, budget.scales)
    base = trainer.TrainConfig(**sizes(train), hidden_sizes=HIDDEN, activation="relu", init="normal",
                               optimizer="sgd", lr=0.01, batch_size=100, epochs=budget.epochs, seed=seed)
    report = Report("batchnorm", {
        "data": data, "train_samples": len(train), "hidden_sizes": list(HIDDEN), "activation": "relu",
        "init": "normal, std = scale", "optimizer": "sgd", "lr": 0.01, "batch_size": 100,
        "epochs": budget.epochs, "scales": scales, "seed": seed, "quick": quick,
        "accuracy": "on the training samples, inference mode, before training (epoch 0) and after every epoch",
        "same_start": "with and without BN: the same seed, so the same weights and batches",
    })
    runs = []
    for i, scale in enumerate(scales, 1):
        say(progress, f"batchnorm: weight scale {scale:.3g} ({i}/{len(scales)}), {budget.epochs} epochs, "
                      "with and without BN")
        config = base.replace(init_std=float(scale))
        runs.append({
            "scale": float(scale),
            "batch_norm": _curve(config.replace(batch_norm=True), train),
            "plain": _curve(config, train),
        })
    report.results = {"runs": runs}
    report.table = {
        "headers": ["weight std", "acc with BN", "acc without BN", "BN - plain"],
        "rows": [[f"{r['scale']:.3g}", r["batch_norm"]["final"], r["plain"]["final"],
                  r["batch_norm"]["final"] - r["plain"]["final"]] for r in runs],
    }
    _claims(report, runs)
    with plotting():
        _plot(report, runs, budget, out, data)
    write_json(report, out)
    return report


def _curve(config: trainer.TrainConfig, train: trainer.Dataset) -> dict:
    """Training accuracy (inference mode) at epoch 0 and after every epoch.

    A run whose loss or weights stop being finite has diverged and stops; its remaining
    epochs get the accuracy of its broken network, evaluated like any other (about chance).
    """
    network = trainer.build_network(config)
    accuracy = [trainer.evaluate(network, train)[1]]

    def on_epoch(metrics: trainer.EpochMetrics, net: trainer.Network) -> None:
        accuracy.append(trainer.evaluate(net, train)[1])

    history = trainer.fit(config, train, callback=on_epoch, network=network).history
    diverged = history.outcome == "diverged"
    if diverged:
        broken = trainer.evaluate(network, train)[1]
        accuracy += [broken] * (config.epochs + 1 - len(accuracy))
    return {"accuracy": accuracy, "final": accuracy[-1], "mean": float(np.mean(accuracy[1:])),
            "outcome": history.outcome, "diverged_epoch": history.stop_epoch if diverged else None}


def _claims(report: Report, runs: list[dict]) -> None:
    n = len(runs)
    final_bn = [r["batch_norm"]["final"] for r in runs]
    final_plain = [r["plain"]["final"] for r in runs]
    wins = sum(b > p for b, p in zip(final_bn, final_plain))
    report.claim("With BN the net reaches a higher training accuracy than without, at most weight scales.",
                 wins > n / 2, f"BN higher at {wins} of {n} scales")
    faster = sum(r["batch_norm"]["mean"] > r["plain"]["mean"] for r in runs)
    report.claim("With BN learning is faster (higher mean accuracy over the epochs).", faster > n / 2,
                 f"BN's mean accuracy over the epochs higher at {faster} of {n} scales")
    # Sensitivity to the scale: at how many of the scales does the net learn at all? (The
    # range max - min of the final accuracies says little: one failed scale sets it.)
    learns_bn = sum(a > LEARNS for a in final_bn)
    learns_plain = sum(a > LEARNS for a in final_plain)
    report.claim("BN makes training far less sensitive to the initial weight scale (it learns at many more "
                 "of the scales).", learns_bn >= 2 * max(learns_plain, 1),
                 f"final accuracy above {LEARNS:.0%} at {learns_bn} of {n} scales with BN, {learns_plain} without; "
                 f"final accuracies range {min(final_bn):.1%}-{max(final_bn):.1%} with BN, "
                 f"{min(final_plain):.1%}-{max(final_plain):.1%} without")
    rescued = [r["scale"] for r in runs if r["batch_norm"]["final"] > LEARNS >= r["plain"]["final"]]
    report.claim("BN learns even where the same net without BN does not learn at all.", bool(rescued),
                 f"{len(rescued)} of {n} scales where BN ends above {LEARNS:.0%} and plain at or below it"
                 + (f" (std {', '.join(f'{s:.3g}' for s in rescued)})" if rescued else ""))


def _plot(report: Report, runs: list[dict], budget: Budget, out: Path, data: str) -> None:
    cols = 4
    rows = math.ceil(len(runs) / cols)
    fig, axes = figure(rows, cols, width=10.5, height=2.1 * rows + 0.6, sharex=True, sharey=True)
    epochs = np.arange(budget.epochs + 1)
    for ax, r in zip(axes.flat, runs):
        ax.plot(epochs, r["batch_norm"]["accuracy"], color=COLORS[0], linewidth=1.6, label="with BN")
        ax.plot(epochs, r["plain"]["accuracy"], color=COLORS[1], linewidth=1.4, linestyle="--",
                label="without BN")
        for key, color in (("batch_norm", COLORS[0]), ("plain", COLORS[1])):
            if r[key]["diverged_epoch"]:
                ax.plot(r[key]["diverged_epoch"], r[key]["final"], "x", color=color, markersize=7)
        ax.set_title(f"weight std {r['scale']:.3g}", pad=3)
        ax.set_ylim(0, 1.02)
        ax.set_xlim(0, budget.epochs)
    for ax in axes.flat[len(runs):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("train accuracy")
    axes[0, 0].legend(loc="upper left")
    fig.suptitle(f"Batch normalization and the initial weight scale ({display_name(data)}, "
                 f"{TRAIN_SAMPLES:,} training samples, 5 hidden layers of 100, ReLU, SGD lr 0.01)")
    save_figure(fig, out / "batchnorm.png", report)
