"""03_ddpm.py: from removing pixels to adding noise, a diffusion model (DDPM) on a laptop CPU.

Chapters 01 and 02 generated a digit by removing information (pixels) and
training a network to put it back, a few pixels per step: the more spread out
the removed pixels, the better each step went. Adding a little Gaussian noise
to *every* pixel is the most spread-out removal there is. A diffusion model
(DDPM, Ho et al. 2020) trains one network to undo the noise at any noise
level; generating is then: start from pure noise, and denoise step by step.
Three choices make it work, each in its own section:

1. scale the image down before adding noise, so that repeated noising ends at
   the same place, N(0, I), whatever the image (section 1);
2. decide what the network predicts: the slightly less noisy image, the clean
   image, or the noise (section 4: the talk's argument, the maths, a measurement);
3. sample with fewer, larger steps (DDIM) once the network is trained (section 6).

Before: 02_patch_autoregression.py. After: 04_cfg.py (steering it with a label).

Run:  python 03_ddpm.py                    (train, sample 1,000 digits, judge them)
      python 03_ddpm.py --load runs/03_ddpm/model.pt --sweep-steps 5,10,25,50,100
      python 03_ddpm.py --load runs/03_ddpm/model.pt --no-clip    (why eps needs clipping)
      python scripts/compare_targets.py      (every target of section 4 at one budget)

Writes samples.png, samples.npz, metrics.json, model.pt, generation.gif (noise turning
into digits beside the network's running guess of the clean image), noising.png and
forward_process.png into runs/03_ddpm/.
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
TARGETS = ["eps", "x0", "v", "xprev"]


# %% 0. Settings
@dataclasses.dataclass
class Config(common.BaseConfig):
    steps: int = common.flag(2600, "training steps (optimizer updates)", min=1)
    batch_size: int = common.flag(64, "images per training step (section 5)", min=1)
    samples: int = common.flag(1000, "how many samples to generate and evaluate", min=2)
    schedule: str = common.flag("cosine", "noise schedule", choices=["cosine", "linear"])
    timesteps: int = common.flag(1000, "T, the number of small noising steps", min=2)
    target: str = common.flag("eps", "what the network predicts (section 4)", choices=TARGETS)
    weighting: str = common.flag("minsnr", "loss weighting over noise levels (section 4)",
                                 choices=["plain", "minsnr"])
    channels: int = common.flag(16, "UNet width at full resolution; a multiple of 8, as "
                                "GroupNorm splits channels into 8 groups", min=8, multiple_of=8)
    lr: float = common.flag(4e-3, "peak learning rate", min=1e-6)
    ema: float = common.flag(0.995, "decay of the weights' moving average used for sampling",
                             min=0.0, max=1.0)
    sampler: str = common.flag("ddim", "ddpm: ancestral, all T steps; ddim: --sample-steps",
                               choices=["ddim", "ddpm"])
    sample_steps: int = common.flag(25, "network evaluations per image (DDIM)", min=1)
    eta: float = common.flag(1.0, "DDIM noise: 0 = deterministic, 1 = fresh noise as in DDPM",
                             min=0.0, max=1.0)
    clip: bool = common.flag(True, "clip each step's clean-image estimate to [-1, 1] "
                             "(section 6); --no-clip shows why eps needs it")
    sweep_steps: str = common.flag("", "e.g. 5,10,25,50,100: FD against DDIM step count")
    gif: bool = common.flag(True, "write generation.gif (--no-gif skips it)")


# %% 1. From removing pixels to adding noise: why scale down first
# Noise is the most spread-out way to remove information: it touches every
# pixel a little. But if we just keep adding noise, x <- x + sqrt(beta) * eps,
# the variance grows by beta each step and never settles: after t steps it is
# var(x_0) + t * beta. There would be no fixed distribution to start
# generating from. Scaling down first, x <- sqrt(1 - beta) * x + sqrt(beta) * eps,
# keeps the variance at 1 if it was 1 (since (1 - beta) * 1 + beta = 1) and
# shrinks the image's contribution by sqrt(1 - beta) each step, so after many
# steps every image ends at N(0, I).
def noising_demo(x0: torch.Tensor, beta: float = 0.02, steps: int = 1000, gen=None) -> dict:
    """Iterate both noising rules from the same images; return the spread (std) along the way."""
    plain, scaled = x0.clone(), x0.clone()
    rows = []
    for t in range(1, steps + 1):
        eps = torch.randn(x0.shape, generator=gen)
        plain = plain + math.sqrt(beta) * eps                          # variance grows by beta
        scaled = math.sqrt(1 - beta) * scaled + math.sqrt(beta) * eps  # scale down, then add noise
        if t in (1, 10, 100, 1000) or t == steps:
            # How much of the image is left: correlation between x_t and x_0 over all pixels.
            corr = torch.corrcoef(torch.stack([scaled.flatten(), x0.flatten()]))[0, 1].item()
            rows.append({"t": t, "plain_std": plain.std().item(), "scaled_std": scaled.std().item(),
                         "scaled_corr_with_x0": corr})
    return {"beta": beta, "rows": rows}


# %% 2. The noise schedule and the closed form q(x_t | x_0)
# beta_t is the noise added at step t; alpha_t = 1 - beta_t is the scale-down;
# abar_t = prod_{s<=t} alpha_s is what survives of x_0 after t steps.
# Composing t Gaussian steps gives one Gaussian, so we can jump straight to any t:
#     x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps,   eps ~ N(0, I)
# That is what makes training cheap: no need to run t noising steps.
def make_schedule(kind: str, T: int) -> dict:
    """Return float64 tensors indexed 0..T (index 0 = clean image, abar_0 = 1)."""
    if kind == "linear":
        # Ho et al.'s 1e-4 .. 0.02 for T = 1000, rescaled so that other T end equally noisy.
        scale = 1000 / T
        betas = torch.linspace(scale * 1e-4, min(scale * 0.02, 0.999), T, dtype=torch.float64)
    elif kind == "cosine":
        # Nichol & Dhariwal 2021: abar follows cos^2 from 1 to 0, so the signal fades evenly
        # instead of being mostly gone halfway through, as with the linear schedule.
        s = 0.008  # small offset so beta_1 is not vanishingly small
        t = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)  # the cap keeps the last step finite
    else:
        raise common.UserError(f"unknown schedule '{kind}'")
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
    """(c0, ct) of the posterior mean  mean = c0 * x_0 + ct * x_t  (see posterior), (B,1,1,1).
    Computed in float64: near t = 1, 1 - abar_t is too small for float32's digits."""
    ab, ab_prev = at(sched, "abar", t, torch.float64), at(sched, "abar", t - 1, torch.float64)
    b, a = at(sched, "betas", t, torch.float64), at(sched, "alphas", t, torch.float64)
    c0, ct = ab_prev.sqrt() * b / (1 - ab), a.sqrt() * (1 - ab_prev) / (1 - ab)
    return c0.float(), ct.float()


def posterior(x0: torch.Tensor, xt: torch.Tensor, t: int, sched: dict):
    """q(x_{t-1} | x_t, x_0) = N(mean, var): where one step back lies, if x_0 were known.

    mean = sqrt(abar_{t-1}) beta_t / (1 - abar_t) * x_0
           + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) * x_t
    var  = beta_t (1 - abar_{t-1}) / (1 - abar_t)
    """
    a, ab, ab_prev, b = (sched[k][i].item() for k, i in
                         (("alphas", t), ("abar", t), ("abar", t - 1), ("betas", t)))
    mean = (math.sqrt(ab_prev) * b / (1 - ab)) * x0 + (math.sqrt(a) * (1 - ab_prev) / (1 - ab)) * xt
    return mean, b * (1 - ab_prev) / (1 - ab)


# %% 3. The network: a small UNet that sees x_t and t
# The denoiser must look at the whole image (strokes are long) yet output a
# value per pixel. A UNet does that: a downsampling path summarises ever larger
# regions, an upsampling path brings the resolution back, and skip connections
# hand each up level the detail its down level saw. Every block also receives
# the timestep, because how much to remove depends on how noisy the input is.
# Sizes: width C at 28x28, 2C at 14x14, 4C at 7x7. No attention layers: at 7x7
# a 3x3 convolution already sees most of the digit. The two blocks at 28x28 have
# no GroupNorm: on the largest activations it cost about a tenth of a training
# step on a CPU, and the blocks below, which keep theirs, keep training stable.
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
    def __init__(self, c: int = 16):
        super().__init__()
        t_dim = 4 * c
        self.c = c
        self.time_mlp = nn.Sequential(nn.Linear(c, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.inp = nn.Conv2d(1, c, 3, padding=1)                      # (B,1,28,28) -> (B,C,28,28)
        self.down1 = ResBlock(c, c, t_dim, norm=False)                 # 28x28
        self.pool1 = nn.Conv2d(c, c, 3, stride=2, padding=1)          # -> (B,C,14,14)
        self.down2 = ResBlock(c, 2 * c, t_dim)                         # -> (B,2C,14,14)
        self.pool2 = nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1)  # -> (B,2C,7,7)
        self.down3 = ResBlock(2 * c, 4 * c, t_dim)                     # -> (B,4C,7,7)
        self.mid = ResBlock(4 * c, 4 * c, t_dim)
        self.up3 = ResBlock(8 * c, 2 * c, t_dim)                       # (B,8C,7,7) -> (B,2C,7,7)
        self.up2 = ResBlock(4 * c, c, t_dim)                           # (B,4C,14,14) -> (B,C,14,14)
        self.up1 = ResBlock(2 * c, c, t_dim, norm=False)               # (B,2C,28,28) -> (B,C,28,28)
        self.out = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, 1, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # start by predicting 0: a calm first step
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # channels-last memory (B, H, W, C) lets the CPU's convolution kernels
        # vectorise over channels: faster on a laptop, harmless on a GPU.
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
        return self.out(h)                                    # (B,1,28,28)


# %% 4. What should the network predict?
# The talk walks three answers, each fixing the one before:
#   xprev: the slightly less noisy image, the mean of x_{t-1}: undo one step;
#   x0:    better, the clean image, then noise it again to t-1: the network
#          need not learn to draw noisy images, only digits;
#   eps:   but early in sampling (t near T) the clean-image guess is a
#          blurry mess, so predict the noise that was added instead.
# (v = sqrt(abar) eps - sqrt(1 - abar) x0, Salimans & Ho 2022, is a fourth.)
# What the maths says. Given x_t, each target is a fixed linear function of x_0
# and x_t, so at the optimum every one of them yields the same clean-image
# estimate, the average E[x_0 | x_t] of all digits the noise could hide: just
# as blurry at t near T whichever is predicted (generate.gif shows that guess
# sharpening as t falls). Two things do differ:
#   1. the weighting. An error e in x_0 is an error e*sqrt(SNR) in eps,
#      e*sqrt(SNR + 1) in v and e*c0 in xprev (SNR = abar / (1 - abar), c0 from
#      posterior_coefficients), so each plain squared error is the x0 loss
#      times that factor squared (x0_error_scale): eps stresses the low-noise
#      steps that draw fine strokes, x0 the high-noise ones that lay out the
#      digit, and xprev almost ignores the high-noise ones (c0 ~ 0 there);
#   2. how an imperfect network's error grows when sampling turns it into x_0:
#      divided by sqrt(SNR) for eps (20,000x at t = T) and by c0 for xprev.
# min-SNR weighting (Hang et al. 2023) caps each noise level's x0 weight at
# gamma = 5 whatever the target; for eps it turns down the low-noise steps.
# Rather than multiply each image's error by its weight, training draws t in
# proportion to it: the same loss on average, and no share of the batch spent
# on images whose error would count for little.
# Measured here at one budget for all of them: README, claims table. x0 won,
# and the course still predicts the noise, as DDPM and most later work do;
# with min-SNR weighting (the default) eps comes close to the plain loss's
# quality in about half the training compute (docs/experiments.md).
def predictions(out, xt, t, sched: dict, target: str):
    """The network output at timesteps t (B,) -> (eps_hat, x0_hat), each (B, 1, 28, 28)."""
    abar = at(sched, "abar", t)
    s, r = abar.sqrt(), (1 - abar).sqrt()
    if target == "eps":
        return out, (xt - r * out) / s           # x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)
    if target == "x0":
        return (xt - s * out) / r, out           # eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)
    if target == "v":
        return r * xt + s * out, s * xt - r * out
    if target == "xprev":
        c0, ct = posterior_coefficients(sched, t)
        x0 = (out - ct * xt) / c0                # mean = c0 x0 + ct x_t, solved for x0
        return (xt - s * x0) / r, x0
    raise common.UserError(f"unknown target '{target}'")


def training_target(x0, eps, xt, t, sched: dict, target: str) -> torch.Tensor:
    if target == "xprev":
        c0, ct = posterior_coefficients(sched, t)
        return c0 * x0 + ct * xt
    abar = at(sched, "abar", t)
    return {"eps": eps, "x0": x0, "v": abar.sqrt() * eps - (1 - abar).sqrt() * x0}[target]


def x0_error_scale(t, sched: dict, target: str) -> torch.Tensor:
    """k with (error in target)^2 = k * (error in x0)^2, per image: (B,)."""
    snr = (at(sched, "abar", t) / (1 - at(sched, "abar", t))).flatten()
    if target == "xprev":
        return posterior_coefficients(sched, t)[0].flatten() ** 2
    return {"eps": snr, "x0": torch.ones_like(snr), "v": snr + 1}[target]


def timestep_weights(sched: dict, target: str) -> torch.Tensor:
    """min-SNR's weight (gamma = 5) on the target's squared error, for t = 1..T: (T,)."""
    t = torch.arange(1, sched["T"] + 1)
    snr = (at(sched, "abar", t) / (1 - at(sched, "abar", t))).flatten()
    return snr.clamp(max=5.0) / x0_error_scale(t, sched, target)


def diffusion_loss(model, x0, sched: dict, target: str, weighting: str = "plain",
                   gen=None) -> torch.Tensor:
    """One training loss: random t per image, noise it in closed form, regress the target."""
    B = x0.shape[0]
    if weighting == "plain":  # every t equally often
        t, scale = torch.randint(1, sched["T"] + 1, (B,), generator=gen), 1.0
    else:  # min-SNR: each t drawn as often as its weight says (03, section 4)
        weight = timestep_weights(sched, target)
        t = torch.multinomial(weight, B, replacement=True, generator=gen) + 1
        # t drawn by weight already weighs each t's error; times the mean weight, the loss
        # is on average the weighted loss over uniform t: mean_t(w L) = mean(w) E_{t~w}[L].
        scale = weight.mean().item()
    t = t.to(x0.device)
    eps = torch.randn(x0.shape, generator=gen).to(x0.device)
    xt = q_sample(x0, t, eps, sched)
    out, goal = model(xt, t).float(), training_target(x0, eps, xt, t, sched, target)
    return F.mse_loss(out, goal) * scale


# %% 5. Training: one random noise level per image
# Chapter 07 trains every generation step of an image in one pass, because a
# causal network's step i only looks at steps before it. Diffusion cannot do
# that: step t's input is a whole noisy image, different for every t. So each
# image in the batch gets one random t, and over many batches every t is seen.
# Batches of 64 rather than 128: on a CPU a step's cost shrinks with the batch,
# and at this budget more, noisier updates (with a higher learning rate) bought
# more quality than fewer, cleaner ones (docs/experiments.md).
@torch.no_grad()
def ema_update(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    # ema <- decay * ema + (1 - decay) * weights: averages out the last few hundred
    # steps' noise in the weights, which gives visibly cleaner samples.
    for pe, p in zip(ema_model.parameters(), model.parameters()):
        pe.lerp_(p, 1 - decay)


def learning_rate(step: int, total: int, peak: float, warmup: int = 100) -> float:
    """Linear warm-up (Adam's early steps are noisy), then cosine decay to zero.
    Ending at a small rate matters on a short budget: the last steps polish instead of jitter."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def to_model_space(x: torch.Tensor) -> torch.Tensor:
    return x * 2 - 1  # [0, 1] -> [-1, 1]: data centred like the noise it is mixed with


def train(cfg: Config, data: common.Data, device: torch.device, sched: dict):
    """Returns (the EMA model used for sampling, seconds, mean loss of the last 100 steps)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    model = UNet(cfg.channels).to(device, memory_format=torch.channels_last)
    ema_model = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    batches = common.batches(to_model_space(data.x_train).to(device), data.y_train,
                             cfg.batch_size, gen)
    progress, losses = common.Progress(cfg.steps), []
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = learning_rate(step, cfg.steps, cfg.lr)
        x0, _ = next(batches)
        with common.autocast(device):
            loss = diffusion_loss(model, x0, sched, cfg.target, cfg.weighting, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # a rare huge gradient cannot wreck it
        opt.step()
        # Early on the average would be mostly the random initial weights; ramp the decay up.
        ema_update(ema_model, model, min(cfg.ema, (1 + step) / (10 + step)))
        losses.append(loss.item())
        progress.update(step + 1, loss=float(np.mean(losses[-50:])))
    return ema_model.eval(), progress.elapsed(), float(np.mean(losses[-100:]))


# %% 6. Sampling: ancestral DDPM over all T steps, and DDIM with fewer steps
# Ancestral (DDPM): at each t, estimate x_0, and draw x_{t-1} from the
# posterior q(x_{t-1} | x_t, x0_hat) of section 2: T network evaluations per image.
# DDIM (Song et al. 2021) reuses the same trained network on a coarser grid of
# timesteps, jumping from x_t straight to an earlier x_s:
#     x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z
# i.e. keep the predicted noise direction, move to the lower noise level, and
# add sigma of fresh noise. eta scales sigma: eta = 0 is deterministic DDIM;
# eta = 1 puts back as much noise as the ancestral sampler would over that
# stride. The fresh noise lets later steps correct an imperfect network's
# mistakes instead of carrying them along, so on a short training budget
# eta = 1 measured clearly better (docs/experiments.md).
@torch.no_grad()
def denoise(model, xt, t: int, sched: dict, target: str, clip: bool = True):
    tt = torch.full((xt.shape[0],), t, device=xt.device, dtype=torch.long)
    with common.autocast(xt.device):
        out = model(xt, tt).float()
    eps, x0 = predictions(out, xt, tt, sched, target)
    if clip:
        # Digits live in [-1, 1]; clipping the estimate keeps early, wild guesses in range
        # (for eps they are very wild: section 4).
        abar = at(sched, "abar", tt)
        x0 = x0.clamp(-1, 1)
        eps = (xt - abar.sqrt() * x0) / (1 - abar).sqrt()  # the noise consistent with it
    return eps, x0


@torch.no_grad()
def ddpm_sample(model, n: int, sched: dict, target: str, device, gen=None,
                clip: bool = True) -> torch.Tensor:
    x = torch.randn((n, 1, 28, 28), generator=gen).to(device)
    for t in range(sched["T"], 0, -1):
        _, x0 = denoise(model, x, t, sched, target, clip)
        mean, var = posterior(x0, x, t, sched)
        noise = torch.randn(x.shape, generator=gen).to(device) if t > 1 else 0.0
        x = mean + math.sqrt(var) * noise
    return x


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """Evenly spaced timesteps from T down to 1, `steps` of them (at most T)."""
    steps = min(steps, T)
    return sorted({int(round(v)) for v in np.linspace(T, 1, steps)}, reverse=True)


@torch.no_grad()
def ddim_sample(model, n: int, sched: dict, target: str, steps: int, device, gen=None,
                eta: float = 0.0, clip: bool = True, trace: list | None = None) -> torch.Tensor:
    """DDIM from pure noise; `trace` (a list), if given, receives (t, x_t, x0_hat) of the
    first 8 images every step."""
    x = torch.randn((n, 1, 28, 28), generator=gen).to(device)
    ts = ddim_timesteps(sched["T"], steps)
    for i, t in enumerate(ts):
        eps, x0 = denoise(model, x, t, sched, target, clip)
        if trace is not None:
            trace.append((t, x[:8].cpu(), x0[:8].cpu()))
        ab = sched["abar"][t].item()
        ab_next = sched["abar"][ts[i + 1]].item() if i + 1 < len(ts) else 1.0
        sigma = eta * math.sqrt((1 - ab_next) / (1 - ab) * (1 - ab / ab_next))
        noise = torch.randn(x.shape, generator=gen).to(device) if sigma > 0 else 0.0
        x = math.sqrt(ab_next) * x0 + math.sqrt(max(1 - ab_next - sigma**2, 0.0)) * eps \
            + sigma * noise
    return x


def generate(model, cfg: Config, n: int, sched: dict, device, sample_steps: int | None = None,
             trace: list | None = None, batch: int = 250) -> torch.Tensor:
    """n samples in [0, 1], (n, 1, 28, 28), 250 at a time; seeded by cfg.seed. Batches this
    size bound memory and, on a CPU, measured faster per image than batches of 500, whose
    activations no longer fit the cache. `trace` follows the first batch (DDIM only)."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    out = []
    for i in range(0, n, batch):
        m = min(batch, n - i)
        if cfg.sampler == "ddpm":
            x = ddpm_sample(model, m, sched, cfg.target, device, gen, cfg.clip)
        else:
            x = ddim_sample(model, m, sched, cfg.target, sample_steps or cfg.sample_steps, device,
                            gen, cfg.eta, cfg.clip, trace if i == 0 else None)
        out.append(((x.clamp(-1, 1) + 1) / 2).cpu())
    return torch.cat(out)


# %% 7. Reporting: the noising pictures, the step sweep, the animation
def to_pixels(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) / 2)[:, 0]  # model space (B,1,28,28) -> (B,28,28) in [0, 1]


def save_noising_pictures(out, data: common.Data, sched: dict, seed: int) -> dict:
    """noising.png (section 1's two rules) and forward_process.png (one digit at several t)."""
    demo = noising_demo(to_model_space(data.x_train[:64]), gen=torch.Generator().manual_seed(seed))
    ts = [r["t"] for r in demo["rows"]]
    common.save_curves(out / "noising.png", [
        ("x + sqrt(beta) eps", ts, [r["plain_std"] for r in demo["rows"]]),
        ("sqrt(1 - beta) x + sqrt(beta) eps", ts, [r["scaled_std"] for r in demo["rows"]])],
        "noising steps (beta = 0.02)", "spread (std) of pixel values")
    ts = [0] + [sched["T"] * k // 8 for k in (1, 2, 4, 6, 8)]
    eps = torch.randn((1, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    x0 = to_model_space(data.x_train[:1])
    frames = torch.cat([to_pixels(q_sample(x0, torch.tensor([t]), eps, sched)) for t in ts])
    common.save_rows(out / "forward_process.png", [("", frames)], [f"t={t}" for t in ts])
    return demo


def run_sweep(model, cfg: Config, sched, device, judge, steps: list[int], out) -> list[dict]:
    """FD against the number of DDIM steps, from the same model (sweep.png)."""
    rows = []
    for s in steps:
        start = time.perf_counter()
        r = judge.evaluate(generate(model, dataclasses.replace(cfg, sampler="ddim"), cfg.samples,
                                    sched, device, sample_steps=s))
        rows.append({"evaluations": len(ddim_timesteps(cfg.timesteps, s)),
                     "seconds": time.perf_counter() - start,
                     **{k: r[k] for k in ("n", "fd", "fd_floor", "fd_floor_n", "fd_ratio",
                                          "confidence", "coverage")}})
        print(f"{rows[-1]['evaluations']} evaluations per image: " + common.describe(r))
    if rows:
        common.save_curves(out / "sweep.png", [("DDIM", [r["evaluations"] for r in rows],
                                                [r["fd"] for r in rows])],
                           "network evaluations per image", f"FD (N={cfg.samples})",
                           rows[0]["fd_floor"])
    return rows


def save_animation(out, trace: list, n: int = 8) -> None:
    """generation.gif: x_t (top row) and the clean-image estimate (bottom), every DDIM step."""
    frames = [torch.cat([to_pixels(x[:n]), to_pixels(x0[:n])]) for _, x, x0 in trace]
    captions = [f"DDIM step {i + 1} of {len(trace)}: t = {t}" for i, (t, _, _) in enumerate(trace)]
    common.save_animation(out / "generation.gif", frames, captions, n,
                          row_labels=["x_t", "x0_hat"], fps=4)


# %% 8. Putting it together
SUMMARY = ["train_seconds", "sample_seconds", "evaluations_per_image", "parameters", "n", "fd",
           "fd_floor", "fd_ratio", "score", "confidence", "coverage", "memorised"]


def load_or_train(cfg: Config, data, device, out) -> tuple[nn.Module, dict, float]:
    """The model (a checkpoint's, or trained now), its schedule, and its training seconds."""
    ckpt = common.load_checkpoint(cfg.load, SCRIPT) if cfg.load else None
    if ckpt:  # these define the model: the checkpoint's, whatever the flags say
        for key in ("schedule", "timesteps", "target", "weighting", "channels"):
            setattr(cfg, key, ckpt["config"][key])
    sched = make_schedule(cfg.schedule, cfg.timesteps)
    if not ckpt:
        model, seconds, _ = train(cfg, data, device, sched)
        common.save_checkpoint(out / "model.pt", SCRIPT, cfg, model.state_dict(),
                               {"train_seconds": seconds})
        return model, sched, seconds
    model = UNet(cfg.channels).to(device, memory_format=torch.channels_last).eval()
    common.load_state(model, ckpt["state"], cfg.load)
    common.copy_checkpoint(cfg.load, out)
    return model, sched, ckpt["extra"]["train_seconds"]


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__)
    sweep = common.parse_list(cfg.sweep_steps, int, "sweep-steps") if cfg.sweep_steps else []
    if any(s < 1 for s in sweep):
        raise common.UserError("--sweep-steps must be positive integers")
    with common.run_folder(cfg, __file__) as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = common.Judge.load(data)
        model, sched, train_seconds = load_or_train(cfg, data, device, out)
        demo = save_noising_pictures(out, data, sched, cfg.seed)
        start, trace = time.perf_counter(), []
        x = generate(model, cfg, cfg.samples, sched, device, trace=trace)
        sample_seconds = time.perf_counter() - start
        result = judge.evaluate(x)
        print(common.describe(result))
        evaluations = cfg.timesteps if cfg.sampler == "ddpm" else len(trace)
        metrics = {"train_seconds": train_seconds, "sample_seconds": sample_seconds,
                   "evaluations_per_image": evaluations, "device": str(device),
                   "parameters": sum(p.numel() for p in model.parameters()), **result,
                   "sweep": run_sweep(model, cfg, sched, device, judge, sweep, out),
                   "noising_demo": demo, "config": dataclasses.asdict(cfg)}
        common.save_grid(out / "samples.png", x[:100], nrow=10, title=f"{SCRIPT}: {cfg.target}")
        common.save_samples(out, x)
        if cfg.gif and trace:
            save_animation(out, trace)
        common.save_metrics(out, metrics)
    common.print_summary(metrics, SUMMARY)


if __name__ == "__main__":
    common.run_main(main)
