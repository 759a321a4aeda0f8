"""Downloads against a real HTTP server on 127.0.0.1: checksums, atomic writes, mirrors, `hpo data fetch`."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import socket
import stat
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hpo.cli._data import app
from trainer import REGISTRY, DataError, DatasetInfo, download, read_idx, verify

DATA_DIR = Path(os.environ.get("HPO_DATA_DIR", "/work/shared/data"))
IMAGES, LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"


@pytest.fixture
def serve():
    """Start a real HTTP server on a free port of 127.0.0.1 serving a folder.

    Returns (base URL, list of (path, status) requests it answered).
    """
    servers = []

    def start(root: Path) -> tuple[str, list[tuple[str, int]]]:
        answered: list[tuple[str, int]] = []

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_request(self, code="-", size="-"):
                answered.append((self.path, int(code)))

            def log_message(self, format, *args):  # keep the test output clean
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", answered

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def idx_gzip(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A small registered data set, "tiny", whose two gzip files are in tmp_path/site with known MD5s."""
    site = tmp_path / "site"
    site.mkdir()
    rng = np.random.default_rng(0)
    (site / IMAGES).write_bytes(idx_gzip(rng.integers(0, 256, (30, 28, 28))))
    (site / LABELS).write_bytes(idx_gzip(np.arange(30) % 10))
    md5 = {name: hashlib.md5((site / name).read_bytes()).hexdigest() for name in (IMAGES, LABELS)}
    info = DatasetInfo(
        name="tiny", title="a test set", input_size=784, classes=10, pool_size=0, test_size=30,
        files={"test-images": IMAGES, "test-labels": LABELS}, sha256={}, md5=md5, mirrors=(),
    )
    monkeypatch.setitem(REGISTRY, "tiny", info)
    monkeypatch.delenv("HPO_DATA_URL", raising=False)
    return site


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_checks_md5_writes_the_files_and_reports_progress(serve, tiny, tmp_path):
    base, answered = serve(tiny)
    calls = []
    folder = download("tiny", dest=tmp_path / "dest", base_url=base, progress=lambda *a: calls.append(a))
    assert folder == tmp_path / "dest" / "tiny"
    assert leftovers(folder) == [IMAGES, LABELS]  # and no temporary files
    for name in (IMAGES, LABELS):
        assert (folder / name).read_bytes() == (tiny / name).read_bytes()
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o644
        size = (tiny / name).stat().st_size
        reported = [done for file_name, done, total in calls if file_name == name]
        assert reported == sorted(reported) and reported[-1] == size
        assert (name, size, size) in calls
    assert answered == [(f"/{IMAGES}", 200), (f"/{LABELS}", 200)]
    assert read_idx(folder / LABELS).tolist() == [i % 10 for i in range(30)]


def test_files_already_there_and_correct_are_not_downloaded_again(serve, tiny, tmp_path):
    base, answered = serve(tiny)
    download("tiny", dest=tmp_path, base_url=base)
    calls = []
    download("tiny", dest=tmp_path, base_url=base, progress=lambda *a: calls.append(a))
    assert len(answered) == 2
    assert calls == []


@pytest.mark.parametrize(("tampered", "kept"), [(IMAGES, []), (LABELS, [IMAGES])])
def test_an_md5_mismatch_fails_clearly_and_leaves_nothing_half_written(serve, tiny, tmp_path, tampered, kept):
    expected = REGISTRY["tiny"].md5[tampered]
    (tiny / tampered).write_bytes(idx_gzip(np.full(30, 3)))  # a valid file, but not the published one
    served_md5 = hashlib.md5((tiny / tampered).read_bytes()).hexdigest()
    base, _ = serve(tiny)
    with pytest.raises(DataError) as caught:
        download("tiny", dest=tmp_path / "dest", base_url=base)
    assert str(caught.value) == (
        f"tiny: could not download {tampered}: {base}/{tampered}: MD5 {served_md5} does not match the published "
        f"{expected}; nothing was kept in {tmp_path / 'dest' / 'tiny'}; try again, or point --url or "
        f"HPO_DATA_URL at another mirror"
    )
    # The files checked before the failure stay; the bad one and every temporary file are gone,
    # and a folder made for this download is removed when it stays empty.
    assert leftovers(tmp_path / "dest" / "tiny") == kept
    assert leftovers(tmp_path / "dest") == (["tiny"] if kept else [])


def test_mirrors_are_tried_in_order(serve, tiny, tmp_path, monkeypatch):
    base, answered = serve(tiny)
    info = REGISTRY["tiny"]
    monkeypatch.setitem(REGISTRY, "tiny", dataclasses.replace(info, mirrors=(f"{base}/gone/", f"{base}/")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = download("tiny")
    assert folder == tmp_path / "cache" / "hpo" / "datasets" / "tiny"  # the per-user cache by default
    assert answered == [(f"/gone/{IMAGES}", 404), (f"/{IMAGES}", 200), (f"/gone/{LABELS}", 404), (f"/{LABELS}", 200)]


def test_every_failed_mirror_is_named(serve, tiny, tmp_path, monkeypatch):
    base, _ = serve(tiny)
    info = REGISTRY["tiny"]
    monkeypatch.setitem(REGISTRY, "tiny", dataclasses.replace(info, mirrors=(f"{base}/a", f"{base}/b/")))
    with pytest.raises(DataError) as caught:
        download("tiny", dest=tmp_path)
    assert str(caught.value).startswith(
        f"tiny: could not download {IMAGES}: {base}/a/{IMAGES}: HTTP 404 File not found; "
        f"{base}/b/{IMAGES}: HTTP 404 File not found; nothing was kept"
    )


def test_HPO_DATA_URL_points_at_a_data_root_and_recompressed_copies_pass_by_content(serve, tmp_path, monkeypatch):
    # The shared files were recompressed, so their MD5 differs from the published one;
    # the sha256 of their content still proves they are the right files.
    base, answered = serve(DATA_DIR)
    monkeypatch.setenv("HPO_DATA_URL", base)
    folder = download("fashion-mnist", dest=tmp_path)
    assert [path for path, _ in answered] == [f"/fashion-mnist/{f}" for f in REGISTRY["fashion-mnist"].files.values()]
    assert [c.status for c in verify("fashion-mnist", tmp_path)] == ["ok"] * 4
    assert folder == tmp_path / "fashion-mnist"


def test_a_file_missing_on_the_server_fails_clearly(serve, tmp_path, monkeypatch):
    base, _ = serve(DATA_DIR)  # has mnist/t10k-* but not mnist/train-*
    monkeypatch.setenv("HPO_DATA_URL", base + "/")
    with pytest.raises(DataError) as caught:
        download("mnist", dest=tmp_path)
    assert str(caught.value).startswith(
        f"mnist: could not download train-images-idx3-ubyte.gz: {base}/mnist/train-images-idx3-ubyte.gz: "
        f"HTTP 404 File not found; nothing was kept in {tmp_path / 'mnist'}"
    )
    assert leftovers(tmp_path) == []


def test_a_server_that_is_not_there_fails_clearly(tiny, tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DataError, match=rf"http://127\.0\.0\.1:{port}/{IMAGES}: \[Errno 111\] Connection refused"):
        download("tiny", dest=tmp_path / "dest", base_url=f"http://127.0.0.1:{port}")
    assert leftovers(tmp_path / "dest") == []


def test_file_urls_work_too(tiny, tmp_path):
    folder = download("tiny", dest=tmp_path, base_url=tiny.as_uri())
    assert leftovers(folder) == [IMAGES, LABELS]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: download("tiny", base_url="ftp://example.org/"),
         r"--url must be an http://, https:// or file:// URL; got 'ftp://example\.org/'"),
        (lambda: download("digits"), r"digits: bundled with hpo; there is nothing to download"),
        (lambda: download("cifar"), r"unknown data set 'cifar'"),
    ],
)
def test_bad_download_requests_fail_with_one_clear_line(tiny, call, message):
    with pytest.raises(DataError, match=message):
        call()


def test_a_bad_HPO_DATA_URL_is_named(tiny, monkeypatch):
    monkeypatch.setenv("HPO_DATA_URL", "mirror.example.org")
    message = r"HPO_DATA_URL must be an http://, https:// or file:// URL; got 'mirror\.example\.org/tiny/'"
    with pytest.raises(DataError, match=message):
        download("tiny")


# ---------------------------------------------------------------------------------------
# `hpo data fetch`

runner = CliRunner()


def test_cli_fetch_downloads_with_progress_on_stderr(serve, tmp_path, monkeypatch):
    monkeypatch.delenv("HPO_DATA_URL", raising=False)
    base, _ = serve(DATA_DIR)
    result = runner.invoke(app, ["fetch", "fashion-mnist", "--dest", str(tmp_path), "--url", f"{base}/fashion-mnist"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        f"fashion-mnist: 4 files checked, in {tmp_path / 'fashion-mnist'}\n"
        f"Use them with --data-dir {tmp_path} or HPO_DATA_DIR={tmp_path}.\n"
    )
    progress = result.stderr.splitlines()
    assert [line.split()[0] for line in progress] == list(REGISTRY["fashion-mnist"].files.values())
    assert progress[0] == "train-images-idx3-ubyte.gz  25.2 MB  downloaded"


def test_cli_fetch_md5_mismatch_is_one_error_line_and_nothing_is_kept(serve, tmp_path):
    site = tmp_path / "site" / "mnist"
    site.mkdir(parents=True)
    (site / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"not the MNIST images"))
    served_md5 = hashlib.md5((site / "train-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    base, _ = serve(site)
    dest = tmp_path / "dest"
    result = runner.invoke(app, ["fetch", "mnist", "--dest", str(dest), "--url", base])
    assert result.exit_code == 1
    assert result.stdout == ""
    # The transfer is reported, then the check refuses the file.
    assert result.stderr == (
        "train-images-idx3-ubyte.gz  40 B  downloaded\n"
        f"Error: mnist: could not download train-images-idx3-ubyte.gz: {base}/train-images-idx3-ubyte.gz: "
        f"MD5 {served_md5} does not match the published f68b3c2dcbeaaa9fbdd348bbdeb94873; nothing was kept in "
        f"{dest / 'mnist'}; try again, or point --url or HPO_DATA_URL at another mirror\n"
    )
    assert leftovers(dest) == []


def test_cli_fetch_of_a_bundled_set_has_nothing_to_do(tmp_path):
    result = runner.invoke(app, ["fetch", "digits", "--dest", str(tmp_path)])
    assert result.exit_code == 0
    assert result.stdout == "digits: bundled with hpo; nothing to download.\n"
    assert leftovers(tmp_path) == []
