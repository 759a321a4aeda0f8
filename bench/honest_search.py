"""Honest search: the test accuracy of the configuration each method hands over, at equal budget.

On the seed's protocol (studies/book.toml: 500 MNIST samples, 400 train / 100 validation,
split seed 0, 6x100 ReLU He, batch 100, 50 epochs) every method gets the budget of 100
single-split trials of 50 epochs: 5,000 epochs over a 400-sample training set, every epoch
counted (folds, repeats, pruned and diverged runs, confirmation). hpo's own trainer runs under
every method, so only the search differs:

- hpo: the raced search of hpo/_racing.py (k-fold evidence, racing, pruning);
- tpe: Optuna's default `TPESampler(seed=s)`, 100 single-split trials, choice = best trial;
- random: Optuna's `RandomSampler(seed=s)`, the same.

Each method's choice is re-trained on all 500 samples with the same 5 training seeds and
tested on the test split (the only place the test split is read). The ceiling is the best
test accuracy of any configuration any method chose in the run. Per-seed and median tables
of the search's estimate, the test accuracy and the epochs spent are printed.

    HPO_DATA_DIR=../shared/data python bench/honest_search.py --seeds 0 1 2 3 4 --jobs 1
    HPO_DATA_DIR=../shared/data python bench/honest_search.py --quick

Results are kept in --out (JSON); a later run reuses the searches already there for the same
settings (--fresh to redo them), so methods can be added to a run one at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import optuna  # noqa: E402

import trainer  # noqa: E402
from hpo._objective import Objective, _dtype  # noqa: E402
from hpo._sampler import trial_seed  # noqa: E402
from hpo._spec import CategoricalParam, FloatParam, load_spec  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)

TRAIN_SIZE = 400  # the seed's training set: the unit the budget is counted in
RETRAIN_STREAM = 7000  # re-training seeds, the same for every method and search seed


def make_spec(space: str, seed: int, epochs: int, dataset: str = "mnist"):
    """studies/book.toml with the 2- or 4-parameter space."""
    base = load_spec(REPO / "studies" / "book.toml")
    base = base.replace(data=dataclasses.replace(base.data, dataset=dataset))
    fixed = dict(base.fixed, epochs=epochs)
    search = base.search
    if space == "4-param":
        fixed.pop("optimizer")
        search = (FloatParam("lr", 1e-6, 1e-1, log=True), FloatParam("weight_decay", 1e-8, 1e-4, log=True),
                  FloatParam("dropout", 0.0, 0.5),
                  CategoricalParam("optimizer", ("sgd", "momentum", "adagrad", "rmsprop", "adam")))
    return base.replace(name=f"{space}-{seed}", seed=seed, fixed=fixed, search=search)


def trial_epochs(trial: optuna.trial.FrozenTrial) -> int:
    """Epochs a single-split trial trained, the diverged epoch included."""
    return int(trial.user_attrs.get("diverged_epoch") or trial.user_attrs.get("epochs") or 0)


def anchor_search(spec, method: str, trials: int) -> dict[str, Any]:
    sampler = (optuna.samplers.TPESampler(seed=spec.seed) if method == "tpe"
               else optuna.samplers.RandomSampler(seed=spec.seed))
    # Every trial trains its 50 epochs: the anchors spend the whole budget, as in the seed.
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=optuna.pruners.NopPruner())
    study.optimize(Objective(spec), n_trials=trials)
    best = study.best_trial
    epochs = sum(trial_epochs(t) for t in study.trials)
    return {"params": best.params, "estimate": best.value, "se": None, "evidence": 1,
            "spent": epochs, "trials": len(study.trials)}


def hpo_search(spec, settings: dict[str, Any], budget: int) -> dict[str, Any]:
    from hpo._racing import RaceSettings, race

    study = optuna.create_study(direction="maximize")
    result = race(study, spec, RaceSettings(**settings), budget_epochs=budget)
    choice = result.choice
    return {"params": choice.params, "estimate": choice.mean, "se": choice.se, "evidence": choice.runs,
            "spent": result.epochs, "trials": len(study.trials), "configurations": result.configurations}


def one_search(job: dict[str, Any]) -> dict[str, Any]:
    spec = make_spec(job["space"], job["seed"], job["epochs"], job["dataset"])
    started = time.perf_counter()
    if job["method"] == "hpo":
        out = hpo_search(spec, job["settings"], job["budget"])
    else:
        out = anchor_search(spec, job["method"], job["budget"] // job["epochs"])
    out["seconds"] = time.perf_counter() - started
    return {**job, **out}


def retrain(job: tuple[str, str, int, str, int]) -> list[float]:
    """Test accuracy of one configuration re-trained on all 500 samples, one per training seed."""
    dataset, space, epochs, params_json, seeds = job
    params = json.loads(params_json)
    spec = make_spec(space, 0, epochs, dataset)
    pool = trainer.load_training_pool(spec.data.dataset, dtype=_dtype(spec))
    train, validation = trainer.split_train_validation(
        pool, spec.data.samples, spec.data.validation_fraction, spec.data.split_seed)
    both = trainer.Dataset(np.concatenate([train.x, validation.x]), np.concatenate([train.y, validation.y]))
    test = trainer.load_test_split(spec.data.dataset, dtype=_dtype(spec))
    accuracies = []
    for r in range(seeds):
        config = spec.train_config(params, seed=trial_seed(0, r, RETRAIN_STREAM), input_size=both.x.shape[1],
                                   output_size=10)
        fitted = trainer.fit(config, both)
        accuracies.append(float(trainer.evaluate(fitted.network, test)[1])
                          if fitted.history.outcome == "completed" else 0.0)
    return accuracies


def key(job: dict[str, Any]) -> str:
    return json.dumps({k: job[k] for k in ("dataset", "space", "method", "seed", "budget", "epochs", "settings")},
                      sort_keys=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--spaces", nargs="+", default=["2-param", "4-param"], choices=["2-param", "4-param"])
    parser.add_argument("--methods", nargs="+", default=["hpo", "tpe", "random"], choices=["hpo", "tpe", "random"])
    parser.add_argument("--dataset", default="mnist",
                        help="mnist for the reported runs; fashion-mnist to choose settings on")
    parser.add_argument("--jobs", type=int, default=1, help="processes")
    parser.add_argument("--retrain-seeds", type=int, default=5)
    parser.add_argument("--out", default="bench/honest_search.json")
    parser.add_argument("--fresh", action="store_true", help="redo searches already in --out")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: seed 0, budget of 20 trials of 20 epochs, 1 re-training seed")
    parser.add_argument("--settings", default="{}",
                        help="JSON of RaceSettings fields for hpo, e.g. '{\"folds\": 5}'")
    args = parser.parse_args()
    epochs, trials = (20, 20) if args.quick else (50, 100)
    if args.quick:
        args.seeds, args.retrain_seeds = args.seeds[:1], 1
    try:
        settings = json.loads(args.settings)
    except json.JSONDecodeError as exc:
        parser.error(f"--settings is not JSON: {exc}")
    if "hpo" in args.methods:
        from hpo._racing import RaceSettings

        # Bad fields fail here, before any work; the stored key holds every setting, defaults too.
        try:
            settings = json.loads(json.dumps(dataclasses.asdict(RaceSettings(**settings))))
        except (TypeError, ValueError) as exc:
            parser.error(f"--settings: {exc}")

    out = Path(args.out)
    stored: dict[str, dict] = {}
    if out.exists() and not args.fresh:
        stored = {key(r): r for r in json.loads(out.read_text()).get("searches", [])}
    jobs = [{"dataset": args.dataset, "space": s, "method": m, "seed": seed, "budget": trials * epochs,
             "epochs": epochs, "settings": settings if m == "hpo" else {}}
            for s in args.spaces for m in args.methods for seed in args.seeds]
    todo = [j for j in jobs if key(j) not in stored]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        for result in pool.map(one_search, todo):
            stored[key(result)] = result
            print(f"  {result['space']} {result['method']:6} seed {result['seed']}: estimate "
                  f"{result['estimate']:.3f}, {result['spent']} epochs, {result['seconds']:.0f} s", flush=True)
    results = [stored[key(j)] for j in jobs]

    # A configuration chosen twice (by two methods or two seeds) is re-trained once.
    saved = json.loads(out.read_text()).get("tests", {}) if out.exists() and not args.fresh else {}

    def test_key(r: dict) -> tuple:
        return (args.dataset, r["space"], epochs, json.dumps(r["params"], sort_keys=True), args.retrain_seeds)

    missing = sorted({test_key(r) for r in results if json.dumps(test_key(r)) not in saved})
    with ProcessPoolExecutor(args.jobs) as pool:
        for w, accuracies in zip(missing, pool.map(retrain, missing)):
            saved[json.dumps(w)] = accuracies
    for r in results:
        accuracies = saved[json.dumps(test_key(r))]
        r["test"], r["test_runs"] = statistics.fmean(accuracies), accuracies
    out.write_text(json.dumps({"searches": list(stored.values()), "tests": saved}, indent=1))
    print(f"{len(todo)} searches and {len(missing)} re-trainings in {time.perf_counter() - started:.0f} s "
          f"with {args.jobs} process(es)")
    report(results, args)


def report(results: list[dict], args) -> None:
    med = statistics.median
    for space in args.spaces:
        rows = [r for r in results if r["space"] == space]
        ceiling = max(r["test"] for r in rows)
        best = next(r for r in rows if r["test"] == ceiling)
        print(f"\n{space}: ceiling {ceiling:.4f} ({best['method']} seed {best['seed']}: "
              f"{json.dumps(best['params'])})")
        print(f"{'seed':>4} " + " ".join(f"{m + ' est':>10} {m + ' test':>10} {m + ' ep':>8}" for m in args.methods))
        for seed in args.seeds:
            cells = []
            for m in args.methods:
                r = next(x for x in rows if x["method"] == m and x["seed"] == seed)
                se = f"±{r['se']:.3f}" if r.get("se") else ""
                cells.append(f"{r['estimate']:6.3f}{se:>4} {r['test']:10.4f} {r['spent']:8d}")
            print(f"{seed:4} " + " ".join(cells))
        cells = []
        for m in args.methods:
            mine = [r for r in rows if r["method"] == m]
            cells.append(f"{med(r['estimate'] for r in mine):10.3f} {med(r['test'] for r in mine):10.4f} "
                         f"{med(r['spent'] for r in mine):8.0f}")
        print(f"{'med':>4} " + " ".join(cells))
        for m in args.methods:
            mine = [r for r in rows if r["method"] == m]
            print(f"  {m:6} median test {med(r['test'] for r in mine):.4f}, below the ceiling by "
                  f"{ceiling - med(r['test'] for r in mine):.4f}; median {med(r['seconds'] for r in mine):.0f} s "
                  f"per search")


if __name__ == "__main__":
    main()
