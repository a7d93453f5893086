"""Tests for 03_ddpm.py: the schedule, the forward process, the posterior, both samplers,
the contract."""

import importlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import common
from helpers import check_gif, check_outputs, one_line_error

ddpm = importlib.import_module("03_ddpm")
FAST = settings(max_examples=25, deadline=None)


# --- the schedule -------------------------------------------------------------------------------
@FAST
@given(kind=st.sampled_from(["linear", "cosine"]), T=st.integers(10, 2000))
def test_schedule_shapes_and_ranges(kind, T):
    s = ddpm.make_schedule(kind, T)
    betas, abar = s["betas"][1:], s["abar"][1:]
    assert len(s["abar"]) == T + 1 and s["abar"][0] == 1
    assert torch.all((betas > 0) & (betas < 1))
    assert torch.all((abar > 0) & (abar < 1))
    assert torch.all(abar[1:] < abar[:-1]), "alpha-bar must fall strictly"
    assert torch.allclose(s["alphas"][1:], 1 - betas)
    # Signal near zero at T: sqrt(abar_T) is how much of x_0 is left.
    assert math.sqrt(abar[-1]) < 0.01


def test_unknown_schedule_is_a_user_error():
    with pytest.raises(common.UserError):
        ddpm.make_schedule("quadratic", 100)


# --- the forward process ------------------------------------------------------------------------
@FAST
@given(kind=st.sampled_from(["linear", "cosine"]), t=st.integers(1, 60), x0=st.floats(-1, 1))
def test_closed_form_matches_iterated_noising(kind, t, x0):
    """Iterating x <- sqrt(alpha) x + sqrt(beta) eps t times has the closed form's mean and
    variance."""
    s = ddpm.make_schedule(kind, 60)
    gen = torch.Generator().manual_seed(0)
    x = torch.full((20000,), x0, dtype=torch.float64)
    for k in range(1, t + 1):
        x = s["alphas"][k].sqrt() * x + s["betas"][k].sqrt() * torch.randn(
            x.shape, generator=gen, dtype=torch.float64
        )
    mean, var = s["abar"][t].sqrt() * x0, 1 - s["abar"][t]
    assert abs(x.mean() - mean) < 5 * math.sqrt(var / len(x)) + 1e-9
    assert abs(x.var() - var) < 6 * var * math.sqrt(2 / len(x)) + 1e-9


def test_q_sample_is_the_closed_form():
    s = ddpm.make_schedule("cosine", 100)
    x0, eps = torch.rand(3, 1, 28, 28) * 2 - 1, torch.randn(3, 1, 28, 28)
    t = torch.tensor([1, 50, 100])
    xt = ddpm.q_sample(x0, t, eps, s)
    for i in range(3):
        ab = s["abar"][t[i]].item()
        assert torch.allclose(xt[i], math.sqrt(ab) * x0[i] + math.sqrt(1 - ab) * eps[i], atol=1e-6)


@FAST
@given(kind=st.sampled_from(["linear", "cosine"]), t=st.integers(2, 100), x0=st.floats(-1, 1),
       xt=st.floats(-3, 3))
def test_posterior_matches_gaussian_conditioning(kind, t, x0, xt):
    """q(x_{t-1} | x_t, x_0) from the joint Gaussian of (x_{t-1}, x_t) given x_0, derived
    independently: x_{t-1} ~ N(sqrt(abar_{t-1}) x_0, 1 - abar_{t-1}),
    x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps.
    """
    s = ddpm.make_schedule(kind, 100)
    ab_prev, ab, a = s["abar"][t - 1].item(), s["abar"][t].item(), s["alphas"][t].item()
    m1, v1 = math.sqrt(ab_prev) * x0, 1 - ab_prev
    m2, v2, c12 = math.sqrt(ab) * x0, 1 - ab, math.sqrt(a) * (1 - ab_prev)
    mean, var = ddpm.posterior(
        torch.tensor(x0, dtype=torch.float64), torch.tensor(xt, dtype=torch.float64), t, s
    )
    assert mean.item() == pytest.approx(m1 + c12 / v2 * (xt - m2), abs=1e-9)
    assert var == pytest.approx(v1 - c12 ** 2 / v2, rel=1e-6, abs=1e-12)


def _noised(t: int, T: int = 1000, seed: int = 1):
    sched = ddpm.make_schedule("cosine", T)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(2, 1, 28, 28, generator=gen) * 2 - 1
    eps = torch.randn(2, 1, 28, 28, generator=gen)
    tt = torch.full((2,), t)
    return sched, x0, eps, tt, ddpm.q_sample(x0, tt, eps, sched)


@FAST
@given(target=st.sampled_from(ddpm.TARGETS), t=st.integers(1, 999))
def test_each_target_converts_back_to_noise_and_image(target, t):
    sched, x0, eps, tt, xt = _noised(t)
    goal = ddpm.training_target(x0, eps, xt, tt, sched, target)
    eps_hat, x0_hat = ddpm.predictions(goal, xt, tt, sched, target)
    ab = sched["abar"][t].item()
    assert torch.allclose(
        x0_hat, x0, atol=2e-3 / math.sqrt(1 - ab) * (1 if target != "xprev" else 50)
    )
    assert torch.allclose(
        eps_hat, eps, atol=2e-3 / math.sqrt(ab) * (1 if target != "xprev" else 50)
    )


@FAST
@given(t=st.integers(2, 1000))
def test_xprev_is_the_posterior_mean(t):
    sched, x0, eps, tt, xt = _noised(t)
    mean, _ = ddpm.posterior(x0.double(), xt.double(), t, sched)
    goal = ddpm.training_target(x0, eps, xt, tt, sched, "xprev")
    assert torch.allclose(goal.double(), mean, atol=1e-5)


@FAST
@given(target=st.sampled_from(ddpm.TARGETS), t=st.integers(1, 1000), shift=st.floats(0.01, 1.0))
def test_a_target_error_is_the_x0_error_times_its_scale(target, t, shift):
    # Section 4: with x_t fixed, moving x0 by e moves each target by sqrt(scale) * e.
    sched, x0, eps, tt, xt = _noised(t)
    ab = sched["abar"][t].item()
    moved_eps = (xt - math.sqrt(ab) * (x0 + shift)) / math.sqrt(1 - ab)  # x_t unchanged
    a = ddpm.training_target(x0, eps, xt, tt, sched, target)
    b = ddpm.training_target(x0 + shift, moved_eps, xt, tt, sched, target)
    scale = ddpm.x0_error_scale(tt, sched, target)
    assert torch.allclose((a - b).pow(2).mean((1, 2, 3)), scale * shift ** 2, rtol=1e-2, atol=1e-9)


def test_min_snr_caps_the_x0_weight_at_five_for_every_target():
    sched = ddpm.make_schedule("cosine", 1000)
    t = torch.arange(1, 1001)
    snr = (sched["abar"][1:] / (1 - sched["abar"][1:])).float()
    for target in ddpm.TARGETS:
        # the weight on the target's error times the target's scale = the weight on the x0 error
        w = ddpm.timestep_weights(sched, target)
        assert torch.allclose(w * ddpm.x0_error_scale(t, sched, target), snr.clamp(max=5.0))


@pytest.mark.parametrize("target", ["eps", "v"])
def test_min_snr_loss_is_on_average_the_weighted_loss_over_uniform_t(target):
    # min-SNR draws t by its weight instead of weighing each error. On average that must be
    # mean over uniform t of w(t) * L(t); drawing t uniformly (the bug) would give mean(w) *
    # mean(L), off by far more than the tolerance here, as L grows steeply with t.
    sched = ddpm.make_schedule("cosine", 1000)
    T = sched["T"]

    def model(xt, t):  # a fixed guess per t: the target's error then grows steeply with t
        return (4 * t / T).float().view(-1, 1, 1, 1).expand_as(xt)

    x0 = torch.zeros(200_000, 1, 1, 1)  # x0 = 0: every target is then a multiple of eps
    gen = torch.Generator().manual_seed(0)
    got = ddpm.diffusion_loss(model, x0, sched, target, "minsnr", gen).item()
    t = torch.arange(1, T + 1)
    s, r = sched["abar"][1:].sqrt().float(), (1 - sched["abar"][1:]).sqrt().float()
    k = {"eps": torch.ones(T), "v": s}[target]  # target = k * eps when x0 = 0
    expected = (ddpm.timestep_weights(sched, target) * ((4 * t / T) ** 2 + k ** 2)).mean()
    assert got == pytest.approx(expected.item(), rel=0.02)


def test_timestep_embedding_pairs_sin_and_cos():
    emb = ddpm.timestep_embedding(torch.tensor([0, 1, 17, 999]), 16)
    assert torch.allclose(emb[:, :8] ** 2 + emb[:, 8:] ** 2, torch.ones(4, 8), atol=1e-6)
    assert torch.equal(emb[0, :8], torch.zeros(8))  # sin(0) = 0: the first half is the sines


# --- samplers ---------------------------------------------------------------------------------
class PerfectDenoiser(torch.nn.Module):
    """For a data set of one image x*, the true noise is known exactly:
    eps = (x_t - sqrt(abar) x*) / sqrt(1 - abar)."""

    def __init__(self, image, sched, target):
        super().__init__()
        self.image, self.sched, self.target = image, sched, target

    def forward(self, x, t):
        ab = ddpm.at(self.sched, "abar", t)
        eps = (x - ab.sqrt() * self.image) / (1 - ab).sqrt()
        return ddpm.training_target(self.image.expand_as(x), eps, x, t, self.sched, self.target)


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("target", ddpm.TARGETS)
@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ddim-stochastic"])
def test_perfect_predictor_for_one_image_returns_that_image(sampler, target, clip, data):
    sched = ddpm.make_schedule("cosine", 50)
    image = ddpm.to_model_space(data.x_train[:1])
    model = PerfectDenoiser(image, sched, target)
    gen = torch.Generator().manual_seed(0)
    if sampler == "ddpm":
        x = ddpm.ddpm_sample(model, 3, sched, target, "cpu", gen, clip=clip)
    else:
        eta = 1.0 if sampler == "ddim-stochastic" else 0.0
        x = ddpm.ddim_sample(model, 3, sched, target, 10, "cpu", gen, eta=eta, clip=clip)
    assert torch.allclose(x, image.expand(3, -1, -1, -1), atol=1e-3)


@FAST
@given(t=st.integers(1, 1000), err=st.floats(-0.1, 0.1).filter(lambda e: abs(e) > 1e-3))
def test_an_eps_error_is_magnified_in_x0_and_clipping_bounds_it(t, err, data):
    # Section 4's arithmetic: an error e in predicted eps is an error e * sqrt((1 - abar) / abar)
    # in the clean image it implies; clipping keeps that image in [-1, 1] and the pair consistent.
    sched = ddpm.make_schedule("cosine", 1000)
    image = ddpm.to_model_space(data.x_train[:1])
    perfect = PerfectDenoiser(image, sched, "eps")
    model = lambda x, tt: perfect(x, tt) + err  # noqa: E731  (the same error at every pixel)
    noise = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(t))
    xt = ddpm.q_sample(image, torch.tensor([t]), noise, sched)
    ab = sched["abar"][t].item()
    _, x0 = ddpm.denoise(model, xt, t, sched, "eps", clip=False)
    gain = math.sqrt((1 - ab) / ab)
    assert torch.allclose(
        x0 - image, torch.full_like(image, -err * gain), rtol=1e-3, atol=1e-4 * max(1.0, gain)
    )
    eps_c, x0_c = ddpm.denoise(model, xt, t, sched, "eps", clip=True)
    assert x0_c.min() >= -1 and x0_c.max() <= 1
    assert torch.allclose(math.sqrt(ab) * x0_c + math.sqrt(1 - ab) * eps_c, xt, atol=1e-4)


def test_deterministic_ddim_draws_nothing_after_the_starting_noise(data):
    # eta = 0: the sample is a function of x_T alone, so no random number is drawn after it.
    sched = ddpm.make_schedule("cosine", 50)
    model = PerfectDenoiser(ddpm.to_model_space(data.x_train[:1]), sched, "eps")
    gen, ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    ddpm.ddim_sample(model, 2, sched, "eps", 10, "cpu", gen, eta=0.0)
    torch.randn((2, 1, 28, 28), generator=ref)
    assert torch.equal(gen.get_state(), ref.get_state())
    ddpm.ddim_sample(model, 2, sched, "eps", 10, "cpu", gen, eta=1.0)
    torch.randn((2, 1, 28, 28), generator=ref)
    assert not torch.equal(gen.get_state(), ref.get_state())  # eta = 1 adds fresh noise


def test_ddim_timesteps_run_from_T_down_to_1():
    for steps in (1, 7, 50, 1000, 5000):
        ts = ddpm.ddim_timesteps(1000, steps)
        assert ts[0] == 1000 and ts[-1] == (1 if steps > 1 else 1000)
        assert all(a > b for a, b in zip(ts, ts[1:]))
        assert len(ts) == min(steps, 1000)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_samples_shape_range_and_seed_determinism(sampler):
    torch.manual_seed(0)
    model = ddpm.UNet(8).eval()
    sched = ddpm.make_schedule("cosine", 20)
    cfg = ddpm.Config(sampler=sampler, sample_steps=3, seed=5)
    a = ddpm.generate(model, cfg, 4, sched, torch.device("cpu"))
    b = ddpm.generate(model, cfg, 4, sched, torch.device("cpu"))
    c = ddpm.generate(
        model, ddpm.Config(sampler=sampler, sample_steps=3, seed=6), 4, sched, torch.device("cpu")
    )
    assert a.shape == (4, 1, 28, 28) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_unet_keeps_the_image_shape():
    model = ddpm.UNet(8)
    out = model(torch.randn(2, 1, 28, 28), torch.tensor([1, 999]))
    assert out.shape == (2, 1, 28, 28)


def test_scaled_noising_settles_and_plain_noising_grows():
    demo = ddpm.noising_demo(
        torch.rand(8, 1, 28, 28) * 2 - 1, steps=1000, gen=torch.Generator().manual_seed(0)
    )
    last = demo["rows"][-1]
    assert last["plain_std"] > 3          # sqrt(1 + 1000 * 0.02) ~ 4.6: no fixed end point
    assert abs(last["scaled_std"] - 1) < 0.05   # N(0, I) whatever the image
    assert abs(last["scaled_corr_with_x0"]) < 0.05


@pytest.mark.parametrize("weighting", ["plain", "minsnr"])
def test_short_training_is_finite_and_moves_the_weights(data, weighting):
    cfg = ddpm.Config(steps=3, batch_size=8, channels=8, weighting=weighting)
    sched = ddpm.make_schedule("cosine", 100)
    torch.manual_seed(cfg.seed)
    start = ddpm.UNet(8)
    ema, _, loss = ddpm.train(cfg, data, torch.device("cpu"), sched)
    assert math.isfinite(loss)
    assert any(not torch.equal(p, q) for p, q in zip(start.parameters(), ema.parameters()))


# --- the contract and bad inputs -----------------------------------------------------------------
TINY = [
    "--steps",
    "2",
    "--batch-size",
    "8",
    "--samples",
    "12",
    "--channels",
    "8",
    "--sample-steps",
    "2",
]


def test_main_writes_the_contract_and_loads_back(tmp_path):
    out = tmp_path / "run"
    ddpm.main(TINY + ["--out", str(out), "--sweep-steps", "1,2"])
    m = check_outputs(out, 12)
    assert [r["evaluations"] for r in m["sweep"]] == [1, 2]
    for name in ("noising.png", "forward_process.png", "sweep.png"):
        assert (out / name).exists()
    assert check_gif(out / "generation.gif") >= 2  # one frame per DDIM step
    model_bytes = (out / "model.pt").read_bytes()
    ddpm.main(["--load", str(out / "model.pt"), "--samples", "12", "--sample-steps", "2",
               "--out", str(out), "--no-gif"])
    assert (out / "model.pt").read_bytes() == model_bytes, "--load rewrote what it loaded"
    assert not (out / "generation.gif").exists() and not (out / "sweep.png").exists()
    m2 = check_outputs(out, 12)
    assert m2["fd"] == pytest.approx(m["fd"]), "the loaded model samples what the trained one did"
    assert m2["train_seconds"] == m["train_seconds"] and m2["config"]["clip"] is True
    unclipped = tmp_path / "unclipped"
    ddpm.main(["--load", str(out / "model.pt"), "--samples", "12", "--sample-steps", "2",
               "--no-clip", "--out", str(unclipped)])
    assert check_outputs(unclipped, 12)["config"]["clip"] is False


def test_compare_targets_trains_each_at_the_same_budget(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    compare = importlib.import_module("compare_targets")
    out = tmp_path / "targets"
    compare.main(TINY + ["--out", str(out), "--targets", "x0,xprev,eps+minsnr", "--no-gif"])
    rows = check_outputs(out, 12)["targets"]
    assert [(r["target"], r["weighting"]) for r in rows] == [
        ("x0", "plain"), ("xprev", "plain"), ("eps", "minsnr")]
    assert (out / "estimates.png").exists()


@pytest.mark.parametrize("argv, says", [
    (["--steps", "-1"], "--steps"),
    (["--batch-size", "0"], "--batch-size"),
    (["--sample-steps", "0"], "--sample-steps"),
    (["--ema", "1.5"], "--ema"),
    (["--sweep-steps", "5,x"], "sweep-steps"),
    (["--target", "noise"], "invalid choice"),
    (["--channels", "12"], "multiple of 8"),
    (["--channels", "4"], "at least 8"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "tpu"], "device"),
])
def test_bad_numbers_and_devices(argv, says, capsys, tmp_path):
    one_line_error(ddpm.main, argv + ["--out", str(tmp_path)], capsys, says)


def test_bad_data_and_checkpoints(capsys, tmp_path):
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip")
    np.savez(tmp_path / "shape.npz", x=np.zeros((120, 32, 32), np.uint8), y=np.zeros(120, np.int64))
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    for flag, name, says in [("--data", "none.npz", "not found"),
                             ("--data", "corrupt.npz", "readable"),
                             ("--data", "shape.npz", "(N, 28, 28)"),
                             ("--load", "bad.pt", "checkpoint"),
                             ("--load", "missing.pt", "not found")]:
        one_line_error(ddpm.main, [flag, str(tmp_path / name), "--out", str(tmp_path)], capsys,
                       says)
