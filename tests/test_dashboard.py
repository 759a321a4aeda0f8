"""`hpo dashboard`: optuna-dashboard on our storages, checked through its API and in a real browser.

The server runs as a real subprocess (`python -m hpo dashboard`) and is stopped with SIGTERM.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
import optuna_dashboard
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from hpo import Heartbeat, StudyHandle, _study, open_storage
from hpo._child import create_child, narrow_study
from hpo._confirm import CONFIRMED_ATTR, companion
from hpo._evaluate import TEST_RESULT_ATTR
from hpo._notes import KEEP_LINE, ROLE_ATTR, note, refresh
from hpo._space import distributions
from hpo._spec import load_spec
from helpers import REPO, cli_env, postgres_or_fail, unique, write_spec

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("HPO_CHROMIUM", "/usr/bin/chromium")
SPEC = {"study": {"name": "dash", "trials": 3}, "data": {"dataset": "digits"},
        "search": {"lr": {"type": "float", "low": 1e-3, "high": 0.5, "log": True}}}


def run_hpo(*args: str) -> list[str]:
    """The command line of `hpo ARGS`; through a shim that mounts the dashboard until the root app does."""
    if "dashboard" in (REPO / "hpo" / "cli" / "__init__.py").read_text():
        return [sys.executable, "-m", "hpo", *args]
    shim = ("import sys; from hpo.cli import app; from hpo.cli._dashboard import register; "
            "register(app); sys.argv[0] = 'hpo'; app()")
    return [sys.executable, "-c", shim, *args]


def env() -> dict[str, str]:
    return cli_env(PYTHONPATH=str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_study(url: str, name: str = "dash") -> None:
    """Three trials shaped like ours: params, a per-epoch curve, phase, curves and a reason."""
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.set_user_attr("spec", SPEC)
    study.set_user_attr("objective", "final-epoch validation accuracy (maximized)")
    space = {"learning_rate": FloatDistribution(1e-3, 0.5, log=True),
             "optimizer": CategoricalDistribution(["sgd", "adam"])}
    for n, (state, value) in enumerate([("COMPLETE", 0.91), ("PRUNED", None), ("COMPLETE", 0.87)]):
        curve = [0.5 + 0.1 * e + 0.01 * n for e in range(3)]
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState[state], value=value,
            params={"learning_rate": 0.01 * (n + 1), "optimizer": ["sgd", "adam"][n % 2]},
            distributions=space, intermediate_values=dict(enumerate(curve)),
            user_attrs={"phase": "random", "curves": {"val_accuracy": curve},
                        **({"reason": "pruned at epoch 2 by the median rule"} if value is None else {})}))


@contextlib.contextmanager
def serving(url: str, stderr: str = "") -> Iterator[str]:
    """Start the dashboard on a free port; yield its base URL; stop it with SIGTERM and check it
    stopped, having written `stderr` on its standard error."""
    port = free_port()
    process = subprocess.Popen(run_hpo("dashboard", "--storage", url, "--port", str(port)), env=env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, process)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.splitlines()[0].startswith("Dashboard of ")
    assert f"on http://127.0.0.1:{port}/dashboard/ (Ctrl-C to stop)" in out.splitlines()[0]
    assert out.splitlines()[-1] == "Dashboard stopped."
    assert err == stderr


def wait_until_up(base: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the dashboard exited with {process.returncode}: {process.stderr.read()}")
        try:
            with urllib.request.urlopen(f"{base}/api/meta", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    pytest.fail(f"the dashboard did not answer at {base} within {timeout} s")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@pytest.fixture(params=["sqlite", "journal", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage(request, tmp_path) -> Iterator[tuple[str, str]]:
    """A storage URL of each kind holding one small study, and that study's name."""
    if request.param == "sqlite":
        url, name = f"sqlite:///{tmp_path / 'dash.db'}", "dash"
    elif request.param == "journal":
        url, name = f"journal:{tmp_path / 'dash.log'}", "dash"
    else:
        url, name = postgres_or_fail(), unique("dash")

    make_study(open_storage(url, Heartbeat(interval=None)) if request.param == "journal" else url, name)
    yield url, name
    if request.param == "postgres":
        optuna.delete_study(study_name=name, storage=url)


def attrs(serialized: list[dict]) -> dict[str, str]:
    return {a["key"]: a["value"] for a in serialized}


def test_the_dashboard_api_shows_our_trials_and_the_spec(storage):
    url, name = storage
    with serving(url) as base:
        studies = {s["study_name"]: s for s in get_json(f"{base}/api/studies")["study_summaries"]}
        assert json.loads(attrs(studies[name]["user_attrs"])["spec"]) == SPEC
        detail = get_json(f"{base}/api/studies/{studies[name]['study_id']}")
    trials = detail["trials"]
    assert [t["state"] for t in trials] == ["Complete", "Pruned", "Complete"]
    assert [p["name"] for p in trials[0]["params"]] == ["learning_rate", "optimizer"]
    assert [v["step"] for v in trials[1]["intermediate_values"]] == [0, 1, 2]
    assert set(attrs(trials[1]["user_attrs"])) == {"phase", "curves", "reason"}
    assert json.loads(attrs(trials[0]["user_attrs"])["curves"]) == {"val_accuracy": [0.5, 0.6, 0.7]}
    assert attrs(detail["user_attrs"])["objective"] == "final-epoch validation accuracy (maximized)"
    # Named and noted when the dashboard started, on every kind of storage.
    assert detail["objective_names"] == ["validation accuracy"]
    assert detail["note"]["body"].startswith(f"## hpo study `{name}`\n")


def test_a_busy_port_is_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    make_study(url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(run_hpo("dashboard", "--storage", url, "--port", str(port)), env=env(),
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == (f"Error: cannot serve on 127.0.0.1:{port}: Address already in use; "
                             "another program uses that port; pick another with --port\n")
    assert result.stdout == ""


@pytest.mark.parametrize("args,code,message", [
    (["--storage", "nonsense"], 1, "Error: storage URL 'nonsense' is not a valid URL; use sqlite:///path/to/file.db, "
                                   "postgresql+psycopg://user@host/db, mysql+pymysql://user@host/db, "
                                   "grpc://HOST:PORT (`hpo storage serve`) or journal:PATH\n"),
    (["--storage", "postgresql+psycopg://alice:s3cret@127.0.0.1:1/db"], 1,
     "Error: cannot open storage postgresql+psycopg://alice:***@127.0.0.1:1/db: "),
    (["--storage", "sqlite:///{tmp}/d.db", "--host", "no-such-host.invalid"], 1,
     "Error: cannot serve on no-such-host.invalid:8080: "),
    (["--storage", "sqlite:///{tmp}/d.db", "--port", "70000"], 2, "Invalid value for '--port'"),
])
def test_bad_storage_host_or_port_is_one_line(tmp_path, args, code, message):
    args = [a.format(tmp=tmp_path) for a in args]
    result = subprocess.run(run_hpo("dashboard", *args), env=env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == code
    assert "s3cret" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    if code == 1:
        assert result.stderr.startswith(message)
        assert len(result.stderr.splitlines()) == 1
    else:
        assert message in result.stderr


def chromium() -> str:
    if shutil.which(CHROMIUM) is None:
        if os.environ.get("CI"):
            pytest.fail(f"chromium is missing at {CHROMIUM} in CI")
        pytest.skip(f"chromium is missing at {CHROMIUM}")
    return CHROMIUM


def browse(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--virtual-time-budget=10000", *extra, url],
        capture_output=True, text=True, timeout=120)


def visible_text(html: str) -> str:
    """The page's text, one element's text a line, without styles and scripts."""
    html = re.sub(r"<(style|script)\b.*?</\1>", "", html, flags=re.S)
    return "\n".join(line.strip() for line in re.sub(r"<[^>]+>", "\n", html).splitlines() if line.strip())


@pytest.mark.browser
@pytest.mark.slow
def test_the_study_pages_render_in_chromium(tmp_path):
    chromium()
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    make_study(url)
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "dashboard-study.png"
    screenshot.unlink(missing_ok=True)
    with serving(url) as base:
        study_page = browse(f"{base}/dashboard/studies/1", tmp_path / "p1", "--dump-dom")
        trials_page = browse(f"{base}/dashboard/studies/1/trials", tmp_path / "p2", "--dump-dom")
        shot = browse(f"{base}/dashboard/studies/1", tmp_path / "p3", f"--screenshot={screenshot}",
                      "--window-size=1400,1000")
    for page in (study_page, trials_page, shot):
        assert page.returncode == 0, page.stderr[-2000:]
    study = visible_text(study_page.stdout)
    (ARTIFACTS / "dashboard-study.txt").write_text(study)
    assert "dash (id=1)" in study.splitlines()  # the study name
    assert "learning_rate" in study.splitlines()  # a parameter name (hyperparameter importance)
    assert "Study User Attributes" in study and '"dataset": "digits"' in study  # the spec
    # The study page draws the count only as plot points; the trial list states it.
    trials = visible_text(trials_page.stdout)
    (ARTIFACTS / "dashboard-trials.txt").write_text(trials)
    assert "3 Trials" in trials.splitlines()
    assert "learning_rate 0.01" in trials.splitlines()
    assert "phase random" in trials.splitlines()  # our user attributes
    assert screenshot.stat().st_size > 10_000


# What hpo knows, shown in the dashboard: the metric's name, the note, the role, real times.

def hpo_studies(tmp_path: Path) -> tuple[str, StudyHandle, StudyHandle]:
    """A study made by hpo with six finished trials (no training: the trials are added), its child
    narrowed by the best three, and its confirmation companion; the storage URL first."""
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    handle = _study.create(load_spec(write_spec(tmp_path, "dash", trials=6)), url)
    dists = distributions(handle.spec.search)
    start = datetime.datetime(2026, 1, 5, 9, 0, tzinfo=datetime.timezone.utc)
    for n in range(6):
        lr, decay = 10 ** (-2.5 + 0.3 * n), 10 ** (-7 + 0.5 * n)
        # A curve as long as a real one (full-precision floats, one list per metric) on every trial.
        curves = {m: [0.5 + 0.4 * (1 - 0.9 ** e) + 1e-9 * n * e for e in range(40)]
                  for m in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")}
        handle.study.add_trial(FrozenTrial(
            number=-1, trial_id=-1, state=TrialState.COMPLETE, value=0.8 + 0.02 * n - 0.003 * n * n, values=None,
            datetime_start=start + datetime.timedelta(minutes=2 * n),
            datetime_complete=start + datetime.timedelta(minutes=2 * n + 1, seconds=30),
            params={"lr": lr, "weight_decay": decay, "optimizer": ["sgd", "momentum", "adam"][n % 3]},
            distributions=dists, user_attrs={"phase": "random", "curves": curves, "epochs": 40},
            system_attrs={}, intermediate_values={}))
    child = create_child(handle, narrow_study(handle, top=3), "dash-narrow", trials=2).handle
    companion(handle)
    return url, handle, child


def test_a_new_study_names_its_metric_and_holds_a_note_the_dashboard_reads(tmp_path):
    url, handle, child = hpo_studies(tmp_path)
    for h in (handle, child):
        assert h.study.metric_names == ["validation accuracy"]
        assert h.study.user_attrs[ROLE_ATTR] == "search"
        # The note is written without the dashboard package; the package reads it as its own.
        assert optuna_dashboard.get_note(h.study) == note(h.study)
    text = note(handle.study)
    assert text.startswith("## hpo study `dash`\n")
    assert "```toml\n[study]\nname = \"dash\"" in text and "[search.lr]" in text
    lineage = note(child.study)
    assert "Narrowed from `dash`" in lineage and "Warm-started with 3 of the parent's finished trials" in lineage
    assert "### Narrowed ranges" in lineage and "- `lr`: [0.001, 0.5] → [" in lineage
    runs = _study.open_study("dash:confirm", url, Heartbeat(interval=None))
    assert runs.study.user_attrs[ROLE_ATTR] == "confirmation"
    first = note(runs.study).splitlines()[0]
    assert first.startswith("**Bookkeeping study, not a search:** the confirmation runs of `dash`")


def note_version(url: str, name: str) -> int:
    storage = open_storage(url, Heartbeat(interval=None))
    return storage.get_study_system_attrs(storage.get_study_id_from_name(name))["dashboard:note_ver"]


def test_the_note_follows_the_study_and_keeps_what_a_person_wrote_below_it(tmp_path):
    url, handle, _ = hpo_studies(tmp_path)
    mine = "\n\nTried on the laptop; see the lab book, p. 12."
    optuna_dashboard.save_note(handle.study, note(handle.study) + mine)  # as the dashboard's editor saves it
    version = note_version(url, "dash")
    refresh(handle.study)  # nothing changed: nothing written
    assert note_version(url, "dash") == version
    handle.study.set_user_attr(CONFIRMED_ATTR, {
        "trial": 4, "params": {"lr": 0.1}, "mean": 0.9123, "sd": 0.004, "original": 0.92, "seeds": 5, "top": 3,
        "date": "2026-01-06"})
    handle.study.set_user_attr(TEST_RESULT_ATTR, {
        "mean": 0.9012, "std": 0.003, "seeds": [{}, {}, {}], "trial": 4, "source": "confirmed",
        "validation": 0.9123, "n_train": 1437, "n_test": 360, "date": "2026-01-07", "forced": False})
    refresh(handle.study)
    text = optuna_dashboard.get_note(handle.study)
    assert "Trial 4: mean validation accuracy 0.9123 ± 0.004 over 5 seeds" in text
    assert "Test accuracy 0.9012 ± 0.003 over 3 seeds, trial 4 (confirmed; validation 0.9123)" in text
    assert text.endswith(KEEP_LINE + mine)
    assert note_version(url, "dash") == version + 1


def test_a_long_note_is_split_and_shrinking_it_leaves_no_old_text(tmp_path):
    url, handle, _ = hpo_studies(tmp_path)
    long = note(handle.study) + "\n\n" + "x" * 5000  # three of the dashboard's chunks
    optuna_dashboard.save_note(handle.study, long)
    assert optuna_dashboard.get_note(handle.study) == long
    handle.study.set_user_attr("lineage", None)
    mine_gone = note(handle.study).split(KEEP_LINE)[0]
    refresh(handle.study)
    assert optuna_dashboard.get_note(handle.study) == note(handle.study)
    assert note(handle.study).startswith(mine_gone) and note(handle.study).endswith("x" * 5000)


def test_warm_started_trials_keep_the_times_they_ran(tmp_path):
    _, handle, child = hpo_studies(tmp_path)
    copied = [t for t in child.trials() if "warm_start" in t.user_attrs]
    assert len(copied) == 3
    for t in copied:
        original = handle.study.trials[t.user_attrs["warm_start"]["trial"]]
        assert (t.datetime_start, t.datetime_complete) == (original.datetime_start, original.datetime_complete)
        assert (t.datetime_complete - t.datetime_start).total_seconds() == 90


def test_the_dashboard_names_the_metric_and_writes_the_note_of_an_older_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    make_study(url)  # made as hpo made studies before it named the metric: no note, no role
    with serving(url) as base:
        detail = get_json(f"{base}/api/studies/1")
    assert detail["objective_names"] == ["validation accuracy"]
    assert detail["note"]["body"].startswith("## hpo study `dash`\n")
    assert attrs(detail["user_attrs"])["hpo_role"] == "search"


def test_a_read_only_storage_is_served_as_it_is_with_one_line_saying_so(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    url = f"sqlite:///{folder / 'old.db'}"
    make_study(url)
    (folder / "old.db").chmod(0o444)
    folder.chmod(0o555)
    try:
        with serving(url, stderr=f"Note: {url} cannot be written, so studies made before hpo wrote notes are "
                                 "shown without their metric name and note.\n") as base:
            detail = get_json(f"{base}/api/studies/1")
    finally:
        folder.chmod(0o755)
    assert [t["state"] for t in detail["trials"]] == ["Complete", "Pruned", "Complete"]
    assert detail["note"]["body"] == ""


def test_the_dashboard_without_its_extra_says_how_to_install_it(tmp_path):
    shim = ("import sys; sys.modules['optuna_dashboard'] = None; from hpo.cli import main; "
            "sys.argv[0] = 'hpo'; main()")
    result = subprocess.run([sys.executable, "-c", shim, "dashboard", "--storage", f"sqlite:///{tmp_path / 'd.db'}"],
                            env=env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == ("Error: the dashboard is an optional part of hpo; install it with: "
                             "pip install 'hpo-studies[dashboard]'\n")
    assert result.stdout == ""


def test_the_dashboard_and_the_figure_show_the_same_importances(tmp_path):
    """One method everywhere: the dashboard's PED-ANOVA numbers are Optuna's, and the PNG draws them."""
    url, handle, _ = hpo_studies(tmp_path)
    with serving(url) as base:
        served = get_json(f"{base}/api/studies/1/param_importances")["param_importances"][0]
    dashboard = {p["name"]: p["importance"] for p in served}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna_numbers = optuna.importance.get_param_importances(
            handle.study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), target=lambda t: -t.value)
    assert dashboard == pytest.approx(optuna_numbers)
    from hpo._plots import plot_importance

    ax = next(a for a in plot_importance(handle.study).axes if a.get_label() == "importance")
    drawn = {label.get_text(): bar.get_width() for label, bar in zip(ax.get_yticklabels(), ax.patches)}
    assert set(drawn) == set(dashboard)
    assert drawn == pytest.approx(dashboard, abs=1e-9)


@pytest.mark.browser
@pytest.mark.slow
def test_the_study_pages_name_the_metric_and_show_the_note_in_chromium(tmp_path):
    chromium()
    url, _, _ = hpo_studies(tmp_path)  # ids: 1 dash, 2 dash-narrow, 3 dash:confirm
    with serving(url) as base:
        pages = {path: browse(f"{base}/dashboard/studies/{path}", tmp_path / f"p{i}", "--dump-dom")
                 for i, path in enumerate(("1", "2/note", "3/note"))}
    for page in pages.values():
        assert page.returncode == 0, page.stderr[-2000:]
    study = visible_text(pages["1"].stdout).splitlines()
    assert "validation accuracy" in study  # the history plot's axis, not "Objective 0"
    assert not any(line.startswith("Objective") for line in study)
    child = visible_text(pages["2/note"].stdout)
    (ARTIFACTS / "dashboard-note.txt").write_text(child)
    assert "hpo study\ndash-narrow\n" in child  # the note's heading, its name in code type
    assert "Lineage\nNarrowed from\ndash\n" in child and "Narrowed ranges" in child
    assert "[\nsearch.lr\n]" in child  # the spec as TOML, highlighted token by token
    assert "Notes below this line are yours: hpo keeps them when it updates the part above." in child
    runs = visible_text(pages["3/note"].stdout)
    assert "Bookkeeping study, not a search:\nthe confirmation runs of\ndash\n" in runs


class Browser:
    """Headless Chromium driven through its DevTools pipe (it reads fd 3, writes fd 4, messages
    end in NUL): open a page, wait for it, evaluate JavaScript in it."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900) -> None:
        to_chromium, self._to_w = os.pipe()
        self._from_r, from_chromium = os.pipe()

        def on_fds_3_and_4() -> None:
            a, b = os.dup(to_chromium), os.dup(from_chromium)  # a pipe may itself sit on fd 3 or 4
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.process = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
             "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=on_fds_3_and_4, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chromium)
        os.close(from_chromium)
        self._pending = b""
        self._id = 0

    def send(self, method: str, session: str | None = None, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._to_w, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def _read(self) -> dict:
        while b"\0" not in self._pending:
            chunk = os.read(self._from_r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._pending += chunk
        message, self._pending = self._pending.split(b"\0", 1)
        return json.loads(message)

    def open(self, url: str) -> str:
        target = self.send("Target.createTarget", url=url)["targetId"]
        return self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def evaluate(self, session: str, expression: str):
        return self.send("Runtime.evaluate", session, expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, session: str, expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(session, expression)
            if value:
                return value
            time.sleep(0.25)
        pytest.fail(f"the page never satisfied {expression} within {timeout} s")

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            self.send("Browser.close")
        self.process.wait(timeout=30)
        os.close(self._to_w)
        os.close(self._from_r)


@pytest.mark.browser
@pytest.mark.slow
def test_a_long_curves_attribute_does_not_widen_the_page_in_chromium(tmp_path):
    """A trial's `curves` (thousands of characters) wraps inside its box; the page never scrolls sideways."""
    chromium()
    url, _, _ = hpo_studies(tmp_path)
    with serving(url) as base:
        browser = Browser(tmp_path / "profile")
        try:
            widths = {}
            for path in ("1/trials", "2/trials", "1"):
                session = browser.open(f"{base}/dashboard/studies/{path}")
                browser.wait_for(session, "document.body.innerText.includes('User Attributes')")
                if path.endswith("trials"):
                    shown = "document.body.innerText.includes('curves {\"train_loss\": [0.5,')"
                    assert browser.evaluate(session, shown)
                widths[path] = browser.evaluate(session, "[document.documentElement.scrollWidth, window.innerWidth]")
        finally:
            browser.close()
    for path, (page, window) in widths.items():
        assert page <= window, f"/dashboard/studies/{path} is {page} px wide in a {window} px window"
