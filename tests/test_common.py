"""Tests for common.py: data sources, the verified download, flags, devices, seeding,
files and checkpoints, and the judge and its metrics.

Nothing here touches the internet: the download is exercised against small IDX files
served on 127.0.0.1 by a server this file starts.
"""
import dataclasses
import gzip
import hashlib
import http.server
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import common
from helpers import one_line_error

FAST = settings(max_examples=25, deadline=None)


# %% Data: the bundled set
def test_bundled_set_shapes_and_split_sizes(data):
    assert data.name == "mnist5k"
    assert data.x_train.shape == (4000, 1, 28, 28) and data.x_held.shape == (1000, 1, 28, 28)
    for x in (data.x_train, data.x_held):
        assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
        assert x.max() == 1.0  # scaled by 255, not left in 0-255 nor squashed
    for y in (data.y_train, data.y_held):
        assert y.dtype == torch.int64
    # Stratified: 500 per class -> 400 train, 100 held out, for every class.
    assert torch.bincount(data.y_train, minlength=10).tolist() == [400] * 10
    assert torch.bincount(data.y_held, minlength=10).tolist() == [100] * 10


def test_bundled_split_is_fixed_whatever_the_run_seed(data):
    common.seed_everything(12345)
    again = common.load_data("mnist5k")
    for a, b in ((data.x_train, again.x_train), (data.y_train, again.y_train),
                 (data.x_held, again.x_held), (data.y_held, again.y_held)):
        assert torch.equal(a, b)


def test_bundled_split_is_disjoint_and_covers_the_file(data):
    x, y = common.load_npz(common.bundled_data_path())
    tr, he = common.split_indices(y)
    assert len(np.intersect1d(tr, he)) == 0
    assert np.array_equal(np.sort(np.concatenate([tr, he])), np.arange(len(y)))
    # The tensors the scripts see are exactly those images, in that order.
    assert torch.equal(data.x_held, torch.from_numpy(x[he].astype(np.float32) / 255).unsqueeze(1))
    assert torch.equal(data.y_train, torch.from_numpy(y[tr]))


@FAST
@given(st.lists(st.integers(0, 9), min_size=1, max_size=200), st.floats(0.05, 0.5))
def test_split_indices_stratified_disjoint_complete(labels, frac):
    y = np.array(labels)
    tr, he = common.split_indices(y, frac)
    assert np.array_equal(np.sort(np.concatenate([tr, he])), np.arange(len(y)))
    for c in np.unique(y):
        n_c = int((y == c).sum())
        assert int((y[he] == c).sum()) == int(round(n_c * frac))
    tr2, he2 = common.split_indices(y, frac)
    assert np.array_equal(tr, tr2) and np.array_equal(he, he2)


# %% Data: a user's .npz, and every kind of bad input
def _digits(n=120):
    x, y = common.load_npz(common.bundled_data_path())
    return x[:n].copy(), y[:n].astype(np.uint8)


def test_user_npz_loads_and_splits(tmp_path):
    x, y = _digits(120)
    path = tmp_path / "mine.npz"
    np.savez(path, x=x, y=y)
    d = common.load_data(str(path))
    assert d.name == "mine"
    assert len(d.x_train) + len(d.x_held) == 120 and len(d.x_held) > 0
    assert d.y_train.dtype == torch.int64 and d.x_train.shape[1:] == (1, 28, 28)
    # Every image comes back exactly once, split by the same seeded rule as the bundled set.
    tr, he = common.split_indices(y.astype(np.int64))
    assert torch.equal(d.x_train, torch.from_numpy(x[tr].astype(np.float32) / 255).unsqueeze(1))
    assert torch.equal(d.y_held, torch.from_numpy(y[he].astype(np.int64)))


def _bad_inputs():
    x, y = _digits(120)
    return {
        "wrong shape": (dict(x=x[:, :, :27], y=y), "shape"),
        "flat images": (dict(x=x.reshape(120, -1), y=y), "shape"),
        "wrong dtype": (dict(x=x.astype(np.float32), y=y), "uint8"),
        "label too big": (dict(x=x, y=np.where(np.arange(120) == 3, 10, y)), "0-9"),
        "negative label": (
            dict(x=x, y=np.where(np.arange(120) == 3, -1, y.astype(np.int64))),
            "0-9",
        ),
        "float labels": (dict(x=x, y=y.astype(np.float32)), "integer"),
        "missing y": (dict(x=x), "missing"),
        "missing x": (dict(y=y), "missing"),
        "too few images": (dict(x=x[:20], y=y[:20]), "at least 100"),
        "length mismatch": (dict(x=x, y=y[:40]), "'y'"),
        "2-d labels": (dict(x=x, y=y[:, None]), "'y'"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_npz_is_one_user_error(case, tmp_path):
    arrays, words = _bad_inputs()[case]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(common.UserError) as e:
        common.load_data(str(path))
    msg = str(e.value)
    assert "\n" not in msg and words.lower() in msg.lower(), msg


def test_not_a_zip_missing_file_and_unknown_name(tmp_path, capsys):
    text = tmp_path / "notes.npz"
    text.write_text("these are not digits\n")
    one_line_error(lambda argv: common.load_data(str(text)), [], capsys, "not a readable")
    one_line_error(
        lambda argv: common.load_data(str(tmp_path / "absent.npz")), [], capsys, "not found"
    )
    one_line_error(lambda argv: common.load_data("fashion"), [], capsys, "mnist5k")


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


def test_download_accepts_good_file_and_load_mnist_parses_it(mirror, tmp_path):
    d = common.load_mnist(folder=tmp_path, mirrors=[mirror["url"]("good")], files=mirror["files"])
    a = mirror["arrays"]
    assert d.name == "mnist"
    assert torch.equal(
        d.x_train, torch.from_numpy(a["train-images-idx3-ubyte.gz"] / 255).float().unsqueeze(1)
    )
    assert torch.equal(
        d.y_train, torch.from_numpy(a["train-labels-idx1-ubyte.gz"].astype(np.int64))
    )
    assert torch.equal(
        d.x_held, torch.from_numpy(a["t10k-images-idx3-ubyte.gz"] / 255).float().unsqueeze(1)
    )
    assert torch.equal(d.y_held, torch.from_numpy(a["t10k-labels-idx1-ubyte.gz"].astype(np.int64)))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(mirror["files"])
    # Cached: a second load needs no network at all.
    again = common.load_mnist(folder=tmp_path, mirrors=[mirror["closed"]], files=mirror["files"])
    assert torch.equal(again.x_train, d.x_train)


def test_load_data_mnist_uses_cache_dir_and_mirrors(mirror, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(common, "MNIST_MIRRORS", [mirror["url"]("good")])
    monkeypatch.setattr(common, "MNIST_FILES", mirror["files"])
    d = common.load_data("mnist")
    assert len(d.x_train) == 80 and len(d.x_held) == 20
    assert (tmp_path / "mnist" / NAME).is_file()


def test_cache_dir_moves_with_environment_variable(tmp_path):
    env = dict(os.environ, GENCOURSE_CACHE=str(tmp_path / "elsewhere"))
    out = subprocess.run([sys.executable, "-c", "import common; print(common.CACHE_DIR)"],
                         cwd=common.HERE, env=env, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == tmp_path / "elsewhere"


def test_checksum_mismatch_rejected_and_nothing_left(mirror, tmp_path):
    with pytest.raises(common.UserError) as e:
        common.download_file(NAME, mirror["files"][NAME], tmp_path, [mirror["url"]("bad")])
    assert "checksum" in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_transfer_leaves_no_file(mirror, tmp_path):
    with pytest.raises(common.UserError):
        common.download_file(NAME, mirror["files"][NAME], tmp_path, [mirror["url"]("cut")])
    assert list(tmp_path.iterdir()) == []  # neither the cache file nor a .part


def test_interrupted_chunked_transfer_is_a_user_error(mirror, tmp_path):
    with pytest.raises(common.UserError):
        common.download_file(NAME, mirror["files"][NAME], tmp_path, [mirror["url"]("chunk")])


def test_interrupted_chunked_transfer_leaves_no_file_even_so(mirror, tmp_path):
    with pytest.raises(common.UserError):
        common.download_file(NAME, mirror["files"][NAME], tmp_path, [mirror["url"]("chunk")])
    assert list(tmp_path.iterdir()) == []


def test_next_mirror_tried_after_each_kind_of_failure(mirror, tmp_path):
    start = len(mirror["requests"])
    kinds = ["gone", "bad", "cut", "good"]
    path = common.download_file(NAME, mirror["files"][NAME], tmp_path,
                                [mirror["closed"]] + [mirror["url"](k) for k in kinds])
    assert common.sha256_of(path) == mirror["files"][NAME]
    assert mirror["requests"][start:] == [f"/{k}/{NAME}" for k in kinds]
    assert [p.name for p in tmp_path.iterdir()] == [NAME]


def test_wrong_cached_file_is_replaced(mirror, tmp_path):
    (tmp_path / NAME).write_bytes(b"stale half-written bytes")
    path = common.download_file(NAME, mirror["files"][NAME], tmp_path, [mirror["url"]("good")])
    assert common.sha256_of(path) == mirror["files"][NAME]


def test_unreachable_mirror_is_one_line_naming_mnist5k(mirror, tmp_path, capsys):
    folder = tmp_path / "mnist"
    one_line_error(lambda argv: common.load_mnist(folder=folder, mirrors=[mirror["closed"]],
                                                  files=mirror["files"]), [], capsys, "mnist5k")
    assert list(folder.iterdir()) == []


def test_read_idx_rejects_bad_files(tmp_path):
    wrong_magic = tmp_path / "a.gz"
    wrong_magic.write_bytes(gzip.compress(struct.pack(">HBBI", 0, 0x0D, 1, 3) + b"\0" * 12))
    truncated = tmp_path / "b.gz"
    truncated.write_bytes(
        gzip.compress(struct.pack(">HBBIII", 0, 0x08, 3, 2, 28, 28) + b"\0" * 784)
    )
    for path, words in ((wrong_magic, "not an IDX"), (truncated, "truncated")):
        with pytest.raises(common.UserError, match=words):
            common.read_idx(path)


# %% Devices and seeding
@pytest.fixture
def devices(monkeypatch):
    """Pretend CUDA and MPS are present or absent, whatever this machine has."""
    def set_(cuda=False, mps=False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    return set_


def test_auto_picks_cuda_then_mps_then_cpu(devices):
    devices()
    assert common.pick_device("auto") == torch.device("cpu")
    devices(mps=True)
    assert common.pick_device("auto") == torch.device("mps")
    devices(cuda=True, mps=True)
    assert common.pick_device("auto") == torch.device("cuda")
    assert common.pick_device("cpu") == torch.device("cpu")


def test_auto_on_this_machine_is_a_present_device():
    assert common.pick_device("auto").type in common.available_devices()


@pytest.mark.parametrize("name", ["cuda", "mps"])
def test_absent_device_names_what_is_there(devices, name, capsys):
    devices()
    err = one_line_error(lambda argv: common.pick_device(name), [], capsys, name)
    assert "available: cpu" in err
    devices(cuda=True, mps=True)
    assert common.pick_device(name) == torch.device(name)


def test_unknown_device_is_user_error():
    with pytest.raises(common.UserError, match="unknown device"):
        common.pick_device("tpu")


def test_autocast_bf16_on_cuda_only():
    x = torch.randn(4, 4)
    with common.autocast(torch.device("cpu")):
        assert (x @ x).dtype == torch.float32
    with warnings.catch_warnings():
        # constructing a CUDA autocast here warns that CUDA is absent
        warnings.simplefilter("ignore")
        ctx = common.autocast(torch.device("cuda"))
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16


def _draws(gen):
    return (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(),
            torch.rand(3, generator=gen).tolist())


@FAST
@given(st.integers(0, 2**31 - 1))
def test_seeding_repeats_every_generator(seed):
    first = _draws(common.seed_everything(seed))
    second = _draws(common.seed_everything(seed))
    assert first == second
    other = _draws(common.seed_everything(seed + 1))
    assert all(a != b for a, b in zip(first, other))


# %% Config to command line
@dataclasses.dataclass
class Config(common.BaseConfig):
    steps: int = dataclasses.field(default=300, metadata={"help": "training steps", "min": 1})
    lr: float = dataclasses.field(
        default=1e-3, metadata={"help": "learning rate", "min": 0.0, "max": 1.0}
    )
    use_ema: bool = dataclasses.field(default=True, metadata={"help": "keep an EMA of the weights"})
    mode: str = dataclasses.field(
        default="a", metadata={"help": "which variant", "choices": ["a", "b"]}
    )


# Scripts written with `from __future__ import annotations` hand parse_config types as strings.
StringConfig = dataclasses.make_dataclass(
    "StringConfig", [("width", "int", dataclasses.field(default=8, metadata={"min": 1})),
                     ("scale", "float", dataclasses.field(default=0.5)),
                     ("fast", "bool", dataclasses.field(default=False))],
    bases=(common.BaseConfig,))


def test_defaults_and_dash_flags():
    assert common.parse_config(common.BaseConfig, []) == common.BaseConfig()
    cfg = common.parse_config(Config, [])
    assert cfg == Config() and cfg.steps == 300 and cfg.use_ema is True
    argv = ["--batch-size", "8", "--no-use-ema", "--mode", "b", "--lr", "0.5", "--steps", "7",
            "--seed", "3", "--device", "cpu", "--data", "x.npz", "--out", "o", "--load", "m.pt",
            "--samples", "9"]
    cfg = common.parse_config(Config, argv)
    assert (cfg.batch_size, cfg.use_ema, cfg.mode, cfg.lr, cfg.steps, cfg.seed, cfg.device,
            cfg.data, cfg.out, cfg.load, cfg.samples) == \
        (8, False, "b", 0.5, 7, 3, "cpu", "x.npz", "o", "m.pt", 9)
    cfg = common.parse_config(StringConfig, ["--width", "16", "--scale", "2", "--fast"])
    assert (cfg.width, cfg.scale, cfg.fast) == (16, 2.0, True)


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        common.parse_config(Config, ["--help"], "A test script.")
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "A test script." in out and "--batch-size" in out and "--use-ema" in out
    flat = " ".join(out.split())  # argparse wraps lines at the terminal's width
    assert "default: 300" in flat and "default: mnist5k" in flat


@pytest.mark.parametrize("argv, words", [
    (["--steps", "-1"], "--steps"),
    (["--steps", "0"], "--steps"),
    (["--batch-size", "0"], "--batch-size"),
    (["--samples", "-5"], "--samples"),
    (["--seed", "-1"], "--seed"),
    (["--lr", "2"], "--lr"),
    (["--lr", "nan"], "finite"),
    (["--device", "tpu"], "invalid choice"),
    (["--mode", "c"], "invalid choice"),
    (["--steps", "ten"], "invalid int"),
    (["--no-such-flag"], "unrecognized"),
])
def test_invalid_values_refused_with_one_line(argv, words, capsys):
    one_line_error(lambda a: common.parse_config(Config, a), argv, capsys, words)


def test_run_main_exit_codes(capsys):
    assert common.run_main(lambda argv: None, []) == 0

    def interrupted(argv):
        raise KeyboardInterrupt
    with pytest.raises(SystemExit) as e:
        common.run_main(interrupted, [])
    assert e.value.code == 130


def test_parse_list():
    assert common.parse_list("1,4,16") == [1, 4, 16]
    assert common.parse_list("0.5, 1", float) == [0.5, 1.0]
    for bad in ("1,x", ","):
        with pytest.raises(common.UserError):
            common.parse_list(bad, flag_name="widths")


def test_seed_beyond_32_bits_and_a_wrong_multiple_are_one_line(capsys):
    one_line_error(
        lambda a: common.parse_config(Config, a), ["--seed", str(2**32)], capsys, "at most"
    )
    Wide = dataclasses.make_dataclass("Wide", [("width", int, common.flag(16, "GroupNorm needs it",
                                                                          multiple_of=8))])
    assert common.parse_config(Wide, ["--width", "24"]).width == 24
    one_line_error(
        lambda a: common.parse_config(Wide, a), ["--width", "12"], capsys, "multiple of 8"
    )


# %% The run folder: complete files or none
def _run(out, files: dict, fail: BaseException | None = None):
    with common.run_folder(Config(out=str(out)), "09_x.py") as staging:
        for name, text in files.items():
            (staging / name).write_text(text)
        if fail is not None:
            raise fail


def test_a_finished_run_moves_its_files_in_and_drops_the_last_runs_leftovers(tmp_path):
    out = tmp_path / "a" / "b"
    _run(out, {"metrics.json": "1", "sweep.png": "old"})
    assert (out / "metrics.json").read_text() == "1" and (out / "sweep.png").exists()
    (out / "notes.txt").write_text("mine")  # not written by a run: never touched
    _run(out, {"metrics.json": "2"})
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "metrics.json", "notes.txt"]
    assert (out / "metrics.json").read_text() == "2"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".files"]


@pytest.mark.parametrize(
    "fail", [common.UserError("diverged"), KeyboardInterrupt(), OSError(28, "full")]
)
def test_a_failed_run_leaves_the_folder_as_it_was(tmp_path, fail):
    out = tmp_path / "run"
    _run(out, {"metrics.json": "1", "model.pt": "old"})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(type(fail)):
        _run(out, {"metrics.json": "2", "model.pt": "half"}, fail)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_second_run_on_the_same_folder_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (out / ".lock").write_text(str(other.pid))
        with pytest.raises(common.UserError, match=f"process {other.pid}"):
            _run(out, {"metrics.json": "1"})
    finally:
        other.kill()
        other.wait()
    (out / ".unfinished-x").mkdir()  # what a killed run leaves behind
    _run(out, {"metrics.json": "1"})
    assert sorted(p.name for p in out.iterdir()) == [".files", "metrics.json"]


def test_out_that_is_a_file_or_cannot_be_made_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    one_line_error(lambda a: _run(tmp_path / "f", {}), [], capsys, "is a file")
    one_line_error(lambda a: _run(tmp_path / "f" / "below", {}), [], capsys, "cannot write")


def test_a_failed_write_is_one_line(capsys, tmp_path):
    def full(argv):
        raise OSError(28, "No space left on device", str(tmp_path / "model.pt"))
    err = one_line_error(full, [], capsys, "no space left")
    assert "model.pt" in err


def test_batches_shapes_and_too_large_batch():
    x, y = torch.rand(10, 1, 28, 28), torch.arange(10)
    it = common.batches(x, y, 4, torch.Generator().manual_seed(0))
    seen = [next(it) for _ in range(4)]
    assert all(xb.shape == (4, 1, 28, 28) and yb.shape == (4,) for xb, yb in seen)
    # One pass (two batches of 4 from 10 images) never repeats an image.
    assert len(set(torch.cat([seen[0][1], seen[1][1]]).tolist())) == 8
    with pytest.raises(common.UserError, match="batch-size"):
        next(common.batches(x, y, 11, torch.Generator()))


# %% The metric's properties
def _feats(seed, n, d, scale=1.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d))  # correlated features, like a network's
    return rng.normal(size=(n, d)) @ mix * scale


@FAST
@given(st.integers(0, 10**6), st.integers(2, 60), st.integers(2, 24), st.floats(1e-3, 1e3))
def test_fd_of_a_set_against_itself_is_zero(seed, n, d, scale):
    f = _feats(seed, n, d, scale)
    fd = common.frechet_distance(f, f)
    assert 0.0 <= fd <= 1e-6 * (2 * np.trace(np.atleast_2d(np.cov(f, rowvar=False))) + 1e-12)


@FAST
@given(st.integers(0, 10**6), st.integers(2, 60), st.integers(2, 60), st.integers(2, 24))
def test_fd_never_negative_and_symmetric(seed, n1, n2, d):
    f, g = _feats(seed, n1, d), _feats(seed + 1, n2, d) + 0.3
    ab, ba = common.frechet_distance(f, g), common.frechet_distance(g, f)
    assert ab >= 0.0 and ba >= 0.0
    assert abs(ab - ba) <= 1e-6 * max(1.0, ab)


@FAST
@given(st.integers(0, 10**6), st.integers(2, 60), st.integers(2, 24),
       st.lists(st.integers(0, 1000), min_size=2, max_size=5, unique=True))
def test_fd_grows_with_a_shift_of_the_features(seed, n, d, tenths):
    f = _feats(seed, n, d)
    direction = np.random.default_rng(seed + 7).normal(size=d)
    direction /= np.linalg.norm(direction)
    shifts = [t / 10 for t in sorted(tenths)]
    fds = [common.frechet_distance(f, f + s * direction) for s in shifts]
    # A pure shift leaves the covariance alone, so FD is exactly the squared shift.
    trace = np.trace(np.atleast_2d(np.cov(f, rowvar=False)))
    for s, fd in zip(shifts, fds):
        assert abs(fd - s * s) <= 1e-6 * (trace + 1) + 1e-9 * s * s
    assert all(b > a for a, b in zip(fds, fds[1:]))


def test_fd_of_one_dimensional_features():
    f = np.arange(10.0)[:, None]
    assert common.frechet_distance(f, f + 2) == pytest.approx(4.0)


@FAST
@given(
    st.lists(
        st.tuples(st.floats(-5, 5), st.floats(0.01, 10), st.floats(0.01, 10)),
        min_size=1,
        max_size=8,
    )
)
def test_fd_matches_the_closed_form_for_independent_gaussians(dims):
    # For diagonal covariances FD = sum (m1 - m2)^2 + (s1 - s2)^2 over dimensions.
    dm, v1, v2 = (np.array(c) for c in zip(*dims))
    fd = common.fd_from_stats(dm, np.diag(v1), np.zeros_like(dm), np.diag(v2))
    expected = float((dm ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum())
    assert abs(fd - expected) <= 1e-9 * max(1.0, expected) + 1e-9 * (v1.sum() + v2.sum())


def _softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@FAST
@given(st.integers(0, 10**6), st.integers(1, 200), st.floats(0.0, 30.0))
def test_classifier_score_lies_in_1_to_10(seed, n, temperature):
    logits = np.random.default_rng(seed).normal(size=(n, 10)) * temperature
    assert 1.0 <= common.classifier_score(_softmax(logits)) <= 10.0


@FAST
@given(st.integers(0, 10**6), st.integers(1, 100))
def test_classifier_score_is_one_for_identical_predictions(seed, n):
    p = _softmax(np.random.default_rng(seed).normal(size=(1, 10)) * 3)
    assert common.classifier_score(np.repeat(p, n, 0)) == pytest.approx(1.0, abs=1e-9)


@FAST
@given(st.integers(1, 30))
def test_classifier_score_near_ten_for_confident_balanced_predictions(per_class):
    labels = np.repeat(np.arange(10), per_class)
    sharp = [
        common.classifier_score(_softmax(np.eye(10)[labels] * t)) for t in (2.0, 5.0, 10.0, 30.0)
    ]
    assert sharp[-1] > 9.99
    assert all(b > a for a, b in zip(sharp, sharp[1:]))  # more confident, higher score
    # Confident but all one class is not a good generator: score 1.
    assert common.classifier_score(np.eye(10)[np.zeros(10 * per_class, int)]) == pytest.approx(1.0)


# %% The judge
def test_judge_is_accurate_on_held_out_digits(judge, data):
    pred = common.judge_logits(judge.net, data.x_held).argmax(1)
    acc = (pred == data.y_held).float().mean().item()
    assert acc >= 0.98, f"judge held-out accuracy {acc:.4f} < 0.98"
    assert acc == pytest.approx(judge.accuracy, abs=1e-6)


def test_judge_on_held_out_real_digits(judge, data):
    # The floor is measured on the first held-out images; these are the other half.
    x, y = data.x_held[500:], data.y_held[500:]
    r = judge.evaluate(x)
    assert r["n"] == 500 and r["fd_floor_n"] == 500
    assert 1 / 1.5 <= r["fd_ratio"] <= 1.5, r  # within a factor 1.5 of the floor either way
    assert abs(r["memorised"] - judge.MEMO_QUANTILE) <= 0.04, r
    assert r["coverage"] == 10 and sum(r["class_counts"]) == 500
    assert r["score"] > 8 and r["confidence"] > 0.9
    assert "label_accuracy" not in r
    labelled = judge.evaluate(x, labels=y)
    assert labelled["label_accuracy"] >= 0.95
    assert "label accuracy" in common.describe(
        labelled
    ) and "label accuracy" not in common.describe(r)
    assert "N=500" in common.describe(r) and "floor" in common.describe(r)


def test_judge_flags_training_digits_as_memorised(judge, data):
    r = judge.evaluate(data.x_train[:300, 0].numpy())  # (N, 28, 28) arrays work as well as tensors
    assert r["memorised"] == 1.0


def test_judge_separates_noise_and_collapse_from_digits(judge, data):
    gen = torch.Generator().manual_seed(0)
    noise = judge.evaluate(torch.rand(200, 1, 28, 28, generator=gen))
    real = judge.evaluate(data.x_held[:200])
    assert noise["fd"] > 5 * real["fd"] and noise["memorised"] == 0.0
    collapsed = judge.evaluate(data.x_held[:1].repeat(64, 1, 1, 1))
    assert np.isfinite(collapsed["fd"]) and collapsed["fd"] > real["fd"]
    assert collapsed["score"] == pytest.approx(1.0, abs=1e-6) and collapsed["coverage"] == 1
    with pytest.raises(common.UserError):
        judge.evaluate(data.x_held[:1])


def test_judge_loads_from_cache_without_training(judge, data, capsys, monkeypatch):
    monkeypatch.setattr(common.Judge, "_loaded", {})  # forget the judge this process holds
    again = common.Judge.load(data)
    assert "training" not in capsys.readouterr().out
    for a, b in zip(judge.net.state_dict().values(), again.net.state_dict().values()):
        assert torch.equal(a, b)


@pytest.fixture
def quick_judge(monkeypatch, tmp_path):
    """A user's 120 digits and a judge trained for a few steps only, in a cache of its own."""
    monkeypatch.setattr(common, "JUDGE_STEPS", 3)
    monkeypatch.setattr(common.Judge, "_loaded", {})
    x, y = _digits(120)
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    return common.load_data(str(tmp_path / "mine.npz"))


def test_the_judge_is_trained_on_the_runs_own_data(quick_judge, data, tmp_path):
    cache = tmp_path / "cache"
    judge = common.Judge.load(quick_judge, cache_dir=cache)
    assert [p.name for p in cache.iterdir()] == [f"judge-v{common.JUDGE_VERSION}-"
                                                 f"{common.fingerprint(quick_judge)}.pt"]
    assert common.fingerprint(quick_judge) != common.fingerprint(data)
    assert judge.floor(1000)[1] == len(quick_judge.x_held)  # the floor uses the user's held-out set


def test_a_damaged_cache_is_trained_again(quick_judge, tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    path = cache / f"judge-v{common.JUDGE_VERSION}-{common.fingerprint(quick_judge)}.pt"
    path.write_bytes(b"half a file")
    common.Judge.load(quick_judge, cache_dir=cache)
    assert "damaged" in capsys.readouterr().out
    assert torch.load(path, weights_only=True)["state"]


def test_an_unwritable_cache_costs_only_the_caching(quick_judge, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    judge = common.Judge.load(quick_judge, cache_dir=tmp_path / "file" / "cache")
    assert "going on without it" in capsys.readouterr().out
    assert judge.evaluate(quick_judge.x_held)["n"] == len(quick_judge.x_held)


def test_missing_bundled_data_names_the_file_to_copy(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "HERE", tmp_path)
    monkeypatch.chdir(tmp_path)
    err = one_line_error(lambda argv: common.load_data("mnist5k"), [], capsys, "data/mnist_5k.npz")
    assert "--data" in err


# %% Files: grids, samples, metrics, checkpoints, progress
def test_save_grid_writes_a_readable_png(tmp_path):
    import matplotlib.image

    x = torch.rand(10, 1, 28, 28) * 1.4 - 0.2  # out-of-range values are clipped, not an error
    for i, (imgs, kw) in enumerate([(x, {}), (x[:, 0].numpy(), dict(nrow=5, title="t"))]):
        path = common.save_grid(tmp_path / f"g{i}.png", imgs, **kw)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = matplotlib.image.imread(path)
        assert img.ndim == 3 and img.shape[0] > 28 and img.shape[1] > 28


def test_save_rows_keeps_every_label_inside_the_picture(tmp_path):
    import matplotlib.image

    # Blank images: any dark pixel in the picture's outer frame is cut-off text.
    rows = [(f"digit {d}", torch.zeros(15, 28, 28)) for d in range(10)]  # 04's guidance grid
    titles = [f"s={s}" if k == 1 else "" for s in (0, 1, 1.75, 2, 4) for k in range(3)]
    path = common.save_rows(tmp_path / "rows.png", rows, titles, "a title over column titles")
    img = matplotlib.image.imread(path)[..., :3].mean(-1)  # (H, W), 1 = white
    frame = np.concatenate([img[:2].ravel(), img[-2:].ravel(), img[:, :2].ravel(),
                            img[:, -2:].ravel()])
    assert frame.min() > 0.9
    assert (img[:, :40] < 0.5).any()  # the row labels are there, left of the images


def test_save_samples_round_trip(tmp_path):
    x = torch.rand(6, 1, 28, 28) * 2 - 0.5
    common.save_samples(tmp_path, x, torch.tensor([0, 1, 2, 3, 4, 9]))
    with np.load(tmp_path / "samples.npz") as f:
        assert f["x"].dtype == np.float32 and f["x"].shape == (6, 28, 28)
        assert np.allclose(f["x"], x[:, 0].clamp(0, 1).numpy())
        assert f["y"].dtype == np.int64 and f["y"].tolist() == [0, 1, 2, 3, 4, 9]
    common.save_samples(tmp_path, x[:, 0].numpy())
    with np.load(tmp_path / "samples.npz") as f:
        assert "y" not in f.files


def test_save_metrics_is_strict_json_and_summary(tmp_path, capsys):
    metrics = {
        "train_seconds": np.float32(1.5),
        "fd": 3.25,
        "n": 64,
        "class_counts": [1, 2],
        "note": "ok",
        "loss": torch.tensor(0.5),
        "bpp": float("nan"),
        "rows": [{"x": np.inf}],
    }
    path = common.save_metrics(tmp_path, metrics)
    back = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert back == {"train_seconds": 1.5, "fd": 3.25, "n": 64, "class_counts": [1, 2],
                    "note": "ok", "loss": 0.5, "bpp": None, "rows": [{"x": None}]}
    common.print_summary(back, ["train_seconds", "n", "fd"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == ["--- summary ---", "train_seconds: 1.5", "n: 64", "fd: 3.25"]


def test_nan_samples_are_never_saved_or_judged(tmp_path, judge):
    x = torch.rand(4, 1, 28, 28)
    x[2, 0, 3, 3] = float("nan")
    for call in (lambda: common.save_samples(tmp_path, x), lambda: judge.evaluate(x)):
        with pytest.raises(common.UserError, match="NaN"):
            call()
    assert not (tmp_path / "samples.npz").exists()


def test_save_animation_writes_a_gif_pillow_can_play(tmp_path):
    from PIL import Image

    frames = [torch.rand(6, 28, 28) for _ in range(5)]
    path = common.save_animation(tmp_path / "g.gif", frames, [f"step {i}" for i in range(5)], 3,
                                 row_labels=["a", "b"])
    with Image.open(path) as im:
        assert im.format == "GIF" and im.n_frames >= 5
        assert im.info.get("loop") == 0


def test_checkpoint_round_trip(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    cfg = Config(steps=5)
    path = common.save_checkpoint(
        tmp_path / "model.pt", "09_test", cfg, model.state_dict(), {"loss": 0.25}
    )
    ckpt = common.load_checkpoint(path, "09_test")
    assert ckpt["config"] == dataclasses.asdict(cfg) and ckpt["extra"] == {"loss": 0.25}
    fresh = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    common.load_state(fresh, ckpt["state"], path)
    x = torch.randn(5, 3)
    assert torch.equal(fresh(x), model(x))


def test_bad_checkpoints_are_one_line(tmp_path, capsys):
    model = nn.Linear(3, 2)
    good = common.save_checkpoint(tmp_path / "model.pt", "09_test", Config(), model.state_dict())
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[:200])
    plain = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), plain)
    code = tmp_path / "code.pt"
    torch.save(
        {"state": {}, "config": {}, "script": "09_test", "obj": Config()}, code
    )  # a pickled class: refused
    cases = [
        (tmp_path / "absent.pt", "not found"),
        (corrupt, "not a readable"),
        (plain, "not a checkpoint"),
        (code, "not a readable"),
        (good, "09_test"),
    ]
    for path, words in cases:
        script = "10_other" if path == good else "09_test"
        one_line_error(lambda argv: common.load_checkpoint(path, script), [], capsys, words)
    state = common.load_checkpoint(good, "09_test")["state"]
    for other in (nn.Linear(3, 5), nn.Linear(4, 2), nn.Sequential(nn.Linear(3, 2))):
        one_line_error(
            lambda argv: common.load_state(other, state, good), [], capsys, "does not match"
        )


def test_progress_prints_a_line(capsys, monkeypatch):
    p = common.Progress(total=4, label="train", every_s=3600)
    p.update(1, loss=0.5)
    p.update(2, loss=0.25)
    assert capsys.readouterr().out == ""  # too soon to print again, and not the last step
    p.update(4, loss=0.125, kl=3)
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and line.startswith("train 4/4")
    assert "loss 0.125" in line and "kl 3" in line and "steps/s" in line and "ETA 0s" in line
    eager = common.Progress(total=10, every_s=0)
    for step in (1, 2):
        eager.update(step, loss=1.0)
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert eager.elapsed() >= 0
    assert common.format_seconds(75) == "1m15s" and common.format_seconds(9.4) == "9s"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 2 * common.DIVERGED])
def test_progress_stops_a_diverged_run_naming_the_step(value, capsys):
    p = common.Progress(total=10, every_s=3600)
    p.update(1, loss=0.5)
    err = one_line_error(lambda argv: p.update(7, loss=value), [], capsys, "diverged at step 7")
    assert "--lr" in err


def test_read_metrics_checks_what_compare_needs(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"fd": 3.5, "train_seconds": 10, "note": "x"}))
    assert common.read_metrics(str(good), ["fd", "train_seconds"], "01")["fd"] == 3.5
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "text.json").write_text(json.dumps({"fd": "3.5", "train_seconds": 10}))
    for name, says in [("absent.json", "run 01 first"), ("list.json", "no JSON object"),
                       ("broken.json", "not a readable"), ("text.json", "lacks fd")]:
        one_line_error(lambda argv: common.read_metrics(str(tmp_path / name),
                                                        ["fd", "train_seconds"], "01"),
                       [], capsys, says)
