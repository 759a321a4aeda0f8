"""A storage password is never printed or stored: not by any command, not in any file it writes.

Real components: a PostgreSQL cluster of the test's own whose user must give a password holding
'@', ':' and '%' (SCRAM over TCP), every command that prints or writes a storage URL run as a real
subprocess, and every file they leave behind read back byte by byte.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from helpers import cli_env, hpo, write_spec
from hpo import open_storage
from pgserver import private_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PASSWORD = "s3c@r:et%7Zq"
WRONG = "wr0ng@p:ss%41"
# Every form a leak could take: whole, percent-encoded, and the parts on either side of the '@'
# (a mask that stops at the first '@' shows the second part).
LEAKS = (PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD), "s3c@r", "s3c%40r", "r:et%7Zq", "et%7Zq",
         "et%257Zq", "r%3Aet", WRONG, quote(WRONG, safe=""), "p:ss%41", "wr0ng")
USER = "keeper"
DATABASE = "vault"


@pytest.fixture(scope="module")
def server():
    for pg in private_server():
        pg.add_password_user(USER, PASSWORD, DATABASE)
        yield pg


def _urls(port: int, password: str) -> dict[str, str]:
    return {
        "in the user part": f"postgresql+psycopg://{USER}:{password}@127.0.0.1:{port}/{DATABASE}",
        "as a query parameter": f"postgresql+psycopg://{USER}@127.0.0.1:{port}/{DATABASE}"
                                f"?password={quote(password, safe='')}",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Transcript:
    """Every command run, with what it printed."""

    def __init__(self, folder: Path, url: str):
        self.folder = folder
        self.url = url
        self.outputs: list[tuple[str, str]] = []

    def run(self, *args: str, expect: int = 0, storage: bool = True) -> subprocess.CompletedProcess:
        words = [*args, "--storage", self.url] if storage else list(args)
        result = hpo(*words, cwd=self.folder)
        shown = " ".join(a if a != self.url else "URL" for a in words)
        self.outputs.append((f"hpo {shown}", result.stdout + result.stderr))
        assert result.returncode == expect, (shown, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, (shown, result.stderr)
        return result

    def dashboard(self) -> None:
        port = _free_port()
        process = subprocess.Popen([sys.executable, "-m", "hpo", "dashboard", "--port", str(port),
                                    "--storage", self.url], cwd=self.folder, env=cli_env(),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = process.stdout.readline()
        finally:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=60)
        assert first.startswith("Dashboard of postgresql+psycopg://"), (first, err)
        self.outputs.append(("hpo dashboard", first + out + err))


def _leaks(text: str) -> list[str]:
    return [leak for leak in LEAKS if leak in text]


@pytest.mark.parametrize("form", ["in the user part", "as a query parameter"])
def test_no_command_prints_or_writes_a_storage_password(server, tmp_path, form):
    url = _urls(server.port, PASSWORD)[form]
    name = "sec-user" if form == "in the user part" else "sec-query"
    work = tmp_path / "work"
    work.mkdir()
    spec = write_spec(tmp_path, name, trials=4, epochs=2, samples=200, random_trials=2)
    cli = Transcript(work, url)

    cli.run("study", "create", str(spec))
    cli.run("study", "create", str(spec), expect=1)  # exists: the message names the storage
    cli.run("study", "run", name, "--workers", "2")
    cli.run("study", "run", name, "--trials", "5")
    for command in (["list"], ["show", name], ["best", name]):
        cli.run("study", *command)
        cli.run("study", *command, "--json")
    cli.run("study", "show", "no-such-study", expect=1)
    cli.run("storage", "check", url, storage=False)
    cli.run("storage", "check", "--json")
    cli.run("study", "copy", name, "--to", f"sqlite:///{work / 'copy.db'}", "--json")
    copied_back = Transcript(work, f"sqlite:///{work / 'copy.db'}")
    copied_back.run("study", "copy", name, "--to", url, "--name", f"{name}-back")
    cli.outputs += copied_back.outputs
    cli.run("study", "export", name, "--out", f"{name}.json", "--json")
    cli.run("study", "export", name, "--out", f"{name}.csv")
    cli.run("study", "import", f"{name}.json", "--name", f"{name}-imported", "--json")
    cli.run("study", "report", name, "--out", "report.html")
    cli.run("study", "plot", name, "--out", "figures")
    cli.run("study", "narrow", name, "--top", "2", "--into", f"{name}-child", "--trials", "1")
    cli.run("study", "confirm", name, "--top", "1", "--seeds", "2")
    cli.run("study", "evaluate", name, "--seeds", "1")
    cli.run("study", "fail-stale", name)
    cli.dashboard()
    wrong = Transcript(work, _urls(server.port, WRONG)[form])
    wrong.run("study", "list", expect=1)
    wrong.run("storage", "check", "--json", expect=1)
    cli.outputs += wrong.outputs

    assert "***" in "".join(text for _, text in cli.outputs)  # the URL was shown, masked
    for command, text in cli.outputs:
        assert not _leaks(text), f"`{command}` printed {_leaks(text)}:\n{text}"
    files = [p for p in work.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".json", ".csv", ".html", ".png", ".db"}
    for path in files:
        text = path.read_bytes().decode("latin-1")
        assert not _leaks(text), f"{path.relative_to(work)} holds {_leaks(text)}"
    for storage in (url, f"sqlite:///{work / 'copy.db'}"):
        for study in open_storage(storage).get_all_studies():
            stored = json.dumps([study.user_attrs, study.system_attrs], default=str)
            assert not _leaks(stored), f"study {study.study_name} stores {_leaks(stored)}"
