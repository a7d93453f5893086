"""04_cfg.py: conditioning on a label, and classifier-free guidance.

Chapter 03's denoiser makes *a* digit; we cannot say which. Give it the prompt
(here the digit's label) as one more input and it learns p(x | label). Two
more tricks make it *follow* the prompt (Ho & Salimans 2022):

1. During training, hide the label some of the time (replace it by a learned
   "no label" token). The same network then also learns the unconditional
   model p(x).
2. At every sampling step run it on both, with and without the label, and
   push the noise prediction away from the unconditional one:
       eps = eps_u + s * (eps_c - eps_u)
   s = 0 is the unconditional model, s = 1 the plain conditional one, s > 1
   exaggerates whatever makes the image look like *this* digit rather than
   any digit. The price, measured in the sweep: less variety within a class.

This file is 03_ddpm.py with the changes marked "new in 04", so
`diff 03_ddpm.py 04_cfg.py` shows the lesson. Before: 03_ddpm.py.
After: 08_latent_diffusion.py (the same, in a VAE's latent space).

Run:  python 04_cfg.py                     (train, sample at the default scale)
      python 04_cfg.py --load runs/04_cfg/model.pt --guidance 0,1,2,4
      python 04_cfg.py --load runs/04_cfg/model.pt --digit 7

Writes samples.png and samples.npz (with labels y), guidance_grid.png,
generation.gif (every digit denoising together), metrics.json and model.pt
into runs/04_cfg/.
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

SCRIPT = "04_cfg"
TARGETS = ["eps", "x0", "v", "xprev"]
NULL = 10  # new in 04: index of the learned "no label" token (labels are 0..9)


# %% 0. Settings
@dataclasses.dataclass
class Config(common.BaseConfig):  # new in 04: guidance flags, fewer steps; no sweeps of 03's
    # Fewer steps than 03: a guided sampling step costs two network calls, and the whole run
    # keeps to about 03's time.
    steps: int = common.flag(2200, "training steps (optimizer updates)", min=1)
    batch_size: int = common.flag(64, "images per training step (as 03, section 5 there)",
                                  min=1)
    samples: int = common.flag(1000, "samples per guidance scale (balanced over the digits)",
                               min=2)
    schedule: str = common.flag("cosine", "noise schedule", choices=["cosine", "linear"])
    timesteps: int = common.flag(1000, "T, the number of small noising steps", min=2)
    target: str = common.flag("eps", "what the network predicts (03, section 4)", choices=TARGETS)
    weighting: str = common.flag("minsnr", "loss weighting over noise levels (03, section 4)",
                                 choices=["plain", "minsnr"])
    channels: int = common.flag(16, "UNet width at full resolution; a multiple of 8, as "
                                "GroupNorm splits channels into 8 groups", min=8, multiple_of=8)
    lr: float = common.flag(4e-3, "peak learning rate", min=1e-6)
    ema: float = common.flag(0.995, "decay of the weights' moving average used for sampling",
                             min=0.0, max=1.0)
    sample_steps: int = common.flag(25, "DDIM steps; each costs two evaluations when guided",
                                    min=1)
    eta: float = common.flag(1.0, "DDIM noise: 0 = deterministic, 1 = fresh noise as in DDPM",
                             min=0.0, max=1.0)
    clip: bool = common.flag(True, "clip each step's clean-image estimate to [-1, 1]")
    p_uncond: float = common.flag(0.2, "chance of hiding the label during training",
                                  min=0.0, max=1.0)
    guidance: str = common.flag("", "more guidance scales s to measure, --samples each "
                                "(e.g. 0,1,2,4: the trade-off in numbers)")
    # 1.75: at 1.5 the digit asked for came out 99 times in 100 in some runs and not in
    # others; at 1.75 it did in every run (docs/experiments.md). A higher s costs variety
    # and FD (README's guidance sweep).
    default_guidance: float = common.flag(1.75, "the s whose samples go into samples.npz",
                                          min=0.0)
    digit: int = common.flag(-1, "sample only this digit (-1: all ten, balanced)", min=-1, max=9)
    gif: bool = common.flag(True, "write generation.gif (--no-gif skips it)")


# %% 1. The schedule and the closed form q(x_t | x_0), as in 03
# x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps; see 03, sections 1 and 2.
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


# %% 2. The network: 03's UNet, plus a label embedding (new in 04)
# The label enters exactly like the timestep: an embedding vector added to the
# time embedding, which every ResBlock turns into a per-channel shift. Row
# NULL = 10 of the embedding table is the "no label" token. It is *learned*,
# like the ten digit rows: not a zero vector (a zero input is a real input the
# network could confuse with a digit's) and not a sign trick on the label.
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
        self.label_emb = nn.Embedding(11, t_dim)  # new in 04: rows 0..9 the digits, 10 "no label"
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

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        # channels-last memory (B, H, W, C) lets the CPU's convolution kernels
        # vectorise over channels: faster on a laptop, harmless on a GPU.
        x = x.contiguous(memory_format=torch.channels_last)
        temb = self.time_mlp(timestep_embedding(t, self.c))
        temb = temb + self.label_emb(label)  # new in 04: the label joins the timestep
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


# %% 3. What the network predicts, and the loss with label dropout (new in 04)
# The targets and their weighting are 03's (section 4 there). New: with
# probability p_uncond a label is replaced by NULL, so one network learns both
# eps(x_t, t, label) and eps(x_t, t). Guidance needs a good unconditional
# prediction too, and on a budget of a few thousand steps that half needs
# enough examples of its own; Ho & Salimans found 0.1 to 0.2 work about
# equally well, so 0.2.
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


def drop_labels(labels: torch.Tensor, p_uncond: float, gen=None) -> torch.Tensor:  # new in 04
    """Replace each label by NULL with probability p_uncond."""
    drop = torch.rand(labels.shape, generator=gen).to(labels.device) < p_uncond
    return torch.where(drop, torch.full_like(labels, NULL), labels)


def timestep_weights(sched: dict, target: str) -> torch.Tensor:
    """min-SNR's weight (gamma = 5) on the target's squared error, for t = 1..T: (T,)."""
    t = torch.arange(1, sched["T"] + 1)
    snr = (at(sched, "abar", t) / (1 - at(sched, "abar", t))).flatten()
    return snr.clamp(max=5.0) / x0_error_scale(t, sched, target)


def diffusion_loss(model, x0, labels, sched: dict, target: str, weighting: str = "plain",
                   p_uncond: float = 0.2, gen=None) -> torch.Tensor:  # new in 04: labels
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
    labels = drop_labels(labels, p_uncond, gen)  # new in 04
    out, goal = model(xt, t, labels).float(), training_target(x0, eps, xt, t, sched, target)
    return F.mse_loss(out, goal) * scale


# %% 4. Training, as in 03, with the labels passed along
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
    batches = common.batches(to_model_space(data.x_train).to(device), data.y_train.to(device),
                             cfg.batch_size, gen)  # new in 04: the labels, on the device
    progress, losses = common.Progress(cfg.steps), []
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = learning_rate(step, cfg.steps, cfg.lr)
        x0, y = next(batches)
        with common.autocast(device):  # new in 04: labels and p_uncond
            loss = diffusion_loss(model, x0, y, sched, cfg.target, cfg.weighting, cfg.p_uncond, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # a rare huge gradient cannot wreck it
        opt.step()
        # Early on the average would be mostly the random initial weights; ramp the decay up.
        ema_update(ema_model, model, min(cfg.ema, (1 + step) / (10 + step)))
        losses.append(loss.item())
        progress.update(step + 1, loss=float(np.mean(losses[-50:])))
    return ema_model.eval(), progress.elapsed(), float(np.mean(losses[-100:]))


# %% 5. Sampling with guidance (new in 04): 03's DDIM with a guided noise estimate
# eps = eps_u + s * (eps_c - eps_u). Papers and libraries also write
#     eps = (1 + w) * eps_c - w * eps_u
# which is the same formula with s = 1 + w: expand (1 + w) eps_c - w eps_u =
# eps_u + (1 + w)(eps_c - eps_u). So "guidance 0" in the w convention (plain
# conditional) is s = 1 here, and w = 1 is s = 2. This file uses s throughout.
# Both predictions come from one call on a doubled batch, [x_t, x_t] with
# labels [label, NULL]: twice the work of an unguided step, but one call.
# generate() feeds 125 prompts at a time, so that call holds 250 images, the
# batch 03 samples with (faster per image on a CPU than 500).
@torch.no_grad()
def guided_output(model, xt, t, labels, s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(conditional, unconditional) network outputs; one of them is skipped when s is 0 or 1."""
    if s == 1.0:  # purely conditional: the unconditional half would be multiplied by 0
        out = model(xt, t, labels).float()
        return out, out
    if s == 0.0:  # purely unconditional
        out = model(xt, t, torch.full_like(labels, NULL)).float()
        return out, out
    both = model(torch.cat([xt, xt]), torch.cat([t, t]),
                 torch.cat([labels, torch.full_like(labels, NULL)])).float()
    out_c, out_u = both.chunk(2)  # (2B,1,28,28) -> two (B,1,28,28)
    return out_c, out_u


@torch.no_grad()
def denoise(model, xt, t: int, labels, s: float, sched: dict, target: str,
            clip: bool = True):  # new in 04: labels and the guidance scale s
    tt = torch.full((xt.shape[0],), t, device=xt.device, dtype=torch.long)
    with common.autocast(xt.device):
        out_c, out_u = guided_output(model, xt, tt, labels, s)  # new in 04
    eps_c, _ = predictions(out_c, xt, tt, sched, target)  # new in 04: guide the noise estimate
    eps_u, _ = predictions(out_u, xt, tt, sched, target)
    abar = at(sched, "abar", tt)
    eps = eps_u + s * (eps_c - eps_u)
    x0 = (xt - (1 - abar).sqrt() * eps) / abar.sqrt()
    if clip:
        # Digits live in [-1, 1]; clipping the estimate keeps early, wild guesses in range
        # (for eps they are very wild: 03, section 4).
        x0 = x0.clamp(-1, 1)
        eps = (xt - abar.sqrt() * x0) / (1 - abar).sqrt()  # the noise consistent with it
    return eps, x0


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """Evenly spaced timesteps from T down to 1, `steps` of them (at most T)."""
    steps = min(steps, T)
    return sorted({int(round(v)) for v in np.linspace(T, 1, steps)}, reverse=True)


@torch.no_grad()
def ddim_sample(model, labels, s: float, sched: dict, target: str, steps: int, device, gen=None,
                eta: float = 0.0, clip: bool = True, trace: list | None = None) -> torch.Tensor:
    """DDIM from pure noise; `trace` (a list), if given, receives (t, x_t, x0_hat) of the
    first 40 images every step."""  # new in 04: labels and s; 40 traced, four of each digit
    x = torch.randn((len(labels), 1, 28, 28), generator=gen).to(device)
    labels = labels.to(device)  # new in 04
    ts = ddim_timesteps(sched["T"], steps)
    for i, t in enumerate(ts):
        eps, x0 = denoise(model, x, t, labels, s, sched, target, clip)  # new in 04
        if trace is not None:
            trace.append((t, x[:40].cpu(), x0[:40].cpu()))
        ab = sched["abar"][t].item()
        ab_next = sched["abar"][ts[i + 1]].item() if i + 1 < len(ts) else 1.0
        sigma = eta * math.sqrt((1 - ab_next) / (1 - ab) * (1 - ab / ab_next))
        noise = torch.randn(x.shape, generator=gen).to(device) if sigma > 0 else 0.0
        x = math.sqrt(ab_next) * x0 + math.sqrt(max(1 - ab_next - sigma**2, 0.0)) * eps \
            + sigma * noise
    return x


def generate(model, cfg: Config, labels, s: float, sched: dict, device,
             trace: list | None = None, batch: int = 125) -> torch.Tensor:
    """Samples in [0, 1], (n, 1, 28, 28), one per label, 125 at a time (section 5); the same
    starting noise for every s, a fair comparison. `trace` follows the first batch."""
    # new in 04: labels, s, and half 03's batch, as a guided call doubles it
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    out = []
    for i in range(0, len(labels), batch):
        x = ddim_sample(model, labels[i:i + batch], s, sched, cfg.target, cfg.sample_steps,
                        device, gen, cfg.eta, cfg.clip, trace if i == 0 else None)
        out.append(((x.clamp(-1, 1) + 1) / 2).cpu())
    return torch.cat(out)


def balanced_labels(n: int, digit: int = -1) -> torch.Tensor:  # new in 04
    """0,1,...,9,0,1,... (n of them), or n copies of one digit."""
    return torch.full((n,), digit) if digit >= 0 else torch.arange(n) % 10


# %% 6. Measuring the trade-off (new in 04)
# Per guidance scale: does the digit match the prompt (the judge's label
# accuracy), how close is the whole set to real digits (FD), and how varied are
# the samples *within* a prompted class: the mean pixel distance between two
# samples asked for the same digit. At s = 0 the label is ignored, so that
# figure measures the whole set's variety there, not a class's; real held-out
# digits grouped by their true label give the reference value.
def within_class_diversity(x: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean Euclidean pixel distance between pairs of images with the same label."""
    flat = x.reshape(len(x), -1).double()
    values = []
    for c in labels.unique():
        f = flat[labels == c]
        if len(f) > 1:
            d = torch.cdist(f, f)
            values.append(d.sum().item() / (len(f) * (len(f) - 1)))  # mean over pairs i != j
    return float(np.mean(values)) if values else float("nan")


def guidance_sweep(model, cfg: Config, scales, labels, sched, device, judge):
    """Every scale s on the same labels: a row of figures each, and the default scale's
    (samples, result, seconds, trace)."""
    rows, default = [], None
    for s in scales:
        trace, start = ([] if s == cfg.default_guidance else None), time.perf_counter()
        x = generate(model, cfg, labels, s, sched, device, trace)
        seconds, r = time.perf_counter() - start, judge.evaluate(x, labels)
        rows.append({"guidance": s, "seconds": seconds,
                     "diversity": within_class_diversity(x[:, 0], labels),
                     **{k: r[k] for k in ("label_accuracy", "n", "fd", "fd_floor", "fd_ratio",
                                          "confidence", "coverage")}})
        print(f"s={s:g}: diversity {rows[-1]['diversity']:.2f} | " + common.describe(r))
        if s == cfg.default_guidance:
            default = (x, r, seconds, trace)
    return rows, default


def guidance_grid(model, cfg: Config, sched, device, scales=(0, 1, 2, 4)) -> dict:
    """Three samples of every digit at each scale, from the same starting noise, so that
    a column differs from the next only by s: {s: (30, 1, 28, 28)}, digit by digit."""
    labels = torch.arange(30) // 3  # 0,0,0,1,1,1,...,9,9,9
    return {s: generate(model, cfg, labels, s, sched, device)
            for s in sorted(set(scales) | {cfg.default_guidance})}


def save_pictures(out, grids: dict, trace: list) -> None:
    """guidance_grid.png (a row per digit, three samples per scale) and generation.gif."""
    if grids:
        rows = [(f"digit {d}", torch.cat([g[3 * d:3 * d + 3] for g in grids.values()]))
                for d in range(10)]
        titles = [f"s={s:g}" if k == 1 else "" for s in grids for k in range(3)]
        common.save_rows(out / "guidance_grid.png", rows, titles,
                         "rows: the prompted digit; columns: three samples at each guidance scale")
    if trace and len(trace[0][1]) == 40:
        # Two per digit: noisy frames compress badly, and four made a 2 MB file.
        order = [d + 10 * k for d in range(10) for k in range(2)]  # a row of two per digit
        frames = [((x[order].clamp(-1, 1) + 1) / 2)[:, 0] for _, x, _ in trace]
        captions = [f"DDIM step {i + 1} of {len(trace)}: t = {t}"
                    for i, (t, _, _) in enumerate(trace)]
        common.save_animation(out / "generation.gif", frames, captions, 2,
                              [f"{d}" for d in range(10)], fps=4)


# %% 7. Putting it together
SUMMARY = ["train_seconds", "sample_seconds", "guidance", "n", "label_accuracy", "fd", "fd_floor",
           "fd_ratio", "confidence", "coverage", "memorised"]


def main(argv=None):  # new in 04: the guidance sweep instead of 03's sweeps
    cfg = common.parse_config(Config, argv, __doc__)
    scales = common.parse_list(cfg.guidance, float, "guidance") if cfg.guidance else []
    if any(s < 0 or not math.isfinite(s) for s in scales):
        raise common.UserError("--guidance scales must be finite and non-negative")
    with common.run_folder(cfg, __file__) as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = common.Judge.load(data)
        ckpt = common.load_checkpoint(cfg.load, SCRIPT) if cfg.load else None
        if ckpt:  # these define the model: the checkpoint's, whatever the flags say
            for key in ("schedule", "timesteps", "target", "channels", "weighting"):
                setattr(cfg, key, ckpt["config"].get(key, getattr(cfg, key)))
        sched = make_schedule(cfg.schedule, cfg.timesteps)
        if ckpt:
            model = UNet(cfg.channels).to(device, memory_format=torch.channels_last).eval()
            common.load_state(model, ckpt["state"], cfg.load)
            train_seconds = ckpt["extra"].get("train_seconds", 0.0)
            common.copy_checkpoint(cfg.load, out)
        else:
            model, train_seconds, _ = train(cfg, data, device, sched)
            common.save_checkpoint(out / "model.pt", SCRIPT, cfg, model.state_dict(),
                                   {"train_seconds": train_seconds})
        labels = balanced_labels(cfg.samples, cfg.digit)
        scales = sorted(set(scales) | {cfg.default_guidance})
        rows, (x, result, sample_seconds, trace) = guidance_sweep(
            model, cfg, scales, labels, sched, device, judge)
        grids = guidance_grid(model, cfg, sched, device) if cfg.digit < 0 else {}
        real = within_class_diversity(data.x_held[:cfg.samples, 0], data.y_held[:cfg.samples])
        metrics = {
            "train_seconds": train_seconds,
            "sample_seconds": sample_seconds,
            "guidance": cfg.default_guidance,
            "device": str(device),
            **result,
            "evaluations_per_image": len(trace) * (1 if cfg.default_guidance in (0, 1) else 2),
            "real_diversity": real,
            "sweep": rows,
            "config": dataclasses.asdict(cfg),
        }
        common.save_grid(out / "samples.png", x[:100], nrow=10,
                         title=f"{SCRIPT}: s={cfg.default_guidance:g}")
        common.save_samples(out, x, labels)
        save_pictures(out, grids, trace if cfg.gif else [])
        common.save_metrics(out, metrics)
    common.print_summary(metrics, SUMMARY)


if __name__ == "__main__":
    common.run_main(main)
