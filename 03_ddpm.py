"""03_ddpm.py: from removing pixels to adding noise, a diffusion model (DDPM) on a laptop CPU.

Chapters 01 and 02 removed pixels and trained a network to put them back, a few per step,
and the more spread out the removed pixels, the better each step went. Adding a little
Gaussian noise to *every* pixel is the most spread-out removal there is. A diffusion model
(DDPM, Ho et al. 2020) trains one network to undo the noise at any level; generating starts
from pure noise and denoises step by step: the same form as pixel-by-pixel generation, but
tens of network evaluations instead of one per pixel (784 for a digit, millions for a
photo). Three choices make it work: scale down before adding noise (section 1), what the
network predicts (section 4), and fewer, larger sampling steps (section 6).

Before: 02_patch_autoregression.py. After: 04_cfg.py (steering it with a label).

Run:  python 03_ddpm.py           (train, sample 1,000 digits, judge them; runs/03_ddpm/)
      python 03_ddpm.py --load runs/03_ddpm/model.pt --sample-steps 1000   (DDPM's way)
      python experiments/03_targets.py      (each target of section 4, at one budget)

generation.gif shows noise turning into digits above the network's guess of the clean image.
"""
from __future__ import annotations

import common  # first: from here on Ctrl-C prints one line, even while torch loads

import copy
import dataclasses
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SCRIPT = "03_ddpm"
IMAGE_SHAPE = (1, 28, 28)  # MNIST: (channels, height, width)
TARGETS = ["eps", "x0", "xprev"]
T = 1000  # the number of small noising steps from a digit to pure noise
EMA = 0.995  # the decay of the weights' moving average that samples (section 5)


# %% 0. Settings
@dataclasses.dataclass
class Config(common.BaseConfig):
    steps: int = common.flag(2600, "training steps (optimizer updates)", min=1)
    target: str = common.flag("eps", "what the network predicts (section 4)", choices=TARGETS)
    weighting: str = common.flag("minsnr", "loss weights (section 4)", choices=["plain", "minsnr"])
    channels: int = common.flag(16, "UNet width at 28x28 (8 GroupNorms)", min=8, multiple_of=8)
    lr: float = common.flag(4e-3, "peak learning rate", min=1e-6)
    sample_steps: int = common.flag(25, "network evaluations per image (1000: DDPM)", min=1)
    eta: float = common.flag(1.0, "DDIM noise: 0 none, 1 as much as DDPM's", min=0.0, max=1.0)
    clip: bool = common.flag(True, "clip each step's clean-image estimate to [-1, 1]")


# %% 1. From removing pixels to adding noise: why scale down first
# Noise is the most spread-out way to remove information: it touches every pixel a little,
# so a noisy value tells you roughly, not exactly, what the pixel was. Just adding it,
# x <- x + sqrt(beta) * eps, makes the variance grow by beta a step, forever (var(x_0) +
# t beta after t steps): there would be no fixed place to start generating from. Scaling
# down first, x <- sqrt(1 - beta) * x + sqrt(beta) * eps, keeps a variance of 1 at 1 and
# shrinks the image's part each step, so every image ends at N(0, I) (measured by
# experiments/03_scale_down.py: README, claims table).


# %% 2. The noise schedule and the closed form q(x_t | x_0)
# beta_t is the noise added at step t, alpha_t = 1 - beta_t the scale-down and
# abar_t = prod_{s<=t} alpha_s what survives of x_0 after t steps. t Gaussian
# steps make one Gaussian, so training jumps straight to any t, cheaply:
#     x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps,   eps ~ N(0, I)
def make_schedule(T: int) -> dict:
    """Float64 tensors indexed 0..T (index 0 = the clean image, abar_0 = 1). The cosine
    schedule (Nichol & Dhariwal 2021): abar follows cos^2 from 1 to 0, so the signal fades
    evenly instead of being mostly gone halfway through, as with DDPM's linear betas."""
    s = 0.008  # small offset so beta_1 is not vanishingly small
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)  # the cap keeps the last step finite
    one = torch.ones(1, dtype=torch.float64)
    return {"T": T, "betas": torch.cat([0 * one, betas]), "alphas": torch.cat([one, 1 - betas]),
            "abar": torch.cat([one, torch.cumprod(1 - betas, 0)])}


def at(sched: dict, key: str, t: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """sched[key] at timesteps t (B,), as (B, 1, 1, 1) on t's device."""
    return sched[key].to(t.device)[t].to(dtype).view(-1, 1, 1, 1)


def q_sample(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, sched: dict) -> torch.Tensor:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, for a batch of timesteps t (B,)."""
    abar = at(sched, "abar", t)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


def posterior_coefficients(sched: dict, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c0, ct), (B,1,1,1), of where one step back lies if x_0 were known: q(x_{t-1} | x_t, x_0)
    has the mean c0 x_0 + ct x_t, c0 = sqrt(abar_{t-1}) beta_t / (1 - abar_t), ct = sqrt(alpha_t)
    (1 - abar_{t-1}) / (1 - abar_t). In float64: near t = 1, 1 - abar_t needs its digits."""
    ab, ab_prev = at(sched, "abar", t, torch.float64), at(sched, "abar", t - 1, torch.float64)
    b, a = at(sched, "betas", t, torch.float64), at(sched, "alphas", t, torch.float64)
    c0, ct = ab_prev.sqrt() * b / (1 - ab), a.sqrt() * (1 - ab_prev) / (1 - ab)
    return c0.float(), ct.float()


# %% 3. The network: a small UNet that sees x_t and t
# The denoiser must look at the whole image (strokes are long) yet output a value per pixel.
# A UNet does that: a downsampling path summarises ever larger regions, an upsampling path
# brings the resolution back, and skip connections hand each up level the detail its down
# level saw. Every block also gets the timestep: how much to remove depends on how noisy the
# input is. Width C at 28x28, 2C at 14x14, 4C at 7x7, where a 3x3 convolution sees most of
# the digit (no attention needed). The 28x28 blocks skip GroupNorm, which cost a tenth of a
# CPU step there; the blocks below keep training stable.
def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t (as in transformers' positions): (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, conv; add the time embedding; again; plus a shortcut.
    (B, Cin, H, W) -> (B, Cout, H, W). norm=False leaves out both GroupNorms."""

    def __init__(self, c_in: int, c_out: int, t_dim: int, norm: bool = True):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, c_in) if norm else nn.Identity()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)  # the timestep enters as a per-channel shift
        self.norm2 = nn.GroupNorm(8, c_out) if norm else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class UNet(nn.Module):
    """x_t (B, C, H, W) and t (B,) -> (B, C, H, W), for height and width divisible by 4."""
    def __init__(self, c: int = 16, image_shape: tuple = IMAGE_SHAPE):
        super().__init__()
        channels, height, width = self.image_shape = tuple(image_shape)
        if height % 4 or width % 4:
            raise ValueError(f"UNet needs height and width divisible by 4, not {height}x{width}")
        t_dim, self.c = 4 * c, c
        self.time_mlp = nn.Sequential(nn.Linear(c, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.inp = nn.Conv2d(channels, c, 3, padding=1)              # (B,1,28,28) -> (B,C,28,28)
        self.down1 = ResBlock(c, c, t_dim, norm=False)                 # 28x28
        self.pool1 = nn.Conv2d(c, c, 3, stride=2, padding=1)          # -> (B,C,14,14)
        self.down2 = ResBlock(c, 2 * c, t_dim)                         # -> (B,2C,14,14)
        self.pool2 = nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1)  # -> (B,2C,7,7)
        self.down3 = ResBlock(2 * c, 4 * c, t_dim)                     # -> (B,4C,7,7)
        self.mid = ResBlock(4 * c, 4 * c, t_dim)
        self.up3 = ResBlock(8 * c, 2 * c, t_dim)                       # (B,8C,7,7) -> (B,2C,7,7)
        self.up2 = ResBlock(4 * c, c, t_dim)                           # (B,4C,14,14) -> (B,C,14,14)
        self.up1 = ResBlock(2 * c, c, t_dim, norm=False)               # (B,2C,28,28) -> (B,C,28,28)
        self.out = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(),
                                 nn.Conv2d(c, channels, 3, padding=1))  # -> (B,1,28,28)
        nn.init.zeros_(self.out[-1].weight)  # start by predicting 0: a calm first step
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # channels-last memory (B, H, W, C) lets the CPU's convolution kernels
        # vectorise over channels: faster on a laptop, harmless on a GPU
        x = x.contiguous(memory_format=torch.channels_last)
        temb = self.time_mlp(timestep_embedding(t, self.c))
        h1 = self.down1(self.inp(x), temb)                    # (B,C,28,28)
        h2 = self.down2(self.pool1(h1), temb)                 # (B,2C,14,14)
        h3 = self.down3(self.pool2(h2), temb)                 # (B,4C,7,7)
        h = self.mid(h3, temb)
        h = self.up3(torch.cat([h, h3], 1), temb)             # (B,2C,7,7)
        h = F.interpolate(h, scale_factor=2, mode="nearest")  # -> (B,2C,14,14)
        h = self.up2(torch.cat([h, h2], 1), temb)             # (B,C,14,14)
        h = F.interpolate(h, scale_factor=2, mode="nearest")  # -> (B,C,28,28)
        h = self.up1(torch.cat([h, h1], 1), temb)
        return self.out(h)


# %% 4. What should the network predict?
# The talk walks three answers, each fixing the one before:
#   xprev: the slightly less noisy image, the mean of x_{t-1}: undo one step;
#   x0:    the clean image, then noise it again to t-1: the network need not learn to draw
#          noisy images, only digits;
#   eps:   the noise. Early in sampling (t near T) the network cannot tell which digit the
#          noise hides, so its clean-image guess is a blurry average of them all (chapter
#          01's blur), while the noise, averaged, is still valid noise: the uncertainty
#          moves to the late steps.
# The maths adds: given x_t each target is a linear function of x_0 and x_t, so at the
# optimum all give the same estimate E[x_0 | x_t], blurry near T whichever is predicted
# (generation.gif shows it sharpen). What differs is the weighting: an error e in x_0 is
# e*sqrt(SNR) in eps and e*c0 in xprev (SNR = abar / (1 - abar)), so eps stresses the
# low-noise steps that draw fine strokes, x0 the noisy ones that lay out the digit, and
# xprev ignores those (c0 ~ 0); and sampling divides an eps error by sqrt(SNR) (20,000x at
# t = T). min-SNR weighting (Hang et al. 2023) caps each level's x0 weight at 5, and
# training draws t in proportion to it (no batch share wasted on little weight). Measured at
# one small budget, one run each: x0 beat plain eps, and min-SNR eps matched x0 (README,
# claims table); the course predicts the noise, as DDPM and most later work do.
def predictions(out, xt, t, sched: dict, target: str):
    """The network output at timesteps t (B,) -> (eps_hat, x0_hat), each (B, 1, 28, 28)."""
    abar = at(sched, "abar", t)
    s, r = abar.sqrt(), (1 - abar).sqrt()
    if target == "eps":
        return out, (xt - r * out) / s           # x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)
    if target == "x0":
        return (xt - s * out) / r, out           # eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)
    c0, ct = posterior_coefficients(sched, t)   # xprev: the mean c0 x0 + ct x_t
    x0 = (out - ct * xt) / c0
    return (xt - s * x0) / r, x0


def training_target(x0, eps, xt, t, sched: dict, target: str) -> torch.Tensor:
    if target == "xprev":
        c0, ct = posterior_coefficients(sched, t)
        return c0 * x0 + ct * xt
    return {"eps": eps, "x0": x0}[target]


def timestep_weights(sched: dict, target: str) -> torch.Tensor:
    """min-SNR's weight on the target's squared error, for t = 1..T: (T,). That error is the
    x0 one times SNR (eps), 1 (x0) or c0^2 (xprev), so min(SNR, 5) is divided by it."""
    t = torch.arange(1, sched["T"] + 1)
    snr = (at(sched, "abar", t) / (1 - at(sched, "abar", t))).flatten()
    c0 = posterior_coefficients(sched, t)[0].flatten()
    return snr.clamp(max=5.0) / {"eps": snr, "x0": torch.ones_like(snr), "xprev": c0**2}[target]


def diffusion_loss(model, x0, sched: dict, target: str, weighting: str = "plain",
                   gen=None) -> torch.Tensor:
    """One training loss: random t per image, noise it in closed form, regress the target."""
    if weighting == "plain":  # every t equally often
        t, scale = torch.randint(1, sched["T"] + 1, (len(x0),), generator=gen), 1.0
    else:  # min-SNR: each t drawn as often as its weight says
        weight = timestep_weights(sched, target)
        t = torch.multinomial(weight, len(x0), replacement=True, generator=gen) + 1
        # t drawn by weight already weighs each t's error; times the mean weight, the loss
        # is on average the weighted loss over uniform t: mean_t(w L) = mean(w) E_{t~w}[L].
        scale = weight.mean().item()
    t = t.to(x0.device)
    eps = torch.randn(x0.shape, generator=gen).to(x0.device)
    xt = q_sample(x0, t, eps, sched)
    out, goal = model(xt, t).float(), training_target(x0, eps, xt, t, sched, target)
    return F.mse_loss(out, goal) * scale


# %% 5. Training: one random noise level per image
# A causal network (chapter 07, which can be read right after 02) trains every generation
# step of an image in one pass; here step t's input is a whole noisy image, different for
# every t, so each image of a batch gets one random t. Batches of 64: at this budget, more
# and noisier updates beat fewer, cleaner.
@torch.no_grad()
def ema_update(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * weights: the last few hundred steps' average."""
    for pe, p in zip(ema_model.parameters(), model.parameters()):
        pe.lerp_(p, 1 - decay)


def learning_rate(step: int, total: int, peak: float, warmup: int = 100) -> float:
    """Linear warm-up (Adam's early steps are noisy), then a cosine decay to zero (the last
    steps polish instead of jitter)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * ((step - warmup) / max(1, total - warmup))))


def to_model_space(x: torch.Tensor) -> torch.Tensor:
    return x * 2 - 1  # [0, 1] -> [-1, 1]: data centred like the noise it is mixed with


def train_step(model, ema_model, opt, x0, sched: dict, target: str, weighting: str = "plain",
               decay: float = EMA, gen=None) -> float:
    """One optimizer update on a batch x0 (B, C, H, W) in [-1, 1], then the average's; -> loss."""
    loss = diffusion_loss(model, x0, sched, target, weighting, gen)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # a rare huge gradient cannot wreck it
    opt.step()
    ema_update(ema_model, model, decay)
    return loss.item()


def train(model: nn.Module, cfg: Config, data: common.Data, device, sched: dict) -> dict:
    """Train `model`; it ends holding the moving average of its weights, which samples."""
    gen = torch.Generator().manual_seed(cfg.seed)
    ema_model = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    stream = common.batches(to_model_space(data.x_train).to(device), data.y_train,
                            cfg.batch_size, gen)
    progress, losses = common.Progress(cfg.steps), []
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = learning_rate(step, cfg.steps, cfg.lr)
        with common.autocast(device):  # ramp decay up: early on, the random start would dominate
            losses.append(train_step(model, ema_model, opt, next(stream)[0], sched, cfg.target,
                                     cfg.weighting, min(EMA, (1 + step) / (10 + step)), gen))
        progress.update(step + 1, loss=float(np.mean(losses[-50:])))
    model.load_state_dict(ema_model.state_dict())
    return {"train_seconds": progress.elapsed(), "final_loss": float(np.mean(losses[-100:]))}


# %% 6. Sampling: DDPM's T small steps, or DDIM's few large ones
# DDPM samples as it was trained: at each t = T, ..., 1, estimate x_0 and draw x_{t-1} from
# q(x_{t-1} | x_t, x0_hat) (section 2): T network evaluations. DDIM (Song et al. 2021) jumps
# from x_t straight to an earlier x_s instead:
#     x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z
#     sigma = eta * sqrt((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s))
# keeping the predicted noise direction and adding sigma of fresh noise. With eta = 1 and
# s = t - 1 this is exactly DDPM's step (sigma^2 is its variance), so --sample-steps 1000 is
# DDPM. eta = 0 is deterministic; eta = 1 lets later steps correct an imperfect network's
# mistakes, clearly better at 25 steps.
@torch.no_grad()
def denoise(model, xt, t: int, sched: dict, target: str, clip: bool = True):
    tt = torch.full((xt.shape[0],), t, device=xt.device, dtype=torch.long)
    out = model(xt, tt).float()
    eps, x0 = predictions(out, xt, tt, sched, target)
    if clip:  # digits live in [-1, 1]: keep early, wild guesses (eps's: section 4) there
        abar, x0 = at(sched, "abar", tt), x0.clamp(-1, 1)
        eps = (xt - abar.sqrt() * x0) / (1 - abar).sqrt()  # the noise consistent with it
    return eps, x0


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """Evenly spaced timesteps from T down to 1, `steps` of them (at most T)."""
    return sorted({int(round(v)) for v in np.linspace(T, 1, min(steps, T))}, reverse=True)


@torch.no_grad()
def ddim_sample(model, n: int, sched: dict, target: str, steps: int, device, gen=None,
                eta: float = 0.0, clip: bool = True, trace: list | None = None) -> torch.Tensor:
    """DDIM from pure noise, (n, *model.image_shape); `trace` gets (t, x_t, x0_hat) of 8 a step."""
    x = torch.randn((n, *model.image_shape), generator=gen).to(device)
    ts = ddim_timesteps(sched["T"], steps)
    for i, t in enumerate(ts):
        eps, x0 = denoise(model, x, t, sched, target, clip)
        if trace is not None:
            trace.append((t, x[:8].cpu(), x0[:8].cpu()))
        ab = sched["abar"][t].item()
        ab_next = sched["abar"][ts[i + 1]].item() if i + 1 < len(ts) else 1.0
        sigma = eta * math.sqrt((1 - ab_next) / (1 - ab) * (1 - ab / ab_next))
        noise = torch.randn(x.shape, generator=gen).to(device) if sigma > 0 else 0.0
        keep = math.sqrt(max(1 - ab_next - sigma**2, 0.0))  # how much of eps_hat stays
        x = math.sqrt(ab_next) * x0 + keep * eps + sigma * noise
    return x


def generate(model, cfg: Config, n: int, sched: dict, device, trace: list | None = None,
             batch: int = 250) -> torch.Tensor:
    """n samples in [0, 1], (n, C, H, W), seeded by cfg.seed; `trace` follows the first
    batch. 250 at a time: on a CPU, faster per image than 500, whose activations spill."""
    gen, out = torch.Generator().manual_seed(cfg.seed + 1), []
    progress = common.Progress(n, "sampling")
    for i in range(0, n, batch):
        x = ddim_sample(model, min(batch, n - i), sched, cfg.target, cfg.sample_steps, device,
                        gen, cfg.eta, cfg.clip, trace if i == 0 else None)
        out.append(((x.clamp(-1, 1) + 1) / 2).cpu())
        progress.update(i + len(x))
    return torch.cat(out)


# %% 7. Putting it together
def to_pixels(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(-1, 1) + 1) / 2  # model space -> [0, 1], (B, C, H, W) kept


def save_animation(out, trace: list, n: int = 8) -> None:
    """generation.gif: x_t (top row) and the clean-image estimate (bottom), every DDIM step."""
    frames = [torch.cat([to_pixels(x[:n]), to_pixels(x0[:n])]) for _, x, x0 in trace]
    captions = [f"DDIM step {i + 1} of {len(trace)}: t = {t}" for i, (t, _, _) in enumerate(trace)]
    common.save_images(out / "generation.gif", frames, min(n, len(frames[0]) // 2),
                       ["x_t", "x0_hat"], captions)


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__)
    with common.run_folder(cfg, SCRIPT) as out:
        common.seed_everything(cfg.seed)
        device, data = common.pick_device(cfg.device), common.load_data(cfg.data)
        judge = common.load_judge(data)
        cfg, model, extra = common.load_or_train(  # a UNet for the data's (C, H, W)
            cfg, out, SCRIPT, ("target", "weighting", "channels"),
            lambda c: UNet(c.channels, data.x_train.shape[1:]).to(
                device, memory_format=torch.channels_last),
            lambda m: train(m, cfg, data, device, make_schedule(T)), data)
        start, trace = time.perf_counter(), []
        with common.autocast(device):  # mixed precision on a GPU
            x = generate(model, cfg, cfg.samples, make_schedule(T), device, trace)
        metrics = {**extra, "sample_seconds": time.perf_counter() - start, "device": str(device),
                   "evaluations_per_image": len(trace), **(judge.evaluate(x) if judge else {}),
                   "config": dataclasses.asdict(cfg)}
        common.save_images(out / "samples.png", x[:100], 10, titles=f"{SCRIPT}: {cfg.target}")
        common.save_samples(out, x)
        if cfg.gif and trace:
            save_animation(out, trace)
        common.save_metrics(out, metrics)
    common.print_summary(metrics, [("evaluations_per_image", "network evaluations per image")])


# %% Run it (in a notebook too; common.run_main(main, ["--steps", "300"]) changes settings)
if __name__ == "__main__":
    common.run_main(main)

# %% Exercises (answers: docs/exercises.md; patches for the code changes: docs/solutions/)
# The --load commands need the default run first.
# 1. Predict, then run with 5, then 10 sampling steps instead of 25: how far does FD move?
#    Would 100 steps buy much more than 25?
#      python 03_ddpm.py --load runs/03_ddpm/model.pt --sample-steps 5
# 2. Predict, then run without clipping the clean-image estimate (section 6): a small change
#    in FD, or a collapse? generation.gif's bottom row shows why.
#      python 03_ddpm.py --load runs/03_ddpm/model.pt --no-clip
# 3. Predict, then run: eta 0 adds no fresh noise at any DDIM step. Better or worse digits
#    at 25 steps?
#      python 03_ddpm.py --load runs/03_ddpm/model.pt --eta 0
# 4. Change the code: give make_schedule DDPM's linear betas, 1e-4 to 0.02 over T. Plot abar_t
#    of both schedules first: where is the signal gone? Then train, and compare FD
#    (a solution: docs/solutions/03_linear_schedule.patch).
# 5. Explain: trained alike, which of section 4's targets would you expect to draw the worst
#    digits? Which noise levels does the xprev loss neglect, and what do those steps decide?
#    (README's claims table holds the measurement.)
