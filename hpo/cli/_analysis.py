"""`hpo study narrow | plot | evaluate | report`: what to search next, the figures, the one final test.

The root (`hpo.cli`) mounts this group's commands under `hpo study`.
"""

from __future__ import annotations

import enum
import math
from pathlib import Path
from typing import Annotated

import typer

from hpo import _study
from hpo._errors import StudyError
from hpo._evaluate import DEFAULT_SEEDS, check_first, choose
from hpo._evaluate import evaluate as run_evaluate
from hpo._child import create_child, narrow_study, warm_start_trials
from hpo._narrow import DEFAULT_MARGIN, Narrowing, describe
from hpo._plots import KINDS, render_all  # matplotlib is imported only when a figure is drawn
from hpo._files import check_folder, check_target, safe_stem
from hpo._storage import Heartbeat, mask_url, resolve_url
from hpo.cli._common import JsonOption, NameArg, StorageOption, fmt, group, hint, print_json, print_table

app = group()

Kind = enum.Enum("Kind", {k: k for k in (*KINDS, "all")}, type=str)  # type: ignore[misc]


@app.command()
def narrow(
    name: NameArg,
    top: Annotated[int | None, typer.Option(
        "--top", "-k", min=2, help="Narrow to the best K complete trials (a range needs two).")] = None,
    quantile: Annotated[float | None, typer.Option(
        min=0, max=1, help="Or to the best share of them, in (0, 1]. Default: 0.2.")] = None,
    margin: Annotated[float, typer.Option(
        min=0, max=1, help="Widen each range by this fraction of its span (log10 for log parameters).")
    ] = DEFAULT_MARGIN,
    into: Annotated[str | None, typer.Option(
        "--into", help="Create a child study CHILD searching the new ranges, warm-started with the "
        "parent's trials inside them.")] = None,
    trials: Annotated[int | None, typer.Option(
        min=1, help="With --into: new trials for the child beyond its warm start "
        "(default: the parent's [study] trials).")] = None,
    widen: Annotated[bool, typer.Option(
        "--widen", help="Where the best trials crowd an edge of the old range, search past it "
        "(a decade for log parameters, one span for linear ones) instead of narrowing that side.")] = False,
    storage: StorageOption = None,
    json_: JsonOption = False,
) -> None:
    """Narrow the search ranges to where the best trials lie (and start a child study there)."""
    if quantile is not None and top is not None:
        raise typer.BadParameter("give --top or --quantile, not both", param_hint="--quantile")
    if trials is not None and into is None:
        raise typer.BadParameter("--trials sets the child's trials; add --into CHILD", param_hint="--trials")
    url = resolve_url(storage)
    handle = _study.open_study(name, url, Heartbeat(interval=None))
    narrowing = narrow_study(handle, top=top, quantile=quantile, margin=margin)
    if widen and not narrowing.can_widen:
        typer.echo("Note: no parameter crowds an edge of its range; --widen changes nothing.", err=True)
        widen = False
    child = create_child(handle, narrowing, into, trials=trials, widen=widen) if into else None
    warm = child.warm_start if child else len(warm_start_trials(handle, narrowing, widen))
    if json_:
        print_json({"study": name, "rule": narrowing.rule, "best_trials": list(narrowing.best),
                    "ranges": narrowing.ranges(widen), "warm_start": warm,
                    "child": child.handle.name if child else None,
                    "target": child.handle.spec.trials if child else None})
        return
    _print_narrowing(handle, narrowing, widen, storage)
    if child:
        typer.echo(f"\nCreated study '{child.handle.name}' in {mask_url(url)}: the new ranges, warm-started with "
                   f"{child.warm_start} of the parent's finished trials inside them; target "
                   f"{child.handle.spec.trials} ({child.warm_start} + {child.new_trials} new).")
        typer.echo(f"Run it with: {hint('study run', child.handle.name, storage=storage)}")
    else:
        options = [*_flags(top, quantile, margin), *(["--widen"] if widen else []), "--into", f"{name}-narrow"]
        typer.echo(f"\n{warm} of the parent's finished trials lie inside the new ranges. "
                   f"Search them with: {hint('study narrow', name, options=options, storage=storage)}")


def _flags(top: int | None, quantile: float | None, margin: float) -> list[str]:
    """The options that repeat a narrowing rule: --top or --quantile, and --margin when not the default."""
    words = ["--top", str(top)] if top else (["--quantile", f"{quantile:g}"] if quantile else [])
    return words + (["--margin", f"{margin:g}"] if margin != DEFAULT_MARGIN else [])


def _print_narrowing(handle: _study.StudyHandle, narrowing: Narrowing, widen: bool, storage: str | None) -> None:
    typer.echo(f"Narrowing '{handle.name}': {narrowing.rule}")
    rows = []
    for p in narrowing.params:
        new = p.target(widen)
        where = _where(p)
        edge = "/".join(f"{'upper' if s == 'high' else 'lower'} edge" for s in p.crowded) or "-"
        rows.append([p.name, describe(p.old), describe(new), where, edge])
    print_table(["parameter", "old", "new", f"where the best {len(narrowing.best)} fell", "crowded"], rows)
    for p in narrowing.crowded:
        for side in p.crowded:
            edge = getattr(p.old, side)
            extreme = max(p.values) if side == "high" else min(p.values)
            typer.echo(f"\n{p.name}: the best trials crowd the {'upper' if side == 'high' else 'lower'} edge of "
                       f"the old range ({fmt(extreme)} against {fmt(edge)}); the optimum may lie beyond it.")
        if p.widened is None:
            typer.echo(f"  No wider {p.name} is valid for the trainer, so that side stays at the edge.")
    if narrowing.can_widen and not widen:
        wider = ", ".join(f"{p.name} {describe(p.widened)}" for p in narrowing.params if p.widened is not None)
        options = [*_flags(narrowing.top, narrowing.quantile, narrowing.margin),
                   "--widen", "--into", f"{handle.name}-wide"]
        typer.echo(f"  Widen instead ({wider}):\n"
                   f"  {hint('study narrow', handle.name, options=options, storage=storage)}")


def _where(p) -> str:
    """How many best trials fell in each part of the old range: `0 · 0 · 1 · 5 per decade`."""
    if p.old.kind == "categorical" or all(low == high for low, high, _ in p.bins):
        return " · ".join(f"{low} {count}" for low, _, count in p.bins)
    decades = p.old.log and len(p.bins) == round(math.log10(p.old.high / p.old.low))
    return " · ".join(str(count) for _, _, count in p.bins) + (" per decade" if decades else " per fifth")


@app.command()
def plot(
    name: NameArg,
    kind: Annotated[Kind, typer.Option(help="Which figure; `all` writes every one that applies.")] = Kind.all,
    out: Annotated[Path | None, typer.Option(help=(
        "Folder for the PNG files (created when missing; each KIND.png in it is replaced whole). "
        "Default: figures/NAME in the current folder, NAME made a safe file name."))] = None,
    top: Annotated[int | None, typer.Option("--top", "-k", min=2,
                                            help="Best K for the ranges and curves figures.")] = None,
    dpi: Annotated[int, typer.Option(min=1, help="Resolution of the PNG files.")] = 90,
    storage: StorageOption = None,
    json_: JsonOption = False,
) -> None:
    """Draw the study's figures as PNG files (ranges, curves, history, importance, optimizers, …)."""
    # A name may come from someone else's file (import keeps it): never a path of its own.
    folder = check_folder(out) if out is not None else check_folder(Path("figures") / safe_stem(name), "the folder")
    handle = _study.open_study(name, resolve_url(storage), Heartbeat(interval=None))
    kinds = KINDS if kind.value == "all" else (kind.value,)
    rendered = render_all(handle.study, folder, kinds, top=top, dpi=dpi)
    if not any(done.path for done in rendered):
        raise StudyError(f"no figure applies to study '{name}' yet: {rendered[0].skipped}")
    if json_:
        print_json({"study": name, "folder": str(folder),
                    "figures": [{"kind": d.kind, "file": str(d.path) if d.path else None, "skipped": d.skipped}
                                for d in rendered]})
        return
    for done in rendered:
        if done.path:
            typer.echo(f"{done.kind}: {done.path}")
        else:
            typer.echo(f"{done.kind}: skipped ({done.skipped})")


@app.command()
def evaluate(
    name: NameArg,
    seeds: Annotated[int, typer.Option(min=1, help="Training runs with different seeds.")] = DEFAULT_SEEDS,
    force: Annotated[bool, typer.Option(
        "--force", help="Evaluate again although the study was evaluated before (recorded as forced).")] = False,
    storage: StorageOption = None,
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the data files.")] = None,
    json_: JsonOption = False,
) -> None:
    """The final test, once: retrain the best configuration on train + validation, score it on the test split."""
    handle = _study.open_study(name, resolve_url(storage), Heartbeat(interval=None))
    check_first(handle, force)
    choice = choose(handle)
    if not json_:
        typer.echo(f"Evaluating {choice.detail}.")
        typer.echo(f"Retraining on train + validation with {seeds} seed(s), then one look at the test split …")

    def progress(index: int, run: dict) -> None:
        if not json_:
            typer.echo(f"  seed {index + 1}/{seeds} ({run['seed']}): test accuracy {fmt(run['accuracy'])}"
                       + (f" ({run['outcome']})" if run["outcome"] != "completed" else ""))

    result = run_evaluate(handle, seeds=seeds, force=force, data_dir=str(data_dir) if data_dir else None,
                          on_seed=progress)
    if json_:
        print_json(result)
        return
    forced = " (forced: the study was evaluated before; earlier results are kept)" if result["forced"] else ""
    typer.echo(f"Test accuracy of '{name}': {fmt(result['mean'])} ± {fmt(result['std'])} over {seeds} seed(s) "
               f"(trial {result['trial']}, {result['source']}; validation {fmt(result['validation'])}; "
               f"{result['n_train']} training and {result['n_test']} test samples){forced}.")


@app.command()
def report(
    name: NameArg,
    out: Annotated[Path | None, typer.Option(help=(
        "The HTML file (a new or regular file, replaced whole). Default: NAME-report.html in the current "
        "folder, NAME made a safe file name."))] = None,
    top: Annotated[int | None, typer.Option("--top", "-k", min=2,
                                            help="Best K for the narrowing and the figures.")] = None,
    storage: StorageOption = None,
    json_: JsonOption = False,
) -> None:
    """One self-contained HTML page: spec, lineage, best trials, narrowed ranges, figures, test result."""
    path = check_target(out) if out is not None else check_target(Path(f"{safe_stem(name)}-report.html"), "the file")
    handle = _study.open_study(name, resolve_url(storage), Heartbeat(interval=None))
    from hpo._report import write as write_report

    size = write_report(handle, path, top=top)
    if json_:
        print_json({"study": name, "file": str(path), "bytes": size})
        return
    typer.echo(f"Wrote {path} ({size / 1024:.0f} KB).")
