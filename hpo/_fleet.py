"""A fleet of workers: each takes trials from whichever studies of a storage still have budget.

A team starts N `hpo worker` processes on its machines (a scheduler's job array, a container
replica set) and then only creates studies. Before each trial a worker looks at every study: the
highest priority with budget left goes first; among equal priorities the study with the fewest
running trials, then the fewest finished, so that equal studies share the fleet. The trial itself
is claimed as `hpo study run` claims it (`hpo/_claims.py`), and run with the study's own sampler,
pruner, heartbeat and folds. A worker stops when no study has budget left, or with `wait` looks
again every `poll_seconds` for new studies and raised targets. SIGTERM or Ctrl-C records the
running trial as failed with the reason and stops the worker.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState
from threadpoolctl import threadpool_limits

from hpo import _claims
from hpo import _study
from hpo._errors import Interrupted, StudyError
from hpo._objective import Objective
from hpo._sampler import FINISHED
from hpo._storage import Heartbeat, StorageURL, listed, open_storage, resolve_storage

PRIORITY_ATTR = "priority"  # set by `hpo study priority`; else the spec's [study] priority


@dataclass(frozen=True)
class Candidate:
    """A study as a worker sees it before choosing: its priority, target and trial counts."""

    name: str
    priority: int
    target: int
    finished: int
    running: int
    waiting: int

    @property
    def claimable(self) -> bool:
        """Budget no worker holds yet: a queued trial or retry, or room under the target."""
        return self.finished < self.target and (self.waiting > 0 or self.finished + self.running < self.target)


@dataclass(frozen=True)
class Done:
    """One trial a worker ran: its study, number, end state and value."""

    study: str
    trial: FrozenTrial


def set_priority(name: str, url: str | StorageURL, priority: int) -> int:
    """Store a study's priority for `hpo worker`; returns the priority it had."""
    handle = _study.open_study(name, url, Heartbeat(interval=None))
    before = priority_of(handle.study.user_attrs)
    handle.study.set_user_attr(PRIORITY_ATTR, int(priority))
    return before


def priority_of(attrs: dict) -> int:
    stored = attrs.get(PRIORITY_ATTR)
    if isinstance(stored, int):
        return stored
    return int((attrs.get(_study.SPEC_ATTR) or {}).get("study", {}).get("priority", 0))


def candidates(storage: optuna.storages.BaseStorage, names: Sequence[str] = ()) -> list[Candidate]:
    """The hpo studies of the storage (only `names`, when given) with their priorities and counts.

    Queue-only studies (confirmation runs) are left to `hpo study confirm`, raced studies to
    `hpo study run` (a race picks each run from its evidence and spends a budget of epochs).
    """
    found = []
    for frozen in listed(storage.get_all_studies):
        attrs = frozen.user_attrs
        spec = attrs.get(_study.SPEC_ATTR)
        if not isinstance(spec, dict) or attrs.get(_study.QUEUE_ONLY_ATTR) or (names and frozen.study_name not in names):
            continue
        if _raced(spec):
            continue
        target = int(attrs.get(_study.TARGET_ATTR) or spec.get("study", {}).get("trials", 0))
        try:
            trials = storage.get_all_trials(storage.get_study_id_from_name(frozen.study_name), deepcopy=False)
        except KeyError:  # deleted by another process since the listing
            continue
        counts = _claims.count_states(trials)
        found.append(Candidate(frozen.study_name, priority_of(attrs), target,
                               sum(counts[s.name] for s in FINISHED), counts["RUNNING"], counts["WAITING"]))
    return found


def _raced(spec: dict) -> bool:
    objective = spec.get("objective")
    return isinstance(objective, dict) and objective.get("method") == "race"


def choose(found: list[Candidate]) -> list[Candidate]:
    """The claimable studies in the order a worker tries them: priority, then a fair share."""
    ready = [c for c in found if c.claimable]
    random.shuffle(ready)  # the last tie-break: otherwise all workers would try the same study first
    return sorted(ready, key=lambda c: (-c.priority, c.running, c.finished))


class Worker:
    """One fleet worker on one storage. `run()` works until nothing is left (or is interrupted)."""

    def __init__(self, url: str | StorageURL, names: Sequence[str] = (), wait: bool = False,
                 poll_seconds: float = 2.0, data_dir: str | None = None,
                 on_trial: Callable[[Done], None] | None = None,
                 on_idle: Callable[[list[Candidate]], None] | None = None):
        self.url = resolve_storage(url)
        self.names = tuple(names)
        self.wait = wait
        self.poll_seconds = poll_seconds
        self.data_dir = data_dir
        self.on_trial = on_trial or (lambda done: None)
        self.on_idle = on_idle or (lambda found: None)
        self.storage = open_storage(self.url, Heartbeat(interval=None))  # to look; studies open their own
        self.opened: dict[str, tuple[_study.StudyHandle, Objective]] = {}
        self.ran: list[Done] = []

    def run(self) -> list[Done]:
        """Run trials until no study has budget left (with `wait`: until interrupted)."""
        with threadpool_limits(limits=1, user_api="blas"), _study.sigterm_raises():
            try:
                while True:
                    if not self.step():
                        if not self.wait:
                            return self.ran
                        time.sleep(self.poll_seconds)
            except KeyboardInterrupt:
                raise Interrupted(f"{_study.STOPPED[signal.SIGINT]} between trials, nothing lost",
                                  signal.SIGINT) from None
            except _study.Terminated:
                raise Interrupted(f"{_study.STOPPED[signal.SIGTERM]} between trials, nothing lost",
                                  signal.SIGTERM) from None

    def step(self) -> bool:
        """Run one trial of the first study that gives this worker one. False when none did and
        none will (with running trials elsewhere still able to fail, it waits and says True)."""
        found = candidates(self.storage, self.names)
        if self.names:
            missing = sorted(set(self.names) - {c.name for c in found})
            if missing:
                raise StudyError(f"no study named '{missing[0]}' in {self.url.masked} that a worker can run; "
                                 f"`hpo study list` shows the studies there")
        for candidate in choose(found):
            started = self._claim(candidate)
            if started is not None:
                handle, objective, trial = started
                try:
                    frozen = _study._run_trial(handle.study, trial, objective)
                except Interrupted as exc:  # several studies: say which one the trial belongs to
                    raise Interrupted(f"{exc} (study '{candidate.name}')", exc.signum) from None
                done = Done(candidate.name, frozen)
                self.ran.append(done)
                self.on_trial(done)
                return True
        self.on_idle(found)
        unfinished = [c for c in found if c.finished < c.target and c.running]
        if unfinished:  # another worker's trial may still fail and need this one
            time.sleep(self.poll_seconds)
            return True
        return False

    def _claim(self, candidate: Candidate) -> tuple[_study.StudyHandle, Objective, optuna.Trial] | None:
        if candidate.name not in self.opened:
            handle = _study.open_study(candidate.name, self.url)  # its own heartbeat settings
            self.opened[candidate.name] = (handle, Objective(handle.spec, self.data_dir))
        handle, objective = self.opened[candidate.name]
        with _study.HeldInterrupt() as held:
            trial_id, _counts, _done = _claims.claim_next(handle, candidate.target, False)
            trial = _study._start_trial(handle.study, trial_id) if trial_id is not None else None
        if held.received:
            if trial is not None:
                _study._fail(handle.study, trial, _study.REASONS[held.received])
                raise Interrupted(f"{_study.STOPPED[held.received]}: trial {trial.number} was recorded "
                                  f"as failed (study '{candidate.name}')", held.received)
            raise Interrupted(f"{_study.STOPPED[held.received]} between trials, nothing lost", held.received)
        return None if trial is None else (handle, objective, trial)


def describe(done: Done) -> str:
    """One line for a finished trial: study, number, state, value, seconds."""
    trial = done.trial
    value = f" {trial.value:.4f}" if trial.state == TrialState.COMPLETE and trial.value is not None else ""
    seconds = trial.user_attrs.get("seconds")
    took = f" ({seconds:.1f} s)" if isinstance(seconds, (int, float)) else ""
    return f"{done.study} #{trial.number} {trial.state.name.lower()}{value}{took}"

