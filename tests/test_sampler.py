"""Samplers and pruners built from a spec: the phase on every trial, per-trial seeds, the spec's pruner.

Studies live in SQLite files; the objective only asks for the spec's parameters (no training), so
what is checked is the sampler's and the pruner's own behaviour.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from hpo._sampler import make_pruner, make_sampler, trial_seed
from hpo._space import suggest
from hpo._spec import PrunerSpec, StudySpec, load_spec
from helpers import write_spec


@pytest.fixture
def spec(tmp_path) -> StudySpec:
    return load_spec(write_spec(tmp_path, random_trials=3))


def _study(spec: StudySpec, url: str) -> optuna.Study:
    """The study as a new process opens it: a fresh sampler from the spec."""
    return optuna.load_study(study_name=spec.name, storage=url, sampler=make_sampler(spec))


def _run(study: optuna.Study, spec: StudySpec, states: list[TrialState]) -> None:
    for state in states:
        trial = study.ask()
        params = suggest(trial, spec.search)
        if state == TrialState.COMPLETE:
            study.tell(trial, params["lr"])
        else:
            study.tell(trial, state=state)


def test_each_trial_records_its_phase_and_only_finished_trials_end_the_random_phase(spec, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name=spec.name, storage=url, direction="maximize", sampler=make_sampler(spec))
    C, P, F = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL
    _run(study, spec, [C, F, P, F, C, C, C])
    phases = [t.user_attrs["phase"] for t in study.get_trials(deepcopy=False)]
    # finished before each trial: 0, 1, 1, 2, 2, 3, 4; random_trials = 3, failed trials do not count
    assert phases == ["random", "random", "random", "random", "random", "tpe", "tpe"]


def test_a_random_sampler_spec_stays_random(tmp_path):
    spec = load_spec(write_spec(tmp_path, random_trials=1, extra='kind = "random"\n'))
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name=spec.name, storage=url, direction="maximize", sampler=make_sampler(spec))
    _run(study, spec, [TrialState.COMPLETE] * 3)
    assert [t.user_attrs["phase"] for t in study.trials] == ["random"] * 3


def _params(study: optuna.Study) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in study.get_trials(deepcopy=False)]


def test_a_resumed_study_samples_new_parameters_not_the_first_runs_again(spec, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(study_name=spec.name, storage=url, direction="maximize")
    _run(_study(spec, url), spec, [TrialState.COMPLETE] * 2)
    _run(_study(spec, url), spec, [TrialState.COMPLETE] * 2)  # a second run of the same study
    params = _params(optuna.load_study(study_name=spec.name, storage=url))
    assert len(set(params)) == 4
    # A sampler seeded once with the study seed would replay the first run's parameters on resume.
    replay = f"sqlite:///{tmp_path / 'replay.db'}"
    optuna.create_study(study_name="r", storage=replay, direction="maximize")
    for _ in range(2):
        study = optuna.load_study(study_name="r", storage=replay, sampler=optuna.samplers.RandomSampler(seed=spec.seed))
        _run(study, spec, [TrialState.COMPLETE] * 2)
    replayed = _params(optuna.load_study(study_name="r", storage=replay))
    assert replayed[:2] == replayed[2:]


def test_the_same_seed_gives_the_same_parameters_trial_by_trial(spec, tmp_path):
    runs = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / f'{name}.db'}"
        optuna.create_study(study_name=spec.name, storage=url, direction="maximize")
        for _ in range(3):  # one trial per process, as three workers would
            _run(_study(spec, url), spec, [TrialState.COMPLETE])
        runs.append(_params(optuna.load_study(study_name=spec.name, storage=url)))
    assert runs[0] == runs[1]


def test_trial_seeds_differ_between_trials_and_streams_and_repeat_for_the_same_ones():
    seeds = {trial_seed(0, n, stream) for n in range(50) for stream in range(3)}
    assert len(seeds) == 150
    assert trial_seed(7, 3, 1) == trial_seed(7, 3, 1)
    assert trial_seed(7, 3, 1) != trial_seed(8, 3, 1)


# --- Pruners ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, cls", [
    ("none", optuna.pruners.NopPruner),
    ("median", optuna.pruners.MedianPruner),
    ("successive-halving", optuna.pruners.SuccessiveHalvingPruner),
    ("hyperband", optuna.pruners.HyperbandPruner),
])
def test_the_pruner_is_the_kind_the_spec_names(kind, cls):
    assert type(make_pruner(PrunerSpec(kind=kind), epochs=20)) is cls


def _pruned_at(pruner: optuna.pruners.BasePruner, peers: int, step: int, name: str = "pruning") -> bool:
    """Whether a trial far below `peers` finished trials is pruned when it reports at `step` (1-based
    epochs, as the objective reports them). Hyperband puts a trial in a bracket by a hash of the
    study's name and the trial's number, so the name is fixed, never Optuna's random default."""
    study = optuna.create_study(study_name=name, direction="maximize", pruner=pruner)
    for n in range(peers):
        peer = study.ask()
        for epoch in range(1, 11):
            peer.report(0.5 + 0.01 * n + 0.01 * epoch, epoch)
            peer.should_prune()  # the halving pruners record each rung a trial reaches
        study.tell(peer, 0.9)
    trial = study.ask()
    for epoch in range(1, step + 1):
        trial.report(0.01, epoch)
    return trial.should_prune()


def test_the_median_pruner_waits_for_its_startup_trials_and_warmup_epochs():
    pruner = make_pruner(PrunerSpec(kind="median", startup_trials=2, warmup_epochs=3), epochs=10)
    assert not _pruned_at(pruner, peers=1, step=5)  # one finished trial: still starting up
    assert not _pruned_at(pruner, peers=2, step=2)  # epochs before the third are warm-up
    assert _pruned_at(pruner, peers=2, step=3)


@pytest.mark.parametrize("pruner_kind", ["successive-halving", "hyperband"])
def test_the_halving_pruners_judge_no_trial_before_min_epochs(pruner_kind):
    # Hyperband's brackets start later than min_epochs, all but the first: over several studies
    # (several bracket draws) some trial is judged at epoch 1 with min_epochs 1, none with 2.
    names = [f"pruning-{i}" for i in range(8)]
    early = [_pruned_at(make_pruner(PrunerSpec(kind=pruner_kind, min_epochs=1), epochs=10), 6, 1, n)
             for n in names]
    late = [_pruned_at(make_pruner(PrunerSpec(kind=pruner_kind, min_epochs=2), epochs=10), 6, 1, n)
            for n in names]
    assert any(early) and not any(late)
    if pruner_kind == "successive-halving":
        assert all(early)
