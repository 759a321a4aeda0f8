"""How fast `hpo study copy` moves a study from SQLite to PostgreSQL, next to `optuna.copy_study`.

Builds a SQLite study of N trials shaped like ours (2-4 params, 50 intermediate values, a `curves`
attribute of 4 lists x 50 floats, a few more attributes), copies it to PostgreSQL with both, checks
that both copies hold the same trials, prints the seconds and the ratio, and deletes the copies.

    python bench/copy_speed.py [--trials 1000] [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import datetime
import math
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpo._transfer import copy_study  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "lr": FloatDistribution(1e-4, 0.5, log=True),
    "weight_decay": FloatDistribution(1e-8, 1e-3, log=True),
    "optimizer": CategoricalDistribution(["sgd", "momentum", "adam"]),
    "hidden_units": IntDistribution(16, 256, step=16),
}
EPOCHS = 50


def make_trial(number: int, rng: random.Random) -> optuna.trial.FrozenTrial:
    names = list(SPACE)[: 2 + number % 3]  # 2, 3 or 4 params
    params = {n: _sample(SPACE[n], rng) for n in names}
    curve = [0.5 + 0.4 * (1 - math.exp(-e / 10)) + rng.gauss(0, 0.01) for e in range(EPOCHS)]
    state = TrialState.PRUNED if number % 5 == 4 else TrialState.COMPLETE
    trial = optuna.trial.create_trial(
        state=state,
        value=curve[-1] if state == TrialState.COMPLETE else None,
        params=params,
        distributions={n: SPACE[n] for n in names},
        intermediate_values=dict(enumerate(curve)),
        user_attrs={
            "curves": {k: [rng.random() for _ in range(EPOCHS)]
                       for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")},
            "phase": "random" if number < 10 else "tpe",
            "epochs": EPOCHS,
            "seconds": rng.uniform(5, 50),
            "seed": number,
            "outcome": "completed",
        },
    )
    trial.datetime_start = datetime.datetime(2025, 1, 1) + datetime.timedelta(minutes=number)
    trial.datetime_complete = trial.datetime_start + datetime.timedelta(seconds=30)
    return trial


def _sample(dist, rng: random.Random):
    if isinstance(dist, CategoricalDistribution):
        return rng.choice(dist.choices)
    if isinstance(dist, IntDistribution):
        return rng.randrange(dist.low, dist.high + 1, dist.step)
    return math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))


def same_trials(url: str, a: str, b: str) -> bool:
    one = optuna.load_study(study_name=a, storage=url).get_trials(deepcopy=False)
    two = optuna.load_study(study_name=b, storage=url).get_trials(deepcopy=False)
    fields = ("number", "state", "values", "datetime_start", "datetime_complete", "params",
              "distributions", "intermediate_values", "user_attrs", "system_attrs")
    return len(one) == len(two) and all(
        getattr(x, f) == getattr(y, f) for x, y in zip(one, two) for f in fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        source = f"sqlite:///{folder}/source.db"
        rng = random.Random(0)
        started = time.perf_counter()
        study = optuna.create_study(study_name="bench", storage=source, direction="maximize")
        study.set_user_attr("spec", {"study": {"name": "bench"}, "search": {n: str(d) for n, d in SPACE.items()}})
        study.add_trials([make_trial(i, rng) for i in range(args.trials)])
        print(f"built the source: {args.trials} trials in SQLite in {time.perf_counter() - started:.1f} s "
              "(with Optuna's add_trials)")

        ours_name, theirs_name = f"bench-hpo-{uuid.uuid4().hex[:8]}", f"bench-optuna-{uuid.uuid4().hex[:8]}"
        try:
            started = time.perf_counter()
            copy_study("bench", source, args.postgres, ours_name)
            ours = time.perf_counter() - started

            started = time.perf_counter()
            optuna.copy_study(from_study_name="bench", from_storage=source, to_storage=args.postgres,
                              to_study_name=theirs_name)
            theirs = time.perf_counter() - started

            same = same_trials(args.postgres, ours_name, theirs_name)
        finally:
            for name in (ours_name, theirs_name):
                try:
                    optuna.delete_study(study_name=name, storage=args.postgres)
                except KeyError:
                    pass

    print(f"hpo study copy     {ours:7.2f} s  ({ours / args.trials * 1000:.2f} ms/trial)")
    print(f"optuna.copy_study  {theirs:7.2f} s  ({theirs / args.trials * 1000:.2f} ms/trial)")
    print(f"ratio              {theirs / ours:7.1f}x faster")
    print(f"same trials        {'yes' if same else 'NO'}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
