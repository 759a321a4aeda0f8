"""Honest winners on the seed's protocol: the raw best trial against the confirmed choice.

For each of several seeds of the whole pipeline (studies/book.toml, 100 trials):
- the optimism of the raw best: its single-run validation accuracy minus its mean over
  fresh seeds (the gap before confirmation), and the same for the confirmed choice, whose
  reported value is already a mean: re-estimated over yet other seeds (the gap after);
- the test accuracy (`evaluate`, 3 seeds each) of the raw best and of the confirmed best.

    HPO_DATA_DIR=../shared/data python bench/confirm.py --seeds 5 --jobs 2
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

import trainer  # noqa: E402
from hpo import _study  # noqa: E402
from hpo._confirm import confirm  # noqa: E402
from hpo._evaluate import evaluate  # noqa: E402
from hpo._objective import training_folds  # noqa: E402
from hpo._sampler import trial_seed  # noqa: E402
from hpo._spec import load_spec  # noqa: E402

FRESH_STREAM = 5000  # seeds used by neither the search, nor confirm, nor evaluate


def fresh_mean(spec, params: dict, trial: int, runs: int) -> float:
    """Validation accuracy of a configuration averaged over seeds nobody else used."""
    fold = training_folds(spec)[0]
    values = []
    for r in range(runs):
        config = spec.train_config(params, seed=trial_seed(spec.seed, trial, FRESH_STREAM + r),
                                   input_size=fold.train.x.shape[1], output_size=10)
        history = trainer.fit(config, fold.train, fold.validation).history
        values.append(history.epochs[-1].val_accuracy if history.outcome == "completed" else 0.0)
    return statistics.fmean(values)


def one_pipeline(job: tuple[int, int, int, int]) -> dict:
    seed, trials, top, repeats = job
    spec = load_spec(REPO / "studies" / "book.toml").replace(seed=seed, trials=trials)
    with tempfile.TemporaryDirectory() as folder:
        handle = _study.create(spec, f"sqlite:///{folder}/b.db")
        _study.run(handle, target=trials)
        raw = _study.best_trial(handle.study)
        raw_test = evaluate(handle, seeds=3)
        table = confirm(handle, top=top, seeds=repeats)
        winner = table[0]
        confirmed_test = evaluate(handle, seeds=3, force=True)
    raw_row = next(r for r in table if r.trial == raw.number)
    return {
        "seed": seed,
        "raw": {"trial": raw.number, "value": raw.value, "confirmed_mean": raw_row.mean,
                "gap": raw.value - raw_row.mean, "test": raw_test["mean"]},
        "confirmed": {"trial": winner.trial, "mean": winner.mean, "sd": winner.sd,
                      "fresh_mean": fresh_mean(spec, winner.params, winner.trial, repeats),
                      "test": confirmed_test["mean"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10, help="confirmation seeds per configuration")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default="bench/confirm.json")
    args = parser.parse_args()
    started = time.perf_counter()
    jobs = [(s, args.trials, args.top, args.repeats) for s in range(args.seeds)]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one_pipeline, jobs))
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"{args.seeds} pipelines in {time.perf_counter() - started:.0f} s")
    print("seed  raw#  raw value  its mean   gap    raw test | conf#  conf mean  fresh mean  gap    conf test")
    for r in results:
        a, b = r["raw"], r["confirmed"]
        print(f"{r['seed']:4}  {a['trial']:4}  {a['value']:9.3f}  {a['confirmed_mean']:8.3f}  {a['gap']:5.3f}  "
              f"{a['test']:8.3f} | {b['trial']:5}  {b['mean']:9.3f}  {b['fresh_mean']:10.3f}  "
              f"{b['mean'] - b['fresh_mean']:5.3f}  {b['test']:9.3f}")
    med = statistics.median
    print(f"median gap before (raw best value - its mean over seeds): {med(r['raw']['gap'] for r in results):.3f}")
    print("median gap after (confirmed mean - fresh re-estimate): "
          f"{med(r['confirmed']['mean'] - r['confirmed']['fresh_mean'] for r in results):.3f}")
    print(f"median test accuracy: raw best {med(r['raw']['test'] for r in results):.3f}, "
          f"confirmed {med(r['confirmed']['test'] for r in results):.3f}")


if __name__ == "__main__":
    main()
