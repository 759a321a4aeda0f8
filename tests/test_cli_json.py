"""Every command that reports a result can print it as JSON for scripts: the ones added last."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from helpers import DATA_DIR, write_spec
from hpo.cli import app

runner = CliRunner()


def _json(*args: str) -> dict:
    result = runner.invoke(app, list(args), env={"HPO_DATA_DIR": str(DATA_DIR), "MPLBACKEND": "Agg"})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_plot_report_fail_stale_priority_delete_and_verify_print_json(tmp_path):
    url = f"sqlite:///{tmp_path / 'j.db'}"
    spec = write_spec(tmp_path, "j", trials=4, epochs=2, samples=200, random_trials=2)
    assert _json("study", "run", str(spec), "--storage", url, "--json")["finished"] == 4

    plotted = _json("study", "plot", "j", "--kind", "history", "--out", str(tmp_path / "figs"), "--storage", url,
                    "--json")
    assert plotted["figures"] == [{"kind": "history", "file": str(tmp_path / "figs" / "history.png"), "skipped": None}]
    assert (tmp_path / "figs" / "history.png").stat().st_size > 0

    reported = _json("study", "report", "j", "--out", str(tmp_path / "r.html"), "--storage", url, "--json")
    assert reported == {"study": "j", "file": str(tmp_path / "r.html"), "bytes": (tmp_path / "r.html").stat().st_size}

    stale = _json("study", "fail-stale", "j", "--storage", url, "--json")
    assert stale == {"study": "j", "grace_period": 30, "failed": [], "queued_again": []}

    assert _json("study", "priority", "j", "5", "--storage", url, "--json") == {"study": "j", "priority": 5, "was": 0}

    deleted = _json("study", "delete", "j", "--yes", "--storage", url, "--json")
    assert deleted["study"] == "j" and deleted["trials"] == 4

    verified = _json("data", "verify", "mnist", "--data-dir", str(DATA_DIR), "--json")
    assert verified["dataset"] == "mnist" and verified["files"]
    assert {f["status"] for f in verified["files"]} == {"ok"}


def test_worker_and_data_fetch_print_json(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    spec = write_spec(tmp_path, "w", trials=2, epochs=1, samples=200, random_trials=2)
    assert _json("study", "create", str(spec), "--storage", url, "--json")["name"] == "w"
    ran = _json("worker", "--storage", url, "--poll", "0.2", "--json")
    assert [(t["study"], t["state"]) for t in ran["trials"]] == [("w", "COMPLETE")] * 2
    assert _json("data", "fetch", "digits", "--json") == {"dataset": "digits", "bundled": True, "folder": None,
                                                           "files": []}
