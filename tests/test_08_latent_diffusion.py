"""Tests for 08_latent_diffusion.py and its experiment: the latent's shapes and scale, noising,
guidance and clipping on latents, the moving average, the contract, 08 against 04, and the
lesson copied out alone on other image shapes."""
import contextlib
import copy
import importlib
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import check_gif, check_outputs, one_line_error

ld = importlib.import_module("08_latent_diffusion")
FAST = settings(max_examples=15, deadline=None)
SCHED = ld.make_schedule(1000)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))


# The lesson a student copies (tests/helpers.py::lesson_module takes it out alone), and the rest.
LESSON = ["IMAGE_SHAPE", "CLASSES", "T", "EMA", "P_UNCOND", "LATENT_CHANNELS", "VAE_WIDTH", "LR",
          "Encoder", "Decoder", "EncoderDecoder", "reparameterise", "bernoulli_log_likelihood",
          "kl_to_standard_normal", "vae_loss", "vae_train_step", "fit_latents", "make_schedule",
          "at", "q_sample", "timestep_embedding", "ResBlock", "LatentDenoiser", "predictions",
          "drop_labels", "diffusion_loss", "ema_update", "learning_rate", "train_step",
          "guided_output", "denoise", "ddim_timesteps", "ddim_sample"]
DRIVER = ["SCRIPT", "Config", "train", "generate", "save_animation", "build", "main"]


def travel(m):
    """The lesson alone: the autoencoder's step, the encoding, the denoiser's step and a
    sample of two images decoded, on 3x32x32 colour images with 3 classes and on 1x28x28."""
    for shape, classes in [((3, 32, 32), 3), ((1, 28, 28), m.CLASSES)]:
        torch.manual_seed(0)
        vae = m.EncoderDecoder(4, 8, shape)
        x, labels = torch.rand(6, *shape), torch.arange(6) % classes
        loss, kl = m.vae_train_step(vae, torch.optim.Adam(vae.parameters(), 1e-3), x, 0.01)
        assert math.isfinite(loss) and math.isfinite(kl)
        z = m.fit_latents(vae, x)
        assert z.shape == (6, *vae.latent_shape) == (6, 4, shape[1] // 4, shape[2] // 4)
        den = m.LatentDenoiser(vae.latent_shape, 16, 1, classes=classes)
        ema, sched = copy.deepcopy(den).requires_grad_(False), m.make_schedule(m.T)
        opt = torch.optim.AdamW(den.parameters(), lr=1e-3)
        loss = m.train_step(den, ema, opt, z, labels, sched, "x0", 0.5)
        assert math.isfinite(loss) and any(p.grad is not None for p in den.parameters())
        zs = m.ddim_sample(ema, torch.tensor([classes - 1, 0]), 1.5, sched, "x0", 2,
                           torch.device("cpu"), torch.Generator().manual_seed(0), 1.0,
                           vae.bound.item())
        images = vae.decode_mean(zs)
        assert images.shape == (2, *shape) and torch.isfinite(images).all()
        assert images.min() >= 0 and images.max() <= 1


def small_vae(seed=0, channels=4, width=8, image_shape=ld.IMAGE_SHAPE):
    torch.manual_seed(seed)
    return ld.EncoderDecoder(channels, width, image_shape).eval()


# --- the autoencoder and its latents ----------------------------------------------------------
@pytest.mark.parametrize("channels, image_shape", [(1, (1, 28, 28)), (4, (1, 28, 28)),
                                                   (4, (3, 32, 32)), (2, (3, 16, 36))])
def test_shapes_from_pixels_to_latents_and_back(channels, image_shape):
    vae = small_vae(channels=channels, image_shape=image_shape)
    c, h, w = image_shape
    x = torch.rand(5, *image_shape)
    mu, logvar = vae.encoder(x)
    assert mu.shape == logvar.shape == (5, channels, h // 4, w // 4) == (5, *vae.latent_shape)
    assert vae.encode(x).shape == (5, channels, h // 4, w // 4)
    images = vae.decode_mean(vae.encode(x))
    assert images.shape == (5, c, h, w) and images.min() >= 0 and images.max() <= 1


@pytest.mark.parametrize("image_shape", [(1, 30, 28), (3, 32, 30), (1, 2, 2), (1, 0, 8)])
def test_a_size_the_autoencoder_cannot_take_is_refused_when_it_is_built(image_shape):
    with pytest.raises(ValueError, match="divisible by 4"):
        ld.EncoderDecoder(4, 8, image_shape)


def test_latents_are_standardised_per_channel_and_decode_as_before(data):
    vae = small_vae()
    with torch.no_grad():  # channels of very different sizes and centres, as training leaves them
        vae.encoder.net[-1].weight[:4] *= torch.tensor([0.3, 1.0, 5.0, 20.0])[:, None, None, None]
        vae.encoder.net[-1].bias[:4] += torch.tensor([1.0, -2.0, 0.0, 7.0])
    x = data.x_train[:300]
    z = ld.fit_latents(vae, x)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(4), atol=1e-3)
    assert torch.allclose(z.std((0, 2, 3)), torch.ones(4), atol=1e-4)
    assert vae.bound.item() == pytest.approx(z.abs().max().item())
    with torch.no_grad():
        assert torch.allclose(vae.encode(x), z, atol=1e-5)
        # the decoder sees the posterior mean itself: standardising must not change a picture
        mu = vae.encoder(x[:8])[0]
        assert torch.allclose(vae.decode_mean(z[:8]), torch.sigmoid(vae.decoder(mu)), atol=1e-5)


@FAST
@given(seed=st.integers(0, 10_000), weight=st.floats(0.0, 2.0))
def test_vae_loss_is_reconstruction_plus_weighted_kl_over_every_latent_value(seed, weight):
    vae = small_vae(seed % 5)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 1, 28, 28, generator=gen)
    eps = torch.randn(3, 4, 7, 7, generator=gen)
    loss, parts = ld.vae_loss(vae, x, weight, eps)
    mu, logvar = vae.encoder(x)
    logits = vae.decoder(mu + (0.5 * logvar).exp() * eps)
    log_px = (x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).flatten(1).sum(1)
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * logvar).exp()),
                                           torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)
    assert loss.item() == pytest.approx((weight * kl - log_px).mean().item(), rel=1e-4, abs=1e-3)
    assert parts["kl"] == pytest.approx(kl.mean().item(), rel=1e-4)


# --- diffusion on latents ---------------------------------------------------------------------
@FAST
@given(t=st.lists(st.integers(1, 1000), min_size=3, max_size=3), seed=st.integers(0, 1000))
def test_noising_latents_is_the_closed_form(t, seed):
    gen = torch.Generator().manual_seed(seed)
    z0, eps = torch.randn(3, 4, 7, 7, generator=gen), torch.randn(3, 4, 7, 7, generator=gen)
    zt = ld.q_sample(z0, torch.tensor(t), eps, SCHED)
    assert zt.shape == (3, 4, 7, 7)
    for i in range(3):
        ab = SCHED["abar"][t[i]].item()
        assert torch.allclose(zt[i], math.sqrt(ab) * z0[i] + math.sqrt(1 - ab) * eps[i],
                              atol=1e-5)


@pytest.fixture(scope="module")
def denoiser():
    torch.manual_seed(0)
    m = ld.LatentDenoiser((4, 7, 7), 16, 2).eval()
    with torch.no_grad():  # a non-zero output layer, so the label changes the prediction
        for p in m.out.parameters():
            p.normal_(0, 0.1)
        m.label_emb.weight.normal_(0, 1)
    return m


@FAST
@given(seed=st.integers(0, 10_000), t=st.integers(1, 1000), digit=st.integers(0, 9))
def test_guidance_zero_is_unconditional_and_one_is_conditional(denoiser, seed, t, digit):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(3, 4, 7, 7, generator=gen)
    tt, labels = torch.full((3,), t), torch.full((3,), digit)

    def eps_at(s):  # the guided noise estimate, unclipped
        return ld.denoise(denoiser, z, t, labels, s, SCHED, "eps", clip=0.0)[0]
    with torch.no_grad():
        eps_c = denoiser(z, tt, labels)
        eps_u = denoiser(z, tt, torch.full_like(labels, denoiser.classes))
    s = 0.5 + seed % 7
    assert torch.allclose(eps_at(1.0), eps_c)
    assert torch.allclose(eps_at(0.0), eps_u)
    assert torch.allclose(eps_at(s), eps_u + s * (eps_c - eps_u), atol=1e-5)
    assert not torch.allclose(eps_c, eps_u), "the label must change the prediction"


def test_clipping_bounds_the_clean_latent_and_keeps_the_pair_consistent(denoiser):
    z = 3 * torch.randn(2, 4, 7, 7, generator=torch.Generator().manual_seed(1))
    eps, z0 = ld.denoise(denoiser, z, 900, torch.tensor([1, 2]), 2.0, SCHED, "eps", clip=1.5)
    ab = SCHED["abar"][900].item()
    assert z0.abs().max() <= 1.5
    assert torch.allclose(math.sqrt(ab) * z0 + math.sqrt(1 - ab) * eps, z, atol=1e-4)


class SaysX0(torch.nn.Module):
    """A denoiser of the x0 target that says `value` for every latent, whatever it is shown."""

    def __init__(self, value: float, latent_shape=(4, 7, 7)):
        super().__init__()
        self.value, self.latent_shape, self.classes = value, latent_shape, ld.CLASSES

    def forward(self, z, t, labels):
        return torch.full_like(z, self.value)


@FAST
@given(bound=st.floats(1.5, 6.0), value=st.floats(-8.0, 8.0), t=st.integers(1, 1000))
def test_the_clip_is_the_latents_bound_not_pixels_range(bound, value, t):
    # A clean-latent estimate inside the training codes' bound is left as it is, even beyond
    # pixels' [-1, 1]; only one beyond the bound is clipped, to the bound.
    z = torch.randn(2, 4, 7, 7, generator=torch.Generator().manual_seed(t))
    _, z0 = ld.denoise(SaysX0(value), z, t, torch.tensor([1, 2]), 1.0, SCHED, "x0", clip=bound)
    assert torch.allclose(z0, torch.full_like(z0, max(-bound, min(bound, value))))


def test_the_moving_average_starts_from_the_trained_weights(monkeypatch, data):
    decays = []
    real = ld.ema_update
    monkeypatch.setattr(ld, "ema_update", lambda e, m, d: (decays.append(d), real(e, m, d)))
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"vae": ld.EncoderDecoder(4, 8),
                                 "denoiser": ld.LatentDenoiser((4, 7, 7), 16, 1)})
    ld.train(model, ld.Config(steps=12, vae_steps=1, batch_size=8, channels=16), data,
             torch.device("cpu"), torch.Generator().manual_seed(0))
    assert len(decays) == 12 and decays[0] <= 0.1  # the first average is mostly step 1's
    assert all(b >= a for a, b in zip(decays, decays[1:])) and max(decays) <= ld.EMA
    ema, net = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.clone() for p in ema.parameters()]
    ld.ema_update(ema, net, 0.75)
    for e, b, w in zip(ema.parameters(), before, net.parameters()):
        assert torch.allclose(e, 0.75 * b + 0.25 * w, atol=1e-6)


@pytest.mark.parametrize("bound, value", [(3.0, 2.5), (3.0, -1.7), (3.0, 5.0), (1.6, -4.0)])
def test_samples_are_clipped_to_the_latents_bound_not_to_pixels_range(bound, value):
    # Codes beyond pixels' [-1, 1] but inside the training codes' bound are kept as the
    # denoiser says them, to the last step; only beyond the bound are they clipped, to it.
    vae = small_vae()
    vae.bound.fill_(bound)
    model = torch.nn.ModuleDict({"vae": vae, "denoiser": SaysX0(value)})
    cfg, trace = ld.Config(sample_steps=3, seed=3, target="x0", guidance=2.0), []
    x = ld.generate(model, cfg, torch.arange(4), torch.device("cpu"), trace)
    kept = max(-bound, min(bound, value))
    assert all(torch.allclose(z0, torch.full_like(z0, kept)) for _, _, z0 in trace)
    with torch.no_grad():  # at the last step the sample is its clean estimate, decoded
        assert torch.allclose(x, vae.decode_mean(torch.full((4, 4, 7, 7), kept)), atol=1e-6)


def test_samples_are_decoded_latents_and_seeded(denoiser):
    model = torch.nn.ModuleDict({"vae": small_vae(), "denoiser": denoiser})
    cfg = ld.Config(sample_steps=3, seed=5, channels=16)
    labels, trace = torch.arange(6) % 10, []
    a = ld.generate(model, cfg, labels, torch.device("cpu"), trace)
    b = ld.generate(model, cfg, labels, torch.device("cpu"))
    assert a.shape == (6, 1, 28, 28) and a.min() >= 0 and a.max() <= 1 and torch.equal(a, b)
    assert len(trace) == 3 and trace[0][1].shape == (6, 4, 7, 7)  # the trace holds latents


# --- the contract, 08 against 04, and bad inputs ------------------------------------------------
# One tiny run of the chapter and one of the experiment serve every check below: --steps 3 with
# --vae-steps 50 also shows that --steps bounds the autoencoder.
TINY = ["--steps", "3", "--vae-steps", "50", "--batch-size", "16", "--samples", "12",
        "--channels", "16", "--sample-steps", "2"]


def said(fn, argv) -> str:
    """fn(argv), returning what it printed (stdout and stderr)."""
    with contextlib.redirect_stdout(io.StringIO()) as out, \
            contextlib.redirect_stderr(io.StringIO()) as err:
        fn(argv)
    return out.getvalue() + err.getvalue()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("08") / "run"
    printed = said(ld.main, TINY + ["--out", str(out)])
    with np.load(out / "samples.npz") as f:
        first = f["x"]
    return out, check_outputs(out, 12, labelled=True), first, printed


def test_main_writes_the_contract(tiny_run):
    out, m, _, _ = tiny_run
    assert m["latent_values"] == 196 and m["denoiser_steps"] == 3
    for key in ("recon_fd", "recon_fd_ratio", "label_accuracy", "vae_seconds",
                "denoiser_seconds"):
        assert math.isfinite(m[key]), key
    assert (out / "reconstructions.png").read_bytes()[:4] == b"\x89PNG"
    assert check_gif(out / "generation.gif") >= 2
    with np.load(out / "samples.npz") as f:
        assert f["y"].tolist() == [d % 10 for d in range(12)]


def test_steps_bound_the_autoencoder_too(tiny_run):
    """--steps bounds all of a run's training: a 3-step run trains no 50-step autoencoder."""
    out, m, _, printed = tiny_run
    assert "autoencoder 3/3" in printed and "autoencoder 4/" not in printed
    assert m["config"]["vae_steps"] == 3, "the saved config says what ran"


def test_load_samples_the_same_without_rewriting_the_checkpoint(tiny_run, tmp_path):
    out, m, first, _ = tiny_run
    again = tmp_path / "again"
    said(ld.main, ["--load", str(out / "model.pt"), "--samples", "12", "--sample-steps", "2",
                   "--out", str(again), "--no-gif"])
    assert (again / "model.pt").read_bytes() == (out / "model.pt").read_bytes()
    assert not (again / "generation.gif").exists()
    m2 = check_outputs(again, 12, labelled=True)
    assert np.array_equal(np.load(again / "samples.npz")["x"], first)
    assert m2["train_seconds"] == m["train_seconds"] and m2["recon_fd"] == m["recon_fd"]
    assert m2["config"]["channels"] == 16, "the checkpoint's sizes, not the flags' defaults"


def fake_04(path, **changes):
    m = {"train_seconds": 3.0, "sample_seconds": 4.0, "n": 1000, "fd": 24.8, "fd_ratio": 5.2,
         "label_accuracy": 0.996, "guidance": 2.0, "config": {"steps": 3000, "batch_size": 64}}
    m.update(changes)
    path.write_text(json.dumps(m))
    return path


@pytest.fixture(scope="module")
def versus_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("versus")
    out = folder / "cmp"
    printed = said(importlib.import_module("08_versus_04").main,
                   TINY + ["--metrics-04", str(fake_04(folder / "m.json")), "--out", str(out)])
    return json.loads((out / "metrics.json").read_text()), printed


def test_08_against_04_trains_for_04s_time_and_sets_the_runs_side_by_side(versus_run):
    m, printed = versus_run
    c = m["compare"]
    assert c["04"]["fd"] == 24.8 and c["04"]["values_per_image"] == 784
    assert c["04"]["steps_per_second"] == pytest.approx(3000 / 3.0)
    assert c["08"]["values_per_image"] == 196 and c["08"]["n"] == 12 and c["08"]["steps"] >= 1
    assert c["08"]["train_seconds"] == m["denoiser_seconds"], "the race is the denoisers'"
    assert c["08"]["autoencoder_seconds"] == m["vae_seconds"] > 0
    assert m["recon_fd"] > 0 and "training images per second" in printed


def test_08_against_04_keeps_to_steps(versus_run):
    # 04's 3 s would buy 08 more than 3 denoiser steps; --steps 3 bounds every network's
    # training, the pilot's included, and the 50 autoencoder steps asked for.
    m, printed = versus_run
    assert m["compare"]["08"]["steps"] <= 3 and m["config"]["vae_steps"] <= 3
    assert "autoencoder 4/" not in printed and "denoiser 4/" not in printed


@pytest.mark.parametrize("argv, says", [
    (["--load", "runs/08_latent_diffusion/model.pt"], "unrecognized arguments: --load"),
    (["--no-gif"], "unrecognized arguments: --no-gif"), (["--steps", "0"], "--steps"),
    (["--metrics-04", "none.json"], "not found"),
])
def test_08_against_04_offers_only_the_flags_it_reads(argv, says, capsys, tmp_path):
    one_line_error(importlib.import_module("08_versus_04").main,
                   argv + ["--out", str(tmp_path / "o")], capsys, says)


def test_08_against_04_needs_04s_figures(capsys, tmp_path):
    one_line_error(importlib.import_module("08_versus_04").main,
                   ["--metrics-04", str(fake_04(tmp_path / "n.json", fd=None)),
                    "--out", str(tmp_path / "o")], capsys, "lacks fd")


def images(path, side, colour, classes=3, n=120):
    """An .npz of n random images side x side (colour or grey) with `classes` labels."""
    gen = np.random.default_rng(0)
    x = gen.integers(0, 256, (n, side, side, 3) if colour else (n, side, side), dtype=np.uint8)
    np.savez(path, x=x, y=np.arange(n) % classes)
    return str(path)


def test_colour_images_of_another_size_train_sample_and_keep_their_colour(tmp_path, capsys):
    out = tmp_path / "run"
    ld.main(TINY + ["--data", images(tmp_path / "c.npz", 32, True), "--out", str(out)])
    said = capsys.readouterr().out
    assert "not scored" in said
    with np.load(out / "samples.npz") as f:
        assert f["x"].shape == (12, 32, 32, 3) and f["y"].tolist() == [d % 3 for d in range(12)]
    m = json.loads((out / "metrics.json").read_text())
    assert m["latent_values"] == 4 * 8 * 8 and "fd" not in m and "recon_fd" not in m
    from PIL import Image
    with Image.open(out / "samples.png") as im:  # colour kept: the channels differ somewhere
        rgb = np.asarray(im.convert("RGB")).astype(int)
    assert (rgb[..., 0] != rgb[..., 1]).any()


def test_a_size_it_cannot_take_or_other_data_for_a_checkpoint_is_one_line(tmp_path, capsys,
                                                                          tiny_run):
    one_line_error(ld.main, ["--data", images(tmp_path / "g.npz", 30, False), "--out",
                             str(tmp_path / "o")], capsys, "divisible by 4")
    assert not (tmp_path / "o").exists()
    one_line_error(ld.main, ["--load", str(tiny_run[0] / "model.pt"), "--data",
                             images(tmp_path / "c.npz", 32, True), "--out", str(tmp_path / "o")],
                   capsys, "1x28x28")


@pytest.mark.parametrize("argv, says", [
    (["--kl-weight", "-1"], "--kl-weight"), (["--guidance", "-1"], "--guidance"),
    (["--channels", "20"], "multiple of 8"), (["--channels", "8"], "min 16"),
    (["--vae-steps", "0"], "--vae-steps"), (["--target", "noise"], "invalid choice"),
])
def test_bad_flags_are_one_line(argv, says, capsys, tmp_path):
    one_line_error(ld.main, argv + ["--out", str(tmp_path)], capsys, says)


def test_bad_checkpoints_are_one_line(capsys, tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    one_line_error(ld.main, ["--load", str(tmp_path / "bad.pt"), "--out", str(tmp_path)],
                   capsys, "checkpoint")
