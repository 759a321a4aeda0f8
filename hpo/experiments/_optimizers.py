"""Optimizers compared: training loss on MNIST, and paths on the book's 2-D toy function.

The seed (section 1): a 5-layer net (the book's script: 4 hidden layers of 100 plus the
output layer), ReLU, He, batch 128, 2,000 iterations; SGD learns slowest, Momentum, AdaGrad
and Adam beat it, AdaGrad a little fastest there.
The toy is the book's f(x, y) = x^2/20 + y^2 from (-7, 2), 30 steps, with the trainer's own
optimizer classes stepping a 2-element parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import trainer
from hpo.experiments._common import (COLORS, Progress, Report, display_name, figure, load_pool, plotting,
                                     save_figure, say, sizes, smooth, take, write_json)
from hpo.experiments._steps import tail_mean, train_steps

NAMES = {"sgd": "SGD", "momentum": "Momentum", "nesterov": "Nesterov", "adagrad": "AdaGrad",
         "rmsprop": "RMSProp", "adam": "Adam"}
LRS = {"sgd": 0.01, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01, "rmsprop": 0.01, "adam": 0.001}
# The book's toy uses SGD 0.95, Momentum 0.1, AdaGrad 1.5, Adam 0.3; Nesterov and RMSProp
# are not in it: Nesterov gets Momentum's rate, RMSProp 0.1 (its first step is 10 lr).
TOY_LRS = {"sgd": 0.95, "momentum": 0.1, "nesterov": 0.1, "adagrad": 1.5, "rmsprop": 0.1, "adam": 0.3}
TOY_START = (-7.0, 2.0)
TOY_STEPS = 30
VALIDATION_FRACTION = 0.2
TARGET_LOSS = 0.5  # "steps to 0.5": the first step at which the smoothed loss is below it
# The book's "5-layer net": hidden_size_list=[100] * 4 plus the output layer.
HIDDEN = (100,) * 4


@dataclass(frozen=True)
class Budget:
    iterations: int
    tail: int  # the final loss is the mean over the last `tail` steps
    smoothing: int  # moving-average window of the plotted curves


FULL = Budget(iterations=2_000, tail=100, smoothing=51)
QUICK = Budget(iterations=300, tail=30, smoothing=21)


def toy_function(xy: np.ndarray) -> float:
    x, y = xy
    return x**2 / 20 + y**2


def toy_gradient(xy: np.ndarray) -> np.ndarray:
    x, y = xy
    return np.array([x / 10, 2 * y])


def toy_path(name: str, lr: float, steps: int = TOY_STEPS) -> np.ndarray:
    """The (steps + 1, 2) positions of the trainer's optimizer `name` on the toy function."""
    point = trainer.Parameter("xy", np.array(TOY_START, dtype=np.float64))
    config = trainer.TrainConfig(optimizer=name, lr=lr)
    optimizer = trainer.make_optimizer(config, [point])
    path = [point.value.copy()]
    for _ in range(steps):
        point.grad[...] = toy_gradient(point.value)
        optimizer.step()
        path.append(point.value.copy())
    return np.array(path)


def run(data: str, out: Path, seed: int, quick: bool, data_dir: str | None = None,
        progress: Progress | None = None) -> Report:
    budget = QUICK if quick else FULL
    pool = load_pool(data, data_dir)
    train, validation = take(pool, None, VALIDATION_FRACTION, seed)
    base = trainer.TrainConfig(**sizes(train), hidden_sizes=HIDDEN, activation="relu", init="he",
                               batch_size=128, seed=seed)
    report = Report("optimizers", {
        "data": data, "train_samples": len(train), "validation_samples": len(validation),
        "hidden_sizes": list(base.hidden_sizes), "activation": "relu", "init": "he", "batch_size": 128,
        "iterations": budget.iterations, "final_loss": f"mean training loss of the last {budget.tail} steps",
        "mean_loss": "mean training loss over all steps (lower: learns faster)",
        "steps_to_target": f"first step at which the smoothed loss is below {TARGET_LOSS}",
        "smoothing": f"centred moving average over {budget.smoothing} steps", "lr": LRS, "seed": seed,
        "quick": quick, "same_start": "every optimizer starts from the same weights and sees the same batches",
        "toy": {"function": "x^2/20 + y^2", "start": TOY_START, "steps": TOY_STEPS, "lr": TOY_LRS},
    })
    mnist, toy = {}, {}
    for i, name in enumerate(NAMES, 1):
        say(progress, f"optimizers: training with {NAMES[name]} ({i}/{len(NAMES)}), {budget.iterations} iterations")
        network, losses = train_steps(base.replace(optimizer=name, lr=LRS[name]), train, budget.iterations)
        val_loss, val_accuracy = trainer.evaluate(network, validation)
        smoothed = smooth(losses, budget.smoothing)
        below = np.flatnonzero(smoothed < TARGET_LOSS)
        mnist[name] = {"lr": LRS[name], "loss": losses, "smoothed": smoothed,
                       "mean_loss": float(np.mean(losses)), "final_loss": tail_mean(losses, budget.tail),
                       "steps_to_target": int(below[0]) + 1 if len(below) else None,
                       "val_loss": val_loss, "val_accuracy": val_accuracy}
        path = toy_path(name, TOY_LRS[name])
        toy[name] = {"lr": TOY_LRS[name], "path": path, "f": [float(toy_function(p)) for p in path]}
    report.results = {"mnist": mnist, "toy": toy}
    report.table = {
        "headers": ["optimizer", "lr", "mean loss", f"steps to {TARGET_LOSS}", "final loss", "val accuracy",
                    "toy lr", f"toy f after {TOY_STEPS}"],
        "rows": [[NAMES[n], r["lr"], r["mean_loss"], r["steps_to_target"], r["final_loss"], r["val_accuracy"],
                  toy[n]["lr"], toy[n]["f"][-1]] for n, r in mnist.items()],
    }
    _claims(report, mnist)
    with plotting():
        _plot_losses(report, mnist, budget, out, data)
        _plot_toy(report, toy, out)
    write_json(report, out)
    return report


def _claims(report: Report, mnist: dict) -> None:
    book = ("momentum", "adagrad", "adam")
    final = {n: r["final_loss"] for n, r in mnist.items()}
    mean = {n: r["mean_loss"] for n, r in mnist.items()}

    def ranked(values: dict) -> str:
        return ", ".join(f"{NAMES[n]} {v:.3g}" for n, v in sorted(values.items(), key=lambda kv: kv[1]))

    report.claim("SGD learns slowest: Momentum, AdaGrad and Adam all end with a lower training loss, "
                 "and have a lower loss along the way.",
                 all(final["sgd"] > final[n] and mean["sgd"] > mean[n] for n in book),
                 f"final loss: {ranked(final)}; mean loss over all steps: {ranked(mean)}")
    fastest = min(book, key=mean.get)
    report.claim("AdaGrad is a little fastest of Momentum, AdaGrad and Adam (lowest mean loss over all steps).",
                 fastest == "adagrad",
                 f"mean loss: {ranked({n: mean[n] for n in book})}; steps until the smoothed loss is below "
                 f"{TARGET_LOSS}: " + ", ".join(f"{NAMES[n]} {mnist[n]['steps_to_target']}" for n in book))


def _plot_losses(report: Report, mnist: dict, budget: Budget, out: Path, data: str) -> None:
    fig, axes = figure(1, 2, width=11, height=5.2)
    steps = np.arange(1, budget.iterations + 1)
    for ax, log in zip(axes[0], (False, True)):
        for color, (name, r) in zip(COLORS, mnist.items()):
            label = (f"{NAMES[name]} (lr {r['lr']:g}): mean {r['mean_loss']:.3f}, final {r['final_loss']:.2g}, "
                     f"val acc {r['val_accuracy']:.1%}")
            if not log:
                ax.plot(steps, r["loss"], color=color, alpha=0.12, linewidth=0.6)
            ax.plot(steps, r["smoothed"], color=color, linewidth=1.5, label=label)
        ax.set_xlim(0, budget.iterations)
        ax.set_xlabel("iteration (batch of 128)")
        if log:
            ax.set_yscale("log")
            ax.set_title("the same, smoothed, on a log scale")
        else:
            top = max(np.nanmax(r["smoothed"]) for r in mnist.values())
            ax.set_ylim(0, min(top * 1.05, 2.6))
            ax.set_ylabel("training loss (cross-entropy)")
            ax.set_title(f"faint: every step; line: moving average over {budget.smoothing} steps")
    handles, labels = axes[0, 1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2)
    fig.suptitle(f"Optimizers on {display_name(data)}: 4 hidden layers of 100 (a 5-layer net), ReLU, He init, "
                 "batch 128")
    save_figure(fig, out / "optimizers_mnist.png", report)


def _plot_toy(report: Report, toy: dict, out: Path) -> None:
    fig, axes = figure(2, 3, width=10.5, height=5.6, sharex=True, sharey=True)
    xs, ys = np.meshgrid(np.linspace(-10, 10, 401), np.linspace(-5, 5, 201))
    zs = xs**2 / 20 + ys**2
    levels = [0.05, 0.2, 0.5, 1, 2, 3.5, 5, 7, 10]
    for ax, color, (name, r) in zip(axes.flat, COLORS, toy.items()):
        ax.contour(xs, ys, zs, levels=levels, colors="#9a9a9a", linewidths=0.7)
        path = r["path"]
        ax.plot(path[:, 0], path[:, 1], "o-", color=color, markersize=3, linewidth=1.2)
        ax.plot(*TOY_START, "s", color="black", markersize=5)
        ax.plot(0, 0, "+", color="black", markersize=10, markeredgewidth=1.5)
        ax.set_title(f"{NAMES[name]} (lr {r['lr']:g}): f = {r['f'][-1]:.3g} after {TOY_STEPS} steps")
        ax.set_xlim(-10, 10)
        ax.set_ylim(-5, 5)
        ax.grid(False)
    for ax in axes[-1]:
        ax.set_xlabel("x")
    for ax in axes[:, 0]:
        ax.set_ylabel("y")
    fig.suptitle("Paths on f(x, y) = x²/20 + y² from (-7, 2) (square); minimum at (0, 0) (+)")
    save_figure(fig, out / "optimizers_toy.png", report)
