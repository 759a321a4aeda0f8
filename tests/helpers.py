"""Shared helpers for the tests: data folder, tiny specs, the CLI as a real subprocess, PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("HPO_DATA_DIR", REPO.parent / "shared" / "data"))
POSTGRES_URL = os.environ.get("HPO_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

TINY_SPEC = """
[study]
name = "{name}"
seed = {seed}
trials = {trials}

[data]
dataset = "digits"
samples = {samples}
validation_fraction = 0.25

[model]
hidden_sizes = [32]

[training]
epochs = {epochs}
batch_size = 32

[search.lr]
type = "float"
low = 1e-3
high = 0.5
log = true

[search.weight_decay]
type = "float"
low = 1e-8
high = 1e-3
log = true

[search.optimizer]
type = "categorical"
choices = ["sgd", "momentum", "adam"]

[sampler]
random_trials = {random_trials}
"""


def write_spec(folder: Path, name: str = "tiny", *, seed: int = 0, trials: int = 10, samples: int = 400,
               epochs: int = 3, random_trials: int = 5, extra: str = "") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(TINY_SPEC.format(name=name, seed=seed, trials=trials, samples=samples, epochs=epochs,
                                     random_trials=random_trials) + extra)
    return path


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HPO_STORAGE", None)
    env["HPO_DATA_DIR"] = str(DATA_DIR)
    env["MPLBACKEND"] = "Agg"
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "1"
    env.update(extra)
    return env


SPAWN_ENV = "HPO_TEST_SPAWN"  # set to 1: every command starts as `python -m hpo`, imports and all


def hpo(*args: str, cwd: Path | None = None, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """Run `hpo ARGS…` in a process of its own; returns the completed process (text output).

    The process is forked from one that has already imported hpo (`tests/zygote.py`), which saves
    the second or so of imports that every command would otherwise spend; with HPO_TEST_SPAWN=1,
    or while another thread of the test is running a command, it is `python -m hpo` from scratch.
    """
    zygote = _zygote()
    if zygote is not None and _ZYGOTE_LOCK.acquire(blocking=False):
        try:
            return zygote.run(list(args), cwd, cli_env(**env), timeout)
        finally:
            _ZYGOTE_LOCK.release()
    return subprocess.run([sys.executable, "-m", "hpo", *args], cwd=cwd, env=cli_env(**env),
                          capture_output=True, text=True, timeout=timeout)


class _Zygote:
    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("zygote.py"))],
                                        env=cli_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, preexec_fn=restore_ctrl_c)
        self.ready = json.loads(self.process.stdout.readline() or "{}").get("ready", False)

    def run(self, args: list[str], cwd: Path | None, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix="hpo-cmd-") as folder:
            out, err = Path(folder, "out"), Path(folder, "err")
            out.touch()
            err.touch()
            request = {"args": args, "cwd": str(cwd or os.getcwd()), "env": env, "out": str(out), "err": str(err),
                       "timeout": timeout}
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            answer = json.loads(self.process.stdout.readline())
            if answer["timed_out"]:
                raise subprocess.TimeoutExpired(["hpo", *args], timeout, out.read_text(), err.read_text())
            return subprocess.CompletedProcess(["hpo", *args], answer["returncode"], out.read_text(), err.read_text())


_ZYGOTE_LOCK = threading.Lock()
_ZYGOTES: dict[int, _Zygote | None] = {}


def _zygote() -> _Zygote | None:
    """This test process's zygote (started on first use), or None when commands are spawned."""
    if os.environ.get(SPAWN_ENV) == "1":
        return None
    if os.getpid() not in _ZYGOTES:
        zygote = _Zygote()
        _ZYGOTES[os.getpid()] = zygote if zygote.ready else None
    return _ZYGOTES[os.getpid()]


def restore_ctrl_c() -> None:
    # A test run started in the background (`pytest &`, nohup) hands its children an ignored
    # SIGINT, and Python then installs no Ctrl-C handler: give the child the terminal's default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def hpo_popen(*args: str, cwd: Path | None = None, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hpo", *args], cwd=cwd, env=cli_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=restore_ctrl_c)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def server_or_fail(what: str, url: str) -> str:
    """`url` of a test server; skip when it is unreachable, except in CI, where that fails."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure to connect means the same here
        if os.environ.get("CI"):
            pytest.fail(f"{what} at {url} is unreachable in CI: {exc}")
        pytest.skip(f"{what} at {url} unreachable: {exc}")
    return url


def postgres_or_fail() -> str:
    """The test PostgreSQL server's URL (see server_or_fail)."""
    return server_or_fail("PostgreSQL", POSTGRES_URL)
