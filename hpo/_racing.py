"""A raced search: k-fold evidence spent where it decides between the incumbent and a challenger.

A single 100-image validation accuracy varies by about 0.04 between training seeds, so the
best of 100 single runs is mostly the luckiest draw. Here a configuration is evaluated on the
k stratified folds of the samples, one run (fold) at a time, and the runs go where they
decide something, as in SMAC's intensification and irace's racing:

- the incumbent is the configuration with the best mean among those with the most runs;
- a new configuration gets its first run; while its mean stays within `margin / sqrt(n)` of
  the incumbent's mean on the same folds (a paired comparison: both were trained with the
  same seed on the same fold), it gets its next fold, up to the incumbent's count;
- a challenger that reaches the incumbent's count while still close makes the incumbent run
  one more fold (up to folds x repeats), and the race goes on;
- a run that falls `prune_margin` below the incumbent's run on the same fold at a checkpoint
  epoch is stopped, and its configuration is out;
- new configurations come from TPE fed with every configuration's mean, not single draws.

The choice is the incumbent: the best mean backed by the most runs, with its standard error.

Every run is one Optuna trial whose user attributes say which configuration (`config`, the
number of its first trial) and which run (`run`: fold `run % folds`, repeat `run // folds`)
it is, and how many epochs it trained. The race is a function of the stored trials alone,
so a crashed race resumes where it stopped and several workers can race one study.

A spec turns it on with `[objective] method = "race"` (hpo/_spec.py): `hpo study run` then calls
`run_race`, and `[study] trials = N` is a budget of N x epochs epochs, every epoch of every run
counted (a run that failed without saying how far it got counts its full length). `race` is the
same loop without heartbeats, signals or progress, for benchmarks and tests.
"""

from __future__ import annotations

import math
import signal
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

import trainer
from hpo import _claims
from hpo import _optuna_internals as internals
from hpo import _study
from hpo._errors import Interrupted, StorageError, StudyError
from hpo._format import utc_now
from hpo._notes import refresh as refresh_note
from hpo._objective import Objective
from hpo._sampler import trial_seed
from hpo._space import suggest
from hpo._spec import ObjectiveSpec, StudySpec
from hpo._storage import params_in_one_write, record_trial

CONFIG_ATTR = "config"
RUN_ATTR = "run"
EPOCHS_ATTR = "epochs"
CURVE_ATTR = "curve"
RACE_ATTR = "race"  # the study's choice when a run last ended, for the dashboard's note
SEED_STREAM = 3000  # the run seeds: shared by all configurations, distinct from other streams
# Looking for dead workers' runs costs a query; a grace period is tens of seconds.
STALE_CHECK_SECONDS = 5.0
CLAIM_TRIES = 4  # claims lost to another worker in a row before this one waits a poll


@dataclass(frozen=True)
class RaceSettings:
    """How a raced search spends its budget.

    Attributes:
        folds: k stratified folds of the samples; a run trains on k-1 folds, validates on one.
        repeats: seeds per fold at most; the incumbent can gather folds x repeats runs.
        margin: a challenger stays in the race while its paired deficit to the incumbent is
            below margin / sqrt(runs); smaller spends fewer runs on challengers.
        prune_margin: a run is stopped at a checkpoint epoch when its validation accuracy
            is this far below the incumbent's run on the same fold at the same epoch.
        prune_epochs: the checkpoint epochs.
        startup: configurations drawn at random before TPE proposes.
        sampler: "tpe" or "random"; TPE is multivariate (it models the parameters jointly).
    """

    folds: int = 5
    repeats: int = 1
    margin: float = 0.08
    prune_margin: float = 0.15
    prune_epochs: tuple[int, ...] = (10, 20)
    startup: int = 10
    sampler: str = "tpe"

    @classmethod
    def of(cls, spec: StudySpec) -> "RaceSettings":
        """A raced spec's settings: [objective] folds, repeats, margins and checkpoints; [sampler]
        kind and random_trials (the configurations drawn at random before TPE)."""
        o = spec.objective
        return cls(folds=o.folds, repeats=o.repeats, margin=o.margin, prune_margin=o.prune_margin,
                   prune_epochs=tuple(o.prune_epochs), startup=spec.sampler.random_trials,
                   sampler=spec.sampler.kind)

    def __post_init__(self) -> None:
        if not isinstance(self.folds, int) or self.folds < 2:
            raise ValueError(f"folds must be an integer >= 2; got {self.folds!r}")
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats must be an integer >= 1; got {self.repeats!r}")
        if not self.margin >= 0 or not self.prune_margin >= 0:
            raise ValueError(f"margin and prune_margin must be >= 0; got {self.margin!r}, {self.prune_margin!r}")
        if self.sampler not in ("tpe", "random"):
            raise ValueError(f"sampler must be 'tpe' or 'random'; got {self.sampler!r}")
        object.__setattr__(self, "prune_epochs", tuple(self.prune_epochs))

    @property
    def max_runs(self) -> int:
        return self.folds * self.repeats


@dataclass
class Configuration:
    """One configuration and the evidence about it gathered so far."""

    number: int  # the trial number of its first run
    params: dict[str, Any]
    distributions: dict[str, BaseDistribution]
    values: dict[int, float] = field(default_factory=dict)  # run index -> validation accuracy
    curves: dict[int, list[float]] = field(default_factory=dict)  # run index -> accuracy per epoch
    stopped: float | None = None  # a run was stopped or diverged: the accuracy it had reached
    pending: set[int] = field(default_factory=set)  # runs claimed and not finished
    epochs: int = 0

    @property
    def runs(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values.values()) if self.values else float("nan")

    @property
    def se(self) -> float:
        """Standard error of the mean; nan with fewer than two runs."""
        if len(self.values) < 2:
            return float("nan")
        return statistics.stdev(self.values.values()) / math.sqrt(len(self.values))

    @property
    def out(self) -> bool:
        return self.stopped is not None


def configurations(trials: Sequence[FrozenTrial]) -> list[Configuration]:
    """The configurations of a raced study, with their runs, from its trials."""
    found: dict[int, Configuration] = {}
    for t in sorted(trials, key=lambda t: t.number):
        # A trial just asked for has no attributes yet: it is a new configuration's first run. A race
        # queues nothing, so a WAITING copy (a retry queued by `hpo study fail-stale`) is not a run.
        if RUN_ATTR not in t.user_attrs or t.state in (TrialState.FAIL, TrialState.WAITING):
            continue
        number = int(t.user_attrs[CONFIG_ATTR])
        c = found.get(number)
        if c is None:
            c = found[number] = Configuration(number, dict(t.params), dict(t.distributions))
        run = int(t.user_attrs[RUN_ATTR])
        c.epochs += int(t.user_attrs.get(EPOCHS_ATTR, 0))
        if t.state == TrialState.COMPLETE:
            c.values[run] = float(t.value)
            c.curves[run] = list(t.user_attrs.get(CURVE_ATTR, []))
        elif t.state == TrialState.PRUNED:
            curve = t.user_attrs.get(CURVE_ATTR) or [0.0]
            c.stopped = float(curve[-1])
        else:  # RUNNING
            c.pending.add(run)
    return list(found.values())


def epochs_spent(trials: Sequence[FrozenTrial], length: int = 0) -> int:
    """Every epoch trained by the runs of a raced study: complete, stopped, diverged, failed.

    A failed run that did not record its epochs (its worker died) counts `length`, a run's full
    length: the budget may be overcounted, never undercounted.
    """
    return sum(int(t.user_attrs[EPOCHS_ATTR]) if EPOCHS_ATTR in t.user_attrs
               else length if t.state == TrialState.FAIL and RUN_ATTR in t.user_attrs else 0
               for t in trials)


def incumbent(configs: Sequence[Configuration], settings: RaceSettings) -> Configuration | None:
    """The best mean among the configurations with the most runs (capped at folds x repeats)."""
    alive = [c for c in configs if not c.out and c.runs]
    if not alive:
        return None
    most = min(max(c.runs for c in alive), settings.max_runs)
    leaders = [c for c in alive if c.runs >= most]
    return max(leaders, key=lambda c: (c.mean, -c.number))


def deficit(challenger: Configuration, leader: Configuration) -> float:
    """How far the challenger's mean is below the leader's on the runs both have."""
    common = [r for r in challenger.values if r in leader.values]
    if not common:
        return 0.0
    return statistics.fmean(leader.values[r] for r in common) - statistics.fmean(challenger.values[r] for r in common)


def in_race(challenger: Configuration, leader: Configuration, settings: RaceSettings) -> bool:
    """Still close enough to the incumbent to deserve its next run."""
    n = len([r for r in challenger.values if r in leader.values])
    return n == 0 or deficit(challenger, leader) < settings.margin / math.sqrt(n)


@dataclass(frozen=True)
class Step:
    """What the race does next: a run of an existing configuration, or a new configuration."""

    config: Configuration | None  # None: a new configuration, sampled
    run: int = 0


def next_step(configs: Sequence[Configuration], settings: RaceSettings) -> Step:
    """The racing rule: race the closest challenger, else strengthen the incumbent, else explore."""
    leader = incumbent(configs, settings)
    if leader is None:
        return Step(None)
    challengers = [c for c in configs if c is not leader and not c.out and c.runs < leader.runs
                   and c.runs not in c.pending and in_race(c, leader, settings)]
    if challengers:
        closest = min(challengers, key=lambda c: (deficit(c, leader), c.number))
        return Step(closest, closest.runs)
    level = [c for c in configs if c is not leader and not c.out and c.runs == leader.runs
             and in_race(c, leader, settings)]
    if level and leader.runs < settings.max_runs and leader.runs not in leader.pending:
        return Step(leader, leader.runs)
    return Step(None)


class EstimateSampler(BaseSampler):
    """Proposes new configurations from every configuration's mean, one point per configuration.

    The inner sampler (random, or multivariate TPE after `startup` configurations) sees a
    proxy study holding one complete trial per configuration with its mean as the value; a
    configuration that was stopped counts with the accuracy it had reached. It is re-seeded
    from (seed, trial number), so a resumed race or a second worker does not replay draws.
    """

    def __init__(self, settings: RaceSettings, seed: int):
        self._settings = settings
        self._seed = seed
        self._proxy: tuple[int, Study, BaseSampler] | None = None

    def _inner(self, study: Study, trial: FrozenTrial) -> tuple[Study, BaseSampler]:
        if self._proxy is None or self._proxy[0] != trial.number:
            seed = trial_seed(self._seed, trial.number, stream=1)
            inner: BaseSampler = (RandomSampler(seed=seed) if self._settings.sampler == "random" else TPESampler(
                n_startup_trials=self._settings.startup, multivariate=True, constant_liar=False, seed=seed))
            proxy = optuna.create_study(direction="maximize", sampler=inner)
            configs = configurations(study.get_trials(deepcopy=False))  # read afresh, past ask's cache
            proxy.add_trials([
                optuna.trial.create_trial(params=c.params, distributions=c.distributions,
                                          value=c.stopped if c.out else c.mean)
                for c in configs if c.out or c.runs])
            # New configurations other workers are running now count as the worst accuracy (a
            # constant liar: TPE's own would write to the proxy's trial, which is not there), so
            # that two workers do not race the same point.
            proxy.add_trials([
                optuna.trial.create_trial(params=c.params, distributions=c.distributions, value=0.0)
                for c in configs if c.pending and not c.runs and not c.out])
            self._proxy = (trial.number, proxy, inner)
        return self._proxy[1], self._proxy[2]

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        proxy, inner = self._inner(study, trial)
        return inner.infer_relative_search_space(proxy, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        proxy, inner = self._inner(study, trial)
        return inner.sample_relative(proxy, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        proxy, inner = self._inner(study, trial)
        return inner.sample_independent(proxy, trial, param_name, param_distribution)


@dataclass(frozen=True)
class RaceResult:
    """The choice of a race and what it cost."""

    choice: Configuration
    epochs: int
    configurations: int


Evaluate = Callable[[dict[str, Any], int, int, "list[float] | None"], "tuple[float | None, list[float], int]"]


class FoldEvaluator:
    """Trains one run (configuration, run index) of a spec on its fold with the trainer.

    Returns (final validation accuracy or None if stopped, accuracy per epoch, epochs trained).
    A diverged run counts the epoch it diverged in.
    """

    def __init__(self, spec: StudySpec, settings: RaceSettings, data_dir: str | None = None):
        self.spec = spec
        self.settings = settings
        self.objective = Objective(spec.replace(objective=ObjectiveSpec(folds=settings.folds)), data_dir)
        self.on_epoch: Callable[[int, int], None] | None = None  # (epoch, epochs), for progress
        self.trained = 0  # epochs the current run has trained: what an interrupted run counts

    def __call__(self, params: dict[str, Any], run: int, number: int,
                 reference: list[float] | None) -> tuple[float | None, list[float], int]:
        fold = self.objective.folds[run % self.settings.folds]
        # Every configuration's run r uses the same seed: paired comparisons on common noise.
        config = self.objective.config(params, trial_seed(self.spec.seed, run, SEED_STREAM))
        checkpoints = set(self.settings.prune_epochs)
        self.trained = 0

        def on_epoch(metrics: trainer.EpochMetrics, network: Any) -> str | None:
            e = self.trained = metrics.epoch
            if self.on_epoch is not None:
                self.on_epoch(e, config.epochs)
            if reference and e in checkpoints and e <= len(reference) \
                    and metrics.val_accuracy < reference[e - 1] - self.settings.prune_margin:
                return f"stopped at epoch {e}: {metrics.val_accuracy:.3f}, the incumbent had {reference[e - 1]:.3f}"
            return None

        history = trainer.fit(config, fold.train, fold.validation, callback=on_epoch).history
        curve = [float(m.val_accuracy) for m in history.epochs]
        if history.outcome == "completed":
            return curve[-1], curve, len(curve)
        trained = history.stop_epoch if history.outcome == "diverged" else len(curve)
        return None, curve or [0.0], int(trained)


def _fits(study: optuna.Study, number: int, epochs: int, budget_epochs: int) -> bool:
    """Whether a claimed run fits the budget; of runs claimed at once, the earliest go first."""
    trials = study.get_trials(deepcopy=False)
    ahead = sum(t.state == TrialState.RUNNING and t.number <= number for t in trials)
    return epochs_spent(trials, epochs) + epochs * ahead <= budget_epochs


def _start_run(study: optuna.Study, config: Configuration, run: int) -> optuna.Trial:
    """A running trial for one more run of a configuration, created whole in one write.

    Not through the study's queue: a queued trial can be claimed by another worker between
    `enqueue_trial` and `ask`.
    """
    template = optuna.trial.create_trial(state=TrialState.RUNNING, params=config.params,
                                         distributions=config.distributions,
                                         user_attrs={CONFIG_ATTR: config.number, RUN_ATTR: run})
    trial_id = internals.study_storage(study).create_new_trial(internals.study_id(study), template_trial=template)
    return optuna.Trial(study, trial_id)


@dataclass(frozen=True)
class Claim:
    """A run this worker has claimed: its trial, configuration, run index and reference curve."""

    trial: optuna.Trial
    params: dict[str, Any]
    number: int
    run: int
    reference: list[float] | None


def claim_run(study: optuna.Study, spec: StudySpec, settings: RaceSettings,
              budget_epochs: int) -> tuple[Claim | None, int]:
    """The next run of the race, claimed (RUNNING), or None when no run fits the budget now.

    Returns (the claim or None, how many runs are running besides it). Runs in progress (other
    workers') hold their full length of the budget; None while some run means the budget may
    free up (a run stopped early), none running means the race is over.
    """
    for _ in range(CLAIM_TRIES):
        claim, running, lost = _try_claim(study, spec, settings, budget_epochs)
        if not lost:
            return claim, running
    return None, running


def _try_claim(study: optuna.Study, spec: StudySpec, settings: RaceSettings,
               budget_epochs: int) -> tuple[Claim | None, int, bool]:
    """One attempt of `claim_run`; the last item says another worker took the same run first."""
    trials = study.get_trials(deepcopy=False)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    if epochs_spent(trials, spec.epochs) + spec.epochs * (running + 1) > budget_epochs:
        return None, running, False
    configs = configurations(trials)
    step = next_step(configs, settings)
    leader = incumbent(configs, settings)
    if step.config is None:
        with warnings.catch_warnings():
            # Optuna warns that only Study.optimize sends heartbeats: `run_race` sends them itself.
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
            trial = study.ask()
        with params_in_one_write(trial):
            params = suggest(trial, spec.search)
        number, run = trial.number, 0
        record_trial(trial, {}, {CONFIG_ATTR: number, RUN_ATTR: run})
    else:
        trial = _start_run(study, step.config, step.run)
        params, number, run = step.config.params, step.config.number, step.run
        if _taken(study, trial.number, number, run):
            _give_up(study, trial, "another worker claimed this run first")
            return None, running, True
    if not _fits(study, trial.number, spec.epochs, budget_epochs):
        # another worker claimed the last runs between our check and our claim
        _give_up(study, trial, "over the budget: another worker claimed the last run")
        return None, running + 1, False
    reference = leader.curves.get(run) if leader is not None and leader.number != number else None
    return Claim(trial, params, number, run, reference), running, False


def _taken(study: optuna.Study, number: int, config: int, run: int) -> bool:
    """Whether an earlier trial holds the same run: two workers that decided alike both created one,
    and the later yields (it sees the earlier, which was written before it)."""
    return any(t.number < number and t.state not in (TrialState.FAIL, TrialState.WAITING)
               and t.user_attrs.get(CONFIG_ATTR) == config and t.user_attrs.get(RUN_ATTR) == run
               for t in study.get_trials(deepcopy=False))


def _give_up(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """A claimed run that will not train: failed, with no epochs spent."""
    record_trial(trial, {}, {EPOCHS_ATTR: 0, "reason": reason})
    study.tell(trial, state=TrialState.FAIL)


def _finish(study: optuna.Study, claim: Claim, value: float | None, curve: list[float], epochs: int) -> FrozenTrial:
    record_trial(claim.trial, {}, {EPOCHS_ATTR: epochs, CURVE_ATTR: [round(v, 4) for v in curve]})
    if value is None:
        return study.tell(claim.trial, state=TrialState.PRUNED)
    return study.tell(claim.trial, value)


def race(study: optuna.Study, spec: StudySpec, settings: RaceSettings, budget_epochs: int,
         evaluate: Evaluate | None = None, data_dir: str | None = None) -> RaceResult:
    """Race configurations of `spec.search` on `study` until `budget_epochs` are spent.

    The loop without heartbeats, signals or progress (benchmarks, tests); `hpo study run` calls
    `run_race`.

    Args:
        study: a maximizing study; may already hold runs of this race (it resumes).
        spec: the space, data, model and training; spec.epochs is the length of a run.
        settings: the racing rules.
        budget_epochs: every epoch of every run counts; a run is only started when its full
            length still fits.
        evaluate: evaluate(params, run, number, reference_curve) -> (value or None if
            stopped, curve, epochs); the trainer on the folds by default (tests pass a
            synthetic one).
        data_dir: a folder with the data files, searched first.

    Returns:
        RaceResult(choice, epochs spent, configurations tried).
    """
    evaluate = evaluate or FoldEvaluator(spec, settings, data_dir)
    study.sampler = EstimateSampler(settings, spec.seed)
    while True:
        claim, _ = claim_run(study, spec, settings, budget_epochs)
        if claim is None:
            break
        _finish(study, claim, *evaluate(claim.params, claim.run, claim.number, claim.reference))
    trials = study.get_trials(deepcopy=False)
    configs = configurations(trials)
    choice = incumbent(configs, settings)
    if choice is None:
        raise ValueError(f"a budget of {budget_epochs} epochs did not complete a single run of {spec.epochs}")
    return RaceResult(choice, epochs_spent(trials, spec.epochs), len(configs))


# --- The race as `hpo study run` runs it ---------------------------------------------------------


def budget_epochs(spec: StudySpec, target: int) -> int:
    """A raced study's budget: `target` single-split trials' worth of epochs."""
    return target * spec.epochs


@dataclass(frozen=True)
class Standing:
    """A raced study at a glance: its configurations, the choice, the budget spent."""

    configurations: list[Configuration]
    choice: Configuration | None
    spent: int  # epochs, every run's
    budget: int  # epochs: the current target x epochs
    running: int
    settings: RaceSettings

    @property
    def over(self) -> bool:
        """No further run fits the budget and none is running: the race has ended."""
        return not self.running and self.spent + self.run_length > self.budget

    run_length: int = 0


def standing(handle: "_study.StudyHandle", target: int | None = None) -> Standing:
    """Where a raced study stands (target: its current one by default)."""
    spec = handle.spec
    settings = RaceSettings.of(spec)
    trials = handle.trials()
    configs = configurations(trials)
    target = target or _study.current_target(handle.study, spec)
    return Standing(configs, incumbent(configs, settings), epochs_spent(trials, spec.epochs),
                    budget_epochs(spec, target), sum(t.state == TrialState.RUNNING for t in trials),
                    settings, spec.epochs)


def ranked_configurations(now: Standing) -> list[Configuration]:
    """The configurations in the race's order: the choice, then by runs (capped), then by mean;
    those stopped last."""
    cap = now.settings.max_runs

    def order(c: Configuration) -> tuple:
        return (c is not now.choice, c.out, -min(c.runs, cap), -(c.mean if c.runs else -1.0), c.number)

    return sorted(now.configurations, key=order)


def state_of(c: Configuration, now: Standing) -> str:
    if c is now.choice:
        return "choice"
    if c.out:
        return "stopped"
    return "running" if c.pending else "raced"


def evidence(c: Configuration, now: Standing) -> dict[str, Any]:
    """One configuration's evidence, JSON-ready: runs and folds evaluated, mean, standard error."""
    folds = now.settings.folds
    return {"number": c.number, "state": state_of(c, now), "runs": c.runs,
            "folds": sorted({r % folds for r in c.values}),
            "mean": _finite(c.mean), "stderr": _finite(c.se), "values": [c.values[r] for r in sorted(c.values)],
            "stopped_at": c.stopped, "epochs": c.epochs, "params": dict(c.params)}


def race_view(handle: "_study.StudyHandle", top: int) -> dict[str, Any]:
    """A raced study's budget and its `top` configurations' evidence, as `hpo study show --json` and
    `hpo.show` give them under "race"."""
    now = standing(handle)
    return {"budget_epochs": now.budget, "epochs_spent": now.spent, "folds": now.settings.folds,
            "repeats": now.settings.repeats, "configurations_tried": len(now.configurations),
            "configurations": [evidence(c, now) for c in ranked_configurations(now)[:top]]}


def leader_text(c: Configuration | None) -> str:
    """The incumbent for people: number, mean ± standard error, runs."""
    if c is None:
        return "no incumbent yet"
    se = "" if math.isnan(c.se) else f" ± {c.se:.3f}"
    return f"incumbent #{c.number} {c.mean:.4f}{se} ({c.runs} run{'s' if c.runs != 1 else ''})"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def race_progress(handle: "_study.StudyHandle", target: int, last: FrozenTrial | None,
                  running: dict[int, tuple[int, int]], elsewhere: int, elapsed: float,
                  trained: int | None = None) -> "_study.Progress":
    """A race's `Progress`: epochs spent of the budget, the incumbent's estimate, the running runs.

    `trained`: the epochs this process trained (what the time left is reckoned from); None: all
    spent since the run began is taken as this run's (several workers reporting to one parent).
    """
    now = standing(handle, target)
    return _study.Progress(now.spent, now.budget, now.spent if trained is None else trained, None, last, elapsed,
                           running, elsewhere, unit="epochs", leader=leader_text(now.choice))


def run_race(handle: "_study.StudyHandle", target: int, timeout: float | None = None,
             on_progress: Callable[["_study.Progress"], None] | None = None, data_dir: str | None = None,
             poll_seconds: float = 2.0) -> "_study.RunResult":
    """Race the study until its budget (`target` x epochs epochs) is spent, as `hpo study run` does.

    Every run is a trial with heartbeats; runs of dead workers are failed (they count their full
    length); Ctrl-C or SIGTERM records the running run as failed with the epochs it trained and
    raises Interrupted. Several workers (processes, machines) may race one study: each claims runs
    in the storage, and a run claimed past the budget is given up before it trains.

    Args:
        handle: the open study (its spec has [objective] method = "race").
        target: the budget in single-split trials; stored as the study's current target.
        timeout: start no new run after this many seconds.
        on_progress: called with a `Progress` in epochs (done: spent, target: the budget) when
            a run starts and ends, at each epoch, and while this worker waits for others.
        data_dir: the folder with the data files.
        poll_seconds: how often a waiting worker looks at the study again.
    """
    study, spec = handle.study, handle.spec
    settings = RaceSettings.of(spec)
    budget = budget_epochs(spec, target)
    evaluator = FoldEvaluator(spec, settings, data_dir)
    study.sampler = EstimateSampler(settings, spec.seed)
    started = time.monotonic()
    report = on_progress or (lambda progress: None)
    ran = trained = 0
    stale_checked = -math.inf

    def progress(last: FrozenTrial | None, running: dict[int, tuple[int, int]], elsewhere: int) -> "_study.Progress":
        return race_progress(handle, target, last, running, elsewhere, time.monotonic() - started, trained)

    while timeout is None or time.monotonic() - started < timeout:
        claim = None
        with _study.HeldInterrupt() as held:
            if time.monotonic() - stale_checked >= STALE_CHECK_SECONDS:
                _fail_stale(study)
                stale_checked = time.monotonic()
            internals.forget_cached_trials(study)
            claim, running = claim_run(study, spec, settings, budget)
        if held.received:
            if claim is not None:
                _fail_run(study, claim.trial, 0, _study.REASONS[held.received])
                raise Interrupted(f"{_study.STOPPED[held.received]}: run {claim.trial.number} was recorded "
                                  "as failed", held.received)
            raise Interrupted(f"{_study.STOPPED[held.received]} between runs, nothing lost", held.received)
        if claim is None:
            if not running:
                break
            report(progress(None, {}, running))  # others' runs hold the rest of the budget: wait
            time.sleep(poll_seconds)
            continue
        number = claim.trial.number
        latest = progress(None, {number: (0, spec.epochs)}, running)
        report(latest)

        def on_epoch(epoch: int, epochs: int) -> None:
            report(replace(latest, elapsed=time.monotonic() - started, running={number: (epoch, epochs)}))

        evaluator.on_epoch = on_epoch if on_progress else None
        frozen = _run_one(study, claim, evaluator)
        ran += 1
        trained += int(frozen.user_attrs.get(EPOCHS_ATTR, 0))
        report(progress(frozen, {}, sum(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False))))
    counts = _study.count_states(study)
    now = standing(handle, target)
    best = study.get_trials(deepcopy=False)[now.choice.number] if now.choice is not None else None
    if now.choice is not None:
        remember_choice(study, now)
    return _study.RunResult(ran, _study.finished_count(counts), target, best, now.over, counts,
                            epochs=(now.spent, now.budget))


def remember_choice(study: optuna.Study, now: Standing) -> None:
    """Store the choice and its estimate on the study and say it in the dashboard's note."""
    c = now.choice
    study.set_user_attr(RACE_ATTR, {"number": c.number, "params": dict(c.params), "mean": c.mean,
                                    "stderr": _finite(c.se), "runs": c.runs, "configurations": len(now.configurations),
                                    "epochs_spent": now.spent, "budget_epochs": now.budget, "date": utc_now()})
    refresh_note(study)


def _run_one(study: optuna.Study, claim: Claim, evaluator: FoldEvaluator) -> FrozenTrial:
    """Train one claimed run with heartbeats; record it, or record why it failed."""
    trial = claim.trial
    with internals.heartbeat(study, trial):
        try:
            value, curve, epochs = evaluator(claim.params, claim.run, claim.number, claim.reference)
        except (KeyboardInterrupt, _study.Terminated) as exc:
            signum = signal.SIGTERM if isinstance(exc, _study.Terminated) else signal.SIGINT
            _fail_run(study, trial, evaluator.trained, _study.REASONS[signum])
            raise Interrupted(f"{_study.STOPPED[signum]}: run {trial.number} was recorded as failed "
                              f"after {evaluator.trained} epochs", signum) from None
        except (StorageError, StudyError):
            raise
        except Exception as exc:  # a real error: keep the reason on the run, stop the race
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            _fail_run(study, trial, evaluator.trained, reason)
            raise StudyError(f"run {trial.number} failed: {reason}") from exc
    with _study.HeldInterrupt() as held:
        frozen = _finish(study, claim, value, curve, epochs)
    if held.received:
        raise Interrupted(f"{_study.STOPPED[held.received]} after run {trial.number} finished, nothing lost",
                          held.received)
    return frozen


def _fail_run(study: optuna.Study, trial: optuna.Trial, epochs: int, reason: str) -> None:
    """A run that ends without a result: failed, with the epochs it trained (they count)."""
    with _study.HeldInterrupt():
        record_trial(trial, {}, {EPOCHS_ATTR: int(epochs)})
        _study._fail(study, trial, reason)


def _fail_stale(study: optuna.Study) -> None:
    """Fail the runs whose worker stopped sending heartbeats. No retry is queued: the race decides
    again what to run, and such a run counts its full length."""
    claims = _claims.claims_for(internals.study_storage(study))
    for trial_id in internals.stale_trial_ids(study):
        claims.fail(trial_id)
