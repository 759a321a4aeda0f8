"""Exact targets without a study lock: real processes claim tickets on every backend.

Each backend is a real one: SQLite and journal files on disk, the PostgreSQL and MariaDB servers
of the machine, and `hpo storage serve` started on a free port in front of SQLite and PostgreSQL.
The workers here run a trivial objective, so that many claims cross in a short time.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo import _optuna_internals as internals
from helpers import cli_env, hpo, postgres_or_fail, server_or_fail, unique, write_spec

MYSQL_URL = os.environ.get("HPO_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")


def mysql_or_fail() -> str:
    """The test MariaDB's URL (see server_or_fail)."""
    return server_or_fail("MariaDB", MYSQL_URL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def proxy(url: str, *extra: str) -> Iterator[str]:
    """`hpo storage serve` in front of `url` on a free port; yields its grpc:// URL; stops it with SIGTERM."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "hpo", "storage", "serve", "--port", str(port), *extra],
                               env=cli_env(HPO_STORAGE=url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("Serving ") and f"on grpc://127.0.0.1:{port} (Ctrl-C to stop)" in line, \
            line + process.stderr.read()
        yield f"grpc://127.0.0.1:{port}"
    finally:
        process.terminate()
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.splitlines()[-1] == "Proxy stopped."


@pytest.fixture(params=["sqlite", "journal", pytest.param("postgres", marks=pytest.mark.postgres), "mysql",
                        "grpc-sqlite", pytest.param("grpc-postgres", marks=pytest.mark.postgres)])
def storage(request, tmp_path) -> Iterator[str]:
    """A storage URL of each kind; the server databases get a study name of the test's own."""
    kind = request.param
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'c.db'}"
    elif kind == "journal":
        yield f"journal:{tmp_path / 'c.log'}"
    elif kind == "postgres":
        yield postgres_or_fail()
    elif kind == "mysql":
        yield mysql_or_fail()
    elif kind == "grpc-sqlite":
        with proxy(f"sqlite:///{tmp_path / 'c.db'}") as url:
            yield url
    else:
        with proxy(postgres_or_fail()) as url:
            yield url


# A worker: claims tickets of the study until it is done, and completes each claimed trial at once
# (after a pause of `hold` seconds, so that claims of different workers cross while trials run).
WORKER = textwrap.dedent("""
    import sys, time, optuna
    from hpo._study import open_study
    from hpo import _claims
    name, url, target, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    handle = open_study(name, url)
    ran = []
    while True:
        trial_id, counts, done = _claims.claim_next(handle, target, False)
        if done:
            break
        if trial_id is None:
            time.sleep(0.01)
            continue
        trial = optuna.Trial(handle.study, trial_id)
        time.sleep(hold)
        handle.study.tell(trial, 0.5)
        ran.append(trial.number)
    print(" ".join(map(str, ran)))
""")


def start_workers(n: int, name: str, url: str, target: int, hold: float) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", WORKER, name, url, str(target), str(hold)],
                             env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(n)]


def finish(workers: list[subprocess.Popen]) -> list[list[int]]:
    ran = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        ran.append([int(n) for n in out.split()])
    return ran


def trials_of(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    from hpo import Heartbeat, open_storage

    storage = open_storage(url, Heartbeat(interval=None))
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


@contextlib.contextmanager
def study_in(url: str, tmp_path: Path, trials: int) -> Iterator[str]:
    name = unique("claims")
    spec = write_spec(tmp_path, "c", trials=trials, random_trials=trials)
    created = hpo("study", "create", str(spec), "--name", name, "--storage", url)
    assert created.returncode == 0, created.stderr
    try:
        yield name
    finally:
        hpo("study", "delete", name, "--yes", "--storage", url)


@pytest.mark.slow
def test_processes_started_together_reach_the_target_exactly_and_run_each_trial_once(storage, tmp_path):
    """Three processes start on a new study at the same moment: they make the tickets once, claim
    each trial once, and stop at the target with nothing left over."""
    with study_in(storage, tmp_path, 24) as name:
        ran = finish(start_workers(3, name, storage, 24, hold=0.02))
        trials = trials_of(storage, name)
        numbers = [n for worker in ran for n in worker]
        assert sorted(numbers) == sorted(set(numbers)), "a trial ran in two workers"
        assert len(numbers) == 24
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 24  # no overshoot, no spare ticket


@pytest.mark.slow
def test_a_raised_target_is_reached_exactly_by_two_processes(storage, tmp_path):
    with study_in(storage, tmp_path, 6) as name:
        finish(start_workers(2, name, storage, 6, hold=0.0))
        ran = finish(start_workers(2, name, storage, 15, hold=0.02))
        trials = trials_of(storage, name)
        assert sum(len(worker) for worker in ran) == 9
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 15


def test_a_claim_answers_the_finished_and_running_trials_with_itself_and_a_lost_claim_none(storage, tmp_path):
    from hpo._claims import claims_for
    from hpo._study import open_study

    with study_in(storage, tmp_path, 5) as name:
        handle = open_study(name, storage)
        claims = claims_for(internals.study_storage(handle.study))
        claims.top_up(handle, 5, 5)
        _counts, tickets = claims.look(handle.study)
        first, second, third = sorted(tickets, key=lambda t: t.number)[:3]
        assert claims.claim_counted(handle.study, first.trial_id) == 1
        assert claims.claim_counted(handle.study, first.trial_id) is None  # taken: by us, here
        handle.study.tell(optuna.Trial(handle.study, first.trial_id), 0.5)
        assert claims.claim_counted(handle.study, second.trial_id) == 2  # 1 finished + itself
        assert claims.claim_counted(handle.study, third.trial_id) == 3
        counts, tickets = claims.look(handle.study)
        assert (counts["COMPLETE"], counts["RUNNING"], counts["WAITING"], len(tickets)) == (1, 2, 2, 2)


# A command queueing configurations, as `hpo study confirm` queues its runs: it waits for the common
# start time given, then queues 10 runs, each identified by its user attributes "of" and "repeat".
QUEUER = textwrap.dedent("""
    import sys, time
    from hpo import _optuna_internals as internals
    from hpo._claims import claims_for
    from hpo._study import open_study
    name, url, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    handle = open_study(name, url)
    claims = claims_for(internals.study_storage(handle.study))
    runs = [{"params": {"lr": 0.01 * (1 + of), "optimizer": "adam"}, "user_attrs": {"of": of, "repeat": r, "seed": 7}}
            for of in range(5) for r in range(2)]
    time.sleep(max(0.0, start - time.time()))
    claims.queue_once(handle, runs, key=["of", "repeat"])
""")


@pytest.mark.slow
def test_processes_queueing_the_same_runs_at_once_queue_each_once(storage, tmp_path):
    """What `hpo study confirm` does when started twice at once, through the proxy included: the
    study's lock (taken by the proxy on the database behind it) lets one queue and the others see them."""
    with study_in(storage, tmp_path, 5) as name:
        start = time.time() + 5  # every process has imported hpo and opened the study by then
        queuers = [subprocess.Popen([sys.executable, "-c", QUEUER, name, storage, str(start)], env=cli_env(),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
        for queuer in queuers:
            _out, err = queuer.communicate(timeout=120)
            assert queuer.returncode == 0, err
        trials = trials_of(storage, name)
        queued = sorted((t.user_attrs["of"], t.user_attrs["repeat"]) for t in trials)
        assert queued == [(of, r) for of in range(5) for r in range(2)]  # each once
        assert all(t.state == TrialState.WAITING and t.system_attrs["fixed_params"] ==
                   {"lr": 0.01 * (1 + t.user_attrs["of"]), "optimizer": "adam"} for t in trials)


def test_a_claim_has_one_winner_when_processes_race_for_the_same_tickets(tmp_path):
    """The conditional UPDATE on SQLite, where Optuna's SELECT … FOR UPDATE would let both win."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    study = optuna.create_study(study_name="race", storage=url)
    for _ in range(100):
        study.enqueue_trial({})
    ids = [internals.trial_id(t) for t in study.get_trials(deepcopy=False)]
    script = textwrap.dedent("""
        import sys, sqlalchemy
        from hpo._claims import claim_sql
        engine = sqlalchemy.create_engine(sys.argv[1], connect_args={"timeout": 60})
        won = [i for i in map(int, sys.argv[2:]) if claim_sql(engine, i)]
        print(" ".join(map(str, won)))
    """)
    racers = [subprocess.Popen([sys.executable, "-c", script, url, *map(str, ids)], env=cli_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    won = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        won += [int(i) for i in out.split()]
    assert sorted(won) == sorted(ids)  # every ticket claimed, none twice
    assert all(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False))


# hpo's proxy of before the claim and its count were one request: it knows only the plain signature.
OLDER_PROXY = textwrap.dedent("""
    import sys, optuna
    from hpo._proxy import SIGNATURE, SIGNATURE_NAME
    class Older(optuna.storages.RDBStorage):
        def get_study_id_from_name(self, name):
            return SIGNATURE if name == SIGNATURE_NAME else super().get_study_id_from_name(name)
    optuna.storages.run_grpc_proxy_server(Older(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]))
""")


@pytest.mark.parametrize("kind, message", [
    ("plain", "is a gRPC storage proxy, but not `hpo storage serve`: its claims are not known to be atomic; "
              "serve the database with `hpo storage serve`"),
    ("older", "is `hpo storage serve` of an older hpo than this one; restart the proxy with the hpo that the "
              "workers run"),
])
def test_a_plain_optuna_proxy_or_an_older_hpo_one_is_refused_in_one_line(kind, message, tmp_path):
    """Optuna's own proxy in front of SQLite claims with FOR UPDATE, which SQLite ignores; an older
    hpo proxy does not answer the requests of this one's workers."""
    port = free_port()
    database = f"sqlite:///{tmp_path / 'plain.db'}"
    script = (f"import optuna; optuna.storages.run_grpc_proxy_server("
              f"optuna.storages.get_storage('{database}'), host='127.0.0.1', port={port})")
    command = [sys.executable, "-c", script] if kind == "plain" else [sys.executable, "-c", OLDER_PROXY, database, str(port)]
    server = subprocess.Popen(command, env=cli_env(), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.2)
        result = hpo("study", "list", "--storage", f"grpc://127.0.0.1:{port}")
    finally:
        server.kill()
        server.wait()
    assert result.returncode == 1
    assert result.stderr == f"Error: grpc://127.0.0.1:{port} {message}\n"


def test_the_proxy_refuses_a_journal_in_one_line(tmp_path):
    result = hpo("storage", "serve", "--storage", f"journal:{tmp_path / 'j.log'}", "--port", str(free_port()))
    assert result.returncode == 1
    assert result.stderr == (f"Error: the gRPC proxy cannot serve the journal journal:{tmp_path / 'j.log'}: "
                             "Optuna's proxy serves SQL databases only; serve SQLite, PostgreSQL or MySQL, "
                             "or give workers the journal itself\n")
    assert not (tmp_path / "j.log").exists()


@pytest.mark.slow  # the proxy gets the connection timeout to answer
def test_nothing_listening_at_a_grpc_url_is_one_line():
    port = free_port()
    result = hpo("study", "list", "--storage", f"grpc://127.0.0.1:{port}")
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: cannot reach the storage proxy at grpc://127.0.0.1:{port} within ")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("url", ["grpc://", "grpc://user@host:1", "grpc://host:1/db"])
def test_a_grpc_url_is_only_host_and_port(url):
    result = hpo("study", "list", "--storage", url)
    assert result.returncode == 1
    assert result.stderr == f"Error: storage URL '{url}' must be grpc://HOST:PORT, the address that " \
                            "`hpo storage serve` listens on\n"


def test_a_busy_port_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = hpo("storage", "serve", "--storage", f"sqlite:///{tmp_path / 'b.db'}", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr == (f"Error: cannot serve on 127.0.0.1:{port}: Address already in use; another "
                             "program uses that port; pick another with --port\n")
