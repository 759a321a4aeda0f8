"""Exact targets without a study lock: the budget as tickets, claimed one trial at a time.

A study's remaining budget lives in the storage as tickets: WAITING trials (a plain ticket has no
parameters; a retry or a queued configuration has them). A worker starts a trial only by claiming
a ticket, WAITING -> RUNNING, in one atomic step; the claim is the only synchronisation, so it works
wherever that step is atomic, through the gRPC proxy included:

- SQL databases (SQLite, PostgreSQL, MySQL/MariaDB), directly or behind `hpo storage serve`: one
  conditional `UPDATE … SET state = RUNNING WHERE trial_id = ? AND state = WAITING`; the database
  lets one writer change the row and tells the others that nothing matched. (Optuna's own claim
  reads with `SELECT … FOR UPDATE`, which SQLite ignores: two workers could both win.)
- a journal file: Optuna replays the log in order and gives a trial to the first claim only.

Tickets are made when a worker finds none left while the study needs more (the first run, a raised
target, a failed trial to replace). Two workers that see the same study at the same moment would
make the same tickets twice, so making them is itself claimed once per state seen: a key
(target, number of trials) that only one worker can insert into the study's system attributes.
Behind all this a last check keeps the target exact whatever happened before: right after its
claim a worker counts finished plus running trials again, and if that is over the target it puts
its ticket back. Of two claims that cross, the later one sees the earlier one, so the target is
never passed; a ticket put back stays for a later run with a higher target.

A worker that dies leaves its trial RUNNING; once its heartbeats stop for the grace period another
worker fails it (RUNNING -> FAIL, again one atomic step, so only one worker does) and queues its
retry, which is the replacement ticket.
"""

from __future__ import annotations

import copy
import datetime
import json
import random
import time
import uuid
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

from hpo import _optuna_internals as internals
from hpo._sampler import FINISHED
from hpo._storage import study_lock

if TYPE_CHECKING:
    from hpo._study import StudyHandle

ONCE_PREFIX = "hpo:once:"  # study system attributes that record a step taken once


class Claims:
    """The atomic steps of one storage: claim a ticket, fail a dead trial, take a step once."""

    def __init__(self, storage: optuna.storages.BaseStorage):
        self.storage = storage

    def claim(self, trial_id: int) -> bool:
        """WAITING -> RUNNING; True for the one caller whose claim took it."""
        return bool(self.storage.set_trial_state_values(trial_id, TrialState.RUNNING))

    def fail(self, trial_id: int) -> bool:
        """RUNNING -> FAIL; True for the one caller that failed it, False when it had ended."""
        try:
            return bool(self.storage.set_trial_state_values(trial_id, TrialState.FAIL))
        except optuna.exceptions.UpdateFinishedTrialError:
            return False

    def once(self, handle: "StudyHandle", key: str) -> bool:
        """True for the one caller that records `key` first."""
        raise NotImplementedError


class SqlClaims(Claims):
    """A SQL database: each step is one conditional statement that only one writer can win."""

    def __init__(self, storage: optuna.storages.BaseStorage, engine: sa.Engine):
        super().__init__(storage)
        self.engine = engine

    def claim(self, trial_id: int) -> bool:
        return claim_sql(self.engine, trial_id)

    def fail(self, trial_id: int) -> bool:
        return fail_sql(self.engine, trial_id)

    def once(self, handle: "StudyHandle", key: str) -> bool:
        return once_sql(self.engine, internals.study_id(handle.study), key, once_token())


class JournalClaims(Claims):
    """A journal file: claims are Optuna's (the log decides); a once-step under hpo's file lock."""

    def once(self, handle: "StudyHandle", key: str) -> bool:
        study_id = internals.study_id(handle.study)
        with study_lock(handle.storage_url, handle.name):
            if ONCE_PREFIX + key in self.storage.get_study_system_attrs(study_id):
                return False
            self.storage.set_study_system_attr(study_id, ONCE_PREFIX + key, True)
            return True


class ProxyClaims(Claims):
    """Behind `hpo storage serve`: the proxy makes each step the conditional statement above."""

    def once(self, handle: "StudyHandle", key: str) -> bool:
        study_id = internals.study_id(handle.study)
        token = once_token()
        try:
            self.storage.set_study_system_attr(study_id, ONCE_PREFIX + key, token)
        except KeyError:  # the proxy's answer when the key was there already: whose is it?
            return self.storage.get_study_system_attrs(study_id).get(ONCE_PREFIX + key) == token
        return True


def claims_for(storage: optuna.storages.BaseStorage) -> Claims:
    """The atomic steps of `storage` (as returned by `open_storage`)."""
    rdb = internals.rdb_storage(storage)
    if rdb is not None:
        return SqlClaims(storage, rdb.engine)
    if isinstance(getattr(storage, "inner", storage), optuna.storages.JournalStorage):
        return JournalClaims(storage)
    return ProxyClaims(storage)  # the gateway opens no other kind: it refuses any other proxy


# --- The SQL steps (also run by the proxy on the database behind it) ---------------------------


def claim_sql(engine: sa.Engine, trial_id: int) -> bool:
    trials = internals.TABLES.trials
    with engine.begin() as connection:
        result = connection.execute(
            sa.update(trials)
            .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.WAITING)
            .values(state=TrialState.RUNNING, datetime_start=datetime.datetime.now()))
        return result.rowcount == 1


def fail_sql(engine: sa.Engine, trial_id: int) -> bool:
    trials = internals.TABLES.trials
    with engine.begin() as connection:
        result = connection.execute(
            sa.update(trials)
            .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.RUNNING)
            .values(state=TrialState.FAIL, datetime_complete=datetime.datetime.now()))
        return result.rowcount == 1


def once_sql(engine: sa.Engine, study_id: int, key: str, token: str) -> bool:
    """Record `key` with `token` unless it is there; True when the record is this token's (also
    when an earlier attempt of the same caller wrote it and only its answer was lost)."""
    # The table's unique (study_id, key) makes the second insert fail, on every database.
    attrs = internals.TABLES.study_system_attrs
    key = ONCE_PREFIX + key
    try:
        with engine.begin() as connection:
            connection.execute(sa.insert(attrs).values(study_id=study_id, key=key, value_json=json.dumps(token)))
    except sa.exc.IntegrityError:
        with engine.connect() as connection:
            stored = connection.execute(sa.select(attrs.c.value_json).where(
                attrs.c.study_id == study_id, attrs.c.key == key)).scalar()
        return stored == json.dumps(token)
    return True


def once_token() -> str:
    """A value that tells a caller's own record of a once-step from another caller's."""
    return uuid.uuid4().hex


# --- Claiming the next trial -------------------------------------------------------------------


def count_states(trials: list[FrozenTrial]) -> dict[str, int]:
    counts = {state.name: 0 for state in TrialState}
    for trial in trials:
        counts[trial.state.name] += 1
    return counts


def _finished(counts: dict[str, int]) -> int:
    return sum(counts[state.name] for state in FINISHED)


def claim_next(handle: "StudyHandle", target: int, queue_only: bool,
               claims: Claims | None = None) -> tuple[int | None, dict[str, int], bool]:
    """(the claimed trial's id or None, the counts before it, whether the study is done).

    A claimed trial is RUNNING. None with done False means other workers' running trials may still
    reach the target: wait and look again.
    """
    study = handle.study
    storage = internals.study_storage(study)
    claims = claims or claims_for(storage)
    fail_stale(study, claims)
    trials = study.get_trials(deepcopy=False)
    counts = count_states(trials)
    finished = _finished(counts)
    if finished >= target or (queue_only and not counts["WAITING"] and not counts["RUNNING"]):
        return None, counts, True
    if not queue_only and finished + counts["RUNNING"] >= target:
        return None, counts, False  # the running trials may reach it: wait
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    if not waiting and not queue_only:
        deficit = target - finished - counts["RUNNING"]
        # The minute in the key: a worker that won and died before making the tickets blocks
        # that state for a minute at most.
        key = f"tickets:{target}:{len(trials)}:{int(time.time() // 60)}"
        if deficit > 0 and claims.once(handle, key):
            for _ in range(deficit):
                add_ticket(study)
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    for trial in _claim_order(waiting):
        if not claims.claim(internals.trial_id(trial)):
            continue
        if queue_only or _within_target(study, target):
            return internals.trial_id(trial), counts, False
        # A claim crossed another one that took the last place: give the ticket back.
        storage.set_trial_state_values(internals.trial_id(trial), TrialState.WAITING)
        return None, counts, False
    return None, counts, False


def _within_target(study: optuna.Study, target: int) -> bool:
    counts = count_states(study.get_trials(deepcopy=False))
    return _finished(counts) + counts["RUNNING"] <= target


def _claim_order(waiting: list[FrozenTrial]) -> list[FrozenTrial]:
    """Queued configurations and retries first, in order; plain tickets shuffled, so that many
    workers claiming at once mostly try different ones."""
    chosen = [t for t in waiting if t.params or t.system_attrs.get("fixed_params")]
    plain = [t for t in waiting if not (t.params or t.system_attrs.get("fixed_params"))]
    random.shuffle(plain)
    return sorted(chosen, key=lambda t: t.number) + plain


def add_ticket(study: optuna.Study) -> None:
    """One more plain ticket: a WAITING trial whose parameters the sampler will choose."""
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING))


def fail_stale(study: optuna.Study, claims: Claims) -> list[int]:
    """Fail the RUNNING trials whose heartbeats stopped; for each one this worker failed, run the
    storage's stale-trial callback (it queues the retry). Returns the numbers of those trials."""
    storage = internals.study_storage(study)
    failed = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for trial_id in internals.stale_trial_ids(study):
            if claims.fail(trial_id):
                failed.append(trial_id)
        callback: Callable[[optuna.Study, FrozenTrial], Any] | None = internals.stale_callback(study)
        numbers = []
        for trial_id in failed:
            trial = copy.deepcopy(storage.get_trial(trial_id))
            numbers.append(trial.number)
            if callback is not None:
                callback(study, trial)
    return numbers
