"""Several worker processes on this machine, sharing one study's target.

Each worker is a plain `hpo study run` process with its BLAS limited to one thread; they
coordinate only through the storage (the same way workers on other machines do), and this
process reports their combined progress by reading the study.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from hpo._errors import Interrupted, StudyError
from hpo._storage import STORAGE_ENV, Heartbeat
from hpo._study import Progress, RunResult, StudyHandle, best_trial, count_states, finished_count

ONE_THREAD = {name: "1" for name in (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}


def run_workers(handle: StudyHandle, workers: int, target: int | None = None,
                timeout: float | None = None, heartbeat: Heartbeat = Heartbeat(),
                data_dir: str | None = None, on_progress: Callable[[Progress], None] | None = None,
                command: tuple[str, ...] = ("study", "run"), poll_seconds: float = 1.0) -> RunResult:
    """Start `workers` processes of `hpo study run` on the study and wait for all of them."""
    target = target or handle.spec.trials
    args = [sys.executable, "-m", "hpo", *command, handle.name, "--quiet", "--trials", str(target)]
    if timeout is not None:
        args += ["--timeout", str(timeout)]
    if heartbeat.interval is not None:
        args += ["--heartbeat-interval", str(heartbeat.interval), "--grace-period", str(heartbeat.grace_period)]
    if data_dir:
        args += ["--data-dir", data_dir]
    # The URL travels in the environment, so a password never shows in the process list.
    env = {**os.environ, **ONE_THREAD, STORAGE_ENV: handle.storage_url.url}
    started = time.monotonic()
    processes = [subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for _ in range(workers)]
    before = finished_count(count_states(handle.study))
    try:
        while any(p.poll() is None for p in processes):
            if on_progress:
                on_progress(_progress(handle, target, before, started))
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in processes:
            p.wait()
        raise Interrupted(f"interrupted: the running trials were recorded as failed; "
                          f"`hpo study run {handle.name}` continues the study") from None
    errors = [(p.returncode, p.stderr.read().strip().splitlines()) for p in processes]
    for p in processes:
        p.stderr.close()
    failed = [lines[-1] if lines else f"exit code {code}" for code, lines in errors if code != 0]
    if failed:
        raise StudyError(f"{len(failed)} of {workers} workers failed; first: {failed[0].removeprefix('Error: ')}")
    if on_progress:
        on_progress(_progress(handle, target, before, started))
    counts = count_states(handle.study)
    finished = finished_count(counts)
    return RunResult(finished - before, finished, target, best_trial(handle.study), finished >= target, counts)


def _progress(handle: StudyHandle, target: int, before: int, started: float) -> Progress:
    counts = count_states(handle.study)
    done = finished_count(counts)
    return Progress(done, target, done - before, best_trial(handle.study), None,
                    time.monotonic() - started, counts["RUNNING"])
