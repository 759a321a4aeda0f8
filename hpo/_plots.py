"""Figures of a study, drawn with matplotlib's Agg backend and saved as PNG.

Every `plot_*` function takes an Optuna study made by hpo (it needs the stored spec) and returns
a matplotlib Figure that is not registered with pyplot, so nothing leaks between calls. Each
figure's panels carry a label (`ax.get_label()`: "pair:lr,weight_decay", "strip:lr", "curve:1",
…) so tests and callers can find them; colorbars keep matplotlib's "<colorbar>" label.

Each kind is declared here, by `@figure` on the function that draws it (name, title, the report's
caption); `FIGURES` and `KINDS` hold them in the order of this file, and the command line and the
report read them from here. matplotlib is imported on the first drawing, not with this module: the
command line lists the kinds on every start and does not pay for it.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import textwrap
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo._child import WARM_START_ATTR
from hpo._confirm import confirmed_choice
from hpo._errors import StudyError
from hpo._files import check_folder, replacing
from hpo._narrow import DEFAULT_MARGIN, Narrowing, describe, narrow, trainer_check
from hpo._spec import CategoricalParam, SearchParam, StudySpec, parse_spec
from hpo._study import SPEC_ATTR

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

CURVES_TOP = 20  # the seed's figure shows the best 20
FIRST_PARAMS = ("lr", "weight_decay")  # the seed's pair leads the ranges figure
MAX_PAIRS = 6

OLD = "#7f7f7f"  # the old range
NEW = "#e6550d"  # the narrowed range
WIDE = "#8c3fb8"  # a widened side
BEST = "#d62728"  # rings around the best trials
STAR = "#ffbf00"  # confirmed configurations
PRUNED = "#bbbbbb"
PHASES = {"random": "#9ecae1", "tpe": "#3182bd", "warm-start": "#8c3fb8"}
CMAP = "viridis"

STYLE = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.6,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "figure.facecolor": "white",
}


@functools.cache
def _mpl() -> ModuleType:
    """matplotlib, imported on the first drawing and set to the Agg backend once.

    Every function here that imports from matplotlib calls this first.
    """
    # Matplotlib warns on stderr when it cannot save its font cache (a full disk); the figure is drawn
    # all the same, and a command's failure stays its one line.
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    import matplotlib

    matplotlib.use("Agg")
    return matplotlib


@contextmanager
def _style() -> Iterator[None]:
    """Our look, for the figure being drawn only (rcParams are restored afterwards)."""
    with _mpl().rc_context(STYLE):
        yield


# ---------------------------------------------------------------------------------------
# The kinds


@dataclass(frozen=True)
class FigureKind:
    """One figure a study can draw.

    Attributes:
        name: what `hpo study plot --kind` takes; also the PNG's file stem.
        title: one line for people (help texts, listings).
        caption: the figure's caption in the HTML report.
        draw: the function that draws it; it takes the study and returns a Figure.
        takes_top: `draw` takes the best-K (`top=`) of `hpo study plot --top`.
    """

    name: str
    title: str
    caption: str
    draw: Callable[..., Figure]
    takes_top: bool = False


_DECLARED: dict[str, FigureKind] = {}
FIGURES = MappingProxyType(_DECLARED)  # name -> FigureKind, in the order of this file


def figure(name: str, *, title: str, caption: str, takes_top: bool = False
           ) -> Callable[[Callable[..., Figure]], Callable[..., Figure]]:
    """Declare the decorated function as the one that draws the figure kind `name`."""
    def declare(draw: Callable[..., Figure]) -> Callable[..., Figure]:
        if name in _DECLARED:
            raise ValueError(f"figure kind '{name}' is declared twice")
        _DECLARED[name] = FigureKind(name, title, caption, draw, takes_top)
        return draw
    return declare


# ---------------------------------------------------------------------------------------
# What the figures read from a study


@dataclass
class _View:
    study: optuna.Study
    spec: StudySpec

    @property
    def name(self) -> str:
        return self.study.study_name

    def trials(self, *states: TrialState) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states or None)

    def complete(self) -> list[FrozenTrial]:
        """Complete trials with a finite value, best first (ties: the earlier trial)."""
        done = [t for t in self.trials(TrialState.COMPLETE) if t.value is not None and math.isfinite(t.value)]
        return sorted(done, key=lambda t: (-t.value, t.number))

    def confirmed(self) -> tuple[int | None, set[int]]:
        """The confirmed winner's trial number and every re-checked trial's number."""
        choice = confirmed_choice(self.study)
        if not choice:
            return None, set()
        return choice.get("trial"), {row["trial"] for row in choice.get("table", [])}


def _view(study: optuna.Study) -> _View:
    stored = study.user_attrs.get(SPEC_ATTR)
    if not isinstance(stored, dict):
        raise StudyError(f"study '{study.study_name}' was not created by hpo (it has no spec)")
    return _View(study, parse_spec(stored, source=f"study '{study.study_name}'"))


def _need_complete(view: _View, kind: str, at_least: int = 1) -> list[FrozenTrial]:
    complete = view.complete()
    if len(complete) < at_least:
        raise StudyError(f"study '{view.name}' has {len(complete)} complete trial(s); the {kind} figure "
                         f"needs at least {at_least} (run it with `hpo study run {view.name}`)")
    return complete


def _phase(trial: FrozenTrial) -> str:
    if WARM_START_ATTR in trial.user_attrs:
        return "warm-start"
    return str(trial.user_attrs.get("phase", "tpe"))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2e}" if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4) else f"{value:.3g}"
    return str(value)


def _short_name(name: str) -> str:
    return {"weight_decay": "wd", "optimizer": "opt", "hidden_layers": "layers",
            "hidden_units": "units", "batch_size": "batch"}.get(name, name)


def _figure(width: float, height: float) -> Figure:
    _mpl()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


# ---------------------------------------------------------------------------------------
# ranges: the signature figure


@figure(
    "ranges",
    title="where the best trials lie, the narrowed box over the old range (the signature figure)",
    caption="Where the best trials lie. Each dot is a complete trial coloured by validation accuracy; red rings "
    "mark the best ones; the dashed box is the range searched, the orange box the narrowed range, a "
    "dotted box the range `--widen` would search where the best crowd an edge.",
    takes_top=True)
def plot_ranges(study: optuna.Study, top: int | None = None, quantile: float | None = None,
                margin: float = DEFAULT_MARGIN) -> Figure:
    """Where the best trials lie and the range narrowing would search next.

    Top: one scatter per pair of numeric parameters (learning rate x weight decay first), on log
    axes for log parameters, coloured by validation accuracy, the best trials ringed, the old
    range dashed and the narrowed box solid (a dotted box where the best crowd an edge and
    `--widen` would push past it). Bottom: per parameter, every trial's value against its
    accuracy with the old and the new range marked.
    """
    _mpl()
    from matplotlib import colors
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    view = _view(study)
    complete = _need_complete(view, "ranges", 2)
    narrowing: Narrowing | None
    try:
        narrowing = narrow(view.spec.search, complete, top=top, quantile=quantile, margin=margin,
                           check=trainer_check(view.spec))
        note = narrowing.rule
    except StudyError as exc:
        narrowing, note = None, f"no narrowing: {exc}"
    params = sorted(view.spec.search, key=lambda p: (p.name not in FIRST_PARAMS,
                                                     FIRST_PARAMS.index(p.name) if p.name in FIRST_PARAMS else 0))
    numeric = [p for p in params if not isinstance(p, CategoricalParam)]
    pairs = list(itertools.combinations(numeric, 2))[:MAX_PAIRS]
    best = set(narrowing.best) if narrowing else set()
    winner, confirmed = view.confirmed()

    values = np.array([t.value for t in complete])
    norm = colors.Normalize(vmin=float(values.min()), vmax=float(values.max()))
    others = [t for t in view.trials(TrialState.PRUNED, TrialState.FAIL) if t.params]

    n_strips = len(params)
    single = len(pairs) == 1  # one pair: it shares its row with a text summary of the narrowing
    cols = max(2, min(3, max(len(pairs), n_strips)))
    pair_rows = math.ceil((len(pairs) + single) / cols) if pairs else 0
    strip_rows = math.ceil(n_strips / cols)
    with _style():
        fig = _figure(4.6 * cols + 0.6, 4.4 * pair_rows + 3.3 * strip_rows + 0.6)
        grid = fig.add_gridspec(pair_rows + strip_rows, cols,
                                height_ratios=[1.35] * pair_rows + [1.0] * strip_rows)
        pair_axes, scatter = [], None
        for i, (a, b) in enumerate(pairs):
            ax = fig.add_subplot(grid[i // cols, i % cols])
            ax.set_label(f"pair:{a.name},{b.name}")
            scatter = _pair(ax, a, b, complete, others, best, norm, narrowing, confirmed, winner)
            pair_axes.append(ax)
        if single:
            ax = fig.add_subplot(grid[0, 1:])
            ax.set_label("summary")
            _summary(ax, view, narrowing, note)
        strip_axes = []
        for i, p in enumerate(params):
            ax = fig.add_subplot(grid[pair_rows + i // cols, i % cols])
            ax.set_label(f"strip:{p.name}")
            points = _strip(ax, p, complete, best, norm, narrowing, confirmed)
            scatter = scatter or points
            strip_axes.append(ax)
        if scatter is not None:
            fig.colorbar(scatter, ax=pair_axes or strip_axes, shrink=0.9, aspect=25, pad=0.02,
                         label="validation accuracy")
        handles = [Patch(facecolor="none", edgecolor=OLD, ls="--", label="old range")]
        if narrowing:
            handles[:0] = [Line2D([], [], ls="", marker="o", mfc="none", mec=BEST, mew=1.4, ms=8,
                                  label=f"best {len(best)}")]
            handles.append(Patch(facecolor=NEW, alpha=0.25, edgecolor=NEW, label="narrowed range"))
        if narrowing and narrowing.can_widen:
            handles.append(Patch(facecolor="none", edgecolor=WIDE, ls=":", lw=1.5,
                                 label="--widen (best crowd an edge)"))
        if others:
            handles.append(Line2D([], [], ls="", marker="x", color=PRUNED, label="pruned / failed"))
        if confirmed:
            handles.append(Line2D([], [], ls="", marker="*", mfc=STAR, mec="black", ms=11, label="confirmed"))
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles))
        fig.suptitle(f"{view.name}: where the best trials lie ({len(complete)} complete trials)",
                     fontsize=11, fontweight="bold")
    return fig


def _axis_range(p: SearchParam, narrowing: Narrowing | None) -> tuple[float, float]:
    """The part of the axis to show: the old range and any widened side, with a little room."""
    low, high = p.low, p.high  # type: ignore[union-attr]
    if narrowing and narrowing.param(p.name).widened is not None:
        wide = narrowing.param(p.name).widened
        low, high = min(low, wide.low), max(high, wide.high)  # type: ignore[union-attr]
    if p.log:  # type: ignore[union-attr]
        pad = (math.log10(high) - math.log10(low)) * 0.04
        return low / 10 ** pad, high * 10 ** pad
    pad = (high - low) * 0.04
    return low - pad, high + pad


def _set_scale(ax, p: SearchParam, axis: str) -> None:
    if getattr(p, "log", False):
        getattr(ax, f"set_{axis}scale")("log")


def _label(p: SearchParam) -> str:
    return f"{p.name} (log scale)" if getattr(p, "log", False) else p.name


def _pair(ax, a, b, complete, others, best, norm, narrowing, confirmed, winner):
    _set_scale(ax, a, "x")
    _set_scale(ax, b, "y")
    order = sorted(complete, key=lambda t: t.value)  # the best drawn last, on top
    x = [t.params[a.name] for t in order]
    y = [t.params[b.name] for t in order]
    points = ax.scatter(x, y, c=[t.value for t in order], cmap=CMAP, norm=norm, s=26,
                        edgecolors="white", linewidths=0.4, zorder=3)
    rest = [t for t in others if a.name in t.params and b.name in t.params]
    if rest:
        ax.scatter([t.params[a.name] for t in rest], [t.params[b.name] for t in rest], marker="x",
                   color=PRUNED, s=16, linewidths=0.9, zorder=2)
    top = [t for t in complete if t.number in best]
    ax.scatter([t.params[a.name] for t in top], [t.params[b.name] for t in top], s=90, facecolors="none",
               edgecolors=BEST, linewidths=1.3, zorder=4)
    marked = [t for t in complete if t.number in confirmed]
    if marked:
        ax.scatter([t.params[a.name] for t in marked], [t.params[b.name] for t in marked], marker="*",
                   s=[190 if t.number == winner else 110 for t in marked], c=STAR, edgecolors="black",
                   linewidths=0.6, zorder=5)
    ax.add_patch(_box(a, b, ls="--", facecolor="none", edgecolor=OLD, lw=1.2))
    if narrowing:
        na, nb = narrowing.param(a.name), narrowing.param(b.name)
        ax.add_patch(_box(na.new, nb.new, facecolor=NEW, alpha=0.12, edgecolor="none"))
        ax.add_patch(_box(na.new, nb.new, facecolor="none", edgecolor=NEW, lw=1.8, zorder=4))
        if na.widened is not None or nb.widened is not None:
            ax.add_patch(_box(na.target(True), nb.target(True), facecolor="none", edgecolor=WIDE, lw=1.5,
                              ls=":", zorder=4))
    ax.set_xlim(*_axis_range(a, narrowing))
    ax.set_ylim(*_axis_range(b, narrowing))
    ax.set_xlabel(_label(a))
    ax.set_ylabel(_label(b))
    ax.set_title(f"{a.name} × {b.name}", loc="left", fontweight="bold")
    return points


def _box(a, b, **style) -> Rectangle:
    _mpl()
    from matplotlib.patches import Rectangle

    return Rectangle((a.low, b.low), a.high - a.low, b.high - b.low, **style)


def _summary(ax, view: _View, narrowing: Narrowing | None, note: str) -> None:
    """A text panel: the rule and each parameter's old -> new range, crowded edges called out."""
    ax.axis("off")
    lines = [(text, "black", "bold") for text in textwrap.wrap(f"Narrowing rule: {note}", 62)]
    if narrowing:
        lines.append(("", "black", "normal"))
        for p in narrowing.params:
            lines.append((f"{p.name}", "black", "bold"))
            lines.append((f"   old  {describe(p.old)}", OLD, "normal"))
            lines.append((f"   new  {describe(p.new)}", NEW, "normal"))
            if not isinstance(p.old, CategoricalParam):
                per = "decade" if p.old.log and len(p.bins) == round(math.log10(p.old.high / p.old.low)) else "fifth"
                counts = " · ".join(str(b[2]) for b in p.bins)
                lines.append((f"   best per {per} of old: {counts}", "#444444", "normal"))
            for side in p.crowded:
                lines.append((f"   best crowd the {'upper' if side == 'high' else 'lower'} edge "
                              f"({_fmt(getattr(p.old, side))})", WIDE, "normal"))
                if p.widened is not None:
                    lines.append((f"   --widen would search {describe(p.widened)}", WIDE, "normal"))
    lines.append(("", "black", "normal"))
    lines.append((f"hpo study narrow {view.name}" + (" --widen" if narrowing and narrowing.crowded else "")
                  + " --into CHILD", "#444444", "normal"))
    y = 0.98
    for text, color, weight in lines:
        ax.text(0.02, y, text, transform=ax.transAxes, va="top", ha="left", color=color, fontweight=weight,
                family="monospace" if text.startswith("   ") or text.startswith("hpo ") else None, fontsize=8.5)
        y -= 0.065


def _strip(ax, p, complete, best, norm, narrowing, confirmed):
    values = [t.value for t in complete]
    if isinstance(p, CategoricalParam):
        rng = np.random.default_rng(0)
        where = {c: i for i, c in enumerate(p.choices)}
        x = np.array([where.get(t.params[p.name], -1) for t in complete], dtype=float)
        x += rng.uniform(-0.18, 0.18, len(x))
        kept = set(narrowing.param(p.name).new.choices) if narrowing else set()  # type: ignore[union-attr]
        for c, i in where.items():
            if c in kept:
                ax.axvspan(i - 0.42, i + 0.42, color=NEW, alpha=0.12, lw=0)
        ax.set_xticks(range(len(p.choices)), [str(c) for c in p.choices])
        ax.set_xlim(-0.6, len(p.choices) - 0.4)
        ax.grid(False, axis="x")
        title = f"{p.name}: keep {describe(narrowing.param(p.name).new)}" if narrowing else p.name
    else:
        _set_scale(ax, p, "x")
        ax.set_xlim(*_axis_range(p, narrowing))
        x = np.array([t.params[p.name] for t in complete], dtype=float)
        for edge in (p.low, p.high):
            ax.axvline(edge, color=OLD, ls="--", lw=1.1)
        title = f"{p.name}: {describe(p)}"
        if narrowing:
            pn = narrowing.param(p.name)
            ax.axvspan(pn.new.low, pn.new.high, color=NEW, alpha=0.15, lw=0)
            for edge in (pn.new.low, pn.new.high):
                ax.axvline(edge, color=NEW, lw=1.4)
            title = f"{p.name}: {describe(p).removesuffix(' (log)')}  →  {describe(pn.new).removesuffix(' (log)')}"
            if pn.widened is not None:
                for side in pn.crowded:
                    edge = getattr(pn.widened, side)
                    ax.axvline(edge, color=WIDE, ls=":", lw=1.5)
                    ax.annotate("", xy=(edge, 0.5), xycoords=("data", "axes fraction"),
                                xytext=(getattr(p, side), 0.5), textcoords=("data", "axes fraction"),
                                arrowprops={"arrowstyle": "->", "color": WIDE, "lw": 1.2})
                    ax.text(math.sqrt(edge * getattr(p, side)) if p.log else (edge + getattr(p, side)) / 2, 0.53,
                            "--widen", transform=ax.get_xaxis_transform(), color=WIDE, ha="center",
                            va="bottom", fontsize=7.5)
        ax.set_xlim(*_axis_range(p, narrowing))
    order = np.argsort(values)
    points = ax.scatter(x[order], np.array(values)[order], c=np.array(values)[order], cmap=CMAP, norm=norm,
                        s=20, edgecolors="white", linewidths=0.3, zorder=3)
    top = [i for i, t in enumerate(complete) if t.number in best]
    ax.scatter(x[top], np.array(values)[top], s=70, facecolors="none", edgecolors=BEST, linewidths=1.1, zorder=4)
    marked = [i for i, t in enumerate(complete) if t.number in confirmed]
    if marked:
        ax.scatter(x[marked], np.array(values)[marked], marker="*", s=110, c=STAR, edgecolors="black",
                   linewidths=0.5, zorder=5)
    ax.set_xlabel(_label(p))
    ax.set_ylabel("validation accuracy")
    ax.set_title(title, loc="left", fontsize=8.5)
    return points


# ---------------------------------------------------------------------------------------
# curves: the seed's figure


@figure(
    "curves",
    title="learning curves of the best trials, validation solid and train dashed",
    caption="Learning curves of the best trials (validation solid, train dashed), titled Best-k with their "
    "final validation accuracy.",
    takes_top=True)
def plot_curves(study: optuna.Study, top: int = CURVES_TOP) -> Figure:
    """Learning curves of the best `top` trials, as in the seed: validation solid, train dashed.

    Each panel is titled Best-k with its validation accuracy; confirmed configurations get a
    star (the confirmed choice a gold frame).
    """
    _mpl()
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    view = _view(study)
    ranked = [t for t in _need_complete(view, "curves") if isinstance(t.user_attrs.get("curves"), dict)]
    if not ranked:
        raise StudyError(f"study '{view.name}' has no learning curves stored (no trial attribute 'curves')")
    ranked = ranked[:top]
    winner, confirmed = view.confirmed()
    cols = 5 if len(ranked) > 12 else min(4, len(ranked))
    rows = math.ceil(len(ranked) / cols)
    names = [p.name for p in view.spec.search][:3]
    with _style():
        width, height = 2.35 * cols + 0.5, 1.85 * rows + 1.0
        # A fixed layout: constrained layout costs seconds on a grid of 20 panels.
        fig = Figure(figsize=(width, height))
        fig.subplots_adjust(left=0.55 / width, right=1 - 0.1 / width, bottom=0.8 / height, top=1 - 0.6 / height,
                            wspace=0.08, hspace=0.32)
        axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
        for k, ax in enumerate(axes.flat, 1):
            if k > len(ranked):
                ax.remove()
                continue
            trial = ranked[k - 1]
            curves = trial.user_attrs["curves"]
            epochs = np.arange(1, len(curves.get("val_accuracy", [])) + 1)
            ax.set_label(f"curve:{k}")
            ax.plot(epochs, curves.get("val_accuracy", []), color="#1f77b4", lw=1.4)
            train = curves.get("train_accuracy") or []
            ax.plot(np.arange(1, len(train) + 1), train, color="#ff7f0e", lw=1.1, ls="--")
            ax.set_ylim(0, 1.02)
            mark = " ★" if trial.number in confirmed else ""
            ax.set_title(f"Best-{k} ({trial.value:.3f}){mark}", fontsize=8.5, loc="left",
                         fontweight="bold" if trial.number == winner else "normal")
            text = "\n".join(f"{_short_name(n)} {_fmt(trial.params[n])}" for n in names if n in trial.params)
            # Top left: early epochs sit low, so the text rarely covers a curve there.
            ax.text(0.03, 0.97, f"#{trial.number}\n{text}", transform=ax.transAxes, ha="left", va="top",
                    fontsize=6.5, color="#555555", linespacing=1.1)
            if trial.number == winner:
                for spine in ax.spines.values():
                    spine.set_visible(True)
                    spine.set_edgecolor(STAR)
                    spine.set_linewidth(2)
            if ax.get_subplotspec().is_last_row() or k + cols > len(ranked):
                ax.set_xlabel("epoch")
                ax.xaxis.set_tick_params(labelbottom=True)
            if ax.get_subplotspec().is_first_col():
                ax.set_ylabel("accuracy")
        handles = [Line2D([], [], color="#1f77b4", lw=1.4, label="validation"),
                   Line2D([], [], color="#ff7f0e", lw=1.1, ls="--", label="train")]
        fig.legend(handles=handles, loc="lower center", ncol=2, bbox_to_anchor=(0.5, 0.0))
        fig.suptitle(f"{view.name}: learning curves of the best {len(ranked)} trials", fontsize=11,
                     fontweight="bold", y=1 - 0.08 / height, va="top")
    return fig


# ---------------------------------------------------------------------------------------
# history, importance, optimizers, intermediate


@figure(
    "history",
    title="best so far against trial number, random / TPE / warm-start phases marked",
    caption="Validation accuracy of each finished trial in order, with the best so far; the random phase on "
    "log scales and the TPE phase are coloured apart.")
def plot_history(study: optuna.Study) -> Figure:
    """Each finished trial's value against its number, the best so far as a step line, phases marked."""
    _mpl()
    from matplotlib.lines import Line2D

    view = _view(study)
    _need_complete(view, "history")
    trials = sorted(view.trials(TrialState.COMPLETE, TrialState.PRUNED), key=lambda t: t.number)
    with _style():
        fig = _figure(8.0, 4.2)
        ax = fig.add_subplot()
        ax.set_label("history")
        handles = []
        for phase, color in PHASES.items():
            done = [t for t in trials if t.state == TrialState.COMPLETE and _phase(t) == phase]
            if done:
                ax.scatter([t.number for t in done], [t.value for t in done], color=color, s=24, zorder=3,
                           edgecolors="white", linewidths=0.3)
                label = {"random": "random (log scales)", "tpe": "TPE", "warm-start": "warm start (from parent)"}
                handles.append(Line2D([], [], ls="", marker="o", color=color, label=label[phase]))
        pruned = [t for t in trials if t.state == TrialState.PRUNED]
        if pruned:
            ax.scatter([t.number for t in pruned], [t.value if t.value is not None else 0 for t in pruned],
                       marker="x", color=PRUNED, s=22, zorder=2)
            handles.append(Line2D([], [], ls="", marker="x", color=PRUNED, label="pruned (last reported)"))
        best, steps = -math.inf, []
        for t in trials:
            if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
                best = max(best, t.value)
            steps.append(best if best > -math.inf else np.nan)
        ax.step([t.number for t in trials], steps, where="post", color="black", lw=1.6, zorder=4)
        handles.append(Line2D([], [], color="black", lw=1.6, label="best so far"))
        switch = next((t.number for t in trials if _phase(t) == "tpe"), None)
        if switch is not None and any(_phase(t) != "tpe" for t in trials if t.number < switch):
            ax.axvline(switch - 0.5, color="#555555", ls=":", lw=1.2)
            ax.text(switch - 0.3, 0.02, " TPE from here →", transform=ax.get_xaxis_transform(), fontsize=8,
                    color="#555555", va="bottom")
        ax.set_xlabel("trial number")
        ax.set_ylabel("validation accuracy (final epoch)")
        ax.legend(handles=handles, loc="lower right")
        final = steps[-1] if steps else float("nan")
        ax.set_title(f"{view.name}: optimization history — best {final:.3f} after {len(trials)} finished trials",
                     loc="left", fontweight="bold")
    return fig


def _higher_is_better(study: optuna.Study):
    # PED-ANOVA looks for what reaches LOW target values; the dashboard negates a maximized
    # value, and so does this figure, so both show the same numbers.
    return lambda trial: -trial.value


@figure(
    "importance",
    title="PED-ANOVA parameter importances, the dashboard's method (Optuna's own plot)",
    caption="How much each parameter decides whether a trial reaches the best validation accuracies "
    "(PED-ANOVA, the method the Optuna dashboard shows, so both give the same numbers).")
def plot_importance(study: optuna.Study, seed: int = 0) -> Figure:
    """Parameter importances by PED-ANOVA, the method the dashboard shows, drawn by Optuna's
    matplotlib plot (needs >= 2 parameters). The seed is kept for callers; PED-ANOVA needs none."""
    view = _view(study)
    if len(view.spec.search) < 2:
        raise StudyError(f"study '{view.name}' searches {len(view.spec.search)} parameter(s); "
                         "importances compare at least 2")
    _need_complete(view, "importance", 3)
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    with _style(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
        # Optuna draws on a pyplot figure and switches the style sheet; both stay inside here.
        import matplotlib.pyplot as plt

        ax = optuna.visualization.matplotlib.plot_param_importances(
            study, evaluator=evaluator, target=_higher_is_better(study), target_name="validation accuracy")
        fig = ax.figure
        plt.close(fig)  # drawn and saved like our own figures; pyplot need not track it
        fig.set_size_inches(7.0, 1.2 + 0.55 * len(view.spec.search))
        fig.set_layout_engine("constrained")
        ax.set_label("importance")
        ax.set_facecolor("white")
        ax.grid(True, axis="x", color="#e6e6e6")
        ax.grid(False, axis="y")
        for text in ax.texts:
            text.set_fontsize(9)
        ax.set_title(f"{view.name}: parameter importance (PED-ANOVA over {len(view.complete())} complete trials)",
                     loc="left", fontsize=10, fontweight="bold")
        ax.set_xlabel("importance for reaching the best validation accuracies (PED-ANOVA, as the dashboard)",
                      fontsize=9)
        ax.set_ylabel("")
        ax.tick_params(labelsize=9)
        legend = ax.get_legend()
        if legend is not None:
            legend.remove()
    return fig


@figure(
    "optimizers",
    title="validation accuracy by optimizer choice",
    caption="Validation accuracy by optimizer choice.")
def plot_optimizers(study: optuna.Study) -> Figure:
    """Validation accuracy by optimizer choice: a box per optimizer with every trial as a dot."""
    _mpl()
    from matplotlib import colors

    view = _view(study)
    try:
        param = view.spec.param("optimizer")
    except KeyError:
        fixed = view.spec.fixed.get("optimizer", "sgd")
        raise StudyError(f"study '{view.name}' does not search the optimizer (it is fixed to '{fixed}'); "
                         "the optimizers figure compares the choices of a searched optimizer") from None
    complete = _need_complete(view, "optimizers")
    choices = list(param.choices)  # type: ignore[union-attr]
    finished = view.trials(TrialState.COMPLETE, TrialState.PRUNED)
    rng = np.random.default_rng(0)
    with _style():
        fig = _figure(1.5 + 1.5 * len(choices), 4.2)
        ax = fig.add_subplot()
        ax.set_label("optimizers")
        groups = [[t.value for t in complete if t.params.get("optimizer") == c] for c in choices]
        ax.boxplot([g if g else [np.nan] for g in groups], positions=range(len(choices)), widths=0.5,
                   showfliers=False, medianprops={"color": "black"}, boxprops={"color": "#555555"},
                   whiskerprops={"color": "#555555"}, capprops={"color": "#555555"})
        values = [t.value for t in complete]
        norm = colors.Normalize(vmin=min(values), vmax=max(values))
        for i, group in enumerate(groups):
            x = i + rng.uniform(-0.17, 0.17, len(group))
            ax.scatter(x, group, c=group, cmap=CMAP, norm=norm, s=22, edgecolors="white", linewidths=0.3, zorder=3)
        pruned = [sum(t.params.get("optimizer") == c and t.state == TrialState.PRUNED for t in finished)
                  for c in choices]
        ax.set_xticks(range(len(choices)), [f"{c}\n{len(g)} complete, {n} pruned"
                                            for c, g, n in zip(choices, groups, pruned)])
        best = [max(g) if g else None for g in groups]
        for i, b in enumerate(best):
            if b is not None:
                ax.text(i + 0.3, b, f"best {b:.3f}", fontsize=7.5, va="center", color="#333333")
        ax.set_ylabel("validation accuracy (final epoch)")
        ax.grid(False, axis="x")
        ax.set_title(f"{view.name}: validation accuracy by optimizer", loc="left", fontweight="bold")
    return fig


@figure(
    "intermediate",
    title="per-epoch validation accuracy of every trial, pruned ones visible",
    caption="Validation accuracy per epoch of every trial; pruned trials end in an x.")
def plot_intermediate(study: optuna.Study) -> Figure:
    """Per-epoch validation accuracy of every trial: complete thin, pruned red ending in x, best bold."""
    _mpl()
    from matplotlib.lines import Line2D

    view = _view(study)
    trials = [t for t in view.trials(TrialState.COMPLETE, TrialState.PRUNED) if t.intermediate_values]
    if not trials:
        raise StudyError(f"study '{view.name}' has no per-epoch values yet (run it with `hpo study run {view.name}`)")
    complete = view.complete()
    best = complete[0].number if complete else None
    with _style():
        fig = _figure(8.0, 4.4)
        ax = fig.add_subplot()
        ax.set_label("intermediate")
        n_pruned = 0
        for t in trials:
            steps = sorted(t.intermediate_values)
            values = [t.intermediate_values[s] for s in steps]
            if t.state == TrialState.PRUNED:
                n_pruned += 1
                ax.plot(steps, values, color=BEST, lw=0.8, alpha=0.6, zorder=2)
                ax.plot(steps[-1:], values[-1:], marker="x", color=BEST, ms=5, zorder=3)
            elif t.number != best:
                ax.plot(steps, values, color="#3182bd", lw=0.7, alpha=0.35, zorder=1)
        for t in trials:
            if t.number == best:
                steps = sorted(t.intermediate_values)
                ax.plot(steps, [t.intermediate_values[s] for s in steps], color="black", lw=2, zorder=4)
        handles = [Line2D([], [], color="#3182bd", alpha=0.6, label=f"complete ({len(trials) - n_pruned})"),
                   Line2D([], [], color=BEST, marker="x", label=f"pruned ({n_pruned}), x where it stopped"),
                   Line2D([], [], color="black", lw=2, label=f"best trial (#{best})")]
        ax.legend(handles=handles, loc="lower right")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy")
        ax.set_ylim(0, 1.02)
        pruner = "no pruner" if view.spec.pruner.kind == "none" else f"{view.spec.pruner.kind} pruner"
        ax.set_title(f"{view.name}: validation accuracy per epoch ({pruner})", loc="left",
                     fontweight="bold")
    return fig


# ---------------------------------------------------------------------------------------
# confirm


@figure(
    "confirm",
    title="the confirmed configurations: mean and spread over seeds beside the single run",
    caption="The best configurations retrained with fresh seeds: each seed, mean ± sd, and the single run "
    "that made them look best in the search.")
def plot_confirm(study: optuna.Study) -> Figure:
    """The confirmed configurations: each seed's value, the mean ± sd, and the single search run."""
    _mpl()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    view = _view(study)
    choice = confirmed_choice(study)
    if not choice:
        raise StudyError(f"study '{view.name}' has no confirmed choice; run `hpo study confirm {view.name}` first")
    table = choice.get("table") or []
    names = [p.name for p in view.spec.search][:3]
    rng = np.random.default_rng(0)
    with _style():
        fig = _figure(max(5.0, 1.5 + 1.35 * len(table)), 4.6)
        ax = fig.add_subplot()
        ax.set_label("confirm")
        for i, row in enumerate(table):
            seeds = [v for v in row.get("values", []) if v is not None]
            win = row["trial"] == choice.get("trial")
            ax.scatter(i - 0.12 + rng.uniform(-0.05, 0.05, len(seeds)), seeds, s=14, color="#999999", zorder=2)
            ax.errorbar(i, row["mean"], yerr=row["sd"], fmt="o", color="#3182bd", ms=7, capsize=5, lw=1.6, zorder=3)
            ax.scatter(i + 0.16, row["original"], marker="D", s=40, facecolors="none", edgecolors=BEST,
                       linewidths=1.3, zorder=3)
            if win:
                ax.axvspan(i - 0.45, i + 0.45, color=STAR, alpha=0.18, lw=0)
        ax.set_xticks(range(len(table)), [
            f"#{row['trial']}\n" + "\n".join(f"{_short_name(n)} {_fmt(row['params'].get(n))}" for n in names
                                             if n in row.get("params", {}))
            for row in table], fontsize=7.5)
        ax.set_xlim(-0.6, len(table) - 0.4)
        ax.grid(False, axis="x")
        handles = [Line2D([], [], ls="", marker="o", color="#999999", ms=4, label="each seed"),
                   Line2D([], [], marker="o", color="#3182bd", label="mean ± sd"),
                   Line2D([], [], ls="", marker="D", mfc="none", mec=BEST, label="single run in the search"),
                   Patch(color=STAR, alpha=0.3, label="confirmed choice")]
        ax.legend(handles=handles, loc="best")
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"{view.name}: confirmed over {choice.get('seeds')} seeds — choice #{choice.get('trial')}, "
                     f"mean {choice.get('mean', float('nan')):.3f} ± {choice.get('sd', float('nan')):.3f}",
                     loc="left", fontweight="bold")
    return fig


# ---------------------------------------------------------------------------------------
# race


@figure(
    "race",
    title="a raced study's evidence: each configuration's mean ± standard error against its runs",
    caption="The race: each configuration's mean validation accuracy over the folds it ran, ± its standard "
    "error, against how many runs it earned; stopped runs are grey crosses at the accuracy they had "
    "reached; the star is the choice, the best mean among the most-evaluated.")
def plot_race(study: optuna.Study) -> Figure:
    """A raced study's evidence: each configuration's mean ± standard error against its runs."""
    _mpl()
    from matplotlib.lines import Line2D

    from hpo._racing import RaceSettings, configurations, incumbent

    view = _view(study)
    if not view.spec.objective.raced:
        raise StudyError(f"study '{view.name}' is not raced ([objective] method = \"{view.spec.objective.method}\")")
    settings = RaceSettings.of(view.spec)
    configs = configurations(view.trials())
    choice = incumbent(configs, settings)
    if choice is None:
        raise StudyError(f"study '{view.name}' has no complete run yet (run it with `hpo study run {view.name}`)")
    rng = np.random.default_rng(0)
    with _style():
        fig = _figure(6.4, 4.4)
        ax = fig.add_subplot()
        ax.set_label("race")
        raced = [c for c in configs if c.runs and not c.out]
        x = np.array([c.runs for c in raced], dtype=float) + rng.uniform(-0.15, 0.15, len(raced))
        se = np.array([c.se if math.isfinite(c.se) else 0.0 for c in raced])
        ax.errorbar(x, [c.mean for c in raced], yerr=se, fmt="o", color="#3182bd", ms=4, capsize=3, lw=1,
                    alpha=0.8, zorder=2)
        stopped = [c for c in configs if c.out]
        if stopped:
            ax.scatter(np.array([c.runs + 1 for c in stopped]) + rng.uniform(-0.15, 0.15, len(stopped)),
                       [c.stopped for c in stopped], marker="x", s=18, color="#999999", zorder=1)
        ax.errorbar([choice.runs], [choice.mean], yerr=[choice.se if math.isfinite(choice.se) else 0.0], fmt="*",
                    color=STAR, mec="black", ms=14, capsize=5, lw=1.6, zorder=3)
        ax.set_xticks(range(1, settings.max_runs + 1))
        ax.set_xlim(0.5, settings.max_runs + 0.5)
        ax.set_xlabel(f"runs (folds of {settings.folds}" + (f", x {settings.repeats} repeats" if settings.repeats > 1
                                                            else "") + ")")
        ax.set_ylabel("mean validation accuracy")
        handles = [Line2D([], [], marker="o", color="#3182bd", label="configuration: mean ± standard error"),
                   Line2D([], [], ls="", marker="x", color="#999999", label="stopped run (accuracy reached)"),
                   Line2D([], [], ls="", marker="*", color=STAR, mec="black", ms=10, label="the choice")]
        ax.legend(handles=handles, loc="lower right")
        se_text = f" ± {choice.se:.3f}" if math.isfinite(choice.se) else ""
        ax.set_title(f"{view.name}: {len(configs)} configurations raced — choice #{choice.number}, "
                     f"{choice.mean:.3f}{se_text} over {choice.runs} runs", loc="left", fontweight="bold")
    return fig


# ---------------------------------------------------------------------------------------
# Rendering and saving


KINDS = tuple(FIGURES)  # every kind declared above, in their order


def drawer(kind: str) -> Callable[..., Figure]:
    """The function that draws a kind, as its `@figure` declares it."""
    if kind not in FIGURES:
        raise StudyError(f"unknown figure kind '{kind}'; known: {', '.join(KINDS)}")
    return FIGURES[kind].draw


def render(study: optuna.Study, kind: str, top: int | None = None) -> Figure:
    """One figure by kind; `top` is the best-K of the kinds that take one (ranges, curves)."""
    draw = drawer(kind)
    if FIGURES[kind].takes_top and top:
        return draw(study, top=top)
    return draw(study)


def save(fig: Figure, path: Path, dpi: int = 90) -> Path:
    """Write `fig` as the PNG `path`, whole or not at all (OutputError of one line)."""
    with replacing(path, "the figure") as temporary:
        fig.savefig(temporary, dpi=dpi, format="png")
    return path


def panels(fig: Figure) -> list[str]:
    """The labels of a figure's panels (colorbars and unlabelled helper axes left out)."""
    return [ax.get_label() for ax in fig.axes if ax.get_label() and not ax.get_label().startswith("<")]


@dataclass(frozen=True)
class Rendered:
    kind: str
    path: Path | None
    skipped: str | None = None  # why the kind does not apply to this study


def render_all(study: optuna.Study, out: Path, kinds: tuple[str, ...] = KINDS, top: int | None = None,
               dpi: int = 90) -> list[Rendered]:
    """Write each kind as OUT/KIND.png; a kind that does not apply is skipped with its reason.

    OUT is the target: a folder, created when missing; anything else there is an OutputError.
    """
    check_folder(out)
    made = [folder for folder in (out, *out.parents) if not folder.exists()]  # deepest first
    done = []
    try:
        for kind in kinds:
            try:
                fig = render(study, kind, top=top)
            except StudyError as exc:
                if len(kinds) == 1:
                    raise
                done.append(Rendered(kind, None, str(exc)))
                continue
            done.append(Rendered(kind, save(fig, out / f"{kind}.png", dpi)))
    except BaseException:
        for folder in made:  # a failure leaves no empty folder of ours behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return done
