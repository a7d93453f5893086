"""Tests for 03_ddpm.py and its experiments: the schedule, the forward process, where one
step back lies, the targets and their weighting, training, DDIM (and DDPM as its special
case), the contract."""
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

ddpm = importlib.import_module("03_ddpm")
FAST = settings(max_examples=25, deadline=None)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))

# What a student copies (tests/test_repository.py takes it out alone, where common cannot be
# imported, and runs travel on it), and the rest: the driver.
LESSON = ["IMAGE_SHAPE", "TARGETS", "T", "EMA", "make_schedule", "at", "q_sample",
          "posterior_coefficients", "timestep_embedding", "ResBlock", "UNet", "predictions",
          "training_target", "timestep_weights", "diffusion_loss", "ema_update", "learning_rate",
          "to_model_space", "train_step", "denoise", "ddim_timesteps", "ddim_sample", "to_pixels"]
DRIVER = ["SCRIPT", "Config", "train", "generate", "save_animation", "main"]


def travel(m):
    """One training step and a sample of two, on colour 3x32x32 and on MNIST's 1x28x28."""
    sched = m.make_schedule(50)
    for shape in [(3, 32, 32), m.IMAGE_SHAPE]:
        torch.manual_seed(0)
        model = m.UNet(8, shape)
        ema = copy.deepcopy(model).requires_grad_(False)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x0 = m.to_model_space(torch.rand(4, *shape))
        loss = m.train_step(model, ema, opt, x0, sched, "eps", "minsnr", 0.5,
                            torch.Generator().manual_seed(0))
        assert math.isfinite(loss) and not torch.equal(ema.inp.weight, model.inp.weight)
        x = m.ddim_sample(ema, 2, sched, "eps", 3, "cpu", torch.Generator().manual_seed(1),
                          eta=1.0)
        assert x.shape == (2, *shape) and torch.isfinite(x).all()
        assert m.to_pixels(x).shape == (2, *shape)


# --- the schedule and the forward process -------------------------------------------------------
@FAST
@given(T=st.integers(10, 2000))
def test_schedule_shapes_and_ranges(T):
    s = ddpm.make_schedule(T)
    betas, abar = s["betas"][1:], s["abar"][1:]
    assert len(s["abar"]) == T + 1 and s["abar"][0] == 1
    assert torch.all((betas > 0) & (betas < 1)) and torch.all((abar > 0) & (abar < 1))
    assert torch.all(abar[1:] < abar[:-1]), "alpha-bar must fall strictly"
    assert torch.allclose(s["alphas"][1:], 1 - betas)
    assert math.sqrt(abar[-1]) < 0.01  # what is left of x_0 at T: next to nothing


@FAST
@given(T=st.integers(10, 2000), seed=st.integers(0, 1000))
def test_schedule_is_the_offset_cosine_so_the_first_step_adds_real_noise(T, seed):
    # Nichol & Dhariwal: abar_t = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) * pi/2),
    # s = 0.008. Without the offset s, beta_1 would be about 16x smaller (2.5e-6 at T = 1000).
    sched, s = ddpm.make_schedule(T), 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    t = 1 + seed % (T // 2)  # away from the end, where the cap on beta may bite
    assert sched["abar"][t].item() == pytest.approx(f(t) / f(0), rel=1e-9)
    assert sched["betas"][1].item() == pytest.approx(1 - f(1) / f(0), rel=1e-9)
    if T == 1000:
        assert sched["betas"][1].item() == pytest.approx(4.1e-5, rel=0.05)


@FAST
@given(t=st.integers(1, 60), x0=st.floats(-1, 1))
def test_closed_form_matches_iterated_noising(t, x0):
    """Iterating x <- sqrt(alpha) x + sqrt(beta) eps t times has the closed form's mean and
    variance."""
    s = ddpm.make_schedule(60)
    gen = torch.Generator().manual_seed(0)
    x = torch.full((20000,), x0, dtype=torch.float64)
    for k in range(1, t + 1):
        x = s["alphas"][k].sqrt() * x + s["betas"][k].sqrt() * torch.randn(
            x.shape, generator=gen, dtype=torch.float64)
    mean, var = s["abar"][t].sqrt() * x0, 1 - s["abar"][t]
    assert abs(x.mean() - mean) < 5 * math.sqrt(var / len(x)) + 1e-9
    assert abs(x.var() - var) < 6 * var * math.sqrt(2 / len(x)) + 1e-9


def test_q_sample_is_the_closed_form():
    s, gen = ddpm.make_schedule(100), torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 1, 28, 28, generator=gen) * 2 - 1
    eps = torch.randn(3, 1, 28, 28, generator=gen)
    t = torch.tensor([1, 50, 100])
    xt = ddpm.q_sample(x0, t, eps, s)
    for i in range(3):
        ab = s["abar"][t[i]].item()
        assert torch.allclose(xt[i], math.sqrt(ab) * x0[i] + math.sqrt(1 - ab) * eps[i], atol=1e-6)


def _one_step_back(s, t, x0, xt):
    """q(x_{t-1} | x_t, x_0) from the joint Gaussian of (x_{t-1}, x_t) given x_0, derived
    independently: x_{t-1} ~ N(sqrt(abar_{t-1}) x_0, 1 - abar_{t-1}),
    x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps. Returns (mean, variance)."""
    ab_prev, ab, a = s["abar"][t - 1].item(), s["abar"][t].item(), s["alphas"][t].item()
    m1, v1 = math.sqrt(ab_prev) * x0, 1 - ab_prev
    m2, v2, c12 = math.sqrt(ab) * x0, 1 - ab, math.sqrt(a) * (1 - ab_prev)
    return m1 + c12 / v2 * (xt - m2), v1 - c12 ** 2 / v2


@FAST
@given(t=st.integers(2, 100), x0=st.floats(-1, 1), xt=st.floats(-3, 3))
def test_posterior_coefficients_give_gaussian_conditionings_mean(t, x0, xt):
    s = ddpm.make_schedule(100)
    mean, _ = _one_step_back(s, t, x0, xt)
    c0, ct = ddpm.posterior_coefficients(s, torch.tensor([t]))
    assert (c0 * x0 + ct * xt).item() == pytest.approx(mean, abs=1e-5)


@FAST
@given(T=st.integers(2, 60), x0=st.floats(-0.9, 0.9), seed=st.integers(0, 100))
def test_ddim_with_eta_1_on_every_step_is_ddpms_step(T, x0, seed):
    """DDPM draws x_{t-1} from q(x_{t-1} | x_t, x0_hat). DDIM at eta = 1 on a grid of every
    step must land at that distribution's mean plus its standard deviation times the noise."""
    s, image = ddpm.make_schedule(T), torch.full((1, 1, 28, 28), x0)
    ref = torch.Generator().manual_seed(seed)
    start = torch.randn((1, 1, 28, 28), generator=ref)
    z = torch.randn((1, 1, 28, 28), generator=ref)  # the fresh noise of the first step
    trace = []
    ddpm.ddim_sample(Constant(image), 1, s, "x0", T, "cpu",
                     torch.Generator().manual_seed(seed), eta=1.0, clip=False, trace=trace)
    assert [step[0] for step in trace] == list(range(T, 0, -1)) and torch.equal(trace[0][1], start)
    mean, var = _one_step_back(s, T, x0, start.double())
    assert torch.allclose(trace[1][1].double(), mean + math.sqrt(var) * z.double(), atol=1e-4)


class Constant(torch.nn.Module):
    """Predicts the same clean image, whatever it is shown."""

    def __init__(self, image):
        super().__init__()
        self.image, self.image_shape = image, tuple(image.shape[1:])

    def forward(self, x, t):
        return self.image.expand_as(x)


def _noised(t: int, T: int = 1000, seed: int = 1):
    sched = ddpm.make_schedule(T)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(2, 1, 28, 28, generator=gen) * 2 - 1
    eps = torch.randn(2, 1, 28, 28, generator=gen)
    tt = torch.full((2,), t)
    return sched, x0, eps, tt, ddpm.q_sample(x0, tt, eps, sched)


# --- what the network predicts, and the weighting -----------------------------------------------
@FAST
@given(target=st.sampled_from(ddpm.TARGETS), t=st.integers(1, 999))
def test_each_target_converts_back_to_noise_and_image(target, t):
    sched, x0, eps, tt, xt = _noised(t)
    goal = ddpm.training_target(x0, eps, xt, tt, sched, target)
    eps_hat, x0_hat = ddpm.predictions(goal, xt, tt, sched, target)
    ab, slack = sched["abar"][t].item(), 50 if target == "xprev" else 1
    assert torch.allclose(x0_hat, x0, atol=2e-3 / math.sqrt(1 - ab) * slack)
    assert torch.allclose(eps_hat, eps, atol=2e-3 / math.sqrt(ab) * slack)


@FAST
@given(target=st.sampled_from(ddpm.TARGETS), t=st.integers(1, 1000), shift=st.floats(0.01, 1.0))
def test_min_snr_weighs_every_target_as_it_weighs_the_clean_image(target, t, shift):
    # Section 4: with x_t fixed, an error e in x0 is an error sqrt(k) e in the target. min-SNR's
    # weight on the target's squared error times k must be min(SNR, 5), whatever the target.
    sched, x0, eps, tt, xt = _noised(t)
    ab = sched["abar"][t].item()
    moved_eps = (xt - math.sqrt(ab) * (x0 + shift)) / math.sqrt(1 - ab)  # x_t unchanged
    a = ddpm.training_target(x0, eps, xt, tt, sched, target)
    b = ddpm.training_target(x0 + shift, moved_eps, xt, tt, sched, target)
    k = (a - b).pow(2).mean().item() / shift ** 2
    w = ddpm.timestep_weights(sched, target)[t - 1].item()
    assert w * k == pytest.approx(min(ab / (1 - ab), 5.0), rel=2e-2)


def test_min_snr_loss_is_on_average_the_weighted_loss_over_uniform_t():
    # min-SNR draws t by its weight instead of weighing each error. On average that must be
    # mean over uniform t of w(t) * L(t); drawing t uniformly would give mean(w) * mean(L),
    # far off, as L grows steeply with t here.
    sched, T = ddpm.make_schedule(1000), 1000

    def model(xt, t):  # a fixed guess per t: the error then grows steeply with t
        return (4 * t / T).float().view(-1, 1, 1, 1).expand_as(xt)

    x0 = torch.zeros(200_000, 1, 1, 1)  # x0 = 0: the eps target is then eps itself
    got = ddpm.diffusion_loss(model, x0, sched, "eps", "minsnr",
                              torch.Generator().manual_seed(0)).item()
    t = torch.arange(1, T + 1)
    expected = (ddpm.timestep_weights(sched, "eps") * ((4 * t / T) ** 2 + 1)).mean()
    assert got == pytest.approx(expected.item(), rel=0.02)


def test_plain_weighting_draws_every_noise_level_from_1_to_T_alike():
    sched, seen = ddpm.make_schedule(50), []

    def model(xt, t):
        seen.append(t)
        return torch.zeros_like(xt)
    ddpm.diffusion_loss(model, torch.zeros(50_000, 1, 1, 1), sched, "eps", "plain",
                        torch.Generator().manual_seed(0))
    counts = torch.bincount(torch.cat(seen), minlength=52)
    assert counts[0] == 0 and counts[51] == 0  # t = 0 is the clean image itself: never drawn
    assert counts[1:51].min() > 0.8 * 1000 and counts[1:51].max() < 1.2 * 1000


def test_timestep_embedding_pairs_sin_and_cos():
    emb = ddpm.timestep_embedding(torch.tensor([0, 1, 17, 999]), 16)
    assert torch.allclose(emb[:, :8] ** 2 + emb[:, 8:] ** 2, torch.ones(4, 8), atol=1e-6)
    assert torch.equal(emb[0, :8], torch.zeros(8))  # sin(0) = 0: the first half is the sines


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (2, 8, 12)])
def test_unet_keeps_the_image_shape(shape):
    net = ddpm.UNet(8, shape)
    assert net(torch.randn(2, *shape), torch.tensor([1, 999])).shape == (2, *shape)
    assert net.image_shape == shape


@pytest.mark.parametrize("shape", [(1, 30, 28), (3, 32, 30), (1, 2, 2)])
def test_a_size_the_unet_cannot_take_is_a_value_error_naming_the_rule(shape):
    with pytest.raises(ValueError, match="divisible by 4"):
        ddpm.UNet(8, shape)


# --- training: the moving average ---------------------------------------------------------------
@FAST
@given(decay=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_the_moving_average_moves_toward_the_weights_by_one_minus_decay(decay, seed):
    torch.manual_seed(seed)
    ema, model = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.clone() for p in ema.parameters()]
    weights = [p.clone() for p in model.parameters()]
    ddpm.ema_update(ema, model, decay)
    for e, b, w, p in zip(ema.parameters(), before, weights, model.parameters()):
        assert torch.allclose(e, decay * b + (1 - decay) * w, atol=1e-6)
        assert torch.equal(p, w)  # the trained weights are left alone


def test_training_averages_from_the_trained_weights_on_not_the_random_start(data, monkeypatch):
    decays = []
    real = ddpm.ema_update
    monkeypatch.setattr(ddpm, "ema_update", lambda e, m, d: (decays.append(d), real(e, m, d)))
    cfg = ddpm.Config(steps=40, batch_size=8, channels=8)
    torch.manual_seed(0)
    model = ddpm.UNet(8)
    start = [p.clone() for p in model.parameters()]
    extra = ddpm.train(model, cfg, data, torch.device("cpu"), ddpm.make_schedule(100))
    assert len(decays) == 40 and decays[0] <= 0.1  # the first average is mostly step 1's
    assert all(b >= a for a, b in zip(decays, decays[1:])) and max(decays) <= ddpm.EMA
    assert math.isfinite(extra["final_loss"]) and extra["train_seconds"] > 0
    assert any(not torch.equal(p, q) for p, q in zip(start, model.parameters()))


# --- sampling ------------------------------------------------------------------------------------
class PerfectDenoiser(torch.nn.Module):
    """For a data set of one image x*, the true noise is known exactly:
    eps = (x_t - sqrt(abar) x*) / sqrt(1 - abar)."""

    def __init__(self, image, sched, target):
        super().__init__()
        self.image, self.sched, self.target = image, sched, target
        self.image_shape = tuple(image.shape[1:])

    def forward(self, x, t):
        ab = ddpm.at(self.sched, "abar", t)
        eps = (x - ab.sqrt() * self.image) / (1 - ab).sqrt()
        return ddpm.training_target(self.image.expand_as(x), eps, x, t, self.sched, self.target)


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("target", ddpm.TARGETS)
@pytest.mark.parametrize("steps, eta", [(50, 1.0), (10, 0.0), (10, 1.0)])  # 50 of 50: DDPM
def test_perfect_predictor_for_one_image_returns_that_image(steps, eta, target, clip, data):
    sched = ddpm.make_schedule(50)
    image = ddpm.to_model_space(data.x_train[:1])
    x = ddpm.ddim_sample(PerfectDenoiser(image, sched, target), 3, sched, target, steps, "cpu",
                         torch.Generator().manual_seed(0), eta=eta, clip=clip)
    assert torch.allclose(x, image.expand(3, -1, -1, -1), atol=1e-3)


@FAST
@given(t=st.integers(1, 1000), err=st.floats(-0.1, 0.1).filter(lambda e: abs(e) > 1e-3))
def test_an_eps_error_is_magnified_in_x0_and_clipping_bounds_it(t, err, data):
    # Section 4's arithmetic: an error e in predicted eps is an error e * sqrt((1 - abar) / abar)
    # in the clean image it implies; clipping keeps that image in [-1, 1] and the pair consistent.
    sched = ddpm.make_schedule(1000)
    image = ddpm.to_model_space(data.x_train[:1])
    perfect = PerfectDenoiser(image, sched, "eps")
    model = lambda x, tt: perfect(x, tt) + err  # noqa: E731  (the same error at every pixel)
    noise = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(t))
    xt = ddpm.q_sample(image, torch.tensor([t]), noise, sched)
    ab = sched["abar"][t].item()
    _, x0 = ddpm.denoise(model, xt, t, sched, "eps", clip=False)
    gain = math.sqrt((1 - ab) / ab)
    assert torch.allclose(x0 - image, torch.full_like(image, -err * gain), rtol=1e-3,
                          atol=1e-4 * max(1.0, gain))
    eps_c, x0_c = ddpm.denoise(model, xt, t, sched, "eps", clip=True)
    assert x0_c.min() >= -1 and x0_c.max() <= 1
    assert torch.allclose(math.sqrt(ab) * x0_c + math.sqrt(1 - ab) * eps_c, xt, atol=1e-4)


def test_deterministic_ddim_draws_nothing_after_the_starting_noise(data):
    sched = ddpm.make_schedule(50)
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
        assert all(a > b for a, b in zip(ts, ts[1:])) and len(ts) == min(steps, 1000)


def test_samples_shape_range_and_seed_determinism():
    torch.manual_seed(0)
    model, sched = ddpm.UNet(8).eval(), ddpm.make_schedule(20)
    a, b, c = (ddpm.generate(model, ddpm.Config(sample_steps=3, seed=s), 4, sched, "cpu")
               for s in (5, 5, 6))
    assert a.shape == (4, 1, 28, 28) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


# --- the contract, the experiments and bad inputs ------------------------------------------------
TINY = ["--steps", "2", "--batch-size", "8", "--samples", "12", "--channels", "8",
        "--sample-steps", "2"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny run of the lesson, shared: (its folder, what it printed)."""
    out, said = tmp_path_factory.mktemp("03") / "run", io.StringIO()
    with contextlib.redirect_stdout(said):
        ddpm.main(TINY + ["--out", str(out)])
    return out, said.getvalue()


def test_main_writes_the_contract_and_loads_back(tiny, tmp_path):
    run, said = tiny
    m = check_outputs(run, 12)
    assert m["evaluations_per_image"] == 2 and check_gif(run / "generation.gif") >= 2
    assert f"files are in {run}" in said and "network evaluations per image: 2" in said
    out = tmp_path / "again"
    ddpm.main(["--load", str(run / "model.pt"), "--samples", "12", "--sample-steps", "2",
               "--out", str(out), "--no-gif"])
    assert (out / "model.pt").read_bytes() == (run / "model.pt").read_bytes()
    assert not (out / "generation.gif").exists()
    m2 = check_outputs(out, 12)
    assert m2["fd"] == pytest.approx(m["fd"]), "the loaded model samples what the trained one did"
    assert m2["train_seconds"] == m["train_seconds"] and m2["config"]["channels"] == 8


def test_experiments_run_on_a_tiny_model(tiny, tmp_path, data, capsys):
    model = str(tiny[0] / "model.pt")
    scale = importlib.import_module("03_scale_down")
    for flag in ("--load", "--steps"):  # it trains and loads nothing: no such flags to ignore
        one_line_error(scale.main, [flag, "1", "--out", str(tmp_path / "s")], capsys,
                       f"unrecognized arguments: {flag}")
    scale.main(["--out", str(tmp_path / "s")])
    last = strict_json(tmp_path / "s" / "metrics.json")["rows"][-1]
    assert last["plain_std"] > 3 and abs(last["scaled_std"] - 1) < 0.05  # as section 1 says
    assert (tmp_path / "s" / "forward_process.png").exists()
    steps = importlib.import_module("03_sampling_steps")
    steps.main(["--load", model, "--samples", "6", "--sweep", "1,3", "--out", str(tmp_path / "p")])
    rows = strict_json(tmp_path / "p" / "metrics.json")["sweep"]
    assert [r["evaluations"] for r in rows] == [1, 3] and rows[0]["n"] == 6
    targets = importlib.import_module("03_targets")
    targets.main(TINY + ["--targets", "x0,xprev,eps+minsnr", "--sample-steps", "3",
                         "--load", model, "--out", str(tmp_path / "t")])
    m = strict_json(tmp_path / "t" / "metrics.json")
    assert [(r["target"], r["weighting"]) for r in m["targets"]] == [
        ("x0", "plain"), ("xprev", "plain"), ("eps", "minsnr")]
    assert m["unclipped"]["n"] == 12 and (tmp_path / "t" / "estimates.png").exists()


@pytest.mark.parametrize("argv, says", [
    (["--steps", "-1"], "--steps"), (["--batch-size", "0"], "--batch-size"),
    (["--sample-steps", "0"], "--sample-steps"), (["--eta", "1.5"], "--eta"),
    (["--target", "noise"], "invalid choice"), (["--channels", "12"], "multiple of 8"),
    (["--channels", "0"], "min 8"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "tpu"], "device"),
])
def test_bad_numbers_and_devices(argv, says, capsys, tmp_path):
    one_line_error(ddpm.main, argv + ["--out", str(tmp_path)], capsys, says)


def test_bad_data_and_checkpoints(tiny, capsys, tmp_path):
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip")
    np.savez(tmp_path / "shape.npz", x=np.zeros((120, 30, 30), np.uint8), y=np.arange(120) % 2)
    np.savez(tmp_path / "rgb.npz", x=np.zeros((120, 28, 28, 3), np.uint8), y=np.arange(120) % 2)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    for argv, says in [(["--data", "none.npz"], "not found"),
                       (["--data", "corrupt.npz"], "not an .npz"),
                       (["--data", "shape.npz"], "divisible by 4"),  # before any training
                       (["--load", "bad.pt"], "checkpoint"),
                       (["--load", "missing.pt"], "not found"),
                       (["--load", str(tiny[0] / "model.pt"), "--data", "rgb.npz"], "--data")]:
        argv = [a if a.startswith("-") or "/" in a else str(tmp_path / a) for a in argv]
        one_line_error(ddpm.main, argv + ["--out", str(tmp_path / "out")], capsys, says)
        assert not (tmp_path / "out").exists()
