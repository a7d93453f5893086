"""Tests for common.py: data, flags, devices, seeding, running in a terminal or a notebook,
the run folder and its lock, files and checkpoints, progress lines and pictures."""
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import common
from helpers import one_line_error, write_checkpoint

FAST = settings(max_examples=25, deadline=None)
BUNDLED = common.HERE / "data" / "mnist_5k.npz"


# %% Data: the bundled set
def test_bundled_set_shapes_and_split_sizes(data):
    assert data.name == "mnist5k"
    assert data.x_train.shape == (4000, 1, 28, 28) and data.x_held.shape == (1000, 1, 28, 28)
    for x in (data.x_train, data.x_held):
        assert x.dtype == torch.float32 and x.min() >= 0 and x.max() == 1.0  # scaled by 255
    for y in (data.y_train, data.y_held):
        assert y.dtype == torch.int64
    # Stratified: 500 per class -> 400 train, 100 held out, for every class.
    assert torch.bincount(data.y_train, minlength=10).tolist() == [400] * 10
    assert torch.bincount(data.y_held, minlength=10).tolist() == [100] * 10


def test_bundled_split_is_fixed_whatever_the_run_seed(data):
    common.seed_everything(12345)
    again = common.load_data("mnist5k")
    for a, b in zip(data[1:5], again[1:5]):  # the images and labels
        assert torch.equal(a, b)


def test_bundled_split_is_disjoint_and_covers_the_file(data):
    x, y = common.load_npz(BUNDLED)
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
        assert int((y[he] == c).sum()) == int(round(int((y == c).sum()) * frac))
    tr2, he2 = common.split_indices(y, frac)
    assert np.array_equal(tr, tr2) and np.array_equal(he, he2)


def test_the_held_out_fifth_of_each_class_is_drawn_from_all_of_it():
    """Files are often sorted (the bundled one is, by class, and each class by writer): the
    held-out part must come from all over each class, not from its first images."""
    y = np.repeat(np.arange(10), 500)
    tr, he = common.split_indices(y)
    for c in range(10):
        rank = np.flatnonzero(y == c).searchsorted(he[y[he] == c]) / 500  # position, 0 to 1
        assert 0.4 < rank.mean() < 0.6 and rank.min() < 0.1 and rank.max() > 0.9, c


# %% Data: a user's .npz, full MNIST, and every kind of bad input
def _digits(n=120):
    x, y = common.load_npz(BUNDLED)
    return x[:n].copy(), y[:n].astype(np.uint8)


def test_user_npz_loads_and_splits(tmp_path):
    x, y = _digits(120)
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    d = common.load_data(str(tmp_path / "mine.npz"))
    assert d.name == "mine" and len(d.x_train) + len(d.x_held) == 120 and len(d.x_held) > 0
    assert d.y_train.dtype == torch.int64 and d.x_train.shape[1:] == (1, 28, 28)
    tr, he = common.split_indices(y.astype(np.int64))  # the same seeded rule as the bundled set
    assert torch.equal(d.x_train, torch.from_numpy(x[tr].astype(np.float32) / 255).unsqueeze(1))
    assert torch.equal(d.y_held, torch.from_numpy(y[he].astype(np.int64)))


@pytest.mark.parametrize("shape, labels", [((120, 32, 32, 3), 4), ((120, 16, 16), 2),
                                           ((120, 20, 24), None)])
def test_colour_and_other_sizes_load_channels_first_with_their_labels(shape, labels, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    arrays = {"x": x} if labels is None else {"x": x, "y": np.arange(120) % labels}
    np.savez(tmp_path / "mine.npz", **arrays)
    d = common.load_data(str(tmp_path / "mine.npz"))
    channels = 3 if len(shape) == 4 else 1
    assert d.x_train.shape[1:] == (channels, *shape[1:3]) and d.classes == (labels or 1)
    train = common.split_indices(np.arange(120) % (labels or 1))[0]
    back = common.as_images(d.x_train)  # as the file had them: channels last again
    assert back.shape == (len(train), *shape[1:]) and np.allclose(back, x[train] / 255.0)


def test_the_judge_scores_only_28x28_grey_digits_in_ten_classes(capsys):
    for x, classes in ((torch.zeros(8, 3, 32, 32), 4), (torch.zeros(8, 1, 16, 16), 10),
                       (torch.zeros(8, 1, 28, 28), 3)):
        d = common.Data("mine", x, torch.zeros(8, dtype=torch.int64), x, x[:, 0, 0, 0].long(),
                        classes)
        assert common.load_judge(d) is None
        line = capsys.readouterr().out.strip()
        assert line.startswith("not scored") and "\n" not in line and f"{classes} label" in line


def test_full_mnist_is_the_cached_file_with_its_test_digits_held_out(tmp_path, monkeypatch,
                                                                       capsys):
    monkeypatch.setattr(common, "CACHE_DIR", tmp_path)
    err = one_line_error(lambda argv: common.load_data("mnist"), [], capsys, "get_mnist.py")
    assert "mnist5k" in err
    x = np.random.default_rng(0).integers(0, 256, (10_100, 28, 28), dtype=np.uint8)
    y = np.arange(10_100) % 10
    np.savez(tmp_path / "mnist.npz", x=x, y=y)
    d = common.load_data("mnist")
    assert len(d.x_train) == 100 and len(d.x_held) == 10_000
    assert torch.equal(d.y_held, torch.from_numpy(y[100:]))


def _bad_inputs():
    x, y = _digits(120)
    return {
        "wrong shape": (dict(x=np.stack([x, x], -1), y=y), "(120, 28, 28, 2)"),
        "flat images": (dict(x=x.reshape(120, -1), y=y), "(120, 784)"),
        "wrong dtype": (dict(x=x.astype(np.float32), y=y), "x float32"),
        "a label unused": (dict(x=x, y=np.where(np.arange(120) % 10 == 3, 10, np.arange(120) % 10)),
                           "0..10, 10 used"),
        "negative label": (dict(x=x, y=np.where(np.arange(120) == 3, -1, y.astype(np.int64))),
                           " -1.."),
        "float labels": (dict(x=x, y=y.astype(np.float32)), "y float32"),
        "no label 0": (dict(x=x, y=np.ones_like(y)), "1..1, 1 used"),
        "missing x": (dict(y=y), "x is not a file"),
        "too few images": (dict(x=x[:20], y=y[:20]), "(20, 28, 28)"),
        "length mismatch": (dict(x=x, y=y[:40]), "(40,)"),
        "2-d labels": (dict(x=x, y=y[:, None]), "(120, 1)"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_npz_is_one_user_error_saying_what_was_found(case, tmp_path):
    arrays, found = _bad_inputs()[case]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(common.UserError) as e:
        common.load_data(str(tmp_path / "bad.npz"))
    msg = str(e.value)
    assert "\n" not in msg and found in msg, msg


def test_not_a_zip_missing_file_unknown_name_and_missing_bundled_data(tmp_path, capsys,
                                                                       monkeypatch):
    text = tmp_path / "notes.npz"
    text.write_text("these are not digits\n")
    one_line_error(lambda argv: common.load_data(str(text)), [], capsys, "not an .npz")
    one_line_error(lambda argv: common.load_data(str(tmp_path / "absent.npz")), [], capsys,
                   "not found")
    one_line_error(lambda argv: common.load_data("fashion"), [], capsys, "mnist5k")
    monkeypatch.setattr(common, "HERE", tmp_path)
    err = one_line_error(lambda argv: common.load_data("mnist5k"), [], capsys,
                         "data/mnist_5k.npz")
    assert "--data" in err


def test_batches_cover_the_data_and_a_large_batch_fits_itself(capsys):
    x, y = torch.rand(10, 1, 28, 28), torch.arange(10)
    it = common.batches(x, y, 4, torch.Generator().manual_seed(0))
    seen = [next(it) for _ in range(4)]
    assert all(xb.shape == (4, 1, 28, 28) and yb.shape == (4,) for xb, yb in seen)
    assert len(set(torch.cat([seen[0][1], seen[1][1]]).tolist())) == 8  # no repeat in a pass
    capsys.readouterr()
    xb, yb = next(common.batches(x, y, 128, torch.Generator()))
    assert sorted(yb.tolist()) == list(range(10)) and torch.equal(xb, x[yb])
    assert "batches of 10" in capsys.readouterr().out


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


@pytest.mark.parametrize("name", ["cuda", "mps", "tpu"])
def test_absent_device_names_what_is_there(devices, name, capsys):
    devices()
    err = one_line_error(lambda argv: common.pick_device(name), [], capsys, name)
    assert "available: cpu" in err


def test_autocast_bf16_on_cuda_only():
    x = torch.randn(4, 4)
    with common.autocast(torch.device("cpu")):
        assert (x @ x).dtype == torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CUDA autocast warns that CUDA is absent
        ctx = common.autocast(torch.device("cuda"))
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16


def _draws(gen):
    return (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(),
            torch.rand(3, generator=gen).tolist())


@FAST
@given(st.integers(0, 2**31 - 1))
def test_seeding_repeats_every_generator(seed):
    first = _draws(common.seed_everything(seed))
    assert first == _draws(common.seed_everything(seed))
    assert all(a != b for a, b in zip(first, _draws(common.seed_everything(seed + 1))))


# %% Flags
@dataclasses.dataclass
class Config(common.BaseConfig):
    steps: int = common.flag(300, "training steps", min=1)
    lr: float = common.flag(1e-3, "learning rate", min=0.0, max=1.0)
    use_ema: bool = common.flag(True, "keep an EMA of the weights")
    mode: str = common.flag("a", "which variant", choices=["a", "b"])
    width: int = common.flag(16, "GroupNorm needs it", multiple_of=8)


# Scripts written with `from __future__ import annotations` hand parse_config types as strings.
StringConfig = dataclasses.make_dataclass(
    "StringConfig", [("depth", "int", common.flag(8, "", min=1)),
                     ("scale", "float", common.flag(0.5, "")),
                     ("fast", "bool", common.flag(False, ""))], bases=(common.BaseConfig,))


def test_defaults_and_dash_flags():
    assert common.parse_config(common.BaseConfig, []) == common.BaseConfig()
    assert common.BaseConfig().samples == 1000  # the same default for every chapter
    cfg = common.parse_config(Config, [])
    assert cfg == Config() and cfg.steps == 300 and cfg.use_ema is True
    argv = ["--batch-size", "8", "--no-use-ema", "--mode", "b", "--lr", "0.5", "--steps", "7",
            "--seed", "3", "--device", "cpu", "--data", "x.npz", "--out", "o", "--load", "m.pt",
            "--samples", "9", "--no-gif", "--width", "24"]
    cfg = common.parse_config(Config, argv)
    assert (cfg.batch_size, cfg.use_ema, cfg.mode, cfg.lr, cfg.steps, cfg.seed, cfg.device,
            cfg.data, cfg.out, cfg.load, cfg.samples, cfg.gif, cfg.width) == \
        (8, False, "b", 0.5, 7, 3, "cpu", "x.npz", "o", "m.pt", 9, False, 24)
    cfg = common.parse_config(StringConfig, ["--depth", "16", "--scale", "2", "--fast"])
    assert (cfg.depth, cfg.scale, cfg.fast) == (16, 2.0, True)


DOC = """demo.py: a test script.

Run:  python demo.py             (the first way)
      python demo.py --steps 3   (the second way)
"""


def test_help_keeps_the_docstrings_lines_and_shows_each_default_once(capsys):
    with pytest.raises(SystemExit) as e:
        common.parse_config(Config, ["--help"], DOC)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "Run:  python demo.py             (the first way)\n" in out
    assert "      python demo.py --steps 3   (the second way)\n" in out
    flat = " ".join(out.split())  # argparse wraps flag help at the terminal's width
    assert "default: 300" in flat and "default: mnist5k" in flat and "default: True" in flat
    assert "(default: )" not in flat and flat.count("runs/<script name>") == 1
    for line in out.splitlines():
        assert line.count("default:") <= 1, line


def test_a_notebook_kernels_own_arguments_are_not_flags(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "/tmp/kernel-1.json",
                                      "--HistoryManager.hist_file=:memory:"])
    monkeypatch.setitem(sys.modules, "ipykernel", type(sys)("ipykernel"))
    assert common.in_notebook()
    assert common.parse_config(Config, None) == Config()
    assert common.parse_config(Config, ["--steps", "5"]).steps == 5  # settings still work


@pytest.mark.parametrize("argv, words", [
    (["--steps", "-1"], "--steps"), (["--steps", "0"], "min 1"),
    (["--batch-size", "0"], "--batch-size"), (["--samples", "-5"], "--samples"),
    (["--seed", "-1"], "--seed"), (["--seed", str(2**32)], "max"), (["--lr", "2"], "max 1.0"),
    (["--lr", "nan"], "finite"), (["--width", "12"], "multiple of 8"),
    (["--device", "tpu"], "invalid choice"), (["--mode", "c"], "invalid choice"),
    (["--steps", "ten"], "invalid int"), (["--no-such-flag"], "unrecognized"),
])
def test_invalid_values_refused_with_one_line(argv, words, capsys):
    one_line_error(lambda a: common.parse_config(Config, a), argv, capsys, words)


# %% Running main(): exit codes in a terminal, a returned code in a notebook
def test_run_main_exit_codes_and_a_failed_write(capsys, tmp_path):
    assert common.run_main(lambda argv: None, []) == 0

    def interrupted(argv):
        raise KeyboardInterrupt
    with pytest.raises(SystemExit) as e:
        common.run_main(interrupted, [])
    assert e.value.code == 130 and "interrupted" in capsys.readouterr().err

    def full(argv):
        raise OSError(28, "No space left on device", str(tmp_path / "model.pt"))
    assert "model.pt" in one_line_error(full, [], capsys, "no space left")


def test_in_a_notebook_an_error_is_one_line_and_the_kernel_goes_on(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ipykernel", type(sys)("ipykernel"))

    def bad(argv):
        raise common.UserError("--steps must be at least 1")
    assert common.run_main(bad, []) == 2  # returned, not raised: the kernel lives on
    assert capsys.readouterr().err.strip() == "error: --steps must be at least 1"


def test_sigterm_is_handled_like_ctrl_c_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)

    def terminated(argv):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives before this ends
    with pytest.raises(SystemExit) as e:
        common.run_main(terminated, [])
    assert e.value.code == 130 and signal.getsignal(signal.SIGTERM) == before


# %% The run folder: complete files or none, and a lock the system releases
def _run(out, files: dict, fail: BaseException | None = None):
    with common.run_folder(Config(out=str(out)), "09_x") as staging:
        for name, text in files.items():
            (staging / name).write_text(text)
        if fail is not None:
            raise fail


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_a_finished_run_moves_its_files_in_and_drops_the_last_runs_leftovers(tmp_path):
    out = tmp_path / "a" / "b"
    _run(out, {"metrics.json": "1", "sweep.png": "old"})
    assert (out / "metrics.json").read_text() == "1" and (out / "sweep.png").exists()
    (out / "notes.txt").write_text("mine")  # not written by a run: never touched
    _run(out, {"metrics.json": "2"})
    assert _visible(out) == ["metrics.json", "notes.txt"]
    assert (out / "metrics.json").read_text() == "2"
    assert not list(out.glob(".unfinished-*")) and not list(out.glob(".finished-*"))


def test_the_default_folder_is_runs_and_the_script_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with common.run_folder(Config(), "03_ddpm") as staging:
        (staging / "metrics.json").write_text("{}")
    assert (tmp_path / "runs" / "03_ddpm" / "metrics.json").exists()


@pytest.mark.parametrize("fail", [common.UserError("diverged"), KeyboardInterrupt(),
                                  OSError(28, "full")])
def test_a_failed_run_leaves_the_folder_as_it_was(tmp_path, fail):
    out = tmp_path / "run"
    _run(out, {"metrics.json": "1", "model.pt": "old"})
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"}
    with pytest.raises(type(fail)):
        _run(out, {"metrics.json": "2", "model.pt": "half"}, fail)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"} == before


def test_a_failed_first_run_leaves_no_empty_folder(tmp_path):
    with pytest.raises(common.UserError):
        _run(tmp_path / "new" / "run", {"metrics.json": "1"}, common.UserError("bad"))
    assert not (tmp_path / "new").exists()  # nor the new folder above it
    (tmp_path / "mine").mkdir()
    with pytest.raises(common.UserError):
        _run(tmp_path / "mine" / "run", {"metrics.json": "1"}, common.UserError("bad"))
    assert (tmp_path / "mine").is_dir() and not (tmp_path / "mine" / "run").exists()


def test_an_interrupt_as_the_run_folder_is_made_leaves_nothing_half_made(tmp_path, monkeypatch):
    real = common.tempfile.mkdtemp

    def made_then_interrupted(**kwargs):
        real(**kwargs)
        raise KeyboardInterrupt
    monkeypatch.setattr(common.tempfile, "mkdtemp", made_then_interrupted)
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        _run(out, {"metrics.json": "1"})
    assert [p.name for p in out.iterdir()] == [".lock"]


def test_the_interrupt_line_says_what_is_there(monkeypatch):
    monkeypatch.setattr(common, "_finished", [])
    assert "nothing was saved" in common._interrupted()
    monkeypatch.setattr(common, "_finished", [Path("runs/03_ddpm")])
    assert "already saved in runs/03_ddpm" in common._interrupted()


def test_a_run_killed_while_moving_its_files_in_is_completed_by_the_next(tmp_path):
    out = tmp_path / "run"
    _run(out, {"metrics.json": "old", "model.pt": "old", "sweep.png": "old"})
    # What a kill halfway through the move leaves: the new run committed (renamed to
    # .finished-*), metrics.json already moved in, model.pt not yet, sweep.png not yet removed.
    done = out / ".finished-killed"
    done.mkdir()
    (done / "model.pt").write_text("new")
    (done / ".files").write_text("metrics.json\nmodel.pt\n")
    (out / "metrics.json").write_text("new")
    with pytest.raises(common.UserError):  # a run that fails still completes that move
        _run(out, {"other.txt": "x"}, common.UserError("this run fails"))
    assert {p: (out / p).read_text() for p in _visible(out)} == \
        {"metrics.json": "new", "model.pt": "new"}
    assert not done.exists()


LOCKER = """
import sys, time
sys.path.insert(0, {root!r})
import common, dataclasses
cfg = common.BaseConfig(out={out!r})
try:
    with common.run_folder(cfg, "x") as staging:
        (staging / "metrics.json").write_text("ran")
        print("locked", flush=True)
        time.sleep({hold})
    print("done", flush=True)
except common.UserError as e:
    print("refused", e, flush=True)
"""


def _locker(out, hold):
    code = LOCKER.format(root=str(common.HERE), out=str(out), hold=hold)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_a_second_run_is_refused_while_the_first_lives_and_never_after(tmp_path):
    out = tmp_path / "run"
    first = _locker(out, 30)
    assert first.stdout.readline().strip() == "locked"
    second = _locker(out, 0)
    said = second.communicate(timeout=60)[0]
    assert said.startswith("refused") and str(out) in said and "--out" in said
    first.kill()  # killed while holding the lock: the system releases it
    first.wait()
    (out / ".lock").write_text(str(os.getppid()))  # a stale lock naming some live process
    third = _locker(out, 0)
    assert third.communicate(timeout=60)[0].splitlines() == ["locked", "done"]
    assert (out / "metrics.json").read_text() == "ran" and not list(out.glob(".unfinished-*"))


def test_runs_starting_at_the_same_instant_never_both_hold_the_folder(tmp_path):
    out = tmp_path / "run"
    procs = [_locker(out, 1.5) for _ in range(4)]
    said = [p.communicate(timeout=60)[0] for p in procs]
    locked = [s for s in said if s.startswith("locked")]
    # They all start within a moment of each other; whoever holds the lock keeps the others out.
    assert len(locked) >= 1 and all(s.startswith(("locked", "refused")) for s in said)
    assert len(locked) + sum(s.startswith("refused") for s in said) == 4
    assert not list(out.glob(".unfinished-*"))


def test_out_that_is_a_file_or_cannot_be_made_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("mine")
    one_line_error(lambda a: _run(tmp_path / "f", {}), [], capsys, "is a file")
    one_line_error(lambda a: _run(tmp_path / "f" / "below", {}), [], capsys, "cannot write")
    assert (tmp_path / "f").read_text() == "mine"


# %% Samples, metrics, checkpoints
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


def test_save_metrics_is_strict_json(tmp_path):
    metrics = {"train_seconds": np.float32(1.5), "fd": 3.25, "n": np.int64(64),
               "class_counts": [1, 2], "note": "ok", "loss": torch.tensor(0.5),
               "bpp": float("nan"), "rows": [{"x": np.inf}], "arr": np.arange(2)}
    common.save_metrics(tmp_path, metrics)
    back = json.loads((tmp_path / "metrics.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert back == {"train_seconds": 1.5, "fd": 3.25, "n": 64, "class_counts": [1, 2],
                    "note": "ok", "loss": 0.5, "bpp": None, "rows": [{"x": None}], "arr": [0, 1]}


def test_nan_samples_are_never_saved(tmp_path):
    x = torch.rand(4, 1, 28, 28)
    x[2, 0, 3, 3] = float("nan")
    with pytest.raises(common.UserError, match="NaN"):
        common.save_samples(tmp_path, x)
    assert not (tmp_path / "samples.npz").exists()


def _net(out=2):
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, out))


def test_load_or_train_trains_and_saves_then_loads_the_checkpoints_shape(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trained = []

    def train(model):
        trained.append(model)
        return {"train_seconds": 1.5}
    cfg, model, extra = common.load_or_train(Config(mode="b"), tmp_path / "a", "09_test",
                                             ("mode",), lambda c: _net(), train)
    assert trained == [model] and extra == {"train_seconds": 1.5} and not model.training
    x = torch.randn(5, 3)
    flags = Config(mode="a", load=str(tmp_path / "a" / "model.pt"))
    cfg, again, extra = common.load_or_train(flags, tmp_path / "b", "09_test", ("mode",),
                                             lambda c: _net(), None)
    assert cfg.mode == "b" and cfg.load == flags.load  # the checkpoint's shape, not the flag's
    assert extra == {"train_seconds": 1.5} and torch.equal(again(x), model(x))
    assert (tmp_path / "b" / "model.pt").read_bytes() == (tmp_path / "a" / "model.pt").read_bytes()


def test_bad_checkpoints_are_one_line(tmp_path, capsys):
    good = tmp_path / "good.pt"
    write_checkpoint(good, "09_test", _net().state_dict())
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[:200])
    plain = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), plain)
    code = tmp_path / "code.pt"
    torch.save({"state": {}, "config": {}, "extra": {}, "script": "09_test", "obj": Config()},
               code)  # a pickled class: refused
    for path, words in [(tmp_path / "absent.pt", "not found"), (corrupt, "not a readable"),
                        (plain, "not a checkpoint"), (code, "not a readable"), (good, "09_test")]:
        script = "10_other" if path == good else "09_test"
        one_line_error(lambda argv: common.load_checkpoint(path, script), [], capsys, words)
    (tmp_path / "out").mkdir()
    for other in (lambda c: _net(5), lambda c: nn.Linear(3, 2)):
        one_line_error(lambda argv: common.load_or_train(
            Config(load=str(good)), tmp_path / "out", "09_test", (), other, None), [], capsys,
            "does not match")


# %% Progress lines, pictures and the summary
def test_progress_prints_a_line(capsys):
    p = common.Progress(total=4, label="train", every_s=3600)
    p.update(1, loss=0.5)
    assert capsys.readouterr().out.startswith("train 1/4 loss 0.5")  # at once: it has started
    p.update(2, loss=0.25)
    assert capsys.readouterr().out == ""  # too soon to print again, and not the last step
    p.update(4, loss=0.125, kl=3)
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and line.startswith("train 4/4")
    assert "loss 0.125" in line and "kl 3" in line and "/s" in line and "0s left" in line
    assert common.format_seconds(75) == "1m15s" and common.format_seconds(9.4) == "9s"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 2 * common.DIVERGED])
def test_progress_stops_a_diverged_run_naming_the_step(value, capsys):
    p = common.Progress(total=10, every_s=3600)
    p.update(1, loss=0.5)
    err = one_line_error(lambda argv: p.update(7, loss=value), [], capsys, "diverged at step 7")
    assert "--lr" in err


def test_a_png_keeps_every_row_label_inside_the_picture(tmp_path):
    import matplotlib.image

    # Blank images: any dark pixel in the picture's outer frame is cut-off text.
    labels = [f"held out\ndigit {d}" for d in range(10)]
    path = common.save_images(tmp_path / "rows.png", torch.zeros(150, 28, 28), 15, labels,
                              "a title")
    img = matplotlib.image.imread(path)[..., :3].mean(-1)  # (H, W), 1 = white
    frame = np.concatenate([img[:2].ravel(), img[-2:].ravel(), img[:, :2].ravel(),
                            img[:, -2:].ravel()])
    assert frame.min() > 0.9 and (img[:, :40] < 0.5).any()  # labels there, and not cut
    out_of_range = torch.rand(10, 1, 28, 28) * 1.4 - 0.2  # clipped, not an error
    assert common.save_images(tmp_path / "g.png", out_of_range).read_bytes()[:4] == b"\x89PNG"


def test_a_gif_plays_every_frame_then_holds_the_last(tmp_path):
    from PIL import Image

    frames = [torch.full((6, 28, 28), i / 4) for i in range(5)]
    path = common.save_images(tmp_path / "g.gif", frames, 3, ["a", "b"],
                              [f"step {i}" for i in range(5)], fps=4, hold_s=1.5)
    with Image.open(path) as im:
        assert im.format == "GIF" and im.info.get("loop") == 0
        assert im.n_frames == 5  # identical frames merge: the hold lengthens the last one
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
    assert durations[:4] == [250] * 4 and durations[4] == 250 * 7  # held 1.5 s more


def test_pictures_show_inline_in_a_notebook(tmp_path, monkeypatch):
    shown = []
    display = type(sys)("IPython.display")
    display.Image = lambda filename: ("image", filename)
    display.display = shown.append
    monkeypatch.setitem(sys.modules, "IPython", type(sys)("IPython"))
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    common.save_images(tmp_path / "a.png", torch.rand(4, 28, 28))
    assert shown == []  # not in a notebook: files only
    monkeypatch.setitem(sys.modules, "ipykernel", type(sys)("ipykernel"))
    common.save_images(tmp_path / "b.png", torch.rand(4, 28, 28))
    assert shown == [("image", str(tmp_path / "b.png"))]
    monkeypatch.setitem(sys.modules, "IPython.display", None)  # a notebook without IPython
    common.save_images(tmp_path / "c.png", torch.rand(4, 3, 32, 32))
    assert (tmp_path / "c.png").is_file() and len(shown) == 1  # saved all the same


def test_colour_pictures_keep_their_colour(tmp_path):
    from PIL import Image

    x = torch.zeros(4, 3, 8, 8)
    x[:, 0] = 1.0  # pure red
    canvas = common.tile(x, 2)
    assert canvas.shape == (18, 18, 3) and (canvas[0, 0] == [1, 0, 0]).all()
    common.save_images(tmp_path / "red.png", x, 2)
    rgb = np.asarray(Image.open(tmp_path / "red.png").convert("RGB")).reshape(-1, 3)
    assert ((rgb[:, 0] > 200) & (rgb[:, 1] < 60) & (rgb[:, 2] < 60)).mean() > 0.3
    common.save_samples(tmp_path, x)
    with np.load(tmp_path / "samples.npz") as f:
        assert f["x"].shape == (4, 8, 8, 3)


def test_the_summary_says_where_the_files_are_and_what_each_figure_means(judge, data, capsys,
                                                                        monkeypatch):
    monkeypatch.setattr(common, "_finished", [Path("runs/09_x")])
    metrics = {"train_seconds": 75.0, "sample_seconds": 2.0, "bits_per_pixel": 0.1234,
               **judge.evaluate(data.x_held[:500])}
    common.print_summary(metrics, [("bits_per_pixel", "held-out bits per pixel (lower is "
                                    "better)"), ("absent", "not printed")])
    out = capsys.readouterr().out
    assert "runs/09_x" in out and "training time: 1m15s" in out and "sampling time: 2s" in out
    assert "held-out bits per pixel (lower is better): 0.1234" in out and "not printed" not in out
    assert "lower is better" in out.split("FD", 1)[1] and "note:" not in out
