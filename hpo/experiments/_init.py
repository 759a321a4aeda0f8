"""Initial weight scale and learning: MNIST training with std 0.01, Xavier and He.

The seed (section 2): 5 layers of 100 units, ReLU, SGD; std 0.01 does not learn at all,
He learns best, Xavier close behind. Here, as in the book's script: 4 hidden layers of 100
plus the output layer, SGD lr 0.01, batch 128, 2,000 iterations, every run from the same
seed (the same batches; the weights differ only in scale).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import trainer
from hpo.experiments._common import (COLORS, Progress, Report, display_name, figure, load_pool, plotting,
                                     save_figure, say, sizes, smooth, take, write_json)
from hpo.experiments._steps import tail_mean, train_steps

SETTINGS = {"std 0.01": {"init": "normal", "init_std": 0.01}, "Xavier": {"init": "xavier"}, "He": {"init": "he"}}
VALIDATION_FRACTION = 0.2
# The book's "5-layer net": hidden_size_list=[100] * 4 plus the output layer.
HIDDEN = (100,) * 4
LR = 0.01
CHANCE_LOSS = float(np.log(10))  # cross-entropy of a uniform guess over 10 classes


@dataclass(frozen=True)
class Budget:
    iterations: int
    tail: int
    smoothing: int


FULL = Budget(iterations=2_000, tail=100, smoothing=51)
QUICK = Budget(iterations=300, tail=30, smoothing=21)


def run(data: str, out: Path, seed: int, quick: bool, data_dir: str | None = None,
        progress: Progress | None = None) -> Report:
    budget = QUICK if quick else FULL
    pool = load_pool(data, data_dir)
    train, validation = take(pool, None, VALIDATION_FRACTION, seed)
    base = trainer.TrainConfig(**sizes(train), hidden_sizes=HIDDEN, activation="relu", optimizer="sgd",
                               lr=LR, batch_size=128, seed=seed)
    report = Report("init", {
        "data": data, "train_samples": len(train), "validation_samples": len(validation),
        "hidden_sizes": list(base.hidden_sizes), "activation": "relu", "optimizer": "sgd", "lr": LR,
        "batch_size": 128, "iterations": budget.iterations, "settings": SETTINGS,
        "final_loss": f"mean training loss of the last {budget.tail} steps",
        "smoothing": f"centred moving average over {budget.smoothing} steps", "seed": seed, "quick": quick,
    })
    results = {}
    for i, (label, init) in enumerate(SETTINGS.items(), 1):
        say(progress, f"init: training with {label} ({i}/{len(SETTINGS)}), {budget.iterations} iterations")
        network, losses = train_steps(base.replace(**init), train, budget.iterations)
        val_loss, val_accuracy = trainer.evaluate(network, validation)
        results[label] = {"loss": losses, "smoothed": smooth(losses, budget.smoothing),
                          "final_loss": tail_mean(losses, budget.tail), "val_loss": val_loss,
                          "val_accuracy": val_accuracy}
    report.results = {"settings": results, "chance_loss": CHANCE_LOSS}
    report.table = {
        "headers": ["init", "final loss", "val loss", "val accuracy"],
        "rows": [[label, r["final_loss"], r["val_loss"], r["val_accuracy"]] for label, r in results.items()],
    }
    _claims(report, results)
    with plotting():
        _plot(report, results, budget, out, data)
    write_json(report, out)
    return report


def _claims(report: Report, results: dict) -> None:
    small, xavier, he = results["std 0.01"], results["Xavier"], results["He"]
    report.claim("With std 0.01 the net does not learn at all (the loss stays at chance, ln 10 = 2.303).",
                 small["final_loss"] > CHANCE_LOSS - 0.05 and small["val_accuracy"] < 0.2,
                 f"final loss {small['final_loss']:.3f}, validation accuracy {small['val_accuracy']:.1%}")
    report.claim("He learns best.", he["final_loss"] < xavier["final_loss"] and he["final_loss"] < small["final_loss"],
                 f"final loss: He {he['final_loss']:.3f}, Xavier {xavier['final_loss']:.3f}, "
                 f"std 0.01 {small['final_loss']:.3f}")
    report.claim("Xavier is close behind He (within 5 points of validation accuracy).",
                 0 <= he["val_accuracy"] - xavier["val_accuracy"] <= 0.05,
                 f"validation accuracy: He {he['val_accuracy']:.1%}, Xavier {xavier['val_accuracy']:.1%}")


def _plot(report: Report, results: dict, budget: Budget, out: Path, data: str) -> None:
    fig, axes = figure(width=7.5, height=4.6)
    ax = axes[0, 0]
    steps = np.arange(1, budget.iterations + 1)
    for color, (label, r) in zip((COLORS[3], COLORS[0], COLORS[2]), results.items()):
        ax.plot(steps, r["loss"], color=color, alpha=0.15, linewidth=0.6)
        ax.plot(steps, r["smoothed"], color=color, linewidth=1.8,
                label=f"{label}: final loss {r['final_loss']:.3f}, val acc {r['val_accuracy']:.1%}")
    ax.axhline(CHANCE_LOSS, color="#555555", linestyle=":", linewidth=1)
    ax.text(budget.iterations, CHANCE_LOSS, "chance (ln 10) ", ha="right", va="bottom", fontsize=8, color="#555555")
    ax.set_xlim(0, budget.iterations)
    ax.set_ylim(0, 2.6)
    ax.set_xlabel("iteration (batch of 128)")
    ax.set_ylabel("training loss (cross-entropy)")
    ax.set_title(f"Initial weight scale on {display_name(data)}: 4 hidden layers of 100 (a 5-layer net), "
                 f"ReLU, SGD lr {LR:g}\n"
                 f"(faint: every step; line: moving average over {budget.smoothing} steps)")
    ax.legend(loc="center right")
    save_figure(fig, out / "init_mnist.png", report)
