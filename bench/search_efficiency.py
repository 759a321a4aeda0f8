"""Search efficiency on the seed's protocol: random-only vs random-then-TPE vs TPE with pruning.

For the seed's 2-parameter space (learning rate, weight decay) and a 4-parameter space (adding
dropout and optimizer choice), over several seeds: the median best validation accuracy after
10, 20, 30, 50 and 100 trials, and the epochs trained in total. Also times the plain 100-trial
book study on one core.

    HPO_DATA_DIR=../shared/data python bench/search_efficiency.py --seeds 5 --jobs 2

Each study runs in its own process on a SQLite file in a temporary folder, one BLAS thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hpo import _study  # noqa: E402
from hpo._spec import CategoricalParam, FloatParam, PrunerSpec, SamplerSpec, load_spec  # noqa: E402

CHECKPOINTS = (10, 20, 30, 50, 100)
PRUNERS = {
    "median": PrunerSpec(kind="median", startup_trials=5, warmup_epochs=5),
    "halving": PrunerSpec(kind="successive-halving", min_epochs=5, reduction_factor=3),
    "halving-10": PrunerSpec(kind="successive-halving", min_epochs=10, reduction_factor=2),
    "halving-10-3": PrunerSpec(kind="successive-halving", min_epochs=10, reduction_factor=3),
    "halving-7-3": PrunerSpec(kind="successive-halving", min_epochs=7, reduction_factor=3),
    "halving-6-3": PrunerSpec(kind="successive-halving", min_epochs=6, reduction_factor=3),
    "hyperband": PrunerSpec(kind="hyperband", min_epochs=5, reduction_factor=3),
}
METHODS = {  # the TPE methods take the sampler settings of studies/book.toml
    "random": lambda spec, pruner: dict(sampler=SamplerSpec(kind="random")),
    "tpe": lambda spec, pruner: dict(sampler=spec.sampler),
    "tpe+pruning": lambda spec, pruner: dict(sampler=spec.sampler, pruner=PRUNERS[pruner]),
}


def space(name: str, spec):
    if name == "2-param":
        return spec.search
    extra = (FloatParam("dropout", 0.0, 0.5), CategoricalParam(
        "optimizer", ("sgd", "momentum", "adagrad", "rmsprop", "adam")))
    return spec.search + extra


def one_study(job: tuple[str, str, int, int, str]) -> dict:
    space_name, method, seed, trials, pruner = job
    base = load_spec(REPO / "studies" / "book.toml")
    fixed = dict(base.fixed)
    if space_name == "4-param":
        fixed.pop("optimizer")
    spec = base.replace(name=f"{space_name}-{method}-{seed}", seed=seed, trials=trials, fixed=fixed,
                        search=space(space_name, base), **METHODS[method](base, pruner))
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/bench.db"
        handle = _study.create(spec, url)
        started = time.perf_counter()
        _study.run(handle, target=trials)
        seconds = time.perf_counter() - started
        trials_ = sorted(handle.trials(), key=lambda t: t.number)
        complete = sorted((t for t in trials_ if t.state.name == "COMPLETE"), key=lambda t: -t.value)
        top_lr = [t.params["lr"] for t in complete[:10]]
    best, running = [], 0.0
    epochs = 0
    for t in trials_:
        if t.state.name == "COMPLETE":
            running = max(running, t.value)
        best.append(running)
        epochs += int(t.user_attrs.get("epochs") or 0)
    return {"space": space_name, "method": method, "seed": seed, "best": best,
            "epochs": epochs, "seconds": seconds, "top10_lr": top_lr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default="bench/search_efficiency.json")
    parser.add_argument("--pruner", choices=sorted(PRUNERS), default="halving-6-3")
    parser.add_argument("--spaces", nargs="+", default=["2-param", "4-param"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args()

    jobs = [(s, m, seed, args.trials, args.pruner) for s in args.spaces for m in args.methods
            for seed in range(args.seeds)]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one_study, jobs))
    Path(args.out).write_text(json.dumps(results, indent=1))

    print(f"{len(jobs)} studies in {time.perf_counter() - started:.0f} s with {args.jobs} processes")
    print(f"{'space':8} {'method':12} " + " ".join(f"{f'@{c}':>6}" for c in CHECKPOINTS)
          + f" {'epochs':>8} {'s/study':>8}")
    for s in args.spaces:
        for m in args.methods:
            rows = [r for r in results if r["space"] == s and r["method"] == m]
            medians = [statistics.median(r["best"][c - 1] for r in rows) for c in CHECKPOINTS
                       if c <= args.trials]
            epochs = statistics.median(r["epochs"] for r in rows)
            seconds = statistics.median(r["seconds"] for r in rows)
            print(f"{s:8} {m:12} " + " ".join(f"{v:6.3f}" for v in medians)
                  + f" {epochs:8.0f} {seconds:8.1f}")
        if "random" not in args.methods or "tpe" not in args.methods:
            continue
        random_final = statistics.median(r["best"][-1] for r in results
                                         if r["space"] == s and r["method"] == "random")
        tpe_rows = [r for r in results if r["space"] == s and r["method"] == "tpe"]
        reach = next((n for n in range(1, args.trials + 1)
                      if statistics.median(r["best"][n - 1] for r in tpe_rows) >= random_final), None)
        print(f"{s}: random-only {args.trials}-trial median best {random_final:.3f}; "
              f"random-then-TPE reaches it after {reach} trials")
        lrs = [lr for r in tpe_rows for lr in r["top10_lr"]]
        print(f"{s}: top-10 learning rates of random-then-TPE, all seeds: {min(lrs):.2e} .. {max(lrs):.2e}")


if __name__ == "__main__":
    main()
