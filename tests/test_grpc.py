"""Workers through `hpo storage serve`: real proxy processes on free ports in front of SQLite and
PostgreSQL, real `hpo study run` workers, one of them SIGKILLed mid-trial, and the dashboard opened
on the database behind the proxy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import optuna
import pytest

from helpers import cli_env, hpo, hpo_popen, postgres_or_fail, unique, write_spec
from test_claims import proxy, trials_of
from test_dashboard import get_json, serving

pytestmark = [pytest.mark.slow]

FINISHED = ("COMPLETE", "PRUNED")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request, tmp_path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'behind.db'}" if request.param == "sqlite" else postgres_or_fail()


def _worker(tmp_path, tag, *args, **env):
    home = tmp_path / f"home-{tag}"
    home.mkdir(exist_ok=True)
    return hpo_popen(*args, cwd=home, HOME=str(home), **env)


def test_three_workers_through_the_proxy_reach_the_target_and_recover_a_killed_one(database, tmp_path):
    name = unique("proxied")
    spec = write_spec(tmp_path, "p", trials=6, epochs=300, samples=1200, random_trials=3)
    with proxy(database) as url:
        created = hpo("study", "create", str(spec), "--name", name, "--storage", url,
                      "--heartbeat-interval", "1", "--grace-period", "3")
        assert created.returncode == 0, created.stderr
        try:
            run = ("study", "run", name, "--trials", "6", "--quiet")
            workers = {tag: _worker(tmp_path, tag, *run, HPO_STORAGE=url) for tag in ("victim", "a", "b")}
            deadline = time.monotonic() + 180
            while True:  # kill the victim while it runs a trial, after its first heartbeats
                running = [t for t in trials_of(url, name) if t.state.name == "RUNNING"]
                if len(running) == 3:
                    time.sleep(1.5)
                    break
                assert time.monotonic() < deadline, "the workers did not all start a trial"
                for process in workers.values():
                    assert process.poll() is None, process.communicate()[1]
                time.sleep(0.2)
            os.kill(workers["victim"].pid, signal.SIGKILL)
            workers["victim"].communicate(timeout=30)
            for tag in ("a", "b"):
                out, err = workers[tag].communicate(timeout=600)
                assert workers[tag].returncode == 0, err

            trials = {t.number: t for t in trials_of(url, name)}
            dead = [t for t in trials.values() if t.state.name == "FAIL"]
            assert len(dead) == 1 and "fail_reason" not in dead[0].user_attrs  # failed for its heartbeats
            retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == dead[0].number]
            assert len(retries) == 1 and retries[0].params == dead[0].params
            assert retries[0].state.name in FINISHED
            assert sum(t.state.name in FINISHED for t in trials.values()) == 6  # exactly the target
            assert len(trials) == 7  # the six and the killed one: nothing started beyond the target
            assert not [t for t in trials.values() if t.state.name in ("RUNNING", "WAITING")]

            # The database behind the proxy holds the same study, as the dashboard shows it.
            with serving(database) as base:
                studies = {s["study_name"]: s for s in get_json(f"{base}/api/studies")["study_summaries"]}
                detail = get_json(f"{base}/api/studies/{studies[name]['study_id']}")
            states = sorted(t["state"] for t in detail["trials"])
            assert len(states) == 7 and states.count("Fail") == 1
            assert {t["number"] for t in detail["trials"]} == set(trials)
        finally:
            hpo("study", "delete", name, "--yes", "--storage", url)


def test_confirm_runs_through_the_proxy_and_queues_each_run_once(tmp_path):
    """`hpo study confirm` through the proxy: the proxy takes the study's lock on the database
    behind it to queue the runs; two workers run them; asking again runs nothing more."""
    database = f"sqlite:///{tmp_path / 'behind.db'}"
    spec = write_spec(tmp_path, "conf", trials=4, random_trials=4)
    with proxy(database) as url:
        for args in (("study", "create", str(spec)), ("study", "run", "conf", "--quiet")):
            done = hpo(*args, "--storage", url)
            assert done.returncode == 0, done.stderr
        confirm = ("study", "confirm", "conf", "--top", "2", "--seeds", "2", "--storage", url)
        first = hpo(*confirm, "--workers", "2")
        assert first.returncode == 0, first.stderr
        again = hpo(*confirm)
        assert again.returncode == 0, again.stderr
        runs = trials_of(database, "conf:confirm")  # read on the database behind the proxy
        assert sorted((t.user_attrs["confirms_trial"], t.user_attrs["repeat"]) for t in runs) == sorted(
            (trial, repeat) for trial in {t.user_attrs["confirms_trial"] for t in runs} for repeat in (0, 1))
        assert len(runs) == 4 and all(t.state.name in FINISHED for t in runs)
        best = hpo("study", "best", "conf", "--storage", url)
        assert best.returncode == 0 and best.stdout.startswith("Confirmed best of 'conf': #"), best.stderr


# A process with a client of the proxy forks: a child of its own (which uses the client), and 300
# short subprocesses started as `hpo study run --workers` starts its workers.
FORKER = textwrap.dedent("""
    import os, subprocess, sys
    from hpo import Heartbeat, open_storage
    from hpo._workers import start_worker
    client = open_storage(sys.argv[1], Heartbeat(interval=None))
    study_id = client.get_study_id_from_name("forked")
    aborted = 0
    for _ in range(300):
        child = start_worker(["/bin/true"], dict(os.environ))
        out, err = child.communicate()
        aborted += bool(child.returncode or out or err)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if client.get_study_id_from_name("forked") == study_id and client.get_all_studies() else 1)
    print(aborted, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), client.get_study_id_from_name("forked") == study_id)
""")


def test_a_client_works_in_a_forked_child_and_never_aborts_a_subprocess(tmp_path):
    """A gRPC channel does not survive fork: the child opens its own on first use. A subprocess
    started with a preexec_fn would run the fork handlers, gRPC's included, between its fork and
    its exec, where gRPC aborts about one child in a hundred; hpo's workers start without one."""
    database = f"sqlite:///{tmp_path / 'fork.db'}"
    optuna.create_study(study_name="forked", storage=database)
    with proxy(database) as url:
        done = subprocess.run([sys.executable, "-c", FORKER, url], env=cli_env(), capture_output=True,
                              text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "0", "True"], done.stderr  # none aborted; the child's calls worked


def test_the_proxy_stops_cleanly_on_sigterm_and_ctrl_c(tmp_path):
    database = f"sqlite:///{tmp_path / 'stop.db'}"
    for stop in (signal.SIGTERM, signal.SIGINT):
        port_process = hpo_popen("storage", "serve", "--storage", database, "--port", "0")
        first = port_process.stdout.readline()
        assert first.startswith(f"Serving {database} on grpc://127.0.0.1:"), first + port_process.stderr.read()
        url = first.split(" on ")[1].split(" ")[0]
        checked = hpo("storage", "check", "--storage", url)
        assert checked.returncode == 0, checked.stderr
        assert checked.stdout == f"{url}: grpc, 0 studies\n"  # no schema: the proxy does not tell it
        port_process.send_signal(stop)
        out, err = port_process.communicate(timeout=60)
        assert port_process.returncode == 0 and err == ""
        assert out.splitlines()[-1] == "Proxy stopped."



def test_fail_stale_through_the_proxy(tmp_path):
    """A RUNNING trial that never sent a heartbeat is failed and queued again, through the proxy."""
    from hpo._study import open_study

    spec = write_spec(tmp_path, "stale", trials=3)
    with proxy(f"sqlite:///{tmp_path / 'stale.db'}") as url:
        created = hpo("study", "create", str(spec), "--storage", url, "--heartbeat-interval", "1",
                      "--grace-period", "3")
        assert created.returncode == 0, created.stderr
        handle = open_study("stale", url)
        handle.study.ask()  # RUNNING, and no worker will ever beat for it
        time.sleep(4)
        result = hpo("study", "fail-stale", "stale", "--storage", url)
        assert result.returncode == 0, result.stderr
        assert result.stdout == ("Failed 1 stale trial(s) of 'stale': 0; 1 queued again with the same "
                                 "parameters.\n")
        states = [t.state.name for t in trials_of(url, "stale")]
        assert states == ["FAIL", "WAITING"]


def test_the_proxy_stamps_heartbeats_with_its_own_clock_and_tells_the_running_trials_ages(tmp_path):
    """A worker's beat is written with the proxy's time, whatever the worker's clock says; a retry's
    inherited heartbeat (its failed trial's last) does not make it look alive or dead."""
    import optuna
    from hpo import Heartbeat, open_storage
    from hpo import _optuna_internals as internals
    from hpo._proxy import HEARTBEAT_KEY

    database = f"sqlite:///{tmp_path / 'behind.db'}"
    rdb = optuna.storages.get_storage(database)
    direct = optuna.create_study(study_name="beats", storage=rdb)
    fresh, retry = (internals.trial_id(direct.ask()) for _ in range(2))  # both RUNNING
    # The retry carries its failed trial's last beat, from an hour ago.
    rdb.set_trial_system_attr(retry, HEARTBEAT_KEY, time.time() - 3600)
    with proxy(database) as url:
        client = open_storage(url, Heartbeat(interval=1, grace_period=30))
        study_id = client.get_study_id_from_name("beats")
        before = time.time()
        client.record_heartbeat(fresh)  # the heartbeat thread's first beat, as the trial starts:
        assert HEARTBEAT_KEY not in rdb.get_trial(fresh).system_attrs  # its start says as much
        client.record_heartbeat(fresh)  # the next one
        stored = rdb.get_trial(fresh).system_attrs[HEARTBEAT_KEY]
        assert before - 1 <= stored <= time.time() + 1  # the proxy's clock, not the 0 the client sent
        ages = dict(client.get_study_user_attrs(-study_id)["running"])
        assert set(ages) == {fresh, retry}
        assert all(0 <= age < 30 for age in ages.values())  # the retry counts from its own start
        assert internals.stale_trial_ids(optuna.load_study(study_name="beats", storage=client)) == []
        # After the grace period without beats, both are stale.
        short = open_storage(url, Heartbeat(interval=1, grace_period=1))
        time.sleep(2.5)
        stale = internals.stale_trial_ids(optuna.load_study(study_name="beats", storage=short))
        assert sorted(stale) == sorted([fresh, retry])
