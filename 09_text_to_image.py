"""09_text_to_image.py: from a label to a sentence, text-to-image diffusion on a laptop CPU.

Image generators learn from pictures and their alt text: a prompt is a sentence, not one of ten
labels. Here rules write the alt text from the digits themselves, naming stroke width and slant:
"a thick seven, slanted right" (section 1). A tiny text encoder, trained with the denoiser, turns
the words into the vector 04's label was (section 3), and 04's guided diffusion does the rest;
nothing in it is about words, so a sketch can condition it too (section 8). What it takes from
04_cfg.py is marked "from 04", changes "new in 09". Before: 04_cfg.py, 08_latent_diffusion.py.

Run:  python 09_text_to_image.py     (train; 1,000 digits, 90 prompts; runs/09_text_to_image/)
      python 09_text_to_image.py --load runs/09_text_to_image/model.pt --prompt "a thin two"
      python experiments/09_prompt_following.py --load runs/09_text_to_image/model.pt
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

SCRIPT = "09_text_to_image"
IMAGE_SHAPE = (1, 28, 28)  # MNIST: (channels, height, width)
TARGETS = ["eps", "x0"]  # 04's, less xprev (03 measured it worst)
T = 1000  # the number of small noising steps from a digit to pure noise
EMA = 0.995  # the decay of the weights' moving average that samples (04)
P_UNCOND = 0.2  # how often training hides the caption (04)


# %% 0. Settings
@dataclasses.dataclass
class Config(common.BaseConfig):  # new in 09: more steps, a higher scale, and a prompt
    steps: int = common.flag(3000, "training steps (optimizer updates)", min=1)
    target: str = common.flag("eps", "what the network predicts (03, section 4)", choices=TARGETS)
    weighting: str = common.flag("minsnr", "loss weights (03, sec. 4)", choices=["plain", "minsnr"])
    channels: int = common.flag(16, "UNet width at 28x28 (8 GroupNorms)", min=8, multiple_of=8)
    lr: float = common.flag(4e-3, "peak learning rate", min=1e-6)
    sample_steps: int = common.flag(25, "network evaluations per image (1000: DDPM)", min=1)
    eta: float = common.flag(1.0, "DDIM noise: 0 none, 1 as much as DDPM's", min=0.0, max=1.0)
    clip: bool = common.flag(True, "clip each step's clean-image estimate to [-1, 1]")
    guidance: float = common.flag(2.5, "guidance scale s: 0 ignores the caption", min=0.0)
    prompt: str = common.flag("", "draw only this, e.g. 'a thick seven'; scored on its words")


# %% 1. Captions from the data, as alt text comes with web images
# Rules write a digit's alt text, naming what a person would notice in it:
#   caption   = "a" [thickness] digit ["," "slanted" side]
#   digit     = zero | one | ... | nine   the data's label
#   thickness = thin | thick              stroke width below THIN / above THICK pixels
#   side      = left | right              slant below -SLANT / above SLANT
# Only the extremes are named, as people do: "a seven" is a middling, upright seven. A stroke
# of width w and length L has ink w L and an edge 2 L long: w = 2 ink / edge, the edge being
# the image's summed gradient; THIN and THICK cut the bundled digits into thirds. The slant,
# cov(x, y) / var(y) of the ink (y up), is how far it moves right per pixel up; 0.2 is 11
# degrees, a lean plain to see (a tenth of the digits lean left past it, two fifths right).
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
THICKNESS, SIDES = ["thin", "thick"], ["left", "right"]
VOCAB = ["", "a", *DIGITS, *THICKNESS, "slanted", *SIDES]  # every word the captions use
NULL = 0  # VOCAB[NULL] = "": a caption's padding, and all of the empty caption
THIN, THICK, SLANT = 2.25, 2.7, 0.2


def stroke_width(x: torch.Tensor) -> torch.Tensor:
    """Images (N, [1,] H, W) in [0, 1] -> (N,) mean stroke width in pixels: 2 ink / edge."""
    x = x.reshape(-1, *x.shape[-2:]).double()
    a, b, c, d = x[:, :-1, :-1], x[:, :-1, 1:], x[:, 1:, :-1], x[:, 1:, 1:]  # 2x2 cells' corners
    gx, gy = (b - a + d - c) / 2, (c - a + d - b) / 2  # each cell's gradient: mirrors agree
    return (2 * x.sum((1, 2)) / (gx**2 + gy**2).sqrt().sum((1, 2)).clamp(min=1e-6)).float()


def slant(x: torch.Tensor) -> torch.Tensor:
    """Images (N, [1,] H, W) -> (N,) cov(x, y) / var(y) of the ink, y pointing up:
    0 upright, > 0 leaning right, < 0 leaning left."""
    x = x.reshape(-1, *x.shape[-2:]).double()
    ink, cols = x.sum((1, 2)).clamp(min=1e-6), torch.arange(x.shape[2], dtype=torch.float64)
    rows = torch.arange(x.shape[1], dtype=torch.float64)
    dx = cols - ((x.sum(1) * cols).sum(1) / ink)[:, None, None]           # (N, 1, W): rightwards
    dy = ((x.sum(2) * rows).sum(1) / ink)[:, None, None] - rows[:, None]  # (N, H, 1): upwards
    return ((x * dx * dy).sum((1, 2)) / (x * dy**2).sum((1, 2)).clamp(min=1e-6)).float()


def attributes(x: torch.Tensor) -> list[list[str]]:
    """Images -> the attribute words each one's caption names (none, one or two)."""
    widths, slants = stroke_width(x).tolist(), slant(x).tolist()
    thickness = ["thin" if w < THIN else "thick" if w > THICK else "" for w in widths]
    side = ["left" if s < -SLANT else "right" if s > SLANT else "" for s in slants]
    return [[word for word in pair if word] for pair in zip(thickness, side)]


def caption(digit: int, words: list[str]) -> str:
    """A digit and attribute words -> the caption, by the grammar above."""
    thickness = "".join(w + " " for w in THICKNESS if w in words)
    return f"a {thickness}{DIGITS[digit]}" + "".join(f", slanted {w}" for w in SIDES if w in words)


def describe(x: torch.Tensor, labels: torch.Tensor) -> list[str]:
    """Images and their labels -> their captions: the data set's alt text."""
    return [caption(d, words) for d, words in zip(labels.tolist(), attributes(x))]


def parse(text: str) -> tuple[int | None, list[str], list[str]]:
    """A caption or prompt -> (its digit or None, its attribute words, all its words)."""
    words = text.lower().replace(",", " ").split()
    if unknown := [w for w in words if w not in VOCAB[1:]]:
        raise ValueError(f"unknown word '{unknown[0]}'; known: {' '.join(VOCAB[1:])}")
    digits = [DIGITS.index(w) for w in words if w in DIGITS]
    return (digits[0] if digits else None), [w for w in THICKNESS + SIDES if w in words], words


def tokenize(texts: list[str]) -> torch.Tensor:
    """Captions -> tokens (N, L): each word's index in VOCAB, padded with NULL to the longest."""
    rows = [torch.tensor([VOCAB.index(w) for w in parse(text)[2]] or [NULL]) for text in texts]
    return nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=NULL)


# %% 2. The noise schedule and the closed form q(x_t | x_0), as in 03 and 04
# from 04: make_schedule, at and q_sample
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


# %% 3. The network: 04's UNet, with a text encoder where the label embedding was
# Each word gets a learned vector, a caption the sum of its words' vectors (a mean dilutes the
# digit's word in a long caption: measured, it followed the digit less often) through a small
# MLP, so that "thick" and "seven" combine; that joins the timestep as 04's label did. A sum
# forgets word order, harmless here, but "a dog on a cat" is not "a cat on a dog": real
# generators read a caption with a transformer (CLIP's, T5's), the image attending to each word.
class TextEncoder(nn.Module):
    """Tokens (B, L) -> (B, dim): the sum of the words' vectors, then an MLP."""
    def __init__(self, dim: int):
        super().__init__()
        self.words = nn.Embedding(len(VOCAB), dim)  # a vector per word; row NULL: no words
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        real = (tokens != NULL).unsqueeze(-1).float()  # (B, L, 1): 1 for a word, 0 for padding
        total = (self.words(tokens) * real).sum(1)      # (B, dim)
        return self.mlp(torch.where(real.sum(1) > 0, total, self.words.weight[NULL]))


# from 04: timestep_embedding, ResBlock and UNet
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
    """x_t (B, C, H, W), t (B,), tokens (B, L) or a sketch -> (B, C, H, W); H, W divisible by 4."""
    def __init__(self, c: int = 16, image_shape: tuple = IMAGE_SHAPE, sketch: bool = False):
        super().__init__()  # new in 09: words, or a sketch
        channels, height, width = self.image_shape = tuple(image_shape)
        if height % 4 or width % 4:
            raise ValueError(f"UNet needs height and width divisible by 4, not {height}x{width}")
        t_dim, self.c = 4 * c, c
        self.time_mlp = nn.Sequential(nn.Linear(c, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.text = None if sketch else TextEncoder(t_dim)  # new in 09: the caption's vector
        self.inp = nn.Conv2d(channels * (1 + sketch), c, 3, padding=1)  # new in 09: + a sketch
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
        temb = self.time_mlp(timestep_embedding(t, self.c))
        if self.text is not None:  # new in 09: label is a caption's tokens (B, L)
            temb = temb + self.text(label)
        else:  # new in 09: or a sketch (B,1,7,7), blown up beside x_t: (B,2,28,28)
            x = torch.cat([x, F.interpolate(label, scale_factor=4)], 1)
        x = x.contiguous(memory_format=torch.channels_last)
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


# %% 4. The loss, as in 04 (read "conditions" for labels), dropping whole captions
# from 04: predictions, training_target, timestep_weights, drop_labels, diffusion_loss
def predictions(out, xt, t, sched: dict, target: str):  # new in 09: eps or x0, no xprev
    """The network output at timesteps t (B,) -> (eps_hat, x0_hat), each (B, 1, 28, 28)."""
    abar = at(sched, "abar", t)
    s, r = abar.sqrt(), (1 - abar).sqrt()
    if target == "eps":
        return out, (xt - r * out) / s           # x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)
    return (xt - s * out) / r, out               # eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)


def training_target(x0, eps, xt, t, sched: dict, target: str) -> torch.Tensor:  # new in 09
    return {"eps": eps, "x0": x0}[target]  # no xprev


def timestep_weights(sched: dict, target: str) -> torch.Tensor:
    """min-SNR's weight on the target's squared error, for t = 1..T: (T,). That error is the
    x0 one times SNR (eps) or 1 (x0), so min(SNR, 5) is divided by it."""  # new in 09
    t = torch.arange(1, sched["T"] + 1)
    snr = (at(sched, "abar", t) / (1 - at(sched, "abar", t))).flatten()
    return snr.clamp(max=5.0) / {"eps": snr, "x0": torch.ones_like(snr)}[target]  # new in 09


def drop_labels(labels: torch.Tensor, null, p_uncond: float, gen=None) -> torch.Tensor:
    """Replace each label by `null` (the "no label" one) with probability p_uncond."""
    drop = torch.rand(labels.shape[:1], generator=gen).to(labels.device) < p_uncond  # new in 09
    drop = drop.view(-1, *[1] * (labels.dim() - 1))  # new in 09: a whole caption, or sketch
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
    labels = drop_labels(labels, NULL, P_UNCOND, gen)  # new in 09: the empty caption
    out, goal = model(xt, t, labels).float(), training_target(x0, eps, xt, t, sched, target)
    return F.mse_loss(out, goal) * scale


# %% 5. Training, as in 04, on the digits and their captions
# from 04: ema_update, learning_rate, to_model_space, train_step and train
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


def train(model: nn.Module, cfg: Config, data: common.Data, device, sched: dict,
          cond: torch.Tensor) -> dict:  # new in 09: a condition per training digit
    """Train `model`; it ends holding the moving average of its weights, which samples."""
    gen = torch.Generator().manual_seed(cfg.seed)
    ema_model = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    stream = common.batches(to_model_space(data.x_train).to(device), cond.to(device),
                            cfg.batch_size, gen)  # new in 09: the captions' tokens, not labels
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


# %% 6. Sampling with guidance, as in 04: tokens where 04 had labels, the empty caption its null
# from 04: guided_output, denoise, ddim_timesteps, ddim_sample and generate
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
    out = guided_output(model, xt, tt, labels, torch.full_like(labels, NULL), s)  # new in 09
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


# %% 7. Prompt following, measured
# A sample follows its prompt when its caption (section 1; the judge reads the digit) says what
# the prompt said: per word, the share of samples asked for it measured so (real digits: chance).
COMBOS = [["thin"], ["thick"], ["left"], ["right"], [], ["thin", "left"], ["thick", "right"],
          ["thin", "right"], ["thick", "left"]]  # the default prompts' attribute words


def default_prompts(n: int) -> list[str]:
    """n prompts, ten to a row: row r asks for the digits 0..9 with COMBOS[r % 9]."""
    return [caption(i % len(DIGITS), COMBOS[i // len(DIGITS) % len(COMBOS)]) for i in range(n)]


def following(x: torch.Tensor, prompts: list[str]) -> dict:
    """follow_<word>: of the samples whose prompt names the word, the share measured so."""
    asked, got = [parse(p)[1] for p in prompts], attributes(x)
    hits = {w: [w in g for a, g in zip(asked, got) if w in a] for w in THICKNESS + SIDES}
    return {f"follow_{w}": float(np.mean(h)) for w, h in hits.items() if h}


# %% 8. Conditioning on anything: a sketch instead of words
# Sections 4 to 6 never look inside the condition, a tensor per image ("none": all NULL). Give
# UNet(sketch=True) a digit shrunk to 7x7 (each 4x4 patch's mean) as a second input channel,
# the blank sketch as the null, and the same training and guidance turn sketches into digits
# (experiments/09_sketch.py), as edges or poses steer big generators (ControlNet).


# %% 9. Putting it together
def save_animation(out, trace: list, rows: list[str]) -> None:  # new in 09: rows, named
    """generation.gif: x_t of the first samples, every DDIM step."""  # new in 09
    frames = [(x.clamp(-1, 1) + 1) / 2 for _, x, _ in trace]  # new in 09: no to_pixels
    captions = [f"DDIM step {i + 1} of {len(trace)}: t = {t}" for i, (t, _, _) in enumerate(trace)]
    common.save_images(out / "generation.gif", frames, 10, rows[:2], captions)  # new in 09


def main(argv=None):  # new in 09: captions, prompts, and how well they are followed
    cfg = common.parse_config(Config, argv, __doc__)
    prompts = [cfg.prompt] * cfg.samples if cfg.prompt else default_prompts(cfg.samples)
    try:  # an unknown word: one line, before anything is written
        tokens, digits = tokenize(prompts), [parse(p)[0] for p in prompts]
    except ValueError as e:
        raise common.UserError(str(e)) from None
    labels = torch.tensor(digits) if None not in digits else None
    device, data = common.pick_device(cfg.device), common.load_data(cfg.data)
    if data.x_train.shape[1:] != IMAGE_SHAPE or data.classes != len(DIGITS):
        raise common.UserError("09's captions describe digits: it takes 28x28 grey digits 0-9")
    with common.run_folder(cfg, SCRIPT) as out:
        common.seed_everything(cfg.seed)
        judge = common.load_judge(data)
        alt_text = tokenize(describe(data.x_train, data.y_train))
        cfg, model, extra = common.load_or_train(
            cfg, out, SCRIPT, ("target", "weighting", "channels"),
            lambda c: UNet(c.channels).to(device, memory_format=torch.channels_last),
            lambda m: train(m, cfg, data, device, make_schedule(T), alt_text), data)
        start, trace = time.perf_counter(), []
        with common.autocast(device):  # mixed precision on a GPU
            x = generate(model, cfg, tokens, make_schedule(T), device, trace)
        real = attributes(data.x_held)  # how often each word describes a real digit: chance
        metrics = {**extra, "sample_seconds": time.perf_counter() - start, "device": str(device),
                   **(judge.evaluate(x, labels) if judge else {}), "guidance": cfg.guidance,
                   **{f"share_{w}": np.mean([w in a for a in real]) for w in THICKNESS + SIDES},
                   **following(x, prompts), "prompt": cfg.prompt, "config": dataclasses.asdict(cfg)}
        rows = [] if cfg.prompt else [p.replace(DIGITS[0], "0-9") for p in prompts[:90:10]]
        common.save_images(out / "samples.png", x[:90 if rows else 100], 10, rows,
                           f"{SCRIPT}: {cfg.prompt or 'a prompt a row, 0-9'}, s={cfg.guidance:g}")
        common.save_samples(out, x, labels)
        if cfg.gif and trace:
            save_animation(out, trace, rows)
        common.save_metrics(out, metrics)
    common.print_summary(metrics, [(f"follow_{w}", f"of the samples asked '{w}', the share "
                                    f"measured {w} (of real digits: {metrics[f'share_{w}']:.2f})")
                                   for w in THICKNESS + SIDES])


# %% Run it (in a notebook too; common.run_main(main, ["--steps", "300"]) changes settings)
if __name__ == "__main__":
    common.run_main(main)

# %% Exercises (answers: docs/exercises.md; patches for the code changes: docs/solutions/)
# The --load commands need the default run first.
# 1. Predict, then run at s = 0, then s = 1: how often is the digit named drawn, and how often
#    is "thin" followed? (Chance is the share of real digits measured thin.)
#      python 09_text_to_image.py --load runs/09_text_to_image/model.pt --guidance 0
# 2. Predict, then run a prompt with the rarest word: will "slanted left" be followed as
#    often as "slanted right"?
#      python 09_text_to_image.py --load runs/09_text_to_image/model.pt \
#          --prompt "a thin one, slanted left"
# 3. Change the code: make TextEncoder average its words' vectors instead of summing them.
#    Which prompts will suffer most? (a solution: docs/solutions/09_mean_of_words.patch)
# 4. Explain: "a thick seven" and "seven thick a" give the same vector. Why is that harmless
#    here, and what would "a dog on a cat" need?
# 5. Explain: experiments/09_sketch.py turns held-out digits' 7x7 sketches into digits. How
#    much of a digit does a 7x7 grey sketch hold: is the network drawing, or enlarging?
