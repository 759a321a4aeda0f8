"""The seed's experiments as commands: with a quick budget on real data their numbers show the
seed's claims, and every run writes non-blank figures and a JSON of the numbers drawn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.image import imread
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from helpers import DATA_DIR, hpo
from hpo import HpoError
from hpo.cli._experiment import app
from hpo.experiments import KINDS, run_experiment

runner = CliRunner()
TRAINING = ("optimizers", "init", "batchnorm", "overfit")


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """The nets are small: extra BLAS threads only wait on each other on a busy 2-core machine."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _run(kind, tmp_path_factory, seed=0):
    out = tmp_path_factory.mktemp(kind)
    return run_experiment(kind, "mnist", out, seed=seed, quick=True, data_dir=str(DATA_DIR)), out


# One quick run per experiment, shared by the tests of this module.
@pytest.fixture(scope="module")
def optimizers(tmp_path_factory):
    return _run("optimizers", tmp_path_factory)


@pytest.fixture(scope="module")
def activations(tmp_path_factory):
    return _run("activations", tmp_path_factory)


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    return _run("init", tmp_path_factory)


@pytest.fixture(scope="module")
def batchnorm(tmp_path_factory):
    return _run("batchnorm", tmp_path_factory)


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    return _run("overfit", tmp_path_factory)


def _kinds():
    return [pytest.param(k, marks=pytest.mark.slow) if k in TRAINING else k for k in KINDS]


@pytest.mark.parametrize("kind", _kinds())
def test_writes_non_blank_figures_and_the_numbers_as_json(kind, request):
    report, out = request.getfixturevalue(kind)
    assert report["figures"], "at least one figure"
    for path in report["figures"]:
        assert path.endswith(".png") and (out / path.split("/")[-1]).is_file()
        size = (out / path.split("/")[-1]).stat().st_size
        assert 10_000 < size < 200_000, size
        pixels = imread(path)
        assert pixels.std() > 0.05, "a figure with (almost) one colour is blank"
    saved = json.loads((out / f"{kind}.json").read_text())  # strict JSON: no NaN
    assert saved["kind"] == kind and saved["settings"]["quick"] is True
    assert saved["table"]["headers"] == report["table"]["headers"]
    assert len(saved["table"]["rows"]) == len(report["table"]["rows"]) > 0
    assert saved["results"].keys() == report["results"].keys()
    assert all({"claim", "holds", "evidence"} <= c.keys() for c in saved["claims"])


@pytest.mark.slow
def test_sgd_learns_slowest(optimizers):
    mnist = optimizers[0]["results"]["mnist"]
    final = {name: r["final_loss"] for name, r in mnist.items()}
    assert final["sgd"] > max(final["adam"], final["adagrad"], final["momentum"]), final
    assert all(len(r["loss"]) == 300 and np.isfinite(r["loss"]).all() for r in mnist.values())
    assert mnist["adam"]["val_accuracy"] > mnist["sgd"]["val_accuracy"]


@pytest.mark.slow
def test_every_optimizer_descends_the_toy_function_from_the_books_start(optimizers):
    toy = optimizers[0]["results"]["toy"]
    assert set(toy) == {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"}
    for name, r in toy.items():
        path = np.asarray(r["path"])
        assert path.shape == (31, 2) and tuple(path[0]) == (-7.0, 2.0)
        assert r["f"][-1] < 0.2 * r["f"][0], name
    # The book's picture: SGD zigzags across the narrow valley (y changes sign every step).
    y = np.asarray(toy["sgd"]["path"])[:, 1]
    assert (np.sign(y[1:]) != np.sign(y[:-1])).all()


def test_sigmoid_histograms_pile_at_the_ends_with_std_1_and_at_one_half_with_std_001(activations):
    settings = activations[0]["results"]["settings"]
    for layer in settings["sigmoid, std 1"]:
        assert layer["outer_share"] > 0.5  # below 0.1 or above 0.9
        counts = np.asarray(layer["histogram"]["counts"])
        assert counts[[0, -1]].sum() > counts[1:-1].max() * 2  # U-shaped
    for layer in settings["sigmoid, std 0.01"]:
        assert layer["centre_share"] > 0.99  # within 0.1 of 0.5
        assert abs(layer["mean"] - 0.5) < 0.01


def test_relu_activations_vanish_with_std_001_and_keep_their_spread_with_he(activations):
    settings = activations[0]["results"]["settings"]
    small = [layer["std"] for layer in settings["ReLU, std 0.01"]]
    he = [layer["std"] for layer in settings["ReLU, He"]]
    assert small[4] < 1e-3 * small[0] and small[4] < 1e-4
    assert 0.5 < he[4] / he[0] < 2 and he[4] > 0.5
    xavier = [layer["std"] for layer in settings["ReLU, Xavier"]]
    assert he[4] > xavier[4] > small[4]


def test_every_activation_claim_of_the_seed_holds(activations):
    claims = activations[0]["claims"]
    assert len(claims) == 7
    assert [c["claim"] for c in claims if not c["holds"]] == []


@pytest.mark.slow
def test_std_001_does_not_learn_while_he_does(init):
    settings = init[0]["results"]["settings"]
    small, he = settings["std 0.01"], settings["He"]
    assert small["final_loss"] > np.log(10) - 0.05 and small["val_accuracy"] < 0.2
    assert he["final_loss"] < 1.0 and he["val_accuracy"] > 0.7
    assert settings["Xavier"]["final_loss"] > he["final_loss"]


@pytest.mark.slow
def test_batch_norm_beats_the_plain_net_at_most_weight_scales(batchnorm):
    report = batchnorm[0]
    runs = report["results"]["runs"]
    assert np.allclose([r["scale"] for r in runs], np.logspace(0, -4, 16))
    wins = sum(r["batch_norm"]["final"] > r["plain"]["final"] for r in runs)
    assert wins > len(runs) / 2, wins
    epochs = report["settings"]["epochs"]
    assert all(len(r["batch_norm"]["accuracy"]) == len(r["plain"]["accuracy"]) == epochs + 1 for r in runs)


@pytest.mark.slow
def test_weight_decay_and_dropout_each_shrink_the_train_test_gap(overfit):
    report = overfit[0]
    settings = report["results"]["settings"]
    plain = settings["no regularization"]
    assert plain["train"][-1] > 0.95 and plain["gap"] > 0.1  # it overfits
    assert settings["weight decay 0.1"]["gap"] < plain["gap"]
    assert settings["dropout 0.2"]["gap"] < plain["gap"]
    assert report["settings"]["train_samples"] == 300


def test_an_unknown_experiment_is_an_error(tmp_path):
    with pytest.raises(HpoError, match="unknown experiment 'nonsense'; choose one of optimizers, activations"):
        run_experiment("nonsense", out=tmp_path)


def test_the_command_prints_the_table_and_the_verdicts_and_writes_into_out(tmp_path, activations):
    result = runner.invoke(app, ["activations", "--out", str(tmp_path), "--quick"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split()[:3] == ["setting", "std", "L1"]
    assert "[holds] Sigmoid with std 1" in result.stdout
    assert "activations: ReLU, He" in result.stderr  # progress goes to stderr
    assert {p.name for p in tmp_path.iterdir()} == {"activations.png", "activations.json"}
    # The default seed is 0, as in the module's run: the same seed gives the same numbers.
    assert json.loads((tmp_path / "activations.json").read_text())["results"] == activations[0]["results"]


def test_json_output_is_the_report_and_another_seed_gives_other_numbers(tmp_path, activations):
    result = runner.invoke(app, ["activations", "--out", str(tmp_path), "--seed", "1", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert report == json.loads((tmp_path / "activations.json").read_text())
    assert report["settings"]["seed"] == 1
    assert report["results"] != activations[0]["results"]


@pytest.mark.parametrize("args,message", [
    (["init", "--data", "nope"], "Error: unknown data set 'nope'; choose one of mnist, fashion-mnist, digits"),
    (["overfit", "--data-dir", "{empty}"], "Error: mnist: data files not found; searched {empty}/mnist (data_dir)"),
])
def test_data_errors_are_one_line_on_stderr_with_exit_code_1(tmp_path, args, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"HPO_DATA_DIR": str(empty), "XDG_CACHE_HOME": str(empty)}
    result = runner.invoke(app, [a.format(empty=empty) for a in args] + ["--out", str(tmp_path / "out"), "--quick"],
                           env=env)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(message.format(empty=empty))
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists(), "a failed run leaves no empty output folder"


def test_an_out_folder_that_cannot_be_made_is_one_line_on_stderr(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["activations", "--out", str(blocker / "sub")])
    assert result.exit_code == 1
    assert result.stderr == (f"Error: cannot use --out {blocker / 'sub'}: a part of the path is a file, "
                             "not a folder; choose another path\n")


def test_an_out_that_is_a_file_is_refused_and_kept(tmp_path):
    existing = tmp_path / "results"
    existing.write_text("keep")
    result = runner.invoke(app, ["activations", "--out", str(existing), "--quick"])
    assert result.exit_code == 1
    assert result.stderr == (f"Error: --out {existing} is a regular file; name a new folder or an existing "
                             "one instead\n")
    assert existing.read_text() == "keep"


def test_every_experiment_has_a_command_with_help():
    commands = [c.name for c in app.registered_commands]
    assert commands == [*KINDS, "all"]
    for kind in (*KINDS, "all"):
        result = runner.invoke(app, [kind, "--help"])
        assert result.exit_code == 0 and "--quick" in result.stdout and "--seed" in result.stdout
    assert "--data" not in runner.invoke(app, ["activations", "--help"]).stdout  # Gaussian inputs, no data set


def test_a_negative_seed_is_a_bad_flag(tmp_path):
    result = runner.invoke(app, ["activations", "--seed", "-1", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "Invalid value for '--seed'" in result.stderr


def test_hpo_experiment_runs_as_a_real_command(tmp_path):
    result = hpo("experiment", "activations", "--quick", "--out", str(tmp_path / "act"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ReLU, He" in result.stdout
    assert (tmp_path / "act" / "activations.png").is_file()
    missing = hpo("experiment", "init", "--data", "nope", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.startswith("Error: unknown data set 'nope'")
