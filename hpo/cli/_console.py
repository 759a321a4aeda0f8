"""What a run shows on stderr while it works, in three modes.

On a terminal: one line, rewritten in place and never wider than the terminal (rich's Live
display): trials done of the target, the best so far, this machine's running trials at their
current epoch, elapsed time and time left, and how many trials workers elsewhere are running.
The clock ticks between reports, so a long trial is visibly alive. With `verbose`, each finished
trial also gets a line of its own above it. Where stderr is not a terminal (a pipe, a log file):
plain lines, one per finished trial, and one when the run starts to wait for other workers'
trials. `quiet`: nothing (`for_run` returns None).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from optuna.trial import FrozenTrial
from rich.console import Console
from rich.live import Live
from rich.text import Text

from hpo._format import fmt
from hpo._study import Progress


class RunConsole:
    """A run's `on_progress`: call it with each `Progress`, and `close()` it before printing more."""

    def __init__(self, verbose: bool = False, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=False)
        self.verbose = verbose
        self._latest: Progress | None = None
        self._received = time.monotonic()
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._shown: set[int] = set()  # the running trials the terminal shows
        self._waiting = False  # for plain lines: whether the wait for other workers is told already
        if self.console.is_terminal and not self.console.is_dumb_terminal:
            self._live = Live(_Line(self), console=self.console, refresh_per_second=4, transient=True,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()

    def __call__(self, progress: Progress) -> None:
        with self._lock:
            self._latest, self._received = progress, time.monotonic()
        if progress.last is not None:
            if self._live is None:
                self.console.print(f"{trial_line(progress.last)}  [{status(progress)}]",
                                   markup=False, soft_wrap=True)
            elif self.verbose:
                self.console.print(trial_line(progress.last), markup=False)  # wrapped, kept whole
        elif self._live is None and not progress.running and progress.elsewhere:
            if not self._waiting:
                self.console.print(f"waiting: {status(progress)}", markup=False, soft_wrap=True)
        self._waiting = progress.last is None and not progress.running and bool(progress.elsewhere)
        # Epochs may come by the hundred a second: the display thread redraws four times a
        # second anyway, so only a trial's start or end is drawn at once.
        if self._live is not None and (progress.last is not None or not self._drawn(progress)):
            self._live.refresh()

    def _drawn(self, progress: Progress) -> bool:
        """Whether a trial of `progress.running` was drawn already (its later epochs can wait)."""
        new = set(progress.running) - self._shown
        self._shown = set(progress.running)
        return not new

    def close(self) -> None:
        """Take the progress line away (idempotent), so what follows starts on a line of its own."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def line(self) -> str:
        """The progress line as it reads now, the clock moved on since the last report."""
        with self._lock:
            progress, received = self._latest, self._received
        if progress is None:
            return "starting…"
        return status(progress, time.monotonic() - received, running=True)


class _Line:
    """The renderable Live redraws: the line as it reads at each refresh, cut to the terminal."""

    def __init__(self, owner: RunConsole) -> None:
        self.owner = owner

    def __rich__(self) -> Text:
        return Text(self.owner.line(), no_wrap=True, overflow="ellipsis")


def status(progress: Progress, since: float = 0.0, running: bool = False) -> str:
    """done/target, best, (this machine's running trials,) elapsed, time left, trials elsewhere."""
    best = f"best {fmt(progress.best.value)} (#{progress.best.number})" if progress.best else "no best yet"
    done = f"{progress.done}/{progress.target}" + (f" {progress.unit}" if progress.unit != "trials" else "")
    parts = [done, progress.leader or best]
    if running:
        parts += [f"#{number} epoch {epoch}/{epochs}" for number, (epoch, epochs) in sorted(progress.running.items())]
    left = progress.seconds_left
    parts.append(clock(progress.elapsed + since) + (f", ~{clock(max(left - since, 0))} left" if left else ""))
    if progress.elsewhere:
        parts.append(f"{progress.elsewhere} running on other workers")
    return "  ".join(parts)


def trial_line(trial: FrozenTrial) -> str:
    """One finished trial: number, state, value, parameters, seconds (and why, when it failed or stopped)."""
    attrs: dict[str, Any] = trial.user_attrs
    params = " ".join(f"{key}={fmt(value)}" for key, value in trial.params.items())
    seconds = attrs.get("seconds")
    if seconds is None and trial.duration is not None:
        seconds = trial.duration.total_seconds()
    words = [f"trial {trial.number}", trial.state.name.lower(), fmt(trial.value), params,
             f"{seconds:.1f} s" if seconds is not None else "-"]
    reason = attrs.get("fail_reason") or (attrs.get("reason") if trial.state.name != "COMPLETE" else None)
    if reason:
        words.append(f"({reason})")
    return "  ".join(w for w in words if w)


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"
