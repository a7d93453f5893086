"""Tests for scripts/get_mnist.py: the verified download of full MNIST, against small IDX
files served on 127.0.0.1 by a server this file starts (nothing touches the internet)."""
import gzip
import hashlib
import http.server
import socket
import struct
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import common
from helpers import one_line_error

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import get_mnist as gm  # noqa: E402


# %% Data: full MNIST through the verified download, against a local server
def _idx_gz(arr: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return gzip.compress(header + arr.astype(np.uint8).tobytes(), mtime=0)


@pytest.fixture(scope="module")
def mirror():
    """A tiny MNIST on 127.0.0.1: /good/ serves it, /bad/ serves other bytes, /cut/ promises the
    full length but sends half and hangs up, /gone/ answers 404, /chunk/ drops a chunked reply."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (80, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": np.arange(80, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": (np.arange(20, dtype=np.uint8) * 3) % 10,
    }
    blobs = {name: _idx_gz(a) for name, a in arrays.items()}
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requests.append(self.path)
            kind, _, name = self.path.strip("/").partition("/")
            body = blobs.get(name)
            if body is None or kind == "gone":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if kind == "bad":
                body = body[:-1] + bytes([body[-1] ^ 0xFF])
            self.send_response(200)
            if kind == "chunk":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"%x\r\n" % len(body) + body[: len(body) // 2])
            else:
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if kind == "cut" else body)
            self.wfile.flush()
            self.close_connection = True

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_url = f"http://127.0.0.1:{closed.getsockname()[1]}/"
    closed.close()  # nothing listens there now: connecting is refused at once
    files = {name: hashlib.sha256(b).hexdigest() for name, b in blobs.items()}
    yield dict(url=lambda kind: base + kind + "/", closed=closed_url, files=files,
               arrays=arrays, requests=requests)
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # A proxy from the environment must not see requests for 127.0.0.1.
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


NAME = "train-labels-idx1-ubyte.gz"


def test_fetch_downloads_checks_and_writes_one_npz_that_load_data_reads(mirror, tmp_path):
    path = gm.fetch(folder=tmp_path, mirrors=[mirror["url"]("good")], files=mirror["files"])
    a = mirror["arrays"]
    with np.load(path) as f:
        assert f["x"].dtype == np.uint8 and f["y"].dtype == np.int64
        assert np.array_equal(f["x"], np.concatenate([a["train-images-idx3-ubyte.gz"],
                                                      a["t10k-images-idx3-ubyte.gz"]]))
        assert np.array_equal(f["y"], np.concatenate([a["train-labels-idx1-ubyte.gz"],
                                                      a["t10k-labels-idx1-ubyte.gz"]]))
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(mirror["files"])
    # Cached: a second fetch needs no network at all.
    assert gm.fetch(folder=tmp_path, mirrors=[mirror["closed"]], files=mirror["files"]) == path


def test_checksum_mismatch_rejected_and_nothing_left(mirror, tmp_path):
    with pytest.raises(common.UserError) as e:
        gm.download(NAME, mirror["files"][NAME], tmp_path, [mirror["url"]("bad")])
    assert "checksum" in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_transfer_leaves_no_file(mirror, tmp_path):
    with pytest.raises(common.UserError):
        gm.download(NAME, mirror["files"][NAME], tmp_path, [mirror["url"]("cut")])
    assert list(tmp_path.iterdir()) == []  # neither the cache file nor a .part


def test_interrupted_chunked_transfer_is_a_user_error(mirror, tmp_path):
    with pytest.raises(common.UserError):
        gm.download(NAME, mirror["files"][NAME], tmp_path, [mirror["url"]("chunk")])


def test_interrupted_chunked_transfer_leaves_no_file_even_so(mirror, tmp_path):
    with pytest.raises(common.UserError):
        gm.download(NAME, mirror["files"][NAME], tmp_path, [mirror["url"]("chunk")])
    assert list(tmp_path.iterdir()) == []


def test_next_mirror_tried_after_each_kind_of_failure(mirror, tmp_path):
    start = len(mirror["requests"])
    kinds = ["gone", "bad", "cut", "good"]
    path = gm.download(NAME, mirror["files"][NAME], tmp_path,
                                [mirror["closed"]] + [mirror["url"](k) for k in kinds])
    assert gm.sha256_of(path) == mirror["files"][NAME]
    assert mirror["requests"][start:] == [f"/{k}/{NAME}" for k in kinds]
    assert [p.name for p in tmp_path.iterdir()] == [NAME]


def test_wrong_cached_file_is_replaced(mirror, tmp_path):
    (tmp_path / NAME).write_bytes(b"stale half-written bytes")
    path = gm.download(NAME, mirror["files"][NAME], tmp_path, [mirror["url"]("good")])
    assert gm.sha256_of(path) == mirror["files"][NAME]


def test_unreachable_mirror_is_one_line_naming_mnist5k(mirror, tmp_path, capsys):
    folder = tmp_path
    one_line_error(lambda argv: gm.fetch(folder=folder, mirrors=[mirror["closed"]],
                                         files=mirror["files"]), [], capsys, "mnist5k")
    assert list((folder / "mnist").iterdir()) == []


def test_read_idx_rejects_bad_files(tmp_path):
    wrong_magic = tmp_path / "a.gz"
    wrong_magic.write_bytes(gzip.compress(struct.pack(">HBBI", 0, 0x0D, 1, 3) + b"\0" * 12))
    truncated = tmp_path / "b.gz"
    truncated.write_bytes(
        gzip.compress(struct.pack(">HBBIII", 0, 0x08, 3, 2, 28, 28) + b"\0" * 784)
    )
    for path, words in ((wrong_magic, "not an IDX"), (truncated, "truncated")):
        with pytest.raises(common.UserError, match=words):
            gm.read_idx(path)


