"""Overfitting and its two remedies: weight decay and dropout.

The seed (section 4): 300 training samples and 6 hidden layers of 100 overfit: train
accuracy reaches 100%, test accuracy stays far below; weight decay (lambda 0.1) and
dropout (p 0.2) each shrink the train-test gap. The book trains with SGD lr 0.01, batch
100, for 201 epochs (301 for its dropout run); here all three runs get the same budget,
301 epochs, so their curves and gaps compare at one point. Train accuracy is measured in
inference mode on all 300 training samples after every epoch; test accuracy on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


import trainer
from hpo.experiments._common import (COLORS, Progress, Report, display_name, figure, load_pool, plotting,
                                     save_figure, say, sizes, take, write_json)

TRAIN_SAMPLES = 300
HIDDEN = (100,) * 6
VALIDATION_FRACTION = 0.2  # only used to draw the training samples; the validation part is unused
SETTINGS = {
    "no regularization": {},
    "weight decay 0.1": {"weight_decay": 0.1},
    "dropout 0.2": {"dropout": 0.2},
}


@dataclass(frozen=True)
class Budget:
    epochs: int
    eval_every: int  # measure accuracies after every n-th epoch (and the last)
    test_samples: int | None  # None: the whole test split


FULL = Budget(epochs=301, eval_every=1, test_samples=None)
QUICK = Budget(epochs=150, eval_every=5, test_samples=1_000)


def run(data: str, out: Path, seed: int, quick: bool, data_dir: str | None = None,
        progress: Progress | None = None) -> Report:
    budget = QUICK if quick else FULL
    pool = load_pool(data, data_dir)
    train, _ = take(pool, TRAIN_SAMPLES, VALIDATION_FRACTION, seed)
    test = trainer.load_test_split(data, data_dir=data_dir)
    if budget.test_samples is not None and budget.test_samples < len(test):
        # A stratified subset from the trainer's own splitter: the test half of the split is unused.
        _, test = trainer.split_train_validation(test, None, budget.test_samples / len(test), seed)
    base = trainer.TrainConfig(**sizes(train), hidden_sizes=HIDDEN, activation="relu", init="he", optimizer="sgd",
                               lr=0.01, batch_size=100, epochs=budget.epochs, seed=seed)
    report = Report("overfit", {
        "data": data, "train_samples": len(train), "test_samples": len(test), "hidden_sizes": list(HIDDEN),
        "activation": "relu", "init": "he", "optimizer": "sgd", "lr": 0.01, "batch_size": 100,
        "epochs": budget.epochs, "eval_every": budget.eval_every, "settings": SETTINGS, "seed": seed,
        "quick": quick, "gap": "train accuracy - test accuracy after the last epoch",
        "accuracy": "inference mode; train on all training samples, test on the test split",
    })
    results = {}
    for i, (label, change) in enumerate(SETTINGS.items(), 1):
        say(progress, f"overfit: {label} ({i}/{len(SETTINGS)}), {budget.epochs} epochs")
        results[label] = _curves(base.replace(**change), train, test, budget)
    report.results = {"settings": results}
    report.table = {
        "headers": ["setting", "train acc", "test acc", "gap", "best test acc"],
        "rows": [[label, r["train"][-1], r["test"][-1], r["gap"], max(r["test"])] for label, r in results.items()],
    }
    _claims(report, results)
    with plotting():
        _plot(report, results, budget, out, data)
    write_json(report, out)
    return report


def _curves(config: trainer.TrainConfig, train: trainer.Dataset, test: trainer.Dataset, budget: Budget) -> dict:
    epochs, train_acc, test_acc = [], [], []

    def on_epoch(metrics: trainer.EpochMetrics, network: trainer.Network) -> None:
        if metrics.epoch % budget.eval_every == 0 or metrics.epoch in (1, budget.epochs):
            epochs.append(metrics.epoch)
            train_acc.append(trainer.evaluate(network, train)[1])
            test_acc.append(trainer.evaluate(network, test)[1])

    history = trainer.fit(config, train, callback=on_epoch).history
    return {"epoch": epochs, "train": train_acc, "test": test_acc, "gap": train_acc[-1] - test_acc[-1],
            "train_loss": [e.train_loss for e in history.epochs], "outcome": history.outcome}


def _claims(report: Report, results: dict) -> None:
    plain = results["no regularization"]
    report.claim("Without regularization the net overfits: train accuracy reaches 100%, test stays far below.",
                 plain["train"][-1] >= 0.99 and plain["gap"] > 0.1,
                 f"train {plain['train'][-1]:.1%}, test {plain['test'][-1]:.1%}, gap {plain['gap']:.1%}")
    for label in ("weight decay 0.1", "dropout 0.2"):
        r = results[label]
        report.claim(f"{label.capitalize()} shrinks the train-test gap.", r["gap"] < plain["gap"],
                     f"gap {r['gap']:.1%} (train {r['train'][-1]:.1%}, test {r['test'][-1]:.1%}) "
                     f"against {plain['gap']:.1%} without regularization")


def _plot(report: Report, results: dict, budget: Budget, out: Path, data: str) -> None:
    fig, axes = figure(width=8, height=4.8)
    ax = axes[0, 0]
    for color, (label, r) in zip(COLORS, results.items()):
        ax.plot(r["epoch"], r["train"], color=color, linewidth=1.5,
                label=f"{label}: train (gap {r['gap']:.1%})")
        ax.plot(r["epoch"], r["test"], color=color, linewidth=1.5, linestyle="--", label=f"{label}: test")
    ax.set_xlim(0, budget.epochs)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("epoch (3 batches of 100)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Overfitting {TRAIN_SAMPLES} {display_name(data)} training samples with 6 hidden layers of 100 "
                 "(SGD lr 0.01)\n"
                 "solid: train, dashed: test; gap = train - test after the last epoch")
    ax.legend(loc="lower right", ncol=1)
    save_figure(fig, out / "overfit.png", report)
