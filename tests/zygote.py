"""Runs `python -m hpo ARGS…` commands for the tests without paying the imports each time.

Started once per test process (see `helpers.hpo`), it imports the CLI, then for each request on
stdin forks a child that becomes the command: its own process, working folder, environment and
standard streams (files the test reads afterwards), `hpo/__main__.py` run as `-m` runs it, and
its exit status. Only the import of modules that read nothing at import time is shared, which is
what a preloading server does. Each line on stdin is a JSON request; each is answered by one
line: the exit code (negative: the signal that ended it, as `subprocess.run` reports it), and
whether the command was killed for outliving its timeout.
"""

from __future__ import annotations

import json
import os
import runpy
import select
import signal
import sys
import warnings


def _serve() -> dict:
    """Answer requests until one is to be run in this process (then we are the child)."""
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            return request
        exited = os.pidfd_open(pid)
        timed_out = not select.select([exited], [], [], request["timeout"])[0]
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        os.close(exited)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out}), flush=True)
    sys.exit(0)


def _become(request: dict) -> None:
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["out"], os.O_WRONLY | os.O_TRUNC),
                            (2, request["err"], os.O_WRONLY | os.O_TRUNC)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    import numpy

    numpy.random.seed()  # a fresh process would not share its global generator's state
    sys.path[0] = os.getcwd()  # as `python -m` has it
    sys.argv = ["hpo", *request["args"]]
    runpy.run_module("hpo", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import hpo.cli  # noqa: F401 - the imports every command makes
    if caught:  # a command would print them: tell the tests to start commands from scratch
        print(json.dumps({"refused": [str(w.message) for w in caught]}), flush=True)
        sys.exit(0)
    print(json.dumps({"ready": True}), flush=True)
    _become(_serve())
