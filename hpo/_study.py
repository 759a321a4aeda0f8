"""Studies: create from a spec, run to a target of finished trials, resume, inspect, delete.

A study stores its whole spec (user attribute `spec`), so every later command needs only its
name and the storage. `run` counts finished trials (complete + pruned) against a target that is
shared by every worker on every machine; a worker starts a trial by claiming a ticket (hpo/_claims.py).

The heartbeat settings are the study's too (user attribute `heartbeat`, chosen at `create`): every
worker on every machine uses the same, so none fails another's live trial. Ctrl-C and SIGTERM
record the running trial as failed with the reason and raise `Interrupted`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from threadpoolctl import threadpool_limits

from hpo import _claims
from hpo import _optuna_internals as internals
from hpo._errors import Interrupted, StorageError, StudyError
from hpo._format import utc_now
from hpo._objective import Objective
from hpo._notes import refresh as refresh_note
from hpo._sampler import FINISHED, make_pruner, make_sampler
from hpo._spec import StudySpec, parse_spec
from hpo._storage import Heartbeat, StorageURL, is_read_only, open_storage, read_only_error, resolve_storage
from hpo._version import __version__

SPEC_ATTR = "spec"
LINEAGE_ATTR = "lineage"
QUEUE_ONLY_ATTR = "queue_only"
HEARTBEAT_ATTR = "heartbeat"  # {"interval": s, "grace_period": s}; absent: the defaults
TARGET_ATTR = "target"  # the target the last run was given


@dataclass
class StudyHandle:
    """An open study with its spec and the storage it lives in."""

    study: optuna.Study
    spec: StudySpec
    storage_url: StorageURL

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def url(self) -> str:
        """The storage's full URL, for handing on (it may hold a password: print `storage_url`)."""
        return self.storage_url.url

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)

    def finished(self) -> list[FrozenTrial]:
        return self.trials(FINISHED)


def check_heartbeat(heartbeat: Heartbeat) -> Heartbeat:
    """The settings if a study may keep them; StudyError when the grace period is too short.

    A grace period under two intervals lets one late heartbeat (a busy disk, a slow server)
    make another worker fail a live trial and repeat its work.
    """
    if heartbeat.interval is not None and heartbeat.grace_period < 2 * heartbeat.interval:
        raise StudyError(
            f"grace period {heartbeat.grace_period} s is under twice the heartbeat interval "
            f"{heartbeat.interval} s, so a live trial could be failed as dead; give "
            f"--grace-period {2 * heartbeat.interval} or more, or a shorter --heartbeat-interval")
    return heartbeat


def study_heartbeat(study: optuna.Study) -> Heartbeat:
    """The heartbeat settings stored in the study (the defaults for a study created without them)."""
    stored = study.user_attrs.get(HEARTBEAT_ATTR)
    if not isinstance(stored, dict):
        return Heartbeat()
    return Heartbeat(int(stored["interval"]), int(stored["grace_period"]))


def current_target(study: optuna.Study, spec: StudySpec) -> int:
    """The target the last run was given, else the spec's [study] trials."""
    return int(study.user_attrs.get(TARGET_ATTR) or spec.trials)


def create(spec: StudySpec, url: str | StorageURL, name: str | None = None,
           extra_attrs: dict[str, Any] | None = None, heartbeat: Heartbeat = Heartbeat()) -> StudyHandle:
    """Create a study from a validated spec; an existing name is an error saying how to go on.

    Args:
        spec: the validated spec; the study keeps all of it.
        url: the storage.
        name: a name other than the spec's [study] name.
        extra_attrs: more user attributes to store on the study.
        heartbeat: the study's heartbeat settings, used by every worker that runs it.
    """
    if name:
        spec = spec.replace(name=name)
    check_heartbeat(heartbeat)
    url = resolve_storage(url)
    storage = open_storage(url)
    try:
        study = optuna.create_study(
            study_name=spec.name, storage=storage, direction="maximize",
            sampler=make_sampler(spec), pruner=make_pruner(spec.pruner, spec.epochs))
    except optuna.exceptions.DuplicatedStudyError:
        raise StudyError(
            f"a study named '{spec.name}' already exists in {url.masked}; continue it with "
            f"`hpo study run {spec.name}`, or create another with --name NEW_NAME") from None
    study.set_user_attr(SPEC_ATTR, spec.to_dict())
    study.set_user_attr("objective", "final-epoch validation accuracy (maximized)")
    study.set_user_attr("hpo_version", __version__)
    study.set_user_attr("created", utc_now())
    if heartbeat.interval is not None:
        study.set_user_attr(HEARTBEAT_ATTR, {"interval": heartbeat.interval,
                                             "grace_period": heartbeat.grace_period})
    for key, value in (extra_attrs or {}).items():
        study.set_user_attr(key, value)
    refresh_note(study)
    return StudyHandle(study, spec, url)


def open_study(name: str, url: str | StorageURL, heartbeat: Heartbeat | None = None) -> StudyHandle:
    """Load a study by name with the sampler and pruner its stored spec describes.

    Args:
        name: the study's name.
        url: the storage.
        heartbeat: None (for running trials): the study's own settings; `Heartbeat(interval=None)`
            to only read; other settings only for a one-off check such as `fail-stale`.
    """
    url = resolve_storage(url)
    study = _load(name, url, heartbeat or Heartbeat())
    if heartbeat is None and study_heartbeat(study) != Heartbeat():
        study = _load(name, url, study_heartbeat(study))
    stored = study.user_attrs.get(SPEC_ATTR)
    if not isinstance(stored, dict):
        raise StudyError(f"study '{name}' in {url.masked} was not created by hpo (it has no spec)")
    spec = parse_spec(stored, source=f"study '{name}'")
    study.sampler = make_sampler(spec)
    study.pruner = make_pruner(spec.pruner, spec.epochs)
    return StudyHandle(study, spec, url)


def study_names(url: str | StorageURL) -> list[str]:
    """The names of the studies in the storage."""
    return optuna.get_all_study_names(open_storage(resolve_storage(url), Heartbeat(interval=None)))


def spec_differences(stored: StudySpec, given: StudySpec) -> list[tuple[str, Any, Any]]:
    """Where two specs differ: (dotted key, stored value, given value), the name left aside."""
    old, new = _flat(stored.replace(name=given.name).to_dict()), _flat(given.to_dict())
    return [(key, old.get(key), new.get(key)) for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)]


def _flat(document: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _load(name: str, url: StorageURL, heartbeat: Heartbeat) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=open_storage(url, heartbeat))
    except KeyError:
        raise StudyError(
            f"no study named '{name}' in {url.masked}; `hpo study list` shows the studies there"
        ) from None


@dataclass
class Progress:
    """What a run reports: when a trial starts and ends, at each of its epochs, and while it waits."""

    done: int
    target: int
    ran: int
    best: FrozenTrial | None
    last: FrozenTrial | None  # the trial that has just finished, when this report is about one
    elapsed: float
    # This machine's running trials: number -> (epochs done, epochs in all).
    running: dict[int, tuple[int, int]] = field(default_factory=dict)
    elsewhere: int = 0  # running trials of other workers, on other machines or in other runs
    # A raced study counts its budget in epochs (done, target and ran are epochs) and its best is
    # the incumbent's estimate, said in `leader`, not a single trial.
    unit: str = "trials"
    leader: str | None = None

    @property
    def seconds_left(self) -> float | None:
        if self.ran == 0 or self.done >= self.target:
            return None
        return self.elapsed / self.ran * (self.target - self.done)


@dataclass
class RunResult:
    ran: int
    finished: int
    target: int
    best: FrozenTrial | None
    reached_target: bool
    counts: dict[str, int] = field(default_factory=dict)
    epochs: tuple[int, int] | None = None  # a raced study: (epochs spent, the budget in epochs)


def run(handle: StudyHandle, target: int | None = None, timeout: float | None = None,
        on_progress: Callable[[Progress], None] | None = None, data_dir: str | None = None,
        poll_seconds: float = 2.0) -> RunResult:
    """Run trials until the study holds `target` finished trials (complete + pruned); a raced
    study ([objective] method = "race") runs its race until `target` x epochs epochs are spent.

    Trials that other workers are running count as on their way: this worker waits for them,
    rather than overshoot, and takes over a retry if one of them dies. Ctrl-C or SIGTERM fails
    the running trial with the reason and raises Interrupted; a failing trial stops the run with
    its reason.

    Args:
        handle: the open study.
        target: the study's total of finished trials to reach; None: `current_target`. It is
            stored on the study as its current target.
        timeout: start no new trial after this many seconds.
        on_progress: called with a `Progress` when a trial starts and ends, at each epoch, and
            while this worker waits for others.
        data_dir: the folder with the data files.
        poll_seconds: how often a waiting worker looks at the study again.
    """
    study = handle.study
    target = set_target(handle, target)
    if handle.spec.objective.raced:
        from hpo._racing import run_race  # the race builds on this module

        def loop() -> RunResult:
            return run_race(handle, target, timeout, on_progress, data_dir, poll_seconds)
    else:
        # A queue-only study (confirmation runs) runs the trials enqueued in it and nothing else.
        queue_only = bool(study.user_attrs.get(QUEUE_ONLY_ATTR))
        objective = Objective(handle.spec, data_dir)

        def loop() -> RunResult:
            return _run_loop(handle, objective, target, timeout, queue_only, on_progress, poll_seconds)
    # One worker is one core: the nets are small, and BLAS threads only fight each other
    # (and other workers) for the cores. More cores: more workers.
    with threadpool_limits(limits=1, user_api="blas"), sigterm_raises():
        try:
            return loop()
        except KeyboardInterrupt:
            raise Interrupted(f"{STOPPED[signal.SIGINT]} between trials, nothing lost", signal.SIGINT) from None
        except Terminated:
            raise Interrupted(f"{STOPPED[signal.SIGTERM]} between trials, nothing lost", signal.SIGTERM) from None


def set_target(handle: StudyHandle, target: int | None) -> int:
    """The run's target (`target`, else the study's current one), stored as the study's current target."""
    study = handle.study
    target = target or current_target(study, handle.spec)
    if study.user_attrs.get(TARGET_ATTR) != target:
        study.set_user_attr(TARGET_ATTR, target)
    return target


def _run_loop(handle, objective, target, timeout, queue_only, on_progress, poll_seconds) -> RunResult:
    study = handle.study
    started = time.monotonic()
    report = on_progress or (lambda progress: None)
    ran = 0
    latest: list[Progress] = []  # what the last report said, for the epoch reports to build on

    def on_epoch(number: int, epoch: int, epochs: int) -> None:
        report(replace(latest[0], elapsed=time.monotonic() - started, running={number: (epoch, epochs)}))

    while True:
        if timeout is not None and time.monotonic() - started >= timeout:
            break
        trial = None
        with HeldInterrupt() as held:
            trial_id, counts, done = _claim_next(handle, target, queue_only)
            if trial_id is not None:
                trial = _start_trial(study, trial_id)
        if held.received:
            if trial is not None:
                _fail(study, trial, REASONS[held.received])
                raise Interrupted(f"{STOPPED[held.received]}: trial {trial.number} was recorded as failed",
                                  held.received)
            raise Interrupted(f"{STOPPED[held.received]} between trials, nothing lost", held.received)
        if done:
            break
        running = {trial.number: (0, handle.spec.epochs)} if trial is not None else {}
        latest[:] = [Progress(finished_count(counts), target, ran, best_trial(study), None,
                              time.monotonic() - started, running, counts["RUNNING"])]
        report(latest[0])
        if trial is None:
            time.sleep(poll_seconds)
            continue
        frozen = _run_trial(study, trial, objective, on_epoch if on_progress else None)
        ran += 1
        counts = count_states(study)
        report(Progress(finished_count(counts), target, ran, best_trial(study), frozen,
                        time.monotonic() - started, {}, counts["RUNNING"]))
    counts = count_states(study)
    finished = finished_count(counts)
    return RunResult(ran, finished, target, best_trial(study), finished >= target, counts)


# --- Claiming the next trial ------------------------------------------------------------------
# One piece: fail dead workers' trials, count, and claim a ticket if the target still needs one
# (hpo/_claims.py: no study lock). Everything a worker decides about starting a trial is decided here.


def _claim_next(handle: StudyHandle, target: int, queue_only: bool) -> tuple[int | None, dict[str, int], bool]:
    """(the claimed trial's id or None, the counts before it, whether the study is done).

    A claimed trial is RUNNING; `_start_trial` makes the trial object. None with done False means
    other workers' running trials may still reach the target: wait and look again.
    """
    return _claims.claim_next(handle, target, queue_only)  # tickets, no study lock: hpo/_claims.py


# --- Running one trial ------------------------------------------------------------------------


def _run_trial(study: optuna.Study, trial: optuna.Trial, objective: Objective,
               on_epoch: Callable[[int, int, int], None] | None = None) -> FrozenTrial:
    """Run one asked trial to its end state, with heartbeats while it runs."""
    pruned = False
    with internals.heartbeat(study, trial):
        try:
            objective.on_epoch = functools.partial(on_epoch, trial.number) if on_epoch else None
            value = objective(trial)
        except optuna.TrialPruned:
            pruned = True
        except (KeyboardInterrupt, Terminated) as exc:
            signum = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
            _fail(study, trial, REASONS[signum])
            raise Interrupted(f"{STOPPED[signum]}: trial {trial.number} was recorded as failed", signum) from None
        except (StorageError, StudyError):
            raise
        except Exception as exc:  # a real error: keep the reason on the trial, stop the run
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            _fail(study, trial, reason)
            raise StudyError(f"trial {trial.number} failed: {reason}") from exc
    with HeldInterrupt() as held:
        frozen = study.tell(trial, state=TrialState.PRUNED) if pruned else study.tell(trial, value)
    if held.received:
        raise Interrupted(f"{STOPPED[held.received]} after trial {trial.number} finished, nothing lost",
                          held.received)
    return frozen


def _start_trial(study: optuna.Study, trial_id: int) -> optuna.Trial | None:
    """The second half of `Study.ask`: the trial object, whose creation runs the sampler.

    The first half, `_claim_next` (a ticket: a queued trial, a retry, a confirmation run or a
    plain one), is all that workers synchronise on; the sampler runs here, after the claim, so
    that workers do not queue behind each other's TPE.
    """
    internals.forget_cached_trials(study)
    try:
        return optuna.Trial(study, trial_id)
    except optuna.exceptions.UpdateFinishedTrialError:
        return None  # failed as dead by another worker between the claim and the start: claim again
    except BaseException:  # a sampler that fails must not leave the trial RUNNING forever
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            internals.study_storage(study).set_trial_state_values(trial_id, state=TrialState.FAIL)
        raise


def _fail(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    with HeldInterrupt():
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)


# --- Signals ----------------------------------------------------------------------------------
# SIGTERM (kill, schedulers, systemd, containers) is handled like Ctrl-C: the running trial is
# failed with the reason, and the caller hears of it through Interrupted (exit 143 in the CLI).

REASONS = {signal.SIGINT: "interrupted by the user (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}
STOPPED = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated (SIGTERM)"}
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(BaseException):
    """Raised by SIGTERM during a run, as KeyboardInterrupt is by Ctrl-C: not an Exception, so
    that no `except Exception` in a trial's code swallows it."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises Terminated in the main thread (elsewhere: left as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class HeldInterrupt:
    """Holds Ctrl-C and SIGTERM back while the storage is written, so no trial is left
    half-started or half-told; `received` is the signal that came, else None. (Only the main
    thread receives signals; elsewhere nothing is held.)"""

    def __enter__(self) -> "HeldInterrupt":
        self.received: signal.Signals | None = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._note) for signum in HELD_SIGNALS}
        return self

    def _note(self, signum, frame) -> None:
        self.received = self.received or signal.Signals(signum)

    def __exit__(self, *exc_info) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)


def fail_stale(handle: StudyHandle) -> tuple[list[int], list[int]]:
    """Fail RUNNING trials without a recent heartbeat (each is queued again once).

    Returns the numbers of the trials failed and of the retries queued for them. A read-only
    storage is refused even when nothing is stale: the command is a write, and saying "nothing
    to do" there would hide that it could not have done anything.
    """
    if is_read_only(handle.storage_url):
        raise read_only_error(handle.storage_url)
    before = {t.number for t in handle.trials((TrialState.RUNNING,))}
    waiting = {t.number for t in handle.trials((TrialState.WAITING,))}
    # Each trial is failed in one atomic step, so this needs no study lock (hpo/_claims.py).
    _claims.fail_stale(handle.study, _claims.claims_for(internals.study_storage(handle.study)))
    failed = sorted(t.number for t in handle.trials((TrialState.FAIL,)) if t.number in before)
    retried = sorted(t.number for t in handle.trials((TrialState.WAITING,)) if t.number not in waiting)
    return failed, retried


def count_states(study: optuna.Study) -> dict[str, int]:
    """How many trials the study holds in each state, by the state's name (every state present)."""
    counts = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    return counts


def finished_count(counts: Mapping[str, int]) -> int:
    """The finished trials among `count_states`' counts: complete and pruned, what a target counts."""
    return sum(counts.get(state.name, 0) for state in FINISHED)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    return max(complete, key=lambda t: (t.value, -t.number))


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials, best first; ties go to the earlier trial."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(complete, key=lambda t: (-t.value, t.number))


def delete(name: str, url: str | StorageURL) -> int:
    """Delete a study; returns how many trials it held."""
    handle = open_study(name, url, Heartbeat(interval=None))
    n = len(handle.trials())
    optuna.delete_study(study_name=name, storage=internals.study_storage(handle.study))
    return n


def trial_summary(trial: FrozenTrial) -> dict[str, Any]:
    """The JSON-ready view of a trial used by `show --json` and `best --json`."""
    attrs = trial.user_attrs
    value = trial.value if trial.state in FINISHED else None
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": None if value is None or not math.isfinite(value) else value,
        "params": dict(trial.params),
        "epochs": attrs.get("epochs"),
        "phase": attrs.get("phase"),
        "seconds": attrs.get("seconds"),
        "reason": attrs.get("reason") or attrs.get("fail_reason"),
    }


# The listing lives in _inventory (it reads studies of any Optuna program); re-exported here
# at the end, since it builds on the names above.
from hpo._inventory import StudyRow, list_studies  # noqa: E402,F401
