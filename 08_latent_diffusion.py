"""08_latent_diffusion.py: diffusion in a VAE's latent space, as the big image generators do it.

The image generators people know (Stable Diffusion and its kin) are latent diffusion models
(Rombach et al. 2022): they do not denoise pixels. An autoencoder squeezes each image into a
smaller grid of latent values and back; the diffusion model of 03 and 04 is trained and sampled
on those latents, and only the finished latent is decoded. Each denoising step works on 196
values (4 x 7 x 7) instead of 784, and drawing strokes moves into the decoder, trained once. A
sample can be no better than the autoencoder's reconstructions: their quality, measured every
run by the same judge, is the ceiling.

This file is 06's VAE (made convolutional, with a 4 x 7 x 7 latent and a light KL weight)
followed by 04's guided diffusion on the latents: what it copies is marked "from 04" /
"from 06", every changed line "new in 08". Before: 04_cfg.py and 06_vae.py; this is the
course's answer to "so how does Stable Diffusion do it?".

Run:  python 08_latent_diffusion.py        (autoencoder, then latent diffusion; 1,000 digits)
      python 08_latent_diffusion.py --load runs/08_latent_diffusion/model.pt --guidance 4
      python experiments/08_versus_04.py    (against 04 at 04's training time)
reconstructions.png shows held-out digits above their reconstructions.
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

SCRIPT = "08_latent_diffusion"
IMAGE_SHAPE = (1, 28, 28)  # MNIST: (channels, height, width)
CLASSES = 10  # MNIST's digits; label CLASSES is the learned "no label" token (04)
T, EMA = 1000, 0.995  # noising steps, and the decay of the sampling weights' average (03)
P_UNCOND = 0.2  # how often training hides the label (04)
LATENT_CHANNELS, VAE_WIDTH = 4, 32  # C of the C x H/4 x W/4 latents; autoencoder's width at H/2
LR = 2e-3  # the peak learning rate of both networks (warm-up, then cosine decay)


# %% 0. Settings
@dataclasses.dataclass
class Config(common.BaseConfig):  # new in 08: the autoencoder's steps and KL weight; no weighting
    steps: int = common.flag(2500, "the denoiser's training steps", min=1)
    batch_size: int = common.flag(128, "images (latents) per training step", min=1)
    vae_steps: int = common.flag(2000, "the autoencoder's training steps (at most --steps)", min=1)
    kl_weight: float = common.flag(0.01, "weight of the KL term (06 used 1)", min=0.0)
    target: str = common.flag("x0", "what the denoiser predicts (section 5)", choices=["eps", "x0"])
    channels: int = common.flag(64, "denoiser width (8 GroupNorm groups)", min=16, multiple_of=8)
    sample_steps: int = common.flag(25, "DDIM steps; each costs two evaluations", min=1)
    guidance: float = common.flag(1.5, "guidance scale s (0: unconditional; section 6)", min=0.0)


# %% 1. The autoencoder: 06's VAE with a spatial latent and a light KL weight
# Two changes from 06. The latent is a C x H/4 x W/4 grid made by convolutions (C x 7 x 7 for a
# digit), so the denoiser can again be convolutional. Position (i, j) sums up the 15 x 15 pixels
# around pixel (4i, 4j), a piece of stroke with its surroundings, half a digit wide, overlapping
# its neighbours' by 11 (3x3 convolutions on inputs 1, 2 and 4 pixels apart: 1 + 2 + 4 + 8 = 15).
# And the KL term is weighted lightly: in 06 it made the codes fill N(0, I), where new digits
# were drawn; here the diffusion model learns where the codes lie, so the KL only keeps them
# from spreading without bound (a weight of 1 over 196 values would blur the reconstructions).
class Encoder(nn.Module):  # new in 08: convolutions, and a C x H/4 x W/4 grid of latents
    """x (B, channels, H, W) -> mu (B, C, H/4, W/4), log sigma^2 (B, C, H/4, W/4)."""
    def __init__(self, latent_channels: int, width: int, image_shape=IMAGE_SHAPE):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(image_shape[0], width, 3, stride=2, padding=1), nn.SiLU(),  # (B, w, 14, 14)
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),  # -> (B, 2w, 7, 7)
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * latent_channels, 1))                   # -> (B, 2C, 7, 7)

    def forward(self, x):  # mu and log sigma^2 (any real number is a valid one, as in 06)
        return self.net(x).float().chunk(2, dim=1)   # (B, 2C, 7, 7) -> 2 x (B, C, 7, 7)


class Decoder(nn.Module):  # new in 08: the encoder's mirror, from a C x H/4 x W/4 grid
    """z (B, C, H/4, W/4) -> logits (B, channels, H, W) of the Bernoulli likelihood p(x|z)."""
    def __init__(self, latent_channels: int, width: int, image_shape=IMAGE_SHAPE):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(latent_channels, 2 * width, 3, padding=1), nn.SiLU(),  # -> (B, 2w, 7, 7)
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.SiLU(),  # 14x14
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.SiLU(),      # 28x28
            nn.Conv2d(width, image_shape[0], 3, padding=1))                  # -> (B, 1, 28, 28)

    def forward(self, z):
        return self.net(z).float()


class EncoderDecoder(nn.Module):  # new in 08: the standardisation of section 2 built in
    """Images (channels, H, W) <-> latent grids (C, H/4, W/4): height and width divisible by 4,
    as the decoder's two 2x upsamplings give back 4h x 4w exactly (28x28 <-> 7x7)."""
    def __init__(self, latent_channels: int = LATENT_CHANNELS, width: int = VAE_WIDTH,
                 image_shape=IMAGE_SHAPE):
        super().__init__()
        channels, h, w = self.image_shape = tuple(image_shape)
        if h % 4 or w % 4 or min(h, w) < 4:
            raise ValueError(f"the autoencoder needs height and width divisible by 4, not {h}x{w}")
        self.latent_shape = (latent_channels, h // 4, w // 4)
        self.encoder = Encoder(latent_channels, width, image_shape)
        self.decoder = Decoder(latent_channels, width, image_shape)
        # Buffers, not weights: saved in model.pt with them, set once by section 2.
        self.register_buffer("shift", torch.zeros(1, latent_channels, 1, 1))
        self.register_buffer("scale", torch.ones(1, latent_channels, 1, 1))
        self.register_buffer("bound", torch.tensor(1.0))  # the largest |z| of a training image

    def encode(self, x):
        """Images (B, channels, H, W) -> standardised posterior means (B, C, H/4, W/4)."""
        return (self.encoder(x)[0] - self.shift) / self.scale

    def decode_mean(self, z):
        """Standardised latents (B, C, h, w) -> images (B, channels, 4h, 4w) in [0, 1]: as in
        06, the picture of a latent point is the mean of p(x|z), each pixel's probability."""
        return torch.sigmoid(self.decoder(z * self.scale + self.shift))


# from 06: reparameterise, bernoulli_log_likelihood and kl_to_standard_normal
def reparameterise(mu, logvar, eps=None):
    """z = mu + exp(log sigma^2 / 2) * eps; eps is drawn if not given. (B, d) -> (B, d)."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps


def bernoulli_log_likelihood(logits, x):
    """log p(x|z) summed over the 784 pixels: (B, 1, 28, 28) -> (B,), in nats."""
    # binary_cross_entropy_with_logits is -[x log p + (1-x) log(1-p)], computed
    # from the logit without forming log(sigmoid), which underflows.
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def kl_to_standard_normal(mu, logvar):
    """KL( N(mu, sigma^2) || N(0, I) ) in closed form, summed over latent dims: (B, d) -> (B,)."""
    # KL = 1/2 * sum_j ( mu_j^2 + sigma_j^2 - 1 - log sigma_j^2 )
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def vae_loss(model: EncoderDecoder, x, kl_weight: float, eps=None):  # new in 08: kl_weight
    """Per image, the mean over the batch of ( -log p(x|z) + kl_weight * KL ); 06's -ELBO at 1,
    with the KL summed over all C x H/4 x W/4 latent values."""
    mu, logvar = model.encoder(x)
    rec = bernoulli_log_likelihood(model.decoder(reparameterise(mu, logvar, eps)), x)
    kl = kl_to_standard_normal(mu.flatten(1), logvar.flatten(1))  # (B, C*h*w) -> (B,)
    return (kl_weight * kl - rec).mean(), {"rec": -rec.mean().item(), "kl": kl.mean().item()}


def vae_train_step(vae: EncoderDecoder, opt, x, kl_weight: float) -> tuple[float, float]:
    """One optimizer step on images x (B, channels, H, W) in [0, 1]; returns (loss, KL)."""
    loss, parts = vae_loss(vae, x, kl_weight)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item(), parts["kl"]


# %% 2. Encoding the training images: posterior means, standardised per channel
# Each image is encoded once, to the mean mu(x) of q(z|x), the centre of the points that decode
# to much the same image (Stable Diffusion draws a sample; either works). Then the scale: the
# schedule mixes signal and noise as it does only if z_0 is about as large as eps, as in z_t it
# stands to the noise as |z_0| sqrt(abar_t / (1 - abar_t)). 10x larger codes would stay visible
# longer (at t = 990, 0.16 of the noise against 0.016; at t = T, 5e-4), 10x smaller ones drown
# early. Stable Diffusion multiplies its latents by one factor (0.18215); here each channel gets
# its own shift and scale, as a lightly regularised VAE leaves its channels at different sizes.
@torch.no_grad()
def fit_latents(vae: EncoderDecoder, x: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
    """Set vae's shift, scale and bound from the images x; return their standardised
    posterior means: (N, channels, H, W) -> (N, C, H/4, W/4), mean 0 and variance 1 a channel."""
    mu = torch.cat([vae.encoder(x[i:i + chunk].to(vae.shift.device))[0]  # on the vae's device
                    for i in range(0, len(x), chunk)])
    vae.shift.copy_(mu.mean((0, 2, 3), keepdim=True))
    vae.scale.copy_(mu.std((0, 2, 3), keepdim=True))
    z = (mu - vae.shift) / vae.scale
    vae.bound.copy_(z.abs().max())
    return z


# %% 3. The schedule and the closed form q(z_t | z_0), as in 04, on latents
# z_t = sqrt(abar_t) * z_0 + sqrt(1 - abar_t) * eps: nothing in the forward
# process knows what the values mean, only that they are of unit scale.
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


# %% 4. The denoiser: 04's ResBlocks on the latent grid, with the time and label embedding
# 04's UNet halves 28x28 twice to see the whole digit. A 7x7 latent has nothing left to halve, and
# need not: each 3x3 convolution widens the view by two, so four ResBlocks (eight convolutions)
# see all of a grid up to 9x9 (images up to 36x36) from each position; larger ones want more.
# from 04: timestep_embedding and ResBlock
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


class LatentDenoiser(nn.Module):
    """Latents (B, C, h, w), t (B,), labels (B,) in 0..classes (classes: "no label") -> the
    target (B, C, h, w); any h, w. The sampler draws latent_shape. c: a multiple of 8."""
    def __init__(self, latent_shape, c: int = 64, blocks: int = 4, classes: int = CLASSES):
        super().__init__()
        t_dim, channels = 4 * c, latent_shape[0]
        self.c, self.latent_shape, self.classes = c, tuple(latent_shape), classes
        self.time_mlp = nn.Sequential(nn.Linear(c, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.label_emb = nn.Embedding(classes + 1, t_dim)  # a row per class, and "no label"
        self.inp = nn.Conv2d(channels, c, 3, padding=1)    # (B, C, h, w) -> (B, c, h, w)
        self.blocks = nn.ModuleList([ResBlock(c, c, t_dim) for _ in range(blocks)])
        self.out = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(),
                                 nn.Conv2d(c, channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # start by predicting 0: a calm first step
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        temb = self.time_mlp(timestep_embedding(t, self.c)) + self.label_emb(label)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h)


# %% 5. The loss and training, as in 04, on the encoded digits
# 04's targets, label dropout and loss (read (B, C, h, w) where 04 says (B, 1, 28, 28)), but x0
# by default: eps relies on clipping the clean estimate (03, section 4), and latents have no
# natural range; x0 drew better digits, far more often the label's (docs/experiments.md).
# from 04
def predictions(out, xt, t, sched: dict, target: str):  # new in 08: eps or x0, no xprev
    """The network output at timesteps t (B,) -> (eps_hat, x0_hat), each (B, 1, 28, 28)."""
    abar = at(sched, "abar", t)
    s, r = abar.sqrt(), (1 - abar).sqrt()
    if target == "eps":
        return out, (xt - r * out) / s           # x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)
    return (xt - s * out) / r, out               # eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)


# from 04: drop_labels, diffusion_loss, ema_update and learning_rate
def drop_labels(labels: torch.Tensor, null, p_uncond: float, gen=None) -> torch.Tensor:
    """Replace each label by `null` (the "no label" one) with probability p_uncond."""
    drop = torch.rand(labels.shape, generator=gen).to(labels.device) < p_uncond
    return torch.where(drop, torch.full_like(labels, null), labels)


def diffusion_loss(model, x0, labels, sched: dict, target: str, gen=None) -> torch.Tensor:
    """One training loss: random t per image, noise it in closed form, regress the target."""
    t = torch.randint(1, sched["T"] + 1, (len(x0),), generator=gen).to(x0.device)  # new in 08
    eps = torch.randn(x0.shape, generator=gen).to(x0.device)
    xt = q_sample(x0, t, eps, sched)
    labels = drop_labels(labels, model.classes, P_UNCOND, gen)
    out, goal = model(xt, t, labels).float(), {"eps": eps, "x0": x0}[target]  # new in 08
    return F.mse_loss(out, goal)


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


def train_step(model, ema_model, opt, x0, labels, sched: dict, target: str,
               decay: float = EMA, gen=None) -> float:
    """One optimizer update on latents x0 (B, C, h, w), then the average's; -> the loss."""
    loss = diffusion_loss(model, x0, labels, sched, target, gen)  # new in 08: no weighting
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # a rare huge gradient cannot wreck it
    opt.step()
    ema_update(ema_model, model, decay)
    return loss.item()


def train(model: nn.ModuleDict, cfg: Config, data: common.Data, device, gen) -> dict:  # new in 08
    """The autoencoder (section 1), the encoding (section 2), then 04's training on latents."""
    vae, denoiser, start = model["vae"], model["denoiser"], time.perf_counter()
    opt = torch.optim.Adam(vae.parameters(), lr=LR)
    stream = common.batches(data.x_train, data.y_train, cfg.batch_size, gen)
    progress = common.Progress(cfg.vae_steps, "autoencoder")
    for step in range(cfg.vae_steps):
        for g in opt.param_groups:  # the same warm-up and cosine decay as the denoiser's
            g["lr"] = learning_rate(step, cfg.vae_steps, LR)
        with common.autocast(device):
            loss, kl = vae_train_step(vae, opt, next(stream)[0].to(device), cfg.kl_weight)
        progress.update(step + 1, loss=loss, kl=kl)
    vae_seconds = progress.elapsed()
    z, y, sched = fit_latents(vae, data.x_train), data.y_train.to(device), make_schedule(T)
    gen = torch.Generator().manual_seed(cfg.seed)
    ema_model = copy.deepcopy(denoiser).requires_grad_(False)
    opt = torch.optim.AdamW(denoiser.parameters(), lr=LR, weight_decay=0.0)
    stream = common.batches(z, y, cfg.batch_size, gen)
    progress, losses = common.Progress(cfg.steps, "denoiser"), []
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = learning_rate(step, cfg.steps, LR)
        with common.autocast(device):  # ramp decay up: early on, the random start would dominate
            losses.append(train_step(denoiser, ema_model, opt, *next(stream), sched, cfg.target,
                                     min(EMA, (1 + step) / (10 + step)), gen))
        progress.update(step + 1, loss=float(np.mean(losses[-50:])))
    denoiser.load_state_dict(ema_model.state_dict())
    return {"train_seconds": time.perf_counter() - start, "vae_seconds": vae_seconds,
            "denoiser_seconds": progress.elapsed(), "denoiser_steps": cfg.steps}


# %% 6. Sampling with guidance in latent space, then one decoder pass
# 04's guided DDIM on (C, h, w) noise, then one decoder pass. The clean estimate is clipped to
# the largest |value| of a training code (section 2), not pixels' [-1, 1] (it matters for eps
# only). s = 1.5, below 04's: guidance pushes harder here; it follows the label as often as 04.
# from 04
@torch.no_grad()
def guided_output(model, xt, t, cond, null, s: float) -> torch.Tensor:
    """Any model(x_t, t, condition)'s guided output; `null`: the condition that says nothing."""
    if s in (0.0, 1.0):  # only the unconditional (s = 0) or conditional (s = 1) half counts
        return model(xt, t, cond if s == 1.0 else null).float()
    both = model(torch.cat([xt, xt]), torch.cat([t, t]), torch.cat([cond, null])).float()
    out_c, out_u = both.chunk(2)  # (2B,C,H,W) -> two (B,C,H,W)
    return out_u + s * (out_c - out_u)


@torch.no_grad()
def denoise(model, xt, t: int, labels, s: float, sched: dict, target: str, clip: float = 0.0):
    tt = torch.full((xt.shape[0],), t, device=xt.device, dtype=torch.long)
    out = guided_output(model, xt, tt, labels, torch.full_like(labels, model.classes), s)
    eps, x0 = predictions(out, xt, tt, sched, target)
    if clip:  # new in 08: a bound (0: none), the training latents', not pixels' [-1, 1]
        abar, x0 = at(sched, "abar", tt), x0.clamp(-clip, clip)
        eps = (xt - abar.sqrt() * x0) / (1 - abar).sqrt()  # the noise consistent with it
    return eps, x0


# from 04
def ddim_timesteps(T: int, steps: int) -> list[int]:
    """Evenly spaced timesteps from T down to 1, `steps` of them (at most T)."""
    return sorted({int(round(v)) for v in np.linspace(T, 1, min(steps, T))}, reverse=True)


@torch.no_grad()
def ddim_sample(model, labels, s: float, sched: dict, target: str, steps: int, device, gen=None,
                eta: float = 0.0, clip: float = 0.0, trace: list | None = None) -> torch.Tensor:
    """DDIM from pure noise, an image per label; `trace` gets (t, x_t, x0_hat) of 20 a step."""
    x = torch.randn((len(labels), *model.latent_shape), generator=gen).to(device)  # new in 08
    labels = labels.to(device)
    ts = ddim_timesteps(sched["T"], steps)
    for i, t in enumerate(ts):
        eps, x0 = denoise(model, x, t, labels, s, sched, target, clip)
        if trace is not None:
            trace.append((t, x[:20].cpu(), x0[:20].cpu()))
        ab = sched["abar"][t].item()
        ab_next = sched["abar"][ts[i + 1]].item() if i + 1 < len(ts) else 1.0
        sigma = eta * math.sqrt((1 - ab_next) / (1 - ab) * (1 - ab / ab_next))
        noise = torch.randn(x.shape, generator=gen).to(device) if sigma > 0 else 0.0
        keep = math.sqrt(max(1 - ab_next - sigma**2, 0.0))  # how much of eps_hat stays
        x = math.sqrt(ab_next) * x0 + keep * eps + sigma * noise
    return x


@torch.no_grad()
def generate(model: nn.ModuleDict, cfg: Config, labels, device, trace=None, batch: int = 250):
    """A sample per label in [0, 1], (n, channels, H, W): DDIM on latents (n, C, H/4, W/4), then
    the decoder, 250 at a time. `trace` follows the first batch's latents."""
    gen, out, vae = torch.Generator().manual_seed(cfg.seed + 1), [], model["vae"]
    progress = common.Progress(len(labels), "sampling")
    for i in range(0, len(labels), batch):
        with common.autocast(device):
            z = ddim_sample(model["denoiser"], labels[i:i + batch], cfg.guidance,
                            make_schedule(T), cfg.target, cfg.sample_steps, device, gen, 1.0,
                            vae.bound.item(), trace if i == 0 else None)
        out.append(vae.decode_mean(z).cpu())  # new in 08: decoded, (b, C, 7, 7) -> (b, 1, 28, 28)
        progress.update(i + len(z))
    return torch.cat(out)


# %% 7. Putting it together
def save_animation(out, trace: list, labels, vae: EncoderDecoder) -> None:  # new in 08
    """generation.gif: the first samples' latents z_t, decoded, every DDIM step; rows of 10."""
    n = len(trace[0][1])
    rows = ["".join(str(d) for d in labels[i:min(i + 10, n)].tolist()) for i in range(0, n, 10)]
    with torch.no_grad():
        frames = [vae.decode_mean(z.to(vae.shift.device)).cpu() for _, z, _ in trace]
    captions = [f"DDIM step {i + 1} of {len(trace)}: t = {t}, z_t decoded"
                for i, (t, _, _) in enumerate(trace)]
    common.save_images(out / "generation.gif", frames, min(n, 10), rows, captions)


def build(cfg: Config, image_shape, classes: int) -> nn.ModuleDict:  # new in 08
    """The autoencoder for images of image_shape, and the denoiser for its latents."""
    vae = EncoderDecoder(LATENT_CHANNELS, VAE_WIDTH, image_shape)
    return nn.ModuleDict({"vae": vae, "denoiser": LatentDenoiser(vae.latent_shape, cfg.channels,
                                                                 classes=classes)})


def main(argv=None):  # new in 08: autoencoder, latents, denoiser, and the ceiling
    cfg = common.parse_config(Config, argv, __doc__)
    cfg = dataclasses.replace(cfg, vae_steps=min(cfg.vae_steps, cfg.steps))  # --steps bounds all
    with common.run_folder(cfg, SCRIPT) as out:
        gen = common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = common.load_judge(data)
        cfg, model, extra = common.load_or_train(
            cfg, out, SCRIPT, ("target", "channels"),
            lambda c: build(c, data.x_train.shape[1:], data.classes).to(device),
            lambda m: train(m, cfg, data, device, gen), data=data)
        held = data.x_held[:cfg.samples]  # encoded and decoded: the best the latents give back
        with torch.no_grad():
            recon = model["vae"].decode_mean(model["vae"].encode(held.to(device))).cpu()
        ceiling = judge.evaluate(recon, data.y_held[:cfg.samples]) if judge else {}
        labels, start, trace = torch.arange(cfg.samples) % data.classes, time.perf_counter(), []
        x = generate(model, cfg, labels, device, trace)
        metrics = {**extra, "sample_seconds": time.perf_counter() - start,
                   **(judge.evaluate(x, labels) if judge else {}), "guidance": cfg.guidance,
                   **{f"recon_{k}": ceiling[k] for k in ("fd", "fd_ratio") if k in ceiling},
                   "latent_values": math.prod(model["vae"].latent_shape), "device": str(device),
                   "config": dataclasses.asdict(cfg)}
        common.save_images(out / "samples.png", x[:100], 10, titles=f"{SCRIPT}: s={cfg.guidance:g}")
        n = min(10, len(held) // 2)  # two pairs of rows, n digits each
        pairs = torch.cat([held[:n], recon[:n], held[n:2 * n], recon[n:2 * n]])
        common.save_images(out / "reconstructions.png", pairs, n, ["held out", "decoded"] * 2,
                           "held-out images and their reconstructions: the ceiling")
        common.save_samples(out, x, labels)
        if cfg.gif and trace:
            save_animation(out, trace, labels, model["vae"])
        common.save_metrics(out, metrics)
    common.print_summary(metrics, [("recon_fd", "FD of the reconstructions, the samples' ceiling"),
                                   ("latent_values", "values per denoised image (pixels: C*H*W)")])


# %% Run it (in a notebook too; common.run_main(main, ["--steps", "300"]) changes settings)
if __name__ == "__main__":
    common.run_main(main)

# %% Exercises (answers: docs/exercises.md; patches for the code changes: docs/solutions/)
# The --load commands need the default run first.
# 1. Predict, then run at s = 4: the label accuracy and FD against the default s = 1.5
#    (experiments/04_guidance.py measured 04's model at several scales).
#      python 08_latent_diffusion.py --load runs/08_latent_diffusion/model.pt --guidance 4
# 2. Predict: can the samples ever score a better FD than the reconstructions? Compare the
#    two FDs the default run prints.
# 3. Change the code: skip the diffusion and decode z ~ N(0, I) straight away, as 06 did.
#    What will the judge see? (a solution: docs/solutions/08_decode_noise.patch)
# 4. Explain: experiments/08_versus_04.py races 08's denoiser against 04's for 04's training
#    time (README's claims table). What does the race leave out, and why do large generators
#    accept that?
