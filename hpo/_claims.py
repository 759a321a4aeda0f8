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
target, a failed trial to replace), in one atomic step as well: in one transaction that first
writes the study's row (so that two such transactions run one after the other), the database counts
finished, running and waiting trials and inserts the tickets still missing, at most a batch about
the size of the running crowd (every worker re-reads the WAITING trials, so there are never many).
On a journal the same runs under hpo's lock file beside it. Behind all this a last check keeps the
target exact whatever happened before: right after its claim a worker counts finished plus running
trials again, and if that is over the target it puts its ticket back; of two claims that cross,
the later one sees the earlier one.

A worker that dies leaves its trial RUNNING; once its heartbeats stop for the grace period another
worker fails it (RUNNING -> FAIL, again one atomic step, so only one worker does) and queues its
retry, which is the replacement ticket.
"""

from __future__ import annotations

import copy
import datetime
import math
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

from hpo import _optuna_internals as internals
from hpo._retry import retrier_of
from hpo._sampler import FINISHED
from hpo._storage import one_statement_each, study_lock

if TYPE_CHECKING:
    from hpo._study import StudyHandle

TOP_UP_KEY = "hpo:top-up"  # asks `hpo storage serve` to make the missing tickets; never stored
QUEUE_KEY = "hpo:queue"  # asks `hpo storage serve` to queue configurations once each; never stored
TICKET_BATCH = 8  # tickets made at once, at least
LOOKS = 4  # looks at the study before a worker that keeps losing claims waits a poll
CLAIMS_PER_LOOK = 3  # tickets tried per look: after that the look is likely out of date
# Looking for dead workers' trials costs a query; a grace period is tens of seconds, so a worker
# looks every few seconds, not before every claim.
STALE_CHECK_SECONDS = 5.0
_STALE_CHECKED: dict[int, float] = {}  # id of a storage -> when this process last looked


@dataclass(frozen=True)
class Ticket:
    """A WAITING trial as a claimant sees it; `chosen`: it brings its parameters (a retry, a
    queued configuration), so it goes before the plain tickets."""

    trial_id: int
    number: int
    chosen: bool


class Claims:
    """The atomic steps of one storage: claim a ticket, fail a dead trial, make missing tickets; and
    a look at a study's counts and tickets."""

    def __init__(self, storage: optuna.storages.BaseStorage):
        self.storage = storage

    def look(self, study: optuna.Study) -> tuple[dict[str, int], list[Ticket]]:
        """The study's trials per state, and its tickets."""
        trials = study.get_trials(deepcopy=False)
        tickets = [Ticket(internals.trial_id(t), t.number, bool(t.params or t.system_attrs.get("fixed_params")))
                   for t in trials if t.state == TrialState.WAITING]
        return count_states(trials), tickets

    def counts(self, study: optuna.Study) -> dict[str, int]:
        return self.look(study)[0]

    def claim(self, trial_id: int) -> bool:
        """WAITING -> RUNNING; True for the one caller whose claim took it."""
        try:
            return bool(self.storage.set_trial_state_values(trial_id, TrialState.RUNNING))
        except optuna.exceptions.UpdateFinishedTrialError:  # claimed and finished since the look
            return False

    def claim_counted(self, study: optuna.Study, trial_id: int) -> int | None:
        """`claim`, then the study's finished plus running trials, this one included; None when
        another caller took the ticket."""
        return _occupied(self.counts(study)) if self.claim(trial_id) else None

    def fail(self, trial_id: int) -> bool:
        """RUNNING -> FAIL; True for the one caller that failed it, False when it had ended."""
        try:
            return bool(self.storage.set_trial_state_values(trial_id, TrialState.FAIL))
        except optuna.exceptions.UpdateFinishedTrialError:
            return False

    def top_up(self, handle: "StudyHandle", target: int, batch: int) -> None:
        """Add plain tickets up to `target` finished + running + waiting trials, at most `batch`."""
        raise NotImplementedError

    def queue_once(self, handle: "StudyHandle", runs: list[dict[str, Any]], key: list[str]) -> None:
        """Queue each of `runs` ({"params": …, "user_attrs": …}) that the study does not hold yet:
        no trial of it but a failed one has the same user attributes `key`. Under the study's lock,
        so that two commands queueing the same runs at once queue each of them once."""
        with study_lock(handle.storage_url, handle.name):
            queue_once_now(handle.study, runs, key)


class SqlClaims(Claims):
    """A SQL database: each step is one conditional statement that only one writer can win."""

    def __init__(self, storage: optuna.storages.BaseStorage, engine: sa.Engine):
        super().__init__(storage)
        self.engine = engine
        # Each step is one transaction, repeated whole when the connection drops (hpo/_retry.py).
        self.retry = retrier_of(storage).call

    def claim(self, trial_id: int) -> bool:
        return self.retry(claim_sql, self.engine, trial_id)

    def claim_counted(self, study: optuna.Study, trial_id: int) -> int | None:
        return self.retry(claim_counted_sql, self.engine, internals.study_id(study), trial_id)

    def fail(self, trial_id: int) -> bool:
        return self.retry(fail_sql, self.engine, trial_id)

    def top_up(self, handle: "StudyHandle", target: int, batch: int) -> None:
        self.retry(top_up_sql, self.engine, internals.study_id(handle.study), target, batch)

    # Two small queries instead of reading every unfinished trial whole, as Optuna's cache would.
    def counts(self, study: optuna.Study) -> dict[str, int]:
        return self.retry(counts_sql, self.engine, internals.study_id(study))

    def look(self, study: optuna.Study) -> tuple[dict[str, int], list[Ticket]]:
        return self.retry(look_sql, self.engine, internals.study_id(study))


class JournalClaims(Claims):
    """A journal file: claims are Optuna's (the log decides); tickets made under hpo's lock file."""

    def top_up(self, handle: "StudyHandle", target: int, batch: int) -> None:
        with study_lock(handle.storage_url, handle.name):
            counts = self.counts(handle.study)
            for _ in range(_missing(counts, target, batch)):
                add_ticket(handle.study)


class ProxyClaims(Claims):
    """Behind `hpo storage serve`: the proxy makes each step the conditional statement above, and
    answers a look with the same two small queries (asked for as the system attributes of the
    study's negated id, which no study has), and a claim with its count in one request."""

    def look(self, study: optuna.Study) -> tuple[dict[str, int], list[Ticket]]:
        answer = self.storage.get_study_system_attrs(-internals.study_id(study))
        return answer["counts"], [Ticket(*ticket) for ticket in answer["tickets"]]

    def counts(self, study: optuna.Study) -> dict[str, int]:
        return self.look(study)[0]

    def claim_counted(self, study: optuna.Study, trial_id: int) -> int | None:
        # One request: the trial id asked for by the study's negated id and the ticket's trial id.
        occupied = self.storage.get_trial_id_from_study_id_trial_number(-internals.study_id(study), trial_id)
        return None if occupied < 0 else occupied

    def top_up(self, handle: "StudyHandle", target: int, batch: int) -> None:
        self.storage.set_study_system_attr(internals.study_id(handle.study), TOP_UP_KEY,
                                           {"target": target, "batch": batch})

    def queue_once(self, handle: "StudyHandle", runs: list[dict[str, Any]], key: list[str]) -> None:
        # The proxy takes the study's lock on the database behind it and queues them there.
        self.storage.set_study_system_attr(internals.study_id(handle.study), QUEUE_KEY, {"runs": runs, "key": key})


def claims_for(storage: optuna.storages.BaseStorage) -> Claims:
    """The atomic steps of `storage` (as returned by `open_storage`)."""
    rdb = internals.rdb_storage(storage)
    if rdb is not None:
        return SqlClaims(storage, rdb.engine)
    if isinstance(getattr(storage, "inner", storage), optuna.storages.JournalStorage):
        return JournalClaims(storage)
    return ProxyClaims(storage)  # the gateway opens no other kind: it refuses any other proxy


# --- The SQL steps (also run by the proxy on the database behind it) ---------------------------


def _claim_statement(trial_id: int) -> sa.Update:
    """WAITING -> RUNNING for one trial; only one writer's statement matches its row."""
    trials = internals.TABLES.trials
    return (sa.update(trials).where(trials.c.trial_id == trial_id, trials.c.state == TrialState.WAITING)
            .values(state=TrialState.RUNNING, datetime_start=datetime.datetime.now()))


def claim_sql(engine: sa.Engine, trial_id: int) -> bool:
    with one_statement_each(engine) as connection:
        result = connection.execute(_claim_statement(trial_id))
        connection.commit()  # nothing to commit on PostgreSQL: the statement did
        return result.rowcount == 1


def claim_counted_sql(engine: sa.Engine, study_id: int, trial_id: int) -> int | None:
    """`claim_sql` and, in the same transaction, the study's finished plus running trials; None
    when the claim lost."""
    trials = internals.TABLES.trials
    with engine.begin() as connection:
        result = connection.execute(_claim_statement(trial_id))
        if result.rowcount != 1:
            return None
        return connection.execute(sa.select(sa.func.count()).where(
            trials.c.study_id == study_id,
            trials.c.state.in_([TrialState.RUNNING, *FINISHED]))).scalar_one()


def fail_sql(engine: sa.Engine, trial_id: int) -> bool:
    trials = internals.TABLES.trials
    with one_statement_each(engine) as connection:
        result = connection.execute(
            sa.update(trials)
            .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.RUNNING)
            .values(state=TrialState.FAIL, datetime_complete=datetime.datetime.now()))
        connection.commit()  # nothing to commit on PostgreSQL: the statement did
        return result.rowcount == 1


def counts_sql(engine: sa.Engine, study_id: int) -> dict[str, int]:
    trials = internals.TABLES.trials
    counts = {state.name: 0 for state in TrialState}
    with one_statement_each(engine) as connection:
        rows = connection.execute(sa.select(trials.c.state, sa.func.count()).where(
            trials.c.study_id == study_id).group_by(trials.c.state))
        for state, count in rows:
            counts[state.name] += count
    return counts


def look_sql(engine: sa.Engine, study_id: int) -> tuple[dict[str, int], list[Ticket]]:
    counts = counts_sql(engine, study_id)
    if not counts["WAITING"]:
        return counts, []
    tables = internals.TABLES
    trials, params, attrs = tables.trials, tables.params, tables.trial_system_attrs
    has_params = sa.exists().where(params.c.trial_id == trials.c.trial_id)
    fixed = sa.exists().where(attrs.c.trial_id == trials.c.trial_id, attrs.c.key == "fixed_params",
                              attrs.c.value_json != "{}")
    with one_statement_each(engine) as connection:
        rows = connection.execute(sa.select(trials.c.trial_id, trials.c.number, has_params, fixed).where(
            trials.c.study_id == study_id, trials.c.state == TrialState.WAITING))
        return counts, [Ticket(trial_id, number, bool(p or f)) for trial_id, number, p, f in rows]


def top_up_sql(engine: sa.Engine, study_id: int, target: int, batch: int) -> int:
    """The missing tickets, inserted in one transaction; returns how many."""
    tables = internals.TABLES
    trials, studies = tables.trials, tables.studies
    with engine.begin() as connection:
        # Writing the study's row first makes concurrent top-ups of a study wait for each other:
        # a row lock on PostgreSQL and MySQL, the database's write lock on SQLite.
        connection.execute(sa.update(studies).where(studies.c.study_id == study_id)
                           .values(study_name=studies.c.study_name))
        counts = {state.name: 0 for state in TrialState}
        for state, count in connection.execute(sa.select(trials.c.state, sa.func.count()).where(
                trials.c.study_id == study_id).group_by(trials.c.state)):
            counts[state.name] += count
        missing = _missing(counts, target, batch)
        if missing:
            # Numbered as Optuna numbers a trial: the count of the study's trials before it.
            first = sum(counts.values())
            connection.execute(sa.insert(trials), [
                {"study_id": study_id, "number": first + i, "state": TrialState.WAITING,
                 "datetime_start": None, "datetime_complete": None} for i in range(missing)])
        return missing


def _missing(counts: dict[str, int], target: int, batch: int) -> int:
    return max(0, min(batch, target - _finished(counts) - counts["RUNNING"] - counts["WAITING"]))


# --- Claiming the next trial -------------------------------------------------------------------


def count_states(trials: list[FrozenTrial]) -> dict[str, int]:
    counts = {state.name: 0 for state in TrialState}
    for trial in trials:
        counts[trial.state.name] += 1
    return counts


def _finished(counts: dict[str, int]) -> int:
    return sum(counts[state.name] for state in FINISHED)


def _occupied(counts: dict[str, int]) -> int:
    return _finished(counts) + counts["RUNNING"]


def claim_next(handle: "StudyHandle", target: int, queue_only: bool,
               claims: Claims | None = None) -> tuple[int | None, dict[str, int], bool]:
    """(the claimed trial's id or None, the counts before it, whether the study is done).

    A claimed trial is RUNNING. None with done False means other workers' running trials may still
    reach the target: wait and look again.
    """
    study = handle.study
    storage = internals.study_storage(study)
    claims = claims or claims_for(storage)
    now = time.monotonic()
    if now - _STALE_CHECKED.get(id(storage), -math.inf) >= STALE_CHECK_SECONDS:
        fail_stale(study, claims)
        _STALE_CHECKED[id(storage)] = now
    for _ in range(LOOKS):
        counts, waiting = claims.look(study)
        finished = _finished(counts)
        if finished >= target or (queue_only and not counts["WAITING"] and not counts["RUNNING"]):
            return None, counts, True
        if not queue_only and _occupied(counts) >= target:
            return None, counts, False  # the running trials may reach it: wait
        if not waiting and not queue_only:
            # Every WAITING trial is read again by every worker's look (Optuna's cache keeps only
            # finished ones): a batch about the size of the running crowd, not the whole budget.
            claims.top_up(handle, target, max(TICKET_BATCH, counts["RUNNING"] + 1))
            counts, waiting = claims.look(study)
        for ticket in _claim_order(waiting)[:CLAIMS_PER_LOOK]:
            occupied = claims.claim_counted(study, ticket.trial_id)
            if occupied is None:
                continue
            if queue_only or occupied <= target:
                return ticket.trial_id, counts, False
            # A claim crossed another one that took the last place: give the ticket back.
            storage.set_trial_state_values(ticket.trial_id, TrialState.WAITING)
            return None, counts, False
        # Other workers took these tickets first: look again rather than wait a poll.
    return None, counts, False


def _claim_order(waiting: list[Ticket]) -> list[Ticket]:
    """Tickets with parameters first, in order; plain tickets shuffled, so that many workers
    claiming at once mostly try different ones."""
    plain = [t for t in waiting if not t.chosen]
    random.shuffle(plain)
    return sorted((t for t in waiting if t.chosen), key=lambda t: t.number) + plain


def queue_once_now(study: optuna.Study, runs: list[dict[str, Any]], key: list[str]) -> int:
    """`Claims.queue_once` for a caller that holds the study's lock; returns how many it queued."""
    def identity(user_attrs: dict[str, Any]) -> tuple:
        return tuple(user_attrs.get(name) for name in key)

    held = {identity(t.user_attrs) for t in study.get_trials(
        deepcopy=False, states=(*FINISHED, TrialState.RUNNING, TrialState.WAITING))}
    missing = [run for run in runs if identity(run["user_attrs"]) not in held]
    for run in missing:
        study.enqueue_trial(run["params"], user_attrs=run["user_attrs"])
    return len(missing)


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
