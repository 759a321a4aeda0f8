"""Trials per minute of studies/book.toml with 1 and 2 local workers on one SQLite file.

    HPO_DATA_DIR=../shared/data python bench/workers.py --trials 60

Each measurement creates a fresh study and runs `hpo study run --workers K` as a real
subprocess; the time covers the whole command (process start-up included).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def hpo(*args: str, env: dict) -> None:
    subprocess.run([sys.executable, "-m", "hpo", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def trials_per_minute(workers: int, trials: int, folder: Path) -> float:
    url = f"sqlite:///{folder}/w{workers}.db"
    env = {**os.environ, "HPO_STORAGE": url}
    hpo("study", "create", str(REPO / "studies" / "book.toml"), env=env)
    started = time.perf_counter()
    hpo("study", "run", "book", "--trials", str(trials), "--workers", str(workers), "--quiet", env=env)
    return trials / (time.perf_counter() - started) * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rates: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):  # interleaved, so drift hits both alike
            for workers in (1, 2):
                folder = Path(tmp) / f"r{repeat}"
                folder.mkdir(exist_ok=True)
                rates[workers].append(trials_per_minute(workers, args.trials, folder))
                print(f"repeat {repeat}: {workers} worker(s): {rates[workers][-1]:.1f} trials/min")
    one, two = max(rates[1]), max(rates[2])
    print(f"best of {args.repeats}: 1 worker {one:.1f} trials/min, 2 workers {two:.1f} trials/min, "
          f"speed-up {two / one:.2f}x")


if __name__ == "__main__":
    main()
