"""`hpo study create | run | list | show | best | confirm | fail-stale | delete`.

The root (`hpo.cli`) mounts this group's commands, with those of `_analysis` and `_transfer`, as `hpo study`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import optuna
import typer

from hpo import _racing, _study
from hpo._confirm import confirm as run_confirm
from hpo._evaluate import best_summary
from hpo._errors import Interrupted, StudyError
from hpo._format import fmt
from hpo._spec import load_spec
from hpo._storage import GRACE_PERIOD, HEARTBEAT_INTERVAL, Heartbeat, StorageURL, mask_url, resolve_storage, resolve_url
from hpo._workers import EVENTS_OPTION, die_with_parent, event_line, run_workers
from hpo.cli._common import JsonOption, NameArg, StorageOption, group, hint, print_json, print_table
from hpo.cli._console import RunConsole

app = group()

INTERVAL_ENV = "HPO_HEARTBEAT_INTERVAL"
GRACE_ENV = "HPO_GRACE_PERIOD"
HeartbeatIntervalOption = Annotated[int | None, typer.Option(
    min=1, metavar="SECONDS",
    help=f"Seconds between heartbeats of a running trial; stored in the study, so that every worker "
    f"on every machine uses the same. Default: ${INTERVAL_ENV}, else {HEARTBEAT_INTERVAL}.")]
GracePeriodOption = Annotated[int | None, typer.Option(
    min=1, metavar="SECONDS",
    help=f"Seconds without a heartbeat after which a RUNNING trial counts as dead (failed, and "
    f"retried once with the same parameters); at least twice the interval; stored in the study. "
    f"Default: ${GRACE_ENV}, else {GRACE_PERIOD}.")]


def _new_heartbeat(interval: int | None, grace_period: int | None) -> Heartbeat:
    """A new study's heartbeat settings: the flags, else the environment, else the defaults."""
    try:
        interval = interval or int(os.environ.get(INTERVAL_ENV) or HEARTBEAT_INTERVAL)
        grace_period = grace_period or int(os.environ.get(GRACE_ENV) or GRACE_PERIOD)
    except ValueError:
        raise StudyError(f"${INTERVAL_ENV} and ${GRACE_ENV} must be whole numbers of seconds") from None
    return _study.check_heartbeat(Heartbeat(interval, grace_period))


def _result(handle: _study.StudyHandle, target: int, counts: dict[str, int], ran: int | None = None,
            reached: bool | None = None) -> dict[str, Any]:
    """What `create --json` and `run --json` print: the study's state as a result object."""
    best = _study.best_trial(handle.study)
    finished = _study.finished_count(counts)
    result = {"name": handle.name, "storage": handle.storage_url.masked, "target": target,
              "finished": finished, "counts": counts,
              "best": _study.trial_summary(best) if best else None}
    if ran is not None:
        result.update(ran=ran, reached_target=reached)
    return result


@app.command()
def create(
    spec: Annotated[Path, typer.Argument(help="The study spec (TOML), e.g. studies/quickstart.toml.")],
    name: Annotated[str | None, typer.Option(help="Name the study (default: [study] name).")] = None,
    storage: StorageOption = None,
    heartbeat_interval: HeartbeatIntervalOption = None,
    grace_period: GracePeriodOption = None,
    json_: JsonOption = False,
) -> None:
    """Validate a spec and create its study; the study keeps the whole spec and its heartbeat settings."""
    url = resolve_storage(storage)
    heartbeat = _new_heartbeat(heartbeat_interval, grace_period)
    handle = _study.create(load_spec(spec), url, name, heartbeat=heartbeat)
    if json_:
        print_json(_result(handle, handle.spec.trials, _study.count_states(handle.study)))
        return
    spec = handle.spec
    target = (f"raced, budget {spec.trials} trials x {spec.epochs} = {spec.trials * spec.epochs} epochs"
              if spec.objective.raced else f"target {spec.trials} trials")
    typer.echo(f"Created study '{handle.name}' in {url.masked} ({target}). "
               f"Run it with: {hint('study run', handle.name, storage=storage)}")


@app.command()
def run(
    name: Annotated[str, typer.Argument(
        metavar="NAME|SPEC",
        help="The study's name; or a spec file (.toml), whose study is created first when the storage "
        "does not hold it yet, and run as it is when it holds the same spec.")],
    trials: Annotated[int | None, typer.Option(
        min=1,
        help="The study's total target of finished trials (complete + pruned); "
        "trials already finished count. A raced study: a budget of this many trials' epochs "
        "(trials x epochs, every epoch of every run counted). It becomes the study's current target (`show` says it). "
        "Default: the current target, at first the spec's [study] trials.")] = None,
    timeout: Annotated[float | None, typer.Option(
        min=0, help="Start no new trial after this many seconds.")] = None,
    storage: StorageOption = None,
    study_name: Annotated[str | None, typer.Option(
        "--name", help="With a spec file: the study's name (default: the file's [study] name).")] = None,
    heartbeat_interval: Annotated[int | None, typer.Option(
        min=1, metavar="SECONDS",
        help="With a spec file whose study is created now: as for `create`. The setting is the "
        "study's: for an existing study it is refused.")] = None,
    grace_period: Annotated[int | None, typer.Option(
        min=1, metavar="SECONDS",
        help="With a spec file whose study is created now: as for `create`; refused otherwise.")] = None,
    workers: Annotated[int, typer.Option(
        min=1, help="Worker processes on this machine (each with one BLAS thread). They stop with "
        "this process, however it ends; `run` again resumes.")] = 1,
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the data files.")] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="One line per finished trial (number, state, value, parameters, "
        "seconds) above the progress line, and Optuna's own log.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the final line.")] = False,
    json_: Annotated[bool, typer.Option(
        "--json", help="No progress; print the result as JSON (name, storage, target, finished, "
        "counts, best).")] = False,
    events: Annotated[bool, typer.Option(EVENTS_OPTION, hidden=True)] = False,
) -> None:
    """Run the study until it holds the target of finished trials (resumes where it stopped).

    Ctrl-C or SIGTERM records the running trials as failed and exits (130, 143); run again to go on.
    """
    if events:  # a worker of `run_workers`
        die_with_parent()
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    url = resolve_storage(storage)
    if name.endswith(".toml") and Path(name).is_file():
        handle = _from_file(Path(name), url, study_name, storage, heartbeat_interval, grace_period)
    else:
        if study_name:
            raise StudyError(f"--name is for a spec file; to run study '{name}': "
                             f"{hint('study run', name, storage=storage)}")
        handle = _study.open_study(name, url)
        if heartbeat_interval or grace_period:
            raise StudyError(_heartbeat_refusal(handle, storage))
    if events:
        display = _EventPrinter()
    elif quiet or json_:
        display = None
    else:
        display = RunConsole(verbose=verbose)
    folder = str(data_dir) if data_dir else None
    try:
        if workers > 1:
            result = run_workers(handle, workers, target=trials, timeout=timeout, data_dir=folder,
                                 on_progress=display)
        else:
            result = _study.run(handle, target=trials, timeout=timeout, on_progress=display, data_dir=folder)
    except Interrupted as exc:
        target = ("--trials", str(trials)) if trials is not None else ()
        raise Interrupted(f"{exc}; {hint('study run', handle.name, options=target, storage=storage)} "
                          "continues the study", exc.signum) from None
    finally:
        if isinstance(display, RunConsole):
            display.close()
    if handle.spec.objective.raced:
        _race_result(handle, result, json_, trials, storage)
        return
    if json_:
        print_json(_result(handle, result.target, result.counts, result.ran, result.reached_target))
        return
    best = result.best
    best_text = f"best {fmt(best.value)} (trial {best.number})" if best else "no complete trial yet"
    state = "target reached" if result.reached_target else "stopped before the target (timeout)"
    typer.echo(f"{handle.name}: {result.finished}/{result.target} finished, {result.ran} run now, "
               f"{state}; {best_text}")
    if not result.reached_target:
        target = ("--trials", str(trials)) if trials is not None else ()
        typer.echo(f"Continue with: {hint('study run', handle.name, options=target, storage=storage)}")


def _race_result(handle: _study.StudyHandle, result: _study.RunResult, json_: bool, trials: int | None,
                 storage: str | None) -> None:
    """A raced study's run, said in epochs of its budget, with the choice and its estimate."""
    now = _racing.standing(handle, result.target)
    choice = best_summary(handle) if now.choice is not None else None
    if json_:
        data = _result(handle, result.target, result.counts, result.ran, now.over)
        data.update(budget_epochs=now.budget, epochs_spent=now.spent, best=choice)
        print_json(data)
        return
    said = _racing.leader_text(now.choice).replace("incumbent", "choice")
    state = "budget spent" if now.over else "stopped before the budget was spent"
    typer.echo(f"{handle.name}: {now.spent}/{now.budget} epochs ({result.target} trials x {handle.spec.epochs}), "
               f"{result.ran} runs now, {state}; {said}")
    if not now.over:
        target = ("--trials", str(trials)) if trials is not None else ()
        typer.echo(f"Continue with: {hint('study run', handle.name, options=target, storage=storage)}")


def _from_file(path: Path, url: StorageURL, name: str | None, storage: str | None,
               interval: int | None, grace_period: int | None) -> _study.StudyHandle:
    """The study of a spec file: created when the storage lacks it, opened when it holds the same spec."""
    spec = load_spec(path)
    if name:
        spec = spec.replace(name=name)
    if spec.name not in _study.study_names(url):
        heartbeat = _new_heartbeat(interval, grace_period)
        try:
            handle = _study.create(spec, url, heartbeat=heartbeat)
            typer.echo(f"Created study '{handle.name}' in {url.masked} from {path}.", err=True)
            return handle
        except StudyError:  # another machine created it a moment ago: compare with theirs
            pass
    handle = _study.open_study(spec.name, url)
    differences = _study.spec_differences(handle.spec, spec)
    if differences:
        shown = "; ".join(f"{key} {fmt(old)} stored, {fmt(new)} in the file" for key, old, new in differences[:3])
        more = f" and {len(differences) - 3} more" if len(differences) > 3 else ""
        raise StudyError(
            f"study '{spec.name}' in {url.masked} holds a different spec than {path} ({shown}{more}); "
            f"run the stored study with `{hint('study run', spec.name, storage=storage)}`, or make a new "
            f"study from the file with `{hint('study run', str(path), options=('--name', 'NEW_NAME'), storage=storage)}`")
    if interval or grace_period:
        raise StudyError(_heartbeat_refusal(handle, storage))
    return handle


def _heartbeat_refusal(handle: _study.StudyHandle, storage: str | None) -> str:
    beat = _study.study_heartbeat(handle.study)
    return (f"the heartbeat settings are the study's (interval {beat.interval} s, grace period "
            f"{beat.grace_period} s, chosen when '{handle.name}' was created), so that every worker uses the "
            f"same; drop --heartbeat-interval and --grace-period, or create a new study with other settings: "
            f"`{hint('study create', 'SPEC', options=('--name', 'NEW_NAME', '--heartbeat-interval', 'S', '--grace-period', 'S'), storage=storage)}`")


class _EventPrinter:
    """A worker's reports to the process that started it (`_workers`), JSON lines on stdout: each
    trial's start and end, and its epochs at most a few times a second (they may come by the hundred)."""

    def __init__(self) -> None:
        self._printed = 0.0
        self._running: set[int] = set()

    def __call__(self, progress: _study.Progress) -> None:
        now = time.monotonic()
        if progress.last is None and set(progress.running) == self._running and now - self._printed < 0.25:
            return
        self._printed, self._running = now, set(progress.running)
        print(event_line(progress), flush=True)


@app.command("list")
def list_(storage: StorageOption = None, json_: JsonOption = False) -> None:
    """The studies in the storage: kind (search, race, confirmation companion, not hpo), progress,
    best value (a race's: its choice's mean over runs) and lineage."""
    url = resolve_url(storage)
    rows = _study.list_studies(url)
    if json_:
        print_json([row.__dict__ for row in rows])
        return
    if not rows:
        typer.echo(f"No studies in {mask_url(url)}. Create one with: {hint('study create', 'SPEC', storage=storage)}")
        return
    print_table(
        ["name", "kind", "data", "finished", "complete", "pruned", "failed", "running", "best", "parent"],
        [[r.name, r.kind, r.dataset, r.finished, r.counts["COMPLETE"], r.counts["PRUNED"], r.counts["FAIL"],
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
    target = _study.current_target(handle.study, handle.spec)
    race = _racing.race_view(handle, top) if handle.spec.objective.raced else None
    if json_:
        print_json({"name": name, "target": target, "counts": counts, "lineage": lineage,
                    "spec": handle.spec.to_dict(), **({"race": race} if race else {}),
                    "best": [_study.trial_summary(t) for t in best]})
        return
    spec = handle.spec
    typer.echo(f"Study '{name}' in {mask_url(url)}: data {spec.data.dataset}"
               f" ({spec.data.samples or 'all'} samples, {spec.data.validation_fraction:g} validation),"
               f" {spec.epochs} epochs, target {target}")
    typer.echo("Trials: " + ", ".join(f"{n.lower()} {c}" for n, c in counts.items() if c))
    if lineage:
        typer.echo(f"Narrowed from '{lineage.get('parent')}' ({lineage.get('rule')}, {lineage.get('date')})")
    if race:
        _print_race(race, spec)
        return
    if not best:
        typer.echo("No complete trial yet.")
        return
    names = [p.name for p in spec.search]
    print_table(
        ["rank", "trial", "value", *names, "epochs", "phase", "state"],
        [[f"Best-{i}", t.number, t.value, *[t.params.get(n) for n in names],
          t.user_attrs.get("epochs"), t.user_attrs.get("phase", "-"), t.state.name.lower()]
         for i, t in enumerate(best, 1)])


def _print_race(race: dict[str, Any], spec) -> None:
    typer.echo(f"Race on {race['folds']} folds (x {race['repeats']} repeats): {race['epochs_spent']}/"
               f"{race['budget_epochs']} epochs of the budget (target x {spec.epochs} epochs), "
               f"{race['configurations_tried']} configurations tried")
    if not race["configurations"]:
        typer.echo("No run has finished yet.")
        return
    names = [p.name for p in spec.search]
    print_table(
        ["rank", "config", "runs", "folds", "mean", "stderr", *names, "epochs", "state"],
        [[i, c["number"], c["runs"], ",".join(map(str, c["folds"])) or "-", c["mean"], c["stderr"],
          *[c["params"].get(n) for n in names], c["epochs"], c["state"]]
         for i, c in enumerate(race["configurations"], 1)])


@app.command()
def best(name: NameArg, storage: StorageOption = None, json_: JsonOption = False) -> None:
    """The chosen configuration and the estimate it rests on: the race's choice for a raced study, the
    confirmed one if `confirm` has run, else the best single trial."""
    url = resolve_url(storage)
    handle = _study.open_study(name, url, Heartbeat(interval=None))
    if not handle.spec.objective.raced and _study.best_trial(handle.study) is None:
        raise StudyError(f"study '{name}' has no complete trial yet; "
                         f"run it with `{hint('study run', name, storage=storage)}`")
    summary = best_summary(handle)
    if json_:
        print_json(summary)
        return
    se = f" ± {fmt(summary['stderr'])}" if summary["stderr"] is not None else ""
    single = fmt(summary["single_run_value"])
    if summary["source"] == "race":
        typer.echo(f"Race's choice of '{name}': configuration #{summary['number']}, mean validation accuracy "
                   f"{fmt(summary['value'])}{se} (standard error) over {summary['runs']} folds "
                   f"(its first run alone: {single})")
    elif summary["source"] == "confirmed":
        confirmed = summary["confirmed"]
        typer.echo(f"Confirmed best of '{name}': #{summary['number']}, mean validation accuracy "
                   f"{fmt(confirmed['mean'])} ± {fmt(confirmed['sd'])} (sd) over {confirmed['seeds']} seeds, "
                   f"standard error {fmt(summary['stderr'])} (single run {single})")
    else:
        typer.echo(f"Best trial of '{name}': #{summary['number']}, validation accuracy {fmt(summary['value'])} "
                   f"(a single run; `{hint('study confirm', name, storage=storage)}` re-checks the best over seeds)")
    for key, value in summary["params"].items():
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
    display = None if json_ else RunConsole()
    try:
        results = run_confirm(handle, top=top, seeds=seeds, workers=workers,
                              data_dir=str(data_dir) if data_dir else None, on_progress=display)
    except Interrupted as exc:
        again = hint("study confirm", name, options=("--top", str(top), "--seeds", str(seeds)), storage=storage)
        raise Interrupted(f"{exc}; {again} continues the confirmation", exc.signum) from None
    finally:
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
    grace_period: Annotated[int | None, typer.Option(
        min=1, metavar="SECONDS",
        help="Seconds without heartbeat after which a RUNNING trial counts as dead, for this check "
        "only. Default: the study's grace period.")] = None,
    storage: StorageOption = None,
    json_: JsonOption = False,
) -> None:
    """Fail the RUNNING trials whose worker stopped sending heartbeats; each is retried once."""
    url = resolve_url(storage)
    handle = _study.open_study(name, url)
    if grace_period is not None:
        beat = _study.study_heartbeat(handle.study)
        handle = _study.open_study(name, url, Heartbeat(beat.interval, grace_period))
    else:
        grace_period = _study.study_heartbeat(handle.study).grace_period
    failed, retried = _study.fail_stale(handle)
    if json_:
        print_json({"study": name, "grace_period": grace_period, "failed": failed, "queued_again": retried})
        return
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
    json_: JsonOption = False,
) -> None:
    """Delete a study and all its trials (needs --yes)."""
    url = resolve_url(storage)
    if not yes:
        raise typer.BadParameter(f"deleting study '{name}' cannot be undone; add --yes to confirm",
                                 param_hint="--yes")
    n = _study.delete(name, url)
    if json_:
        print_json({"study": name, "storage": mask_url(url), "trials": n})
        return
    typer.echo(f"Deleted study '{name}' and its {n} trials from {mask_url(url)}.")
