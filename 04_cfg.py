"""04_cfg.py: conditioning on a label, and classifier-free guidance.

Chapter 03's denoiser makes *a* digit; we cannot say which. Give it the prompt (here the
digit's label) as one more input and it learns p(x | label). Two more tricks make it *follow*
the prompt (Ho & Salimans 2022):

1. During training, hide the label some of the time (replace it by a learned
   "no label" token): the same network then also learns the unconditional p(x).
2. At every sampling step run it with and without the label, and push the
   prediction away from the unconditional one:  eps = eps_u + s * (eps_c - eps_u).
   s = 0 is the unconditional model, s = 1 the plain conditional one, s > 1
   exaggerates what makes the image *this* digit, at the price of variety.

This file is 03_ddpm.py with its changes marked "new in 04". Beside this docstring, `diff
03_ddpm.py 04_cfg.py` shows those changes and 03's explanations of sections 1, 3 to 6, left
out or replaced here. Before: 03_ddpm.py. After: 08_latent_diffusion.py.

Run:  python 04_cfg.py            (train, sample 1,000 digits at s = 1.75; runs/04_cfg/)
      python 04_cfg.py --load runs/04_cfg/model.pt --digit 7 --guidance 4
      python experiments/04_guidance.py     (the same model at several scales)
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
IMAGE_SHAPE = (1, 28, 28)  # MNIST: (channels, height, width)
CLASSES = 10  # new in 04: MNIST's digits; label CLASSES is the learned "no label" token
TARGETS = ["eps", "x0", "xprev"]
T = 1000  # the number of small noising steps from a digit to pure noise
EMA = 0.995  # the decay of the weights' moving average that samples (section 5)
P_UNCOND = 0.2  # new in 04: how often training hides the label (0.1-0.2 work alike)


# %% 0. Settings
@dataclasses.dataclass
class Config(common.BaseConfig):  # new in 04: fewer steps, as a guided step costs two calls
    steps: int = common.flag(2200, "training steps (optimizer updates)", min=1)
    target: str = common.flag("eps", "what the network predicts (section 4)", choices=TARGETS)
    weighting: str = common.flag("minsnr", "loss weights (section 4)", choices=["plain", "minsnr"])
    channels: int = common.flag(16, "UNet width at 28x28 (8 GroupNorms)", min=8, multiple_of=8)
    lr: float = common.flag(4e-3, "peak learning rate", min=1e-6)
    sample_steps: int = common.flag(25, "network evaluations per image (1000: DDPM)", min=1)
    eta: float = common.flag(1.0, "DDIM noise: 0 none, 1 as much as DDPM's", min=0.0, max=1.0)
    clip: bool = common.flag(True, "clip each step's clean-image estimate to [-1, 1]")
    # new in 04: at s = 1.75 the digit asked for came out 99 times in 100 in every run
    guidance: float = common.flag(1.75, "guidance scale s: 0 ignores the label", min=0.0)
    digit: int = common.flag(-1, "draw only this label (-1: all in turn)", min=-1)


# %% 1. From removing pixels to adding noise: scaled down first, as in 03 (section 1 there)


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


# %% 3. The network: 03's UNet, plus a label embedding (new in 04)
# The label enters like the timestep, as an embedding added to the time embedding. Row
# `classes` is the learned "no label" token: not a zero vector, which could pass for a label.
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
    """x_t (B, C, H, W), t and labels (B,) -> (B, C, H, W); height and width divisible by 4."""
    def __init__(self, c: int = 16, image_shape: tuple = IMAGE_SHAPE, classes: int = CLASSES):
        super().__init__()
        channels, height, width = self.image_shape = tuple(image_shape)
        if height % 4 or width % 4:
            raise ValueError(f"UNet needs height and width divisible by 4, not {height}x{width}")
        t_dim, self.c, self.classes = 4 * c, c, classes  # new in 04: classes
        self.time_mlp = nn.Sequential(nn.Linear(c, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.label_emb = nn.Embedding(classes + 1, t_dim)  # new in 04: a row a class, + "no label"
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

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        # channels-last memory (B, H, W, C) lets the CPU's convolution kernels
        # vectorise over channels: faster on a laptop, harmless on a GPU
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
        return self.out(h)


# %% 4. The loss, as in 03 (section 4 there says why); new: drop_labels hides labels (p(x) too)
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


def drop_labels(labels: torch.Tensor, null, p_uncond: float, gen=None) -> torch.Tensor:
    """Replace each label by `null` (the "no label" one) with probability p_uncond."""
    drop = torch.rand(labels.shape, generator=gen).to(labels.device) < p_uncond
    return torch.where(drop, torch.full_like(labels, null), labels)


def diffusion_loss(model, x0, labels, sched: dict, target: str, weighting: str = "plain",
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
    labels = drop_labels(labels, model.classes, P_UNCOND, gen)  # new in 04: some hidden
    out, goal = model(xt, t, labels).float(), training_target(x0, eps, xt, t, sched, target)
    return F.mse_loss(out, goal) * scale


# %% 5. Training, as in 03, with the labels passed along
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


def train_step(model, ema_model, opt, x0, labels, sched: dict, target: str,
               weighting: str = "plain", decay: float = EMA, gen=None) -> float:  # new in 04
    """One optimizer update on a batch x0 (B, C, H, W) in [-1, 1], then the average's; -> loss."""
    loss = diffusion_loss(model, x0, labels, sched, target, weighting, gen)  # new in 04: labels
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
    stream = common.batches(to_model_space(data.x_train).to(device), data.y_train.to(device),
                            cfg.batch_size, gen)  # new in 04: the labels, on the device
    progress, losses = common.Progress(cfg.steps), []
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = learning_rate(step, cfg.steps, cfg.lr)
        with common.autocast(device):  # ramp decay up: early on, the random start would dominate
            losses.append(train_step(model, ema_model, opt, *next(stream), sched, cfg.target,
                                     cfg.weighting, min(EMA, (1 + step) / (10 + step)), gen))
        progress.update(step + 1, loss=float(np.mean(losses[-50:])))
    model.load_state_dict(ema_model.state_dict())
    return {"train_seconds": progress.elapsed(), "final_loss": float(np.mean(losses[-100:]))}


# %% 6. Sampling with guidance (new in 04): 03's DDIM on a guided prediction
# out = out_u + s * (out_c - out_u) on the raw outputs: every target is affine in the output
# (03, section 4), so this guides the noise and clean-image estimates alike, without dividing
# rounding by sqrt(abar) near t = T. Papers also write eps = (1 + w) eps_c - w eps_u: the same
# with s = 1 + w (their w = 0 is s = 1). One call on [x_t, x_t] with labels [label, no label]
# gives both predictions; 125 prompts a call make 250 images, the batch 03 samples.
@torch.no_grad()
def guided_output(model, xt, t, cond, null, s: float) -> torch.Tensor:
    """Any model(x_t, t, condition)'s guided output; `null`: the condition that says nothing."""
    if s in (0.0, 1.0):  # only the unconditional (s = 0) or conditional (s = 1) half counts
        return model(xt, t, cond if s == 1.0 else null).float()
    both = model(torch.cat([xt, xt]), torch.cat([t, t]), torch.cat([cond, null])).float()
    out_c, out_u = both.chunk(2)  # (2B,C,H,W) -> two (B,C,H,W)
    return out_u + s * (out_c - out_u)


@torch.no_grad()
def denoise(model, xt, t: int, labels, s: float, sched: dict, target: str,
            clip: bool = True):  # new in 04: labels and the guidance scale s
    tt = torch.full((xt.shape[0],), t, device=xt.device, dtype=torch.long)
    out = guided_output(model, xt, tt, labels, torch.full_like(labels, model.classes), s)
    eps, x0 = predictions(out, xt, tt, sched, target)
    if clip:  # digits live in [-1, 1]: keep early, wild guesses (eps's: section 4) there
        abar, x0 = at(sched, "abar", tt), x0.clamp(-1, 1)
        eps = (xt - abar.sqrt() * x0) / (1 - abar).sqrt()  # the noise consistent with it
    return eps, x0


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """Evenly spaced timesteps from T down to 1, `steps` of them (at most T)."""
    return sorted({int(round(v)) for v in np.linspace(T, 1, min(steps, T))}, reverse=True)


@torch.no_grad()
def ddim_sample(model, labels, s: float, sched: dict, target: str, steps: int, device, gen=None,
                eta: float = 0.0, clip: bool = True, trace: list | None = None) -> torch.Tensor:
    """DDIM from pure noise, an image per label; `trace` gets (t, x_t, x0_hat) of 20 a step."""
    x = torch.randn((len(labels), *model.image_shape), generator=gen).to(device)  # new in 04
    labels = labels.to(device)
    ts = ddim_timesteps(sched["T"], steps)
    for i, t in enumerate(ts):
        eps, x0 = denoise(model, x, t, labels, s, sched, target, clip)  # new in 04
        if trace is not None:
            trace.append((t, x[:20].cpu(), x0[:20].cpu()))
        ab = sched["abar"][t].item()
        ab_next = sched["abar"][ts[i + 1]].item() if i + 1 < len(ts) else 1.0
        sigma = eta * math.sqrt((1 - ab_next) / (1 - ab) * (1 - ab / ab_next))
        noise = torch.randn(x.shape, generator=gen).to(device) if sigma > 0 else 0.0
        keep = math.sqrt(max(1 - ab_next - sigma**2, 0.0))  # how much of eps_hat stays
        x = math.sqrt(ab_next) * x0 + keep * eps + sigma * noise
    return x


def generate(model, cfg: Config, labels, sched: dict, device, trace: list | None = None,
             batch: int = 125) -> torch.Tensor:  # new in 04: a label per sample, guided
    """A sample per label in [0, 1], (n, C, H, W), seeded by cfg.seed (the same starting
    noise at every s); `trace` follows the first batch. 125 prompts, 250 images, a call."""
    gen, out, n = torch.Generator().manual_seed(cfg.seed + 1), [], len(labels)
    progress = common.Progress(n, "sampling")
    for i in range(0, n, batch):
        x = ddim_sample(model, labels[i:i + batch], cfg.guidance, sched, cfg.target,
                        cfg.sample_steps, device, gen, cfg.eta, cfg.clip, trace if i == 0 else None)
        out.append(((x.clamp(-1, 1) + 1) / 2).cpu())
        progress.update(i + len(x))
    return torch.cat(out)


# %% 7. Putting it together
def to_pixels(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(-1, 1) + 1) / 2  # model space -> [0, 1], (B, C, H, W) kept


def balanced_labels(n: int, digit: int = -1, classes: int = CLASSES) -> torch.Tensor:  # new in 04
    """0,1,...,classes-1,0,1,... (n of them), or n copies of one label."""
    return torch.full((n,), digit) if digit >= 0 else torch.arange(n) % classes


def save_animation(out, trace: list, labels) -> None:  # new in 04: a row per 10 prompts
    """generation.gif: x_t of the first samples, every DDIM step, a row per 10 labels asked."""
    n = len(trace[0][1])
    rows = ["".join(str(d) for d in labels[i:min(i + 10, n)].tolist()) for i in range(0, n, 10)]
    frames = [to_pixels(x) for _, x, _ in trace]
    captions = [f"DDIM step {i + 1} of {len(trace)}: t = {t}" for i, (t, _, _) in enumerate(trace)]
    common.save_images(out / "generation.gif", frames, min(n, 10), rows, captions)


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__)
    with common.run_folder(cfg, SCRIPT) as out:
        common.seed_everything(cfg.seed)
        device, data = common.pick_device(cfg.device), common.load_data(cfg.data)
        judge = common.load_judge(data)
        if cfg.digit >= data.classes:  # new in 04: labels 0..classes-1
            raise common.UserError(f"--digit must be below the data's {data.classes} labels")
        cfg, model, extra = common.load_or_train(  # new in 04: a UNet for the data's classes
            cfg, out, SCRIPT, ("target", "weighting", "channels"),
            lambda c: UNet(c.channels, data.x_train.shape[1:], data.classes).to(
                device, memory_format=torch.channels_last),
            lambda m: train(m, cfg, data, device, make_schedule(T)), data)
        labels = balanced_labels(cfg.samples, cfg.digit, data.classes)
        start, trace = time.perf_counter(), []
        with common.autocast(device):  # mixed precision on a GPU
            x = generate(model, cfg, labels, make_schedule(T), device, trace)  # new in 04: labels
        metrics = {**extra, "sample_seconds": time.perf_counter() - start,
                   "evaluations_per_image": len(trace) * (1 if cfg.guidance in (0, 1) else 2),
                   "device": str(device), **(judge.evaluate(x, labels) if judge else {}),
                   "guidance": cfg.guidance, "config": dataclasses.asdict(cfg)}
        common.save_images(out / "samples.png", x[:100], 10, titles=f"{SCRIPT}: s={cfg.guidance:g}")
        common.save_samples(out, x, labels)
        if cfg.gif and trace:
            save_animation(out, trace, labels)
        common.save_metrics(out, metrics)
    common.print_summary(metrics, [("evaluations_per_image", "network evaluations per image")])


# %% Run it (in a notebook too; common.run_main(main, ["--steps", "300"]) changes settings)
if __name__ == "__main__":
    common.run_main(main)

# %% Exercises (answers: docs/exercises.md; patches for the code changes: docs/solutions/)
# The --load commands need the default run first.
# 1. Predict, then run at s = 0, then 1, then 4: the label accuracy at each, and which scale
#    gives the best FD (not necessarily the default 1.75).
#      python 04_cfg.py --load runs/04_cfg/model.pt --guidance 0
# 2. Predict, then run: a hundred sevens at s = 4. How alike will they be, against s = 1?
#      python 04_cfg.py --load runs/04_cfg/model.pt --digit 7 --guidance 4 --samples 100
# 3. Change the code: never hide the label in training (P_UNCOND = 0). What does the "no
#    label" row of label_emb learn then, and what does guidance compute with it? Predict,
#    then train (a solution: docs/solutions/04_never_drop_labels.patch).
# 4. Explain: how can guidance raise the label accuracy and make FD worse at the same time?
#    What does FD measure that label accuracy does not?
