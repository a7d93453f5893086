"""Tests for 04_cfg.py and its experiment: guidance at s = 0 and 1, the guided clean-image
estimate, label dropout, the null token, the animation, the contract."""
import contextlib
import copy
import importlib
import io
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import check_gif, check_outputs, one_line_error, strict_json

cfg_mod = importlib.import_module("04_cfg")
FAST = settings(max_examples=15, deadline=None)
NULL = cfg_mod.CLASSES  # MNIST's "no label": the label after the ten digits

# What a student copies (tests/test_repository.py takes it out alone, where common cannot be
# imported, and runs travel on it), and the rest: the driver.
LESSON = ["IMAGE_SHAPE", "CLASSES", "TARGETS", "T", "EMA", "P_UNCOND", "make_schedule", "at",
          "q_sample", "posterior_coefficients", "timestep_embedding", "ResBlock", "UNet",
          "predictions", "training_target", "timestep_weights", "drop_labels", "diffusion_loss",
          "ema_update", "learning_rate", "to_model_space", "train_step", "guided_output",
          "denoise", "ddim_timesteps", "ddim_sample", "to_pixels", "balanced_labels"]
DRIVER = ["SCRIPT", "Config", "train", "generate", "save_animation", "main"]


def travel(m):
    """One training step and a guided sample of two, on 3x32x32 colour images with 4 classes
    and on MNIST's 1x28x28 with 10."""
    sched = m.make_schedule(50)
    for shape, classes in [((3, 32, 32), 4), (m.IMAGE_SHAPE, m.CLASSES)]:
        torch.manual_seed(0)
        model = m.UNet(8, shape, classes)
        ema = copy.deepcopy(model).requires_grad_(False)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x0, labels = m.to_model_space(torch.rand(4, *shape)), torch.arange(4) % classes
        loss = m.train_step(model, ema, opt, x0, labels, sched, "eps", "minsnr", 0.5,
                            torch.Generator().manual_seed(0))
        assert math.isfinite(loss) and not torch.equal(ema.inp.weight, model.inp.weight)
        x = m.ddim_sample(ema, m.balanced_labels(2, classes=classes), 2.0, sched, "eps", 3, "cpu",
                          torch.Generator().manual_seed(1), eta=1.0)
        assert x.shape == (2, *shape) and torch.isfinite(x).all()


class Recorder(torch.nn.Module):
    """Wraps a model and remembers the labels of every call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []
        self.classes, self.image_shape = model.classes, model.image_shape

    def forward(self, x, t, labels):
        self.calls.append(labels.clone())
        return self.model(x, t, labels)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = cfg_mod.UNet(8).eval()
    # a non-zero output layer, so conditional and unconditional predictions differ
    with torch.no_grad():
        for p in m.out.parameters():
            p.normal_(0, 0.1)
        m.label_emb.weight.normal_(0, 1)
    return m


SCHED = cfg_mod.make_schedule(1000)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))


@FAST
@given(seed=st.integers(0, 10_000), t=st.integers(1, 1000), digit=st.integers(0, 9))
def test_guidance_one_is_conditional_and_zero_is_unconditional(model, seed, t, digit):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 1, 28, 28, generator=gen)
    tt = torch.full((3,), t)
    labels = torch.full((3,), digit)

    def eps_at(s):  # the guided noise estimate, unclipped
        return cfg_mod.denoise(model, x, t, labels, s, SCHED, "eps", clip=False)[0]
    with torch.no_grad():
        eps_c = model(x, tt, labels)
        eps_u = model(x, tt, torch.full_like(labels, NULL))
    s = 0.5 + seed % 7  # some other scale, through the doubled batch
    assert torch.allclose(eps_at(1.0), eps_c)
    assert torch.allclose(eps_at(0.0), eps_u)
    assert torch.allclose(eps_at(s), eps_u + s * (eps_c - eps_u), atol=1e-5)
    w = s - 1  # (1 + w) eps_c - w eps_u is the same thing with s = 1 + w
    assert torch.allclose(eps_at(s), (1 + w) * eps_c - w * eps_u, atol=1e-5)
    assert not torch.allclose(eps_c, eps_u), "the label must change the prediction"


@FAST
@given(seed=st.integers(0, 10_000), t=st.integers(1, 999), target=st.sampled_from(cfg_mod.TARGETS))
def test_the_clean_image_estimate_is_the_guided_ones(model, seed, t, target):
    # Whatever the target, the estimate sampling uses is the one the guided output implies:
    # guide, then convert (not the conditional prediction's, nor the unconditional one's).
    gen = torch.Generator().manual_seed(seed)
    x, labels = torch.randn(2, 1, 28, 28, generator=gen), torch.tensor([3, 8])
    tt = torch.full((2,), t)
    s = 0.5 + seed % 5
    with torch.no_grad():
        out_c, out_u = model(x, tt, labels), model(x, tt, torch.full_like(labels, NULL))
    eps, x0 = cfg_mod.predictions(out_u + s * (out_c - out_u), x, tt, SCHED, target)
    got_eps, got_x0 = cfg_mod.denoise(model, x, t, labels, s, SCHED, target, clip=False)
    # The conditional estimate is off from the guided one by `gap`; the answer must be far
    # closer to the guided one than that (where the gap is not lost in rounding).
    gap = (x0 - cfg_mod.predictions(out_c, x, tt, SCHED, target)[1]).abs().max().item()
    assert (got_x0 - x0).abs().max().item() <= 0.01 * gap + 1e-5
    assert torch.allclose(got_eps, eps, atol=1e-4, rtol=1e-4)


def test_guided_prediction_is_one_call_on_a_doubled_batch(model):
    rec = Recorder(model)
    labels = torch.tensor([3, 7])
    cfg_mod.denoise(rec, torch.randn(2, 1, 28, 28), 5, labels, 3.0, SCHED, "eps")
    assert len(rec.calls) == 1
    assert rec.calls[0].tolist() == [3, 7, NULL, NULL]


def test_null_token_used_exactly_where_labels_were_dropped():
    labels = torch.arange(1000) % 10
    dropped = cfg_mod.drop_labels(labels, NULL, 0.3, torch.Generator().manual_seed(0))
    kept = dropped != NULL
    assert torch.equal(dropped[kept], labels[kept]), "kept labels are unchanged"
    assert set(dropped[~kept].tolist()) == {NULL}
    # and the training loss feeds exactly these labels to the network
    rec = Recorder(cfg_mod.UNet(8))
    gen_a, gen_b = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    x0 = torch.zeros(16, 1, 28, 28)
    y = torch.arange(16) % 10
    cfg_mod.diffusion_loss(rec, x0, y, cfg_mod.make_schedule(100), "eps", "plain", gen_a)
    torch.randint(1, 101, (16,), generator=gen_b)             # the loss draws t first,
    torch.randn(x0.shape, generator=gen_b)                    # then the noise,
    expected = cfg_mod.drop_labels(y, NULL, cfg_mod.P_UNCOND, gen_b)  # then the drop
    assert torch.equal(rec.calls[0], expected)


@FAST
@given(p=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_drop_rate_matches_p_uncond(p, seed):
    n = 20_000
    dropped = cfg_mod.drop_labels(
        torch.zeros(n, dtype=torch.long), NULL, p, torch.Generator().manual_seed(seed)
    )
    rate = (dropped == NULL).float().mean().item()
    assert abs(rate - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-9


def test_training_hands_the_null_label_to_the_model_at_the_dropout_rate(data, monkeypatch):
    seen = []
    real = cfg_mod.UNet.forward

    def spy(self, x, t, label):
        seen.append(label.clone())
        return real(self, x, t, label)
    monkeypatch.setattr(cfg_mod.UNet, "forward", spy)
    torch.manual_seed(0)
    cfg_mod.train(cfg_mod.UNet(8), cfg_mod.Config(steps=4, batch_size=100, channels=8), data,
                  torch.device("cpu"), cfg_mod.make_schedule(100))
    rate, p = (torch.cat(seen) == NULL).float().mean().item(), cfg_mod.P_UNCOND
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / 400)


def test_training_averages_from_the_trained_weights_on_not_the_random_start(data, monkeypatch):
    decays = []
    real = cfg_mod.ema_update
    monkeypatch.setattr(cfg_mod, "ema_update", lambda e, m, d: (decays.append(d), real(e, m, d)))
    cfg_mod.train(cfg_mod.UNet(8), cfg_mod.Config(steps=30, batch_size=8, channels=8), data,
                  torch.device("cpu"), cfg_mod.make_schedule(100))
    assert len(decays) == 30 and decays[0] <= 0.1
    assert all(b >= a for a, b in zip(decays, decays[1:])) and max(decays) <= cfg_mod.EMA
    ema, model = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.clone() for p in ema.parameters()]
    cfg_mod.ema_update(ema, model, 0.75)
    for e, b, w in zip(ema.parameters(), before, model.parameters()):
        assert torch.allclose(e, 0.75 * b + 0.25 * w, atol=1e-6)


def test_null_token_is_a_learned_embedding_row():
    m = cfg_mod.UNet(8)
    assert m.label_emb.num_embeddings == 11 and m.label_emb.weight.requires_grad
    assert m.label_emb.weight[NULL].abs().sum() > 0, "not a zero vector"


def test_with_k_classes_training_and_sampling_use_only_labels_0_to_k_and_k_as_no_label():
    # A copy for 4 classes must ask for labels 0..3 and "no label" 4: the embedding's rows
    # that training touches. Label 10 would be out of range, and 5..9 rows never trained.
    torch.manual_seed(0)
    rec, sched = Recorder(cfg_mod.UNet(8, (1, 8, 8), classes=4)), cfg_mod.make_schedule(20)
    assert rec.model.label_emb.num_embeddings == 5
    labels = cfg_mod.balanced_labels(12, classes=4)
    assert labels.tolist() == [0, 1, 2, 3] * 3
    cfg_mod.diffusion_loss(rec, torch.zeros(400, 1, 8, 8), torch.arange(400) % 4, sched, "eps",
                           "plain", torch.Generator().manual_seed(0))
    assert set(rec.calls[-1].tolist()) == {0, 1, 2, 3, 4}
    cfg_mod.ddim_sample(rec, labels, 2.0, sched, "eps", 2, "cpu", torch.Generator().manual_seed(0))
    assert all(set(c.tolist()) == {0, 1, 2, 3, 4} for c in rec.calls[1:])


def test_the_experiment_measures_each_scale_from_the_same_noise(model, tmp_path, capsys):
    guidance = importlib.import_module("04_guidance")
    x, labels = torch.rand(6, 28, 28), torch.tensor([0, 0, 0, 1, 1, 1])
    assert guidance.within_class_diversity(x[[0, 0, 0, 3, 3, 3]], labels) == 0
    assert guidance.within_class_diversity(x, labels) > 0
    ckpt = tmp_path / "model.pt"
    torch.save({"script": cfg_mod.SCRIPT, "config": {"channels": 8}, "state": model.state_dict(),
                "extra": {"train_seconds": 1.0}}, ckpt)
    guidance.main(["--load", str(ckpt), "--samples", "20", "--sample-steps", "2", "--scales",
                   "0,1,4", "--out", str(tmp_path / "g")])
    m = strict_json(tmp_path / "g" / "metrics.json")
    assert [r["guidance"] for r in m["sweep"]] == [0.0, 1.0, 4.0]
    assert all(r["n"] == 20 and 0 <= r["label_accuracy"] <= 1 for r in m["sweep"])
    assert (tmp_path / "g" / "guidance_grid.png").exists() and m["real_diversity"] > 0
    for scales in ("inf", "1,nan", "-1"):  # every scale a finite, non-negative number
        one_line_error(guidance.main, ["--load", str(ckpt), "--scales", scales, "--out",
                                       str(tmp_path / "bad")], capsys, "--scales")
    one_line_error(guidance.main, ["--guidance", "2", "--out", str(tmp_path / "bad")], capsys,
                   "unrecognized")  # it reads --scales, not the chapter's --guidance
    assert not (tmp_path / "bad").exists()


def test_balanced_labels():
    assert np.bincount(cfg_mod.balanced_labels(100).numpy()).tolist() == [10] * 10
    assert set(cfg_mod.balanced_labels(7, 4).tolist()) == {4}


TINY = ["--steps", "2", "--batch-size", "8", "--samples", "40", "--channels", "8",
        "--sample-steps", "2"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny run of the lesson at s = 3, shared: its folder."""
    out = tmp_path_factory.mktemp("04") / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        cfg_mod.main(TINY + ["--out", str(out), "--guidance", "3"])
    return out


def test_main_writes_the_contract_and_loads_back(tiny, tmp_path, monkeypatch):
    out = tiny
    m = check_outputs(out, 40, labelled=True)
    assert m["guidance"] == 3.0 and "label_accuracy" in m and m["evaluations_per_image"] == 4
    assert check_gif(out / "generation.gif") >= 2
    with np.load(out / "samples.npz") as f:
        assert np.bincount(f["y"], minlength=10).tolist() == [4] * 10
    pictures = {}
    real = cfg_mod.common.save_images
    monkeypatch.setattr(cfg_mod.common, "save_images",
                        lambda path, *a, **k: (pictures.__setitem__(path.name, (a, k)),
                                               real(path, *a, **k))[1])
    again = tmp_path / "again"  # a few samples, one digit: the animation is there, labelled so
    cfg_mod.main(["--load", str(out / "model.pt"), "--samples", "6", "--sample-steps", "2",
                  "--digit", "7", "--out", str(again)])
    check_outputs(again, 6, labelled=True)
    with np.load(again / "samples.npz") as f:
        assert set(f["y"].tolist()) == {7}
    (frames, ncol, rows, captions), _ = pictures["generation.gif"]
    assert rows == ["777777"] and ncol == 6 and len(frames) == 2 and frames[0].shape[0] == 6
    check_gif(again / "generation.gif")


@pytest.mark.parametrize("argv, says", [
    (["--digit", "10"], "--digit"), (["--digit", "-2"], "--digit"),
    (["--guidance", "-1"], "--guidance"), (["--guidance", "1,2"], "invalid float"),
    (["--steps", "0"], "--steps"),
])
def test_bad_inputs_are_one_line(argv, says, capsys, tmp_path):
    one_line_error(cfg_mod.main, argv + ["--out", str(tmp_path)], capsys, says)


def test_bad_data_and_checkpoint(tiny, capsys, tmp_path):
    np.savez(tmp_path / "labels.npz", x=np.zeros((120, 28, 28), np.uint8), y=np.full(120, 12))
    np.savez(tmp_path / "two.npz", x=np.zeros((120, 28, 28), np.uint8), y=np.arange(120) % 2)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    two = ["--data", str(tmp_path / "two.npz")]
    for argv, says in [(["--data", str(tmp_path / "labels.npz")], "0..K-1"),
                       (["--load", str(tmp_path / "bad.pt")], "checkpoint"),
                       (two + ["--digit", "2"], "below the data's 2 labels"),  # before training
                       (two + ["--load", str(tiny / "model.pt")], "--data")]:  # made for 10
        one_line_error(cfg_mod.main, argv + ["--out", str(tmp_path / "out")], capsys, says)
        assert not (tmp_path / "out").exists()
