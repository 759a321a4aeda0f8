"""Bad flags, URLs and names: one line on stderr, the right exit code, no traceback, no password."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hpo.cli import app
from helpers import hpo, write_spec

runner = CliRunner()


def invoke(*args, **env):
    return runner.invoke(app, list(args), env={"HPO_STORAGE": "", **env})


@pytest.fixture
def storage(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    spec = write_spec(tmp_path, "known")
    assert invoke("study", "create", str(spec), "--storage", url).exit_code == 0
    return url


@pytest.mark.parametrize("args,code,message", [
    (["study", "run", "known", "--trials", "0"], 2, "Invalid value for '--trials': Input should be greater than or equal to 1"),
    (["study", "run", "known", "--timeout", "-5"], 2, "Invalid value for '--timeout': Input should be greater than or equal to 0"),
    (["study", "run", "known", "--trials", "many"], 2, "Invalid value for '--trials': Input should be a valid integer, unable to parse string as an integer"),
    (["study", "run", "known", "--workers", "0"], 2, "Invalid value for '--workers': Input should be greater than or equal to 1"),
    (["study", "run", "known", "--grace-period", "0"], 2, "Invalid value for '--grace-period': Input should be greater than or equal to 1"),
    (["study", "confirm", "known", "--seeds", "0"], 2, "Invalid value for '--seeds': Input should be greater than or equal to 1"),
    (["study", "fail-stale", "unknown"], 1, "Error: no study named 'unknown' in {url}; `hpo study list` shows the studies there"),
    (["study", "show", "known", "--top", "0"], 2, "Invalid value for '--top' / '-k': Input should be greater than or equal to 1"),
    (["study", "delete", "known"], 2, "Invalid value for --yes: deleting study 'known' cannot be undone; add --yes to confirm"),
    (["study", "run", "unknown"], 1, "Error: no study named 'unknown' in {url}; `hpo study list` shows the studies there"),
    (["study", "best", "known"], 1, "Error: study 'known' has no complete trial yet; run it with `hpo study run known --storage {url}`"),
])
def test_bad_flags_and_names(storage, args, code, message):
    result = invoke(*args, "--storage", storage)
    assert result.exit_code == code, result.output
    assert message.format(url=storage) in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


@pytest.mark.parametrize("url,message", [
    ("nonsense", "Error: storage URL 'nonsense' is not a valid URL; use sqlite:///path/to/file.db, "
                 "postgresql+psycopg://user@host/db, mysql+pymysql://user@host/db, "
                 "grpc://HOST:PORT (`hpo storage serve`) or journal:PATH"),
    ("redis://127.0.0.1:6379", "Error: storage URL 'redis://127.0.0.1:6379' uses unsupported backend 'redis'"),
    ("sqlite://", "Error: storage URL 'sqlite://' names no database file"),
])
def test_bad_storage_urls(url, message):
    result = invoke("study", "list", "--storage", url)
    assert result.exit_code == 1
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_server_masks_the_password():
    result = invoke("study", "list", "--storage", "postgresql+psycopg://alice:s3cret@127.0.0.1:1/db")
    assert result.exit_code == 1
    assert "s3cret" not in result.output
    assert result.stderr.startswith("Error: cannot open storage postgresql+psycopg://alice:***@127.0.0.1:1/db:")
    assert "is the database server running and reachable?" in result.stderr


def test_wrong_password_is_masked_too():
    result = invoke("storage", "check", "postgresql+psycopg://nobody:hunter2@127.0.0.1:5432/nowhere")
    assert result.exit_code == 1
    assert "hunter2" not in result.output and "***" in result.stderr


def test_a_file_that_is_not_sqlite(tmp_path):
    bogus = tmp_path / "notes.db"
    bogus.write_text("just some text, not a database\n" * 100)
    result = invoke("study", "list", "--storage", f"sqlite:///{bogus}")
    assert result.exit_code == 1
    assert "is not a usable SQLite database" in result.stderr
    assert bogus.read_text().startswith("just some text")  # nothing stored was touched


def test_bad_spec_through_the_real_cli(tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text('[study]\nname = "x"\n[training]\nlr = -1.0\n')
    result = hpo("study", "create", str(spec), "--storage", f"sqlite:///{tmp_path / 's.db'}")
    assert result.returncode == 1
    assert result.stderr == f"Error: {spec}: [training] lr must be in (0, inf); got -1.0\n"
    assert result.stdout == ""


def test_storage_option_falls_back_to_the_environment(tmp_path):
    url = f"sqlite:///{tmp_path / 'env.db'}"
    spec = write_spec(tmp_path, "envstudy")
    assert invoke("study", "create", str(spec), HPO_STORAGE=url).exit_code == 0
    listed = invoke("study", "list", HPO_STORAGE=url)
    assert "envstudy" in listed.stdout
    assert "HPO_STORAGE" in invoke("study", "run", "--help").stdout
