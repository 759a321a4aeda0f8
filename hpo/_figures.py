"""The figures a study can draw, declared once.

Each kind names its drawing function in `hpo/_plots.py` as a string, looked up only when a figure
is drawn: the command line lists the kinds without importing matplotlib. The plots read the
drawer from here, the report its caption, the command line its title.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class FigureKind:
    """One figure a study can draw.

    Attributes:
        name: what `hpo study plot --kind` takes; also the PNG's file stem.
        title: one line for people (help texts, listings).
        caption: the figure's caption in the HTML report.
        drawer: the name of the function in `hpo/_plots.py` that draws it; it takes the study
            and returns a Figure.
        takes_top: the drawer takes the best-K (`top=`) of `hpo study plot --top`.
    """

    name: str
    title: str
    caption: str
    drawer: str
    takes_top: bool = False


FIGURES = MappingProxyType({kind.name: kind for kind in (
    FigureKind(
        "ranges",
        "where the best trials lie, the narrowed box over the old range (the signature figure)",
        "Where the best trials lie. Each dot is a complete trial coloured by validation accuracy; red rings "
        "mark the best ones; the dashed box is the range searched, the orange box the narrowed range, a "
        "dotted box the range `--widen` would search where the best crowd an edge.",
        "plot_ranges", takes_top=True),
    FigureKind(
        "curves",
        "learning curves of the best trials, validation solid and train dashed",
        "Learning curves of the best trials (validation solid, train dashed), titled Best-k with their "
        "final validation accuracy.",
        "plot_curves", takes_top=True),
    FigureKind(
        "history",
        "best so far against trial number, random / TPE / warm-start phases marked",
        "Validation accuracy of each finished trial in order, with the best so far; the random phase on "
        "log scales and the TPE phase are coloured apart.",
        "plot_history"),
    FigureKind(
        "importance",
        "PED-ANOVA parameter importances, the dashboard's method (Optuna's own plot)",
        "How much each parameter decides whether a trial reaches the best validation accuracies "
        "(PED-ANOVA, the method the Optuna dashboard shows, so both give the same numbers).",
        "plot_importance"),
    FigureKind(
        "optimizers",
        "validation accuracy by optimizer choice",
        "Validation accuracy by optimizer choice.",
        "plot_optimizers"),
    FigureKind(
        "intermediate",
        "per-epoch validation accuracy of every trial, pruned ones visible",
        "Validation accuracy per epoch of every trial; pruned trials end in an x.",
        "plot_intermediate"),
    FigureKind(
        "confirm",
        "the confirmed configurations: mean and spread over seeds beside the single run",
        "The best configurations retrained with fresh seeds: each seed, mean ± sd, and the single run "
        "that made them look best in the search.",
        "plot_confirm"),
    FigureKind(
        "race",
        "a raced study's evidence: each configuration's mean ± standard error against its runs",
        "The race: each configuration's mean validation accuracy over the folds it ran, ± its standard "
        "error, against how many runs it earned; stopped runs are grey crosses at the accuracy they had "
        "reached; the star is the choice, the best mean among the most-evaluated.",
        "plot_race"),
)})

KINDS = tuple(FIGURES)

