"""A fleet simulated on one machine: PostgreSQL directly against the gRPC proxy in front of it.

    python bench/fleet.py                       # W = 8, 32, 64; both paths; then the sampler's cost
    python bench/fleet.py --workers 8 --rounds 4 --skip-sampler

W workers are W processes, each with its own storage (directly: its own connection pool;
through the proxy: its own gRPC channel), running what `hpo study run` runs for a trial: the claim
(`hpo/_claims.py`), the start and the run with heartbeats (`hpo/_study.py`). The objective stores 4
parameters as hpo's objective does (random sampler) and sleeps `--sleep` seconds, so that what is
measured is the storage path, not training or TPE.
Every run creates a fresh study with a target of W x rounds trials. The workers' first claims are
spread over one trial, as a fleet's workers start at different moments; with `--together` they
all start at once, and with a fixed sleep then finish and claim in the same instant every round.

Reported per path and W: trials per second sustained (finished trials over the time from the
first claim to the last finish) against the ideal W / sleep; claim latency p50 and p99 (counting,
claiming and starting the trial, the sampler's first call included); the peak of PostgreSQL connections this benchmark holds
(`pg_stat_activity`, by application name); how busy the machine's CPUs were during the run (all
processes: workers, proxy, PostgreSQL; /proc/stat) and how busy the proxy's one process was, as
a share of one core (its Python threads share one interpreter lock, so near 100% it saturates);
overshoot, lost and duplicated trials, errors.

Then the sampler's own cost per trial at 1,000 and 5,000 trials of a 4-parameter study (hpo's
TPE, in memory and on SQLite) and what hpo's claim path adds to it on SQLite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import multiprocessing
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import sqlalchemy

from hpo import _claims
from hpo import _optuna_internals as internals
from hpo._spec import parse_spec
from hpo._storage import Heartbeat, params_in_one_write
from hpo._study import _run_trial, _start_trial, create, open_study

REPO = Path(__file__).resolve().parent.parent
APP = "hpo-fleet-bench"
PROXY_PID_ENV = "HPO_BENCH_PROXY_PID"
DIRECT_CONNECTIONS = 2.3  # PostgreSQL connections a worker holds directly (measured: 74 at W = 32)
POSTGRES = os.environ.get("HPO_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SPEC = {
    "study": {"name": "fleet", "trials": 10},
    "data": {"dataset": "digits"},
    "search": {"lr": {"type": "float", "low": 1e-4, "high": 0.5, "log": True},
               "weight_decay": {"type": "float", "low": 1e-8, "high": 1e-2, "log": True},
               "hidden_units": {"type": "int", "low": 16, "high": 256},
               "optimizer": {"type": "categorical", "choices": ["sgd", "momentum", "adam"]}},
}


def suggest(trial: optuna.Trial) -> None:
    """The 4 parameters, suggested and stored as hpo's objective does it."""
    with params_in_one_write(trial):
        trial.suggest_float("lr", 1e-4, 0.5, log=True)
        trial.suggest_float("weight_decay", 1e-8, 1e-2, log=True)
        trial.suggest_int("hidden_units", 16, 256)
        trial.suggest_categorical("optimizer", ["sgd", "momentum", "adam"])


class Sleeper:
    """The objective: hpo's 4 suggestions stored as its objective stores them, then a sleep."""

    on_epoch = None

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, trial: optuna.Trial) -> float:
        suggest(trial)
        time.sleep(self.seconds)
        return 0.5


def with_app_name(url: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={APP}"


class ConnectionWatch(threading.Thread):
    """Polls pg_stat_activity for the connections of this benchmark; keeps the peak."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        self.peak = 0
        self.halt = threading.Event()

    def run(self) -> None:
        with self.engine.connect() as connection:
            while not self.halt.is_set():
                count = connection.execute(sqlalchemy.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"), {"a": APP}).scalar()
                connection.rollback()
                self.peak = max(self.peak, int(count))
                self.halt.wait(0.05)


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs of the machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def max_connections(url: str) -> int:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as connection:
        return int(connection.execute(sqlalchemy.text("SHOW max_connections")).scalar())


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of one process so far, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_proxy(database: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "hpo", "storage", "serve", "--port", str(port)],
                               env={**os.environ, "HPO_STORAGE": database}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if not line.startswith("Serving"):
        raise SystemExit(f"the proxy did not start: {line}{process.stderr.read()}")
    return process, f"grpc://127.0.0.1:{port}"


def worker(url: str, name: str, target: int, sleep: float, delay: float, ready, start, results) -> None:
    """One worker process: open the study, say so and wait for the common start, claim and run
    trials until the study is done; its log goes to `results`. Times are CLOCK_MONOTONIC, shared by
    all processes."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    log: dict = {"claims": [], "first": [], "last": [], "ran": [], "errors": [], "beyond": []}
    try:
        handle = open_study(name, url)
        ready.put(True)
        start.wait()
        time.sleep(delay)  # unless --together: the workers' first claims spread over one trial
        while True:
            started = time.monotonic()
            trial_id, _counts, done = _claims.claim_next(handle, target, False)
            if done:
                break
            if trial_id is None:  # nothing to claim yet: wait as a worker does, if not as long
                time.sleep(0.5)
                continue
            trial = _start_trial(handle.study, trial_id)
            if trial is None:  # failed as dead by another worker before it started: claim again
                continue
            log["claims"].append(time.monotonic() - started)
            log["first"].append(time.monotonic())
            _run_trial(handle.study, trial, Sleeper(sleep))  # heartbeats, suggestions, the end
            log["ran"].append(trial.number)
            log["last"].append(time.monotonic())
            log["beyond"].append(log["last"][-1] - log["first"][-1] - sleep)
    except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
        log["errors"].append(f"{type(exc).__name__}: {exc}")
        ready.put(False)  # in case it failed before it was ready: nobody waits for it in vain
    results.put(log)


def run_fleet(url: str, workers: int, rounds: int, sleep: float, stagger: bool = False) -> dict:
    name = f"fleet-{uuid.uuid4().hex[:8]}"
    spec = parse_spec({**SPEC, "study": {"name": name, "trials": workers * rounds},
                       "sampler": {"kind": "random"}})
    create(spec, url)
    target = workers * rounds
    context = multiprocessing.get_context("spawn")  # no connection or channel crosses a fork
    results, ready, start = context.Queue(), context.Queue(), context.Event()
    processes = [context.Process(target=worker, args=(url, name, target, sleep, sleep * k / workers if stagger else 0.0,
                                                      ready, start, results))
                 for k in range(workers)]
    for process in processes:
        process.start()
    for _ in processes:  # every process has imported hpo and opened its storage (or failed)
        ready.get()
    proxy = int(os.environ.get(PROXY_PID_ENV, "0"))
    busy_before, total_before = cpu_times()
    proxy_before, wall_before = (process_cpu_seconds(proxy) if proxy else 0.0), time.monotonic()
    start.set()
    logs = [results.get() for _ in processes]
    busy_after, total_after = cpu_times()
    proxy_cpu = ((process_cpu_seconds(proxy) if proxy else 0.0) - proxy_before) / (time.monotonic() - wall_before)
    for process in processes:
        process.join()
    log = {key: [value for one in logs for value in one[key]] for key in logs[0]}
    handle = open_study(name, url, Heartbeat(interval=None))
    trials = handle.study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    finished = states["COMPLETE"] + states["PRUNED"]
    ran = Counter(log["ran"])
    span = (max(log["last"]) - min(log["first"])) if log["last"] else float("nan")
    claims = sorted(log["claims"]) or [float("nan")]
    optuna.delete_study(study_name=name, storage=internals.study_storage(handle.study))
    return {
        "throughput": finished / span, "ideal": workers / sleep,
        "p50": statistics.median(claims) * 1000, "p99": claims[min(len(claims) - 1, int(0.99 * len(claims)))] * 1000,
        "overshoot": max(0, finished - target), "lost": max(0, target - finished),
        "duplicated": sum(c - 1 for c in ran.values() if c > 1), "errors": len(log["errors"]),
        "left": states["WAITING"] + states["RUNNING"], "first_error": (log["errors"] or [""])[0],
        "claim_mean": statistics.fmean(log["claims"] or [float("nan")]) * 1000,
        "beyond_mean": statistics.fmean(log["beyond"] or [float("nan")]) * 1000,
        "cpu": (busy_after - busy_before) / max(1, total_after - total_before), "proxy_cpu": proxy_cpu,
    }


def one_run(path: str, url: str, workers: int, rounds: int, sleep: float, stagger: bool, proxy: int) -> dict:
    """One run in a process of its own, so that no connection pool outlives it; `proxy`: the
    proxy's process id, whose CPU time the run measures."""
    command = [sys.executable, __file__, "--one", path, url, str(workers), str(rounds), str(sleep), str(int(stagger))]
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", PROXY_PID_ENV: str(proxy)})
    if done.returncode != 0:
        raise SystemExit(f"the {path} run with W={workers} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def fleet_section(args: argparse.Namespace) -> None:
    database = with_app_name(POSTGRES)
    print("| path | W | trials/s | ideal | % of ideal | claim p50 ms | claim p99 ms | peak PG connections "
          "| machine CPU busy | proxy CPU (of one core) | ms per trial: claim, run beyond the sleep "
          "| overshoot | lost | duplicated | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    proxy, grpc_url = start_proxy(database)
    allowed = max_connections(POSTGRES)
    try:
        for workers in args.workers:
            for path, url in (("direct", database), ("proxy", grpc_url)):
                if path not in args.paths:
                    continue
                if path == "direct" and workers * DIRECT_CONNECTIONS > allowed:
                    print(f"| direct | {workers} | not run: about {workers * DIRECT_CONNECTIONS:.0f} connections, "
                          f"PostgreSQL allows {allowed} |", flush=True)
                    continue
                watch = ConnectionWatch(POSTGRES)
                watch.start()
                result = one_run(path, url, workers, args.rounds, args.sleep, args.stagger, proxy.pid)
                watch.halt.set()
                watch.join()
                proxy_share = f"{100 * result['proxy_cpu']:.0f}%" if path == "proxy" else "-"
                print(f"| {path} | {workers} | {result['throughput']:.1f} | {result['ideal']:.0f} | "
                      f"{100 * result['throughput'] / result['ideal']:.0f}% | {result['p50']:.1f} | "
                      f"{result['p99']:.1f} | {watch.peak} | {100 * result['cpu']:.0f}% | "
                      f"{proxy_share} | {result['claim_mean']:.0f}, {result['beyond_mean']:.0f} | {result['overshoot']} | {result['lost']} | "
                      f"{result['duplicated']} | {result['errors']} |", flush=True)
                if result["errors"]:
                    print(f"  first error: {result['first_error']}", flush=True)
    finally:
        proxy.terminate()
        proxy.communicate(timeout=60)


def sampler_section(sizes: list[int], asks: int) -> None:
    """ms per trial to sample 4 parameters with hpo's TPE at N trials; and hpo's claim on top."""
    from hpo._sampler import make_sampler

    print("\n| trials in the study | TPE in memory (ask + 4 suggests) | TPE on SQLite | hpo claim + TPE on SQLite "
          "| hpo adds |")
    print("|---|---|---|---|---|")
    rng = optuna.samplers.RandomSampler(seed=0)
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            spec = parse_spec({**SPEC, "study": {"name": f"s{size}", "trials": size + 10 * asks},
                               "sampler": {"random_trials": 10}})
            memory = optuna.create_study(direction="maximize", sampler=make_sampler(spec))
            history = optuna.create_study(direction="maximize", sampler=rng)
            for _ in range(size):
                t = history.ask()
                suggest(t)
                history.tell(t, float(t.params["lr"]))
            memory.add_trials(history.trials)
            in_memory = _time_asks(memory, asks)
            url = f"sqlite:///{folder}/s{size}.db"
            handle = create(spec, url)
            handle.study.add_trials(history.trials)
            on_sqlite = _time_asks(open_study(spec.name, url, Heartbeat(interval=None)).study, asks)
            handle = open_study(spec.name, url, Heartbeat(interval=None))
            claimed = []
            for _ in range(asks):
                started = time.perf_counter()
                trial_id, _counts, _done = _claims.claim_next(handle, size + 10 * asks, False)
                trial = optuna.Trial(handle.study, trial_id)
                suggest(trial)
                claimed.append(time.perf_counter() - started)
                handle.study.tell(trial, 0.5)
            hpo_ms = statistics.median(claimed) * 1000
            print(f"| {size:,} | {in_memory:.1f} ms | {on_sqlite:.1f} ms | {hpo_ms:.1f} ms | "
                  f"{hpo_ms - on_sqlite:+.1f} ms |", flush=True)


def _time_asks(study: optuna.Study, asks: int) -> float:
    times = []
    for _ in range(asks):
        started = time.perf_counter()
        trial = study.ask()
        suggest(trial)
        times.append(time.perf_counter() - started)
        study.tell(trial, 0.5)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--rounds", type=int, default=24, help="trials per worker in each run")
    parser.add_argument("--paths", nargs="+", default=["direct", "proxy"], choices=["direct", "proxy"],
                        help="direct: every worker connects to PostgreSQL; proxy: through hpo storage serve")
    parser.add_argument("--sleep", type=float, default=0.5, help="seconds the objective takes")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--asks", type=int, default=20)
    parser.add_argument("--skip-sampler", action="store_true")
    parser.add_argument("--skip-fleet", action="store_true")
    parser.add_argument("--together", dest="stagger", action="store_false",
                        help="start every worker's first claim at the same moment (the worst case: with a "
                        "fixed sleep, all W workers then claim and finish in the same instant every round) "
                        "instead of spreading the first claims over one trial")
    parser.add_argument("--one", nargs=6, metavar=("PATH", "URL", "W", "ROUNDS", "SLEEP", "STAGGER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.one:
        _path, url, workers, rounds, sleep, stagger = args.one
        print(json.dumps(run_fleet(url, int(workers), int(rounds), float(sleep), stagger == "1")))
        return
    print(f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"Optuna {optuna.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    if not args.skip_fleet:
        fleet_section(args)
    if not args.skip_sampler:
        sampler_section(args.sizes, args.asks)


if __name__ == "__main__":
    main()
