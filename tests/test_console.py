"""What `hpo study run` shows: in a real pseudo-terminal of 80 and of 200 columns, through a pipe, with -v.

On a terminal the progress is one line rewritten in place: after the escape sequences are taken
out, every drawing of it (the text between carriage returns) fits the terminal, and the only
lines that end are the ones meant to stay (the final line; with -v, one per trial).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from helpers import restore_ctrl_c, cli_env, hpo, write_spec

pytestmark = [pytest.mark.slow]

def _in_terminal(columns: int, *args: str, cwd: Path, interrupt_at: str | None = None,
                 code: int = 0) -> str:
    """Run `hpo ARGS` with stdout and stderr on a pseudo-terminal `columns` wide; all it wrote.

    With `interrupt_at`, Ctrl-C (SIGINT) is sent once the output matches that pattern."""
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = cli_env(TERM="xterm-256color")
    for name in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR"):
        env.pop(name, None)
    process = subprocess.Popen([sys.executable, "-m", "hpo", *args], cwd=cwd, env=env,
                               stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True,
                               preexec_fn=restore_ctrl_c)  # Ctrl-C works even if the tests run in the background
    os.close(secondary)
    output = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            output += chunk
            if interrupt_at and re.search(interrupt_at, ESCAPE.sub("", output.decode(errors="replace"))):
                process.send_signal(signal.SIGINT)
                interrupt_at = None
        elif process.poll() is not None:
            break
    process.wait(timeout=30)
    os.close(main)
    assert process.returncode == code, output.decode(errors="replace")
    return output.decode()


ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Screen:
    """The little of a terminal that a progress line uses: characters, carriage return, new line,
    cursor up, erase line. It records the widest line ever written and how often a line was redrawn."""

    CONTROL = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b\][^\x07]*\x07|(\r)|(\n)")

    def __init__(self, output: str) -> None:
        self.lines: list[str] = [""]
        self.row = self.col = self.widest = self.redraws = 0
        self.drawings: list[str] = []  # every line as it was when it was erased or ended
        position = 0
        for match in self.CONTROL.finditer(output):
            self._write(output[position:match.start()])
            position = match.end()
            arguments, command, carriage, newline = match.groups()
            if carriage:
                self.col = 0
            elif newline:
                self.drawings.append(self.lines[self.row])
                self.row, self.col = self.row + 1, 0
                self.lines += [""] * (self.row + 1 - len(self.lines))
            elif command == "A":
                self.row = max(self.row - int(arguments or 1), 0)
            elif command == "K":
                self.drawings.append(self.lines[self.row])
                self.lines[self.row] = ""
                self.redraws += 1
        self._write(output[position:])

    def _write(self, text: str) -> None:
        line = self.lines[self.row]
        line = line[:self.col].ljust(self.col) + text + line[self.col + len(text):]
        self.lines[self.row] = line
        self.col += len(text)
        self.widest = max(self.widest, len(line))

    @property
    def text(self) -> list[str]:
        return [line for line in self.lines if line.strip()]


def _study(tmp_path: Path, trials: int = 6, epochs: int = 40) -> str:
    spec = write_spec(tmp_path, "look", trials=trials, epochs=epochs, samples=600)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    assert hpo("study", "create", str(spec), "--storage", storage).returncode == 0
    return storage


@pytest.mark.parametrize("columns", [80, 200])
def test_progress_is_one_line_rewritten_in_place_within_the_terminal(tmp_path, columns):
    storage = _study(tmp_path)
    screen = Screen(_in_terminal(columns, "study", "run", "look", "--storage", storage, cwd=tmp_path))
    assert screen.widest <= columns
    # What stays on the screen is the final line: the progress was drawn and erased on one line.
    assert screen.text == ["look: 6/6 finished, 6 run now, target reached; best " + screen.text[0].split("best ")[1]]
    progress = [d for d in screen.drawings if re.match(r"\d+/6 ", d)]
    assert len(progress) >= 3 and screen.redraws >= 3
    assert any(re.search(r"#\d+ epoch \d+/40", d) for d in progress)  # a running trial's epoch shows


def test_verbose_in_a_terminal_keeps_one_line_per_trial(tmp_path):
    storage = _study(tmp_path, trials=4)
    screen = Screen(_in_terminal(80, "study", "run", "look", "-v", "--storage", storage, cwd=tmp_path))
    assert screen.widest <= 80
    trials = [line for line in screen.text if line.startswith("trial ")]
    assert sorted(int(line.split()[1]) for line in trials) == [0, 1, 2, 3]
    assert screen.text[-1].startswith("look: 4/4 finished")


def test_workers_show_this_machine_s_trials_and_ctrl_c_s_message_starts_its_own_line(tmp_path):
    spec = write_spec(tmp_path, "pair", trials=4, epochs=3000, samples=1200)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    assert hpo("study", "create", str(spec), "--storage", storage).returncode == 0
    output = _in_terminal(200, "study", "run", "pair", "--workers", "2", "--storage", storage, cwd=tmp_path,
                          interrupt_at=r"#\d+ epoch [1-9]\d*/3000  #\d+ epoch [1-9]\d*/3000", code=130)
    screen = Screen(output)
    progress = [d for d in screen.drawings if re.match(r"\d+/4 ", d)]
    assert progress and max(len(d) for d in progress) <= 200  # the error line may wrap; it stays whole
    # Both running trials are this machine's: none is counted as running elsewhere.
    assert not [d for d in screen.drawings if "other workers" in d]
    assert screen.text == [screen.text[0]] and screen.text[0].startswith(
        "Error: interrupted: the running trials of this machine's workers were recorded as failed; ")


def test_through_a_pipe_one_plain_line_per_trial(tmp_path):
    storage = _study(tmp_path, trials=4, epochs=3)
    result = hpo("study", "run", "look", "--storage", storage, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 4 and "\r" not in result.stderr and "\x1b" not in result.stderr
    for done, line in enumerate(lines, 1):
        # number, state, value, parameters, seconds, then where the run stands
        assert re.match(rf"trial \d  (complete|pruned)  [0-9.]+  lr=\S+ weight_decay=\S+ "
                        rf"optimizer=\w+  [0-9.]+ s  \[{done}/4  best ", line), line
    assert sorted(int(line.split()[1]) for line in lines) == [0, 1, 2, 3]
    assert result.stdout.startswith("look: 4/4 finished")


def test_quiet_prints_only_the_final_line(tmp_path):
    storage = _study(tmp_path, trials=2, epochs=3)
    result = hpo("study", "run", "look", "--quiet", "--storage", storage, cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.splitlines() == [result.stdout.strip()] and "2/2 finished" in result.stdout


def test_verbose_lets_optuna_s_log_through(tmp_path):
    spec = write_spec(tmp_path, "log", trials=1, epochs=2)
    quiet = hpo("study", "run", str(spec), "--storage", f"sqlite:///{tmp_path / 'a.db'}", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "A new study created" not in quiet.stderr  # Optuna's INFO log, held back by default
    loud = hpo("study", "run", str(spec), "-v", "--storage", f"sqlite:///{tmp_path / 'b.db'}", cwd=tmp_path)
    assert loud.returncode == 0, loud.stderr
    assert "A new study created in RDB with name: log" in loud.stderr
