"""`hpo study create | run | list | show | best | confirm | fail-stale | delete`.

The root (`hpo.cli`) mounts this group's commands, with those of `_analysis` and `_transfer`, as `hpo study`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hpo import _study
from hpo._confirm import confirm as run_confirm
from hpo._confirm import confirmed_choice
from hpo._errors import StudyError
from hpo._spec import load_spec
from hpo._storage import Heartbeat, mask_url, resolve_url
from hpo._workers import run_workers
from hpo.cli._common import JsonOption, NameArg, StorageOption, fmt, group, hint, print_json, print_table

app = group()


@app.command()
def create(
    spec: Annotated[Path, typer.Argument(help="The study spec (TOML), e.g. studies/quickstart.toml.")],
    name: Annotated[str | None, typer.Option(help="Name the study (default: [study] name).")] = None,
    storage: StorageOption = None,
) -> None:
    """Validate a spec and create its study; the study keeps the whole spec."""
    url = resolve_url(storage)
    handle = _study.create(load_spec(spec), url, name)
    typer.echo(f"Created study '{handle.name}' in {mask_url(url)} "
               f"(target {handle.spec.trials} trials). Run it with: {hint('study run', handle.name, storage=storage)}")


@app.command()
def run(
    name: NameArg,
    trials: Annotated[int | None, typer.Option(
        min=1,
        help="The study's total target of finished trials (complete + pruned); "
        "trials already finished count. Default: the spec's [study] trials.")] = None,
    timeout: Annotated[float | None, typer.Option(
        min=0, help="Start no new trial after this many seconds.")] = None,
    storage: StorageOption = None,
    heartbeat_interval: Annotated[int, typer.Option(
        min=1, envvar="HPO_HEARTBEAT_INTERVAL",
        help="Seconds between heartbeats of a running trial.")] = 10,
    grace_period: Annotated[int, typer.Option(
        min=1, envvar="HPO_GRACE_PERIOD",
        help="Seconds without heartbeat after which a RUNNING trial counts as dead: "
        "it is failed and retried once with the same parameters.")] = 30,
    workers: Annotated[int, typer.Option(
        min=1, help="Worker processes on this machine (each with one BLAS thread).")] = 1,
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the data files.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Run the study until it holds the target of finished trials (resumes where it stopped)."""
    url = resolve_url(storage)
    heartbeat = Heartbeat(heartbeat_interval, grace_period)
    handle = _study.open_study(name, url, heartbeat)
    display = None if quiet else ProgressDisplay()
    folder = str(data_dir) if data_dir else None
    if workers > 1:
        result = run_workers(handle, workers, target=trials, timeout=timeout, heartbeat=heartbeat,
                             data_dir=folder, on_progress=display)
    else:
        result = _study.run(handle, target=trials, timeout=timeout, on_progress=display, data_dir=folder)
    if display:
        display.close()
    best = result.best
    best_text = f"best {fmt(best.value)} (trial {best.number})" if best else "no complete trial yet"
    state = "target reached" if result.reached_target else "stopped before the target (timeout)"
    typer.echo(f"{name}: {result.finished}/{result.target} finished, {result.ran} run now, "
               f"{state}; {best_text}")
    if not result.reached_target:
        target = ("--trials", str(trials)) if trials is not None else ()
        typer.echo(f"Continue with: {hint('study run', name, options=target, storage=storage)}")


class ProgressDisplay:
    """done/target, best so far and time left on stderr; redrawn in place on a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown = False
        self.last_done = -1

    def __call__(self, progress: _study.Progress) -> None:
        width = 24
        filled = int(width * min(progress.done / max(progress.target, 1), 1))
        bar = "#" * filled + "." * (width - filled)
        best = f"best {fmt(progress.best.value)} (#{progress.best.number})" if progress.best else "best -"
        left = progress.seconds_left
        eta = f"~{_clock(left)} left" if left is not None else ""
        wait = f"waiting for {progress.waiting_for} running elsewhere" if progress.waiting_for else ""
        line = f"[{bar}] {progress.done}/{progress.target}  {best}  {_clock(progress.elapsed)} {eta} {wait}"
        if self.tty:
            sys.stderr.write("\r" + line.ljust(100))
        elif progress.done != self.last_done:
            sys.stderr.write(line.rstrip() + "\n")
        self.last_done = progress.done
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.tty and self.shown:
            sys.stderr.write("\n")


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


@app.command("list")
def list_(storage: StorageOption = None, json_: JsonOption = False) -> None:
    """The studies in the storage, with their progress, best value and lineage."""
    url = resolve_url(storage)
    rows = _study.list_studies(url)
    if json_:
        print_json([row.__dict__ for row in rows])
        return
    if not rows:
        typer.echo(f"No studies in {mask_url(url)}. Create one with: {hint('study create', 'SPEC', storage=storage)}")
        return
    print_table(
        ["name", "data", "finished", "complete", "pruned", "failed", "running", "best", "parent"],
        [[r.name, r.dataset, r.finished, r.counts["COMPLETE"], r.counts["PRUNED"], r.counts["FAIL"],
          r.counts["RUNNING"], r.best_value, r.parent or "-"] for r in rows])


@app.command()
def show(
    name: NameArg,
    top: Annotated[int, typer.Option("--top", "-k", min=1, help="How many best trials.")] = 10,
    storage: StorageOption = None,
    json_: JsonOption = False,
) -> None:
    """The best trials as a table: Best-1 … Best-K with value, parameters, epochs, state."""
    url = resolve_url(storage)
    handle = _study.open_study(name, url, Heartbeat(interval=None))
    counts = _study.count_states(handle.study)
    best = _study.ranked(handle.study)[:top]
    lineage = handle.study.user_attrs.get(_study.LINEAGE_ATTR)
    if json_:
        print_json({"name": name, "counts": counts, "lineage": lineage,
                    "spec": handle.spec.to_dict(),
                    "best": [_study.trial_summary(t) for t in best]})
        return
    spec = handle.spec
    typer.echo(f"Study '{name}' in {mask_url(url)}: data {spec.data.dataset}"
               f" ({spec.data.samples or 'all'} samples, {spec.data.validation_fraction:g} validation),"
               f" {spec.epochs} epochs, target {spec.trials}")
    typer.echo("Trials: " + ", ".join(f"{n.lower()} {c}" for n, c in counts.items() if c))
    if lineage:
        typer.echo(f"Narrowed from '{lineage.get('parent')}' ({lineage.get('rule')}, {lineage.get('date')})")
    if not best:
        typer.echo("No complete trial yet.")
        return
    names = [p.name for p in spec.search]
    print_table(
        ["rank", "trial", "value", *names, "epochs", "phase", "state"],
        [[f"Best-{i}", t.number, t.value, *[t.params.get(n) for n in names],
          t.user_attrs.get("epochs"), t.user_attrs.get("phase", "-"), t.state.name.lower()]
         for i, t in enumerate(best, 1)])


@app.command()
def best(name: NameArg, storage: StorageOption = None, json_: JsonOption = False) -> None:
    """The best configuration: the confirmed one if `confirm` has run, else the best single trial."""
    url = resolve_url(storage)
    handle = _study.open_study(name, url, Heartbeat(interval=None))
    trial = _study.best_trial(handle.study)
    if trial is None:
        raise StudyError(f"study '{name}' has no complete trial yet; "
                         f"run it with `{hint('study run', name, storage=storage)}`")
    confirmed = confirmed_choice(handle.study)
    if confirmed:
        trial = handle.study.trials[confirmed["trial"]]
    summary = _study.trial_summary(trial)
    summary["source"] = "confirmed" if confirmed else "single run"
    if confirmed:
        summary["confirmed"] = {k: confirmed[k] for k in ("mean", "sd", "seeds", "top", "date")}
    if json_:
        print_json(summary)
        return
    if confirmed:
        typer.echo(f"Confirmed best of '{name}': #{trial.number}, mean validation accuracy "
                   f"{fmt(confirmed['mean'])} ± {fmt(confirmed['sd'])} over {confirmed['seeds']} seeds "
                   f"(single run {fmt(trial.value)})")
    else:
        typer.echo(f"Best trial of '{name}': #{trial.number}, validation accuracy {fmt(trial.value)} "
                   f"(a single run; `{hint('study confirm', name, storage=storage)}` re-checks the best over seeds)")
    for key, value in trial.params.items():
        typer.echo(f"  {key} = {fmt(value, 6)}")


@app.command()
def confirm(
    name: NameArg,
    top: Annotated[int, typer.Option("--top", "-k", min=1,
                                     help="How many best distinct configurations to re-check.")] = 5,
    seeds: Annotated[int, typer.Option(min=1, help="Training runs per configuration.")] = 5,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    storage: StorageOption = None,
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the data files.")] = None,
    json_: JsonOption = False,
) -> None:
    """Retrain the best configurations with fresh seeds and rank them by mean validation accuracy."""
    url = resolve_url(storage)
    handle = _study.open_study(name, url)
    display = None if json_ else ProgressDisplay()
    results = run_confirm(handle, top=top, seeds=seeds, workers=workers,
                          data_dir=str(data_dir) if data_dir else None, on_progress=display)
    if display:
        display.close()
    if json_:
        print_json([r.as_dict() for r in results])
        return
    names = [p.name for p in handle.spec.search]
    print_table(
        ["rank", "trial", "original", "mean", "sd", "min", "max", "above mean", "diverged", *names],
        [[i, r.trial, r.original, r.mean, r.sd, min(r.values, default=None), max(r.values, default=None),
          r.gap, r.diverged, *[r.params.get(n) for n in names]] for i, r in enumerate(results, 1)])
    typer.echo(f"Confirmed choice: trial {results[0].trial} (mean {fmt(results[0].mean)} over {seeds} seeds); "
               "`hpo study best` and `evaluate` now use it.")


@app.command("fail-stale")
def fail_stale(
    name: NameArg,
    grace_period: Annotated[int, typer.Option(
        min=1, envvar="HPO_GRACE_PERIOD",
        help="Seconds without heartbeat after which a RUNNING trial counts as dead.")] = 30,
    storage: StorageOption = None,
) -> None:
    """Fail the RUNNING trials whose worker stopped sending heartbeats; each is retried once."""
    url = resolve_url(storage)
    handle = _study.open_study(name, url, Heartbeat(grace_period=grace_period))
    failed, retried = _study.fail_stale(handle)
    if not failed:
        typer.echo(f"No stale trials in '{name}' (grace period {grace_period} s).")
        return
    typer.echo(f"Failed {len(failed)} stale trial(s) of '{name}': {', '.join(map(str, failed))}; "
               f"{len(retried)} queued again with the same parameters.")


@app.command()
def delete(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm the deletion.")] = False,
    storage: StorageOption = None,
) -> None:
    """Delete a study and all its trials (needs --yes)."""
    url = resolve_url(storage)
    if not yes:
        raise typer.BadParameter(f"deleting study '{name}' cannot be undone; add --yes to confirm",
                                 param_hint="--yes")
    n = _study.delete(name, url)
    typer.echo(f"Deleted study '{name}' and its {n} trials from {mask_url(url)}.")
