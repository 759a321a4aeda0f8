"""Several worker processes on this machine, sharing one study's target.

Each worker is a plain `hpo study run` process with its BLAS limited to one thread; they
coordinate only through the storage (the same way workers on other machines do). This process
reports their combined progress: the counts and the best from the study, and the epochs of its
own workers' trials from what each worker writes on its stdout (`EVENTS_OPTION`).

The workers live and die with this process. A signal it receives (Ctrl-C, SIGTERM) is passed on
to them and it waits until each has recorded its running trial as failed; if it dies without
that chance (SIGKILL), the kernel sends each worker SIGTERM (Linux's parent-death signal), with
the same effect. Either way the study resumes with `hpo study run`.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

from hpo._errors import Interrupted, StudyError
from hpo._storage import STORAGE_ENV
from hpo._study import (
    STOPPED, HeldInterrupt, Progress, RunResult, StudyHandle, Terminated, best_trial, count_states,
    finished_count, set_target, sigterm_raises,
)

ONE_THREAD = {name: "1" for name in (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}
# The hidden option of `hpo study run` that makes a worker write one JSON line per report on stdout.
EVENTS_OPTION = "--events"
PARENT_ENV = "HPO_WORKER_PARENT"  # the id of the process that started a worker, which it dies with
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def run_workers(handle: StudyHandle, workers: int, target: int | None = None,
                timeout: float | None = None, data_dir: str | None = None,
                on_progress: Callable[[Progress], None] | None = None,
                poll_seconds: float = 1.0) -> RunResult:
    """Start `workers` processes of `hpo study run` on the study and wait for all of them.

    Args:
        handle: the open study.
        workers: how many processes.
        target: as for `_study.run`; stored on the study as its current target.
        timeout: each worker starts no new trial after this many seconds.
        data_dir: the folder with the data files.
        on_progress: called with the combined `Progress` a few times a second, and once for each
            trial the workers finish (with `last` set).
        poll_seconds: how often the study's counts are read again.
    """
    target = set_target(handle, target)
    args = [sys.executable, "-m", "hpo", "study", "run", handle.name, "--quiet", "--trials", str(target),
            EVENTS_OPTION]
    if timeout is not None:
        args += ["--timeout", str(timeout)]
    if data_dir:
        args += ["--data-dir", data_dir]
    # The URL travels in the environment, so a password never shows in the process list.
    env = {**os.environ, **ONE_THREAD, STORAGE_ENV: handle.storage_url.url, PARENT_ENV: str(os.getpid())}
    started = time.monotonic()
    before = finished_count(count_states(handle.study))
    processes = [start_worker(args, env) for _ in range(workers)]
    events = _Events(processes)
    report = on_progress or (lambda progress: None)
    try:
        with sigterm_raises():
            last_read = 0.0
            counts = count_states(handle.study)
            while any(p.poll() is None for p in processes):
                if time.monotonic() - last_read >= poll_seconds:
                    counts, last_read = count_states(handle.study), time.monotonic()
                _report(handle, report, events, counts, target, before, started,
                        sum(p.poll() is None for p in processes))
                time.sleep(0.25)
    except (KeyboardInterrupt, Terminated) as exc:
        signum = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
        _stop(processes, signum)
        raise Interrupted(f"{STOPPED[signum]}: the running trials of this machine's workers were recorded "
                          "as failed", signum) from None
    finally:
        events.join()
    errors = [(p.returncode, p.stderr.read().strip().splitlines()) for p in processes]
    for p in processes:
        p.stderr.close()
    failed = [lines[-1] if lines else f"exit code {code}" for code, lines in errors if code != 0]
    if failed:
        raise StudyError(f"{len(failed)} of {workers} workers failed; first: {failed[0].removeprefix('Error: ')}")
    counts = count_states(handle.study)
    _report(handle, report, events, counts, target, before, started, 0)
    finished = finished_count(counts)
    return RunResult(finished - before, finished, target, best_trial(handle.study), finished >= target, counts)


def _report(handle, report, events, counts, target, before, started, live: int) -> None:
    running, finished = events.take()
    done = finished_count(counts)
    best = best_trial(handle.study)
    # A worker of ours may have claimed a trial it has not told us of yet, or ended one that the
    # counts (read every poll) still show running: up to `live` running trials may be ours.
    elsewhere = max(counts["RUNNING"] - max(len(running), live), 0)
    elapsed = time.monotonic() - started
    if handle.spec.objective.raced:  # a race's progress is its budget of epochs and its incumbent
        from hpo._racing import race_progress

        trials = handle.study.get_trials(deepcopy=False)
        for number in [n for n in finished if n < len(trials)] + [None]:
            report(race_progress(handle, target, trials[number] if number is not None else None, running,
                                 elsewhere, elapsed))
        return
    if finished:
        trials = handle.study.get_trials(deepcopy=False)
        done = max(done, finished_count(count_states(handle.study)))
        for number in finished:
            if number < len(trials):
                report(Progress(done, target, done - before, best, trials[number], elapsed, running, elsewhere))
    report(Progress(done, target, done - before, best, None, elapsed, running, elsewhere))


def _stop(processes: list[subprocess.Popen], signum: int) -> None:
    """Pass the signal on and wait until every worker has recorded its trial and exited."""
    with HeldInterrupt():  # a second Ctrl-C must not leave the workers unwaited for
        for p in processes:
            if p.poll() is None:
                p.send_signal(signum)
        for p in processes:
            p.wait()


def start_worker(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """One worker process, its stdout and stderr piped here, in a process group of its own: a Ctrl-C
    at the terminal reaches only this process, which passes it on once. No `preexec_fn`: see
    `die_with_parent`."""
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            process_group=0)


def die_with_parent() -> None:
    """A worker's first step: SIGTERM when the process that started it dies (Linux), and a check that
    it has not died already, before the request took effect.

    The worker asks for this itself. Asked in a `preexec_fn` of the parent's `subprocess` call, it
    would make Python run its fork handlers in the child before the exec, and those of gRPC (in a
    process using `hpo storage serve`) abort the child now and then.
    """
    parent = os.environ.pop(PARENT_ENV, "")
    if not parent.isdigit():  # not started by `run_workers` (set by hand to anything else: ignored)
        return
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):
        os._exit(143)


def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


class _Events:
    """What each worker says on its stdout: its running trial's epoch, and the trials it finished."""

    def __init__(self, processes: list[subprocess.Popen]) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, dict[int, tuple[int, int]]] = {i: {} for i in range(len(processes))}
        self._finished: list[int] = []
        self._threads = [threading.Thread(target=self._read, args=(i, p.stdout), daemon=True)
                         for i, p in enumerate(processes)]
        for thread in self._threads:
            thread.start()

    def _read(self, worker: int, stream: IO[str]) -> None:
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # the worker's own last line
            with self._lock:
                self._running[worker] = {int(n): (int(e), int(total)) for n, e, total in event["running"]}
                if event.get("finished") is not None:
                    self._finished.append(int(event["finished"]))
        with self._lock:
            self._running[worker] = {}
        stream.close()

    def take(self) -> tuple[dict[int, tuple[int, int]], list[int]]:
        """This machine's running trials, and the trials finished since the last call."""
        with self._lock:
            running = {n: state for worker in self._running.values() for n, state in worker.items()}
            finished, self._finished = self._finished, []
        return running, finished

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=5)


def event_line(progress: Progress) -> str:
    """A worker's report as the one JSON line `_Events` reads."""
    return json.dumps({"running": [[n, e, total] for n, (e, total) in progress.running.items()],
                       "finished": progress.last.number if progress.last is not None else None})
