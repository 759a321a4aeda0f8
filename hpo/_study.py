"""Studies: create from a spec, run to a target of finished trials, resume, inspect, delete.

A study stores its whole spec (user attribute `spec`), so every later command needs only its
name and the storage. `run` counts finished trials (complete + pruned) against a target that is
shared by every worker on every machine; starting a trial happens under the study's lock.
"""

from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from threadpoolctl import threadpool_limits

from hpo import _optuna_internals as internals
from hpo._errors import Interrupted, StorageError, StudyError
from hpo._format import utc_now
from hpo._objective import Objective
from hpo._notes import refresh as refresh_note
from hpo._sampler import FINISHED, make_pruner, make_sampler
from hpo._spec import StudySpec, parse_spec
from hpo._storage import Heartbeat, StorageURL, open_storage, resolve_storage, study_lock
from hpo._version import __version__

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPEC_ATTR = "spec"
LINEAGE_ATTR = "lineage"
QUEUE_ONLY_ATTR = "queue_only"


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


def create(spec: StudySpec, url: str | StorageURL, name: str | None = None,
           extra_attrs: dict[str, Any] | None = None) -> StudyHandle:
    """Create a study from a validated spec; an existing name is an error saying how to go on."""
    if name:
        spec = spec.replace(name=name)
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
    for key, value in (extra_attrs or {}).items():
        study.set_user_attr(key, value)
    refresh_note(study)
    return StudyHandle(study, spec, url)


def open_study(name: str, url: str | StorageURL, heartbeat: Heartbeat = Heartbeat()) -> StudyHandle:
    """Load a study by name with the sampler and pruner its stored spec describes."""
    url = resolve_storage(url)
    storage = open_storage(url, heartbeat)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise StudyError(
            f"no study named '{name}' in {url.masked}; `hpo study list` shows the studies there"
        ) from None
    stored = study.user_attrs.get(SPEC_ATTR)
    if not isinstance(stored, dict):
        raise StudyError(f"study '{name}' in {url.masked} was not created by hpo (it has no spec)")
    spec = parse_spec(stored, source=f"study '{name}'")
    study.sampler = make_sampler(spec)
    study.pruner = make_pruner(spec.pruner, spec.epochs)
    return StudyHandle(study, spec, url)


@dataclass
class Progress:
    """What a run reports after each of its trials."""

    done: int
    target: int
    ran: int
    best: FrozenTrial | None
    last: FrozenTrial | None
    elapsed: float
    waiting_for: int = 0  # trials other workers are still running

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


def run(handle: StudyHandle, target: int | None = None, timeout: float | None = None,
        on_progress: Callable[[Progress], None] | None = None, data_dir: str | None = None,
        poll_seconds: float = 2.0) -> RunResult:
    """Run trials until the study holds `target` finished trials (complete + pruned).

    Trials that other workers are running count as on their way: this worker waits for them,
    rather than overshoot, and takes over a retry if one of them dies. Ctrl-C fails the running
    trial with a reason and raises Interrupted; a failing trial stops the run with its reason.
    """
    target = target or handle.spec.trials
    study = handle.study
    # A queue-only study (confirmation runs) runs the trials enqueued in it and nothing else.
    queue_only = bool(study.user_attrs.get(QUEUE_ONLY_ATTR))
    objective = Objective(handle.spec, data_dir)
    # One worker is one core: the nets are small, and BLAS threads only fight each other
    # (and other workers) for the cores. More cores: more workers.
    with threadpool_limits(limits=1, user_api="blas"):
        return _run_loop(handle, objective, target, timeout, queue_only, on_progress, poll_seconds)


def _run_loop(handle, objective, target, timeout, queue_only, on_progress, poll_seconds) -> RunResult:
    study = handle.study
    started = time.monotonic()
    ran = 0
    while True:
        if timeout is not None and time.monotonic() - started >= timeout:
            break
        trial = None
        with HeldInterrupt() as held:
            with study_lock(handle.storage_url, handle.name):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    optuna.storages.fail_stale_trials(study)
                counts = count_states(study)
                finished = finished_count(counts)
                done = finished >= target or (queue_only and not counts["WAITING"] and not counts["RUNNING"])
                trial_id = None
                if not done and (counts["WAITING"] or (finished + counts["RUNNING"] < target and not queue_only)):
                    trial_id = internals.claim_trial(study)
            if trial_id is not None:
                trial = _start_trial(study, trial_id)
        if held.received:
            if trial is not None:
                _fail(study, trial, "interrupted by the user (Ctrl-C)")
                raise Interrupted(_interrupted(study, trial))
            raise Interrupted(f"interrupted between trials, nothing lost; "
                              f"`hpo study run {study.study_name}` continues the study")
        if done:
            break
        if trial is None:
            if on_progress:
                on_progress(_progress(study, finished, target, ran, None, started, counts["RUNNING"]))
            time.sleep(poll_seconds)
            continue
        frozen = _run_trial(study, trial, objective)
        ran += 1
        if on_progress:
            done = len(study.get_trials(deepcopy=False, states=FINISHED))
            on_progress(_progress(study, done, target, ran, frozen, started))
    counts = count_states(study)
    finished = finished_count(counts)
    return RunResult(ran, finished, target, best_trial(study), finished >= target, counts)


def _run_trial(study: optuna.Study, trial: optuna.Trial, objective: Objective) -> FrozenTrial:
    """Run one asked trial to its end state, with heartbeats while it runs."""
    with internals.heartbeat(study, trial):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            return study.tell(trial, state=TrialState.PRUNED)
        except KeyboardInterrupt:
            _fail(study, trial, "interrupted by the user (Ctrl-C)")
            raise Interrupted(_interrupted(study, trial)) from None
        except (StorageError, StudyError):
            raise
        except Exception as exc:  # a real error: keep the reason on the trial, stop the run
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            _fail(study, trial, reason)
            raise StudyError(f"trial {trial.number} failed: {reason}") from exc
    with HeldInterrupt() as held:
        frozen = study.tell(trial, value)
    if held.received:
        raise Interrupted(f"interrupted after trial {trial.number} finished, nothing lost; "
                          f"`hpo study run {study.study_name}` continues the study")
    return frozen


def _start_trial(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """The second half of `Study.ask`: the trial object, whose creation runs the sampler.

    The first half, `internals.claim_trial` (a queued trial, a retry or a confirmation run, else
    a new one), is all that needs the study's lock; the sampler runs here, after the lock is
    released, so that workers do not queue behind each other's TPE.
    """
    internals.forget_cached_trials(study)
    try:
        return optuna.Trial(study, trial_id)
    except BaseException:  # a sampler that fails must not leave the trial RUNNING forever
        internals.study_storage(study).set_trial_state_values(trial_id, state=TrialState.FAIL)
        raise


def _fail(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    with HeldInterrupt():
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)


def _interrupted(study: optuna.Study, trial: optuna.Trial) -> str:
    return (f"interrupted: trial {trial.number} was recorded as failed; "
            f"`hpo study run {study.study_name}` continues the study")


class HeldInterrupt:
    """Holds Ctrl-C back while the storage is written, so no trial is left half-started or
    half-told; `received` says whether it came. (Only the main thread receives signals.)"""

    def __enter__(self) -> "HeldInterrupt":
        self.received = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._note)
        return self

    def _note(self, signum, frame) -> None:
        self.received = True

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def fail_stale(handle: StudyHandle) -> tuple[list[int], list[int]]:
    """Fail RUNNING trials without a recent heartbeat (each is queued again once).

    Returns the numbers of the trials failed and of the retries queued for them.
    """
    before = {t.number for t in handle.trials((TrialState.RUNNING,))}
    waiting = {t.number for t in handle.trials((TrialState.WAITING,))}
    with study_lock(handle.storage_url, handle.name), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(handle.study)
    failed = sorted(t.number for t in handle.trials((TrialState.FAIL,)) if t.number in before)
    retried = sorted(t.number for t in handle.trials((TrialState.WAITING,)) if t.number not in waiting)
    return failed, retried


def _progress(study, done, target, ran, last, started, waiting_for=0) -> Progress:
    return Progress(done, target, ran, best_trial(study), last, time.monotonic() - started, waiting_for)


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
