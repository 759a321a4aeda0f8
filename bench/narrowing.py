"""Benchmark: does narrowing (or widening) after 50 trials beat simply running 100?

Run by hand; the table goes into BENCHMARKS.md:

    HPO_DATA_DIR=/work/shared/data python bench/narrowing.py            # the book spec, 5 seeds
    HPO_DATA_DIR=/work/shared/data python bench/narrowing.py --seeds 1 --trials 10 --split 5 --epochs 3

For each seed (the study seed: sampler and training seeds; the data split stays fixed):

    broad   100 trials of the spec's broad space
    narrow  the first 50 of those, `hpo study narrow` (default rule) into a child, 50 more there
    widen   the same, with `--widen` where the best crowd an edge (as the command advises);
            skipped for a seed where nothing is crowded (then it equals narrow)

The broad study is run to 50, the children are made from that snapshot, then the broad study
continues to 100: with one worker its first 50 trials are exactly the children's parent.
Each path's final study is then evaluated once on the test split (`hpo study evaluate`, 3 seeds).
Reported: the median over seeds of the best validation accuracy and of the test accuracy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpo import _study  # noqa: E402
from hpo._evaluate import evaluate  # noqa: E402
from hpo._child import create_child, narrow_study  # noqa: E402
from hpo._spec import load_spec  # noqa: E402
from hpo._storage import Heartbeat  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def run_to(handle: _study.StudyHandle, target: int, workers: int, data_dir: str | None) -> None:
    if workers > 1:
        from hpo._workers import run_workers

        run_workers(handle, workers, target=target, heartbeat=Heartbeat(), data_dir=data_dir)
    else:
        _study.run(handle, target=target, data_dir=data_dir)


def best_value(handle: _study.StudyHandle) -> float:
    best = _study.best_trial(handle.study)
    return float(best.value) if best else float("nan")


def one_seed(spec, seed: int, url: str, args: argparse.Namespace) -> dict:
    spec = spec.replace(name=f"{spec.name}-s{seed}", seed=seed)
    if args.epochs:
        spec = spec.replace(fixed={**spec.fixed, "epochs": args.epochs})
    broad = _study.create(spec, url)
    started = time.monotonic()
    run_to(broad, args.split, args.workers, args.data_dir)
    broad = _study.open_study(broad.name, url)
    narrowing = narrow_study(broad)
    paths = {"narrow": create_child(broad, narrowing, f"{spec.name}-narrow", trials=args.trials - args.split)}
    if narrowing.can_widen:
        paths["widen"] = create_child(broad, narrowing, f"{spec.name}-widen", trials=args.trials - args.split,
                                      widen=True)
    run_to(broad, args.trials, args.workers, args.data_dir)
    result = {"seed": seed, "rule": narrowing.rule,
              "crowded": [p.name for p in narrowing.crowded],
              "broad": {"best": best_value(_study.open_study(broad.name, url))}}
    for path, child in paths.items():
        run_to(child.handle, child.handle.spec.trials, args.workers, args.data_dir)
        handle = _study.open_study(child.handle.name, url)
        result[path] = {"best": best_value(handle), "warm_start": child.warm_start,
                        "ranges": {k: v["new"] for k, v in narrowing.ranges(path == "widen").items()}}
    for path in ("broad", *paths):
        name = spec.name if path == "broad" else f"{spec.name}-{path}"
        tested = evaluate(_study.open_study(name, url, Heartbeat(interval=None)), seeds=args.eval_seeds,
                          data_dir=args.data_dir)
        result[path].update(test=tested["mean"], test_std=tested["std"], trial=tested["trial"])
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def median(rows: list[dict], path: str, key: str) -> float | None:
    values = [r[path][key] for r in rows if path in r]
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=str(REPO / "studies" / "book.toml"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=100, help="trials of each path")
    parser.add_argument("--split", type=int, default=50, help="broad trials before narrowing")
    parser.add_argument("--eval-seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="override the spec's epochs (smoke runs)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--storage", default=None, help="a SQLite file to keep (default: a temporary one)")
    parser.add_argument("--json", default=None, help="write the per-seed results here")
    args = parser.parse_args()

    spec = load_spec(args.spec)
    folder = tempfile.mkdtemp(prefix="hpo-bench-")
    url = f"sqlite:///{args.storage or Path(folder) / 'narrowing.db'}"
    rows = []
    for seed in range(args.seeds):
        row = one_seed(spec, seed, url, args)
        rows.append(row)
        print(json.dumps(row), flush=True)

    paths = [p for p in ("broad", "narrow", "widen") if any(p in r for r in rows)]
    print(f"\n{spec.name} ({spec.data.dataset}, {spec.data.samples} samples, "
          f"{args.epochs or spec.epochs} epochs), {args.seeds} seeds, {args.trials} trials per path, "
          f"narrowed after {args.split}; test = `evaluate` with {args.eval_seeds} seeds\n")
    print("| path | seeds | median best validation | median test | per seed (validation / test) |")
    print("|---|---|---|---|---|")
    labels = {"broad": f"broad, {args.trials} trials",
              "narrow": f"{args.split} broad + narrow + {args.trials - args.split}",
              "widen": f"{args.split} broad + narrow --widen + {args.trials - args.split}"}
    for path in paths:
        per = ", ".join(f"{r[path]['best']:.3f} / {r[path]['test']:.3f}" for r in rows if path in r)
        print(f"| {labels[path]} | {sum(path in r for r in rows)} | {median(rows, path, 'best'):.3f} | "
              f"{median(rows, path, 'test'):.3f} | {per} |")
    crowded = [", ".join(r["crowded"]) or "-" for r in rows]
    print(f"\nCrowded edges after {args.split} trials, per seed: {'; '.join(crowded)}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
