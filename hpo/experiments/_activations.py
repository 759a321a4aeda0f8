"""Activation histograms: how the initial weight scale shapes the activations of 5 layers.

The seed's experiment (section 2): 1,000 Gaussian inputs of width 100 go through 5 layers
of 100 units (no biases, no training); one histogram per layer and setting. The forward
pass is written here with NumPy because the trainer's network does not hand out its hidden
activations; the weight scales are the trainer's (std, Xavier 1/sqrt(n), He sqrt(2/n)).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpo.experiments._common import Progress, Report, figure, plotting, save_figure, say, write_json

SAMPLES = 1_000
WIDTH = 100
LAYERS = 5
BINS = 30
OUTER = 0.1  # sigmoid: below 0.1 or above 0.9 is "outer"; tanh: |z| > 0.9
CENTRE = 0.1  # sigmoid: within 0.1 of 0.5 is "centre"; tanh: |z| < 0.1
RELU_RANGE = 3.0  # ReLU histograms show the positive activations in (0, 3]


@dataclass(frozen=True)
class Setting:
    label: str
    activation: str
    init: str  # "normal" (with std), "xavier" or "he"
    std: float | None = None

    def scale(self, fan_in: int) -> float:
        if self.init == "xavier":
            return 1 / np.sqrt(fan_in)
        if self.init == "he":
            return np.sqrt(2 / fan_in)
        return float(self.std)


SETTINGS = (
    Setting("sigmoid, std 1", "sigmoid", "normal", 1.0),
    Setting("sigmoid, std 0.01", "sigmoid", "normal", 0.01),
    Setting("sigmoid, Xavier", "sigmoid", "xavier"),
    Setting("tanh, Xavier", "tanh", "xavier"),
    Setting("ReLU, std 0.01", "relu", "normal", 0.01),
    Setting("ReLU, Xavier", "relu", "xavier"),
    Setting("ReLU, He", "relu", "he"),
)

_FUNCTIONS = {
    "sigmoid": lambda a: 1 / (1 + np.exp(-a)),
    "tanh": np.tanh,
    "relu": lambda a: np.maximum(a, 0),
}


def forward(x: np.ndarray, setting: Setting, rng: np.random.Generator, layers: int = LAYERS) -> list[np.ndarray]:
    """The activations of each layer for inputs x (n, width), weights drawn from rng."""
    activations = []
    z = x
    for _ in range(layers):
        fan_in = z.shape[1]
        w = rng.standard_normal((fan_in, WIDTH)) * setting.scale(fan_in)
        z = _FUNCTIONS[setting.activation](z @ w)  # (n, WIDTH)
        activations.append(z)
    return activations


def layer_stats(z: np.ndarray, activation: str) -> dict:
    """Mean, std, the shares in the outer and centre bins, the share of exact zeros, and the histogram."""
    flat = z.ravel()
    stats = {"mean": float(flat.mean()), "std": float(flat.std()), "zero_share": float(np.mean(flat == 0))}
    if activation == "sigmoid":
        stats["outer_share"] = float(np.mean((flat < OUTER) | (flat > 1 - OUTER)))
        stats["centre_share"] = float(np.mean(np.abs(flat - 0.5) < CENTRE))
        shown, low, high = flat, 0.0, 1.0
    elif activation == "tanh":
        stats["outer_share"] = float(np.mean(np.abs(flat) > 1 - OUTER))
        stats["centre_share"] = float(np.mean(np.abs(flat) < CENTRE))
        shown, low, high = flat, -1.0, 1.0
    else:
        # Half of a ReLU's outputs are exactly 0; the histogram shows the others.
        shown, low, high = flat[flat > 0], 0.0, RELU_RANGE
        stats["above_range_share"] = float(np.mean(flat > RELU_RANGE))
    counts, edges = np.histogram(shown, bins=BINS, range=(low, high))
    stats["histogram"] = {"counts": counts, "edges": edges}
    return stats


def run(data: str, out: Path, seed: int, quick: bool, data_dir: str | None = None,
        progress: Progress | None = None) -> Report:
    """Run the experiment. It needs no data set (the inputs are Gaussian), so `data` and
    `data_dir` are ignored; quick changes nothing (the full run takes a second or two)."""
    report = Report("activations", {
        "samples": SAMPLES, "width": WIDTH, "layers": LAYERS, "bins": BINS, "biases": False,
        "inputs": "standard normal", "seed": seed, "quick": quick,
        "settings": [{"label": s.label, "activation": s.activation, "init": s.init, "std": s.std} for s in SETTINGS],
        "outer": "sigmoid: z < 0.1 or z > 0.9; tanh: |z| > 0.9",
        "centre": "sigmoid: |z - 0.5| < 0.1; tanh: |z| < 0.1",
    })
    streams = np.random.SeedSequence(seed).spawn(len(SETTINGS) + 1)
    x = np.random.default_rng(streams[0]).standard_normal((SAMPLES, WIDTH))  # the same inputs for every setting
    results = {}
    for setting, stream in zip(SETTINGS, streams[1:]):
        say(progress, f"activations: {setting.label}")
        layers = forward(x, setting, np.random.default_rng(stream))
        results[setting.label] = [layer_stats(z, setting.activation) for z in layers]
    report.results = {"settings": results}
    _table(report, results)
    _claims(report, results)
    _plot(report, results, out)
    write_json(report, out)
    return report


def _table(report: Report, results: dict) -> None:
    rows = []
    for label, layers in results.items():
        first, last = layers[0], layers[-1]
        rows.append([label, first["std"], last["std"], last["mean"], last.get("outer_share"),
                     last.get("centre_share"), last["zero_share"]])
    report.table = {
        "headers": ["setting", "std L1", "std L5", "mean L5", "outer L5", "centre L5", "zeros L5"],
        "rows": rows,
    }


def _claims(report: Report, results: dict) -> None:
    def per_layer(label: str, key: str) -> list[float]:
        return [round(layer[key], 3) for layer in results[label]]

    outer = per_layer("sigmoid, std 1", "outer_share")
    report.claim("Sigmoid with std 1: activations pile up at 0 and 1 (U-shaped histograms).",
                 min(outer) > 0.5, f"share below 0.1 or above 0.9, layers 1-5: {outer}")
    centre = per_layer("sigmoid, std 0.01", "centre_share")
    report.claim("Sigmoid with std 0.01: activations crowd around 0.5.",
                 min(centre) > 0.9, f"share within 0.1 of 0.5, layers 1-5: {centre}")
    xo, xc = per_layer("sigmoid, Xavier", "outer_share"), per_layer("sigmoid, Xavier", "centre_share")
    report.claim("Sigmoid with Xavier: a healthy spread through 5 layers (neither piled at the ends nor at 0.5).",
                 max(xo) < 0.5 and max(xc) < 0.9,
                 f"outer share {xo}; centre share {xc}")
    tstd, tmean = per_layer("tanh, Xavier", "std"), per_layer("tanh, Xavier", "mean")
    report.claim("Tanh with Xavier: spread symmetric about 0, kept through the layers.",
                 max(abs(m) for m in tmean) < 0.05 and tstd[-1] > 0.25,
                 f"mean {tmean}; std {tstd}")
    small = [layer["std"] for layer in results["ReLU, std 0.01"]]
    report.claim("ReLU with std 0.01: activations vanish with depth.",
                 small[-1] < 1e-3 * small[0] or small[-1] < 1e-4,
                 f"std layers 1-5: {[f'{s:.2g}' for s in small]}")
    xavier = per_layer("ReLU, Xavier", "std")
    report.claim("ReLU with Xavier: activations drift toward 0 in deeper layers.",
                 all(b < a for a, b in zip(xavier, xavier[1:])) and xavier[-1] < 0.5 * xavier[0],
                 f"std layers 1-5: {xavier}")
    he = per_layer("ReLU, He", "std")
    report.claim("ReLU with He: the spread stays stable through the layers.",
                 0.5 < he[-1] / he[0] < 2, f"std layers 1-5: {he}")


def _plot(report: Report, results: dict, out: Path) -> None:
    colors = {"sigmoid": "#1f77b4", "tanh": "#2ca02c", "relu": "#d62728"}
    with plotting():
        fig, axes = figure(len(SETTINGS), LAYERS, width=11, height=1.55 * len(SETTINGS))
        for row, setting in enumerate(SETTINGS):
            for col, stats in enumerate(results[setting.label]):
                ax = axes[row, col]
                counts, edges = stats["histogram"]["counts"], stats["histogram"]["edges"]
                ax.stairs(counts, edges, fill=True, color=colors[setting.activation], alpha=0.85)
                ax.set_xlim(edges[0], edges[-1])
                ax.set_ylim(0, 1.3 * max(counts.max(), 1))  # headroom for the note
                ax.set_yticks([])
                ax.grid(False)
                ax.spines["left"].set_visible(False)
                note = f"std {stats['std']:.2g}"
                if setting.activation == "relu":
                    note += f"\n{stats['zero_share']:.0%} zeros"
                ax.text(0.97, 0.93, note, transform=ax.transAxes, ha="right", va="top", fontsize=7,
                        color="#333333")
                if row == 0:
                    ax.set_title(f"layer {col + 1}")
                if col == 0:
                    ax.set_ylabel(setting.label, rotation=0, ha="right", va="center", fontsize=9)
                if row == len(SETTINGS) - 1 or SETTINGS[row + 1].activation != setting.activation:
                    ax.set_xlabel("activation" + (" (> 0 only)" if setting.activation == "relu" else ""),
                                  fontsize=8)
        fig.suptitle(f"Activations of 5 layers of 100 units for {SAMPLES:,} Gaussian inputs, "
                     "by activation and initial weight scale")
        save_figure(fig, out / "activations.png", report)
