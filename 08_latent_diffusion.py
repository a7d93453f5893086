"""08_latent_diffusion.py: diffusion in a VAE's latent space, as the big image generators do it.

The image generators people know (Stable Diffusion and its kin) are latent
diffusion models (Rombach et al. 2022): they do not denoise pixels. An
autoencoder squeezes each image into a smaller grid of latent values and back;
the diffusion model of 03 and 04 is trained and sampled on those latents, and
only the finished latent is decoded. Each denoising step works on 196 values
(4 x 7 x 7) instead of 784, and drawing strokes moves into the decoder, trained
once. A sample can be no better than the autoencoder's reconstructions: their
quality, measured every run by the same judge, is the ceiling.

This file is 06's VAE (made convolutional, with a 4 x 7 x 7 latent and a light KL
weight) followed by 04's guided diffusion on the latents: what it copies is marked
"from 04" / "from 06", every changed line "new in 08". Before: 04_cfg.py and
06_vae.py; this is the course's answer to "so how does Stable Diffusion do it?".

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
T, EMA = 1000, 0.995  # noising steps, and the decay of the sampling weights' average (03)
NULL, P_UNCOND = 10, 0.2  # the learned "no label" token, and how often it hides one (04)
LATENT = (4, 7, 7)  # C x 7 x 7: two stride-2 convolutions take 28 -> 14 -> 7
VAE_WIDTH = 32  # the autoencoder's channels at 14x14 (twice that at 7x7)
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
# Two changes from 06. The latent is a C x 7 x 7 grid made by convolutions: each
# position describes its own 4 x 4 patch of the digit, and the denoiser can again
# be convolutional. And the KL term is weighted lightly: in 06 it made the codes
# fill N(0, I), where new digits were drawn; here the diffusion model learns
# where the codes lie, so the KL only keeps them from spreading without bound
# (a weight of 1 over 196 values would blur the reconstructions, the ceiling).
class Encoder(nn.Module):  # new in 08: convolutions, and a C x 7 x 7 grid of latents
    """x (B, 1, 28, 28) -> mu (B, C, 7, 7), log sigma^2 (B, C, 7, 7)."""

    def __init__(self, latent_channels: int, width: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, stride=2, padding=1), nn.SiLU(),          # -> (B, w, 14, 14)
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),  # -> (B, 2w, 7, 7)
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * latent_channels, 1),                   # -> (B, 2C, 7, 7)
        )

    def forward(self, x):  # mu and log sigma^2 (any real number is a valid one, as in 06)
        return self.net(x).float().chunk(2, dim=1)   # (B, 2C, 7, 7) -> 2 x (B, C, 7, 7)


class Decoder(nn.Module):  # new in 08: the encoder's mirror, from a C x 7 x 7 grid
    """z (B, C, 7, 7) -> logits (B, 1, 28, 28) of the Bernoulli likelihood p(x|z)."""

    def __init__(self, latent_channels: int, width: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(latent_channels, 2 * width, 3, padding=1), nn.SiLU(),  # -> (B, 2w, 7, 7)
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.SiLU(),  # 14x14
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.SiLU(),      # 28x28
            nn.Conv2d(width, 1, 3, padding=1),                               # -> (B, 1, 28, 28)
        )

    def forward(self, z):
        return self.net(z).float()


class EncoderDecoder(nn.Module):  # new in 08: the standardisation of section 2 built in
    def __init__(self, latent_channels: int, width: int):
        super().__init__()
        self.encoder = Encoder(latent_channels, width)
        self.decoder = Decoder(latent_channels, width)
        # Buffers, not weights: saved in model.pt with them, set once by section 2.
        self.register_buffer("shift", torch.zeros(1, latent_channels, 1, 1))
        self.register_buffer("scale", torch.ones(1, latent_channels, 1, 1))
        self.register_buffer("bound", torch.tensor(1.0))  # the largest |z| of a training digit

    def encode(self, x):
        """Images (B, 1, 28, 28) -> standardised posterior means (B, C, 7, 7)."""
        return (self.encoder(x)[0] - self.shift) / self.scale

    def decode_mean(self, z):
        """Standardised latents (B, C, 7, 7) -> images (B, 1, 28, 28) in [0, 1]: as in 06, the
        picture of a latent point is the mean of p(x|z), each pixel's probability."""
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
    with the KL summed over all C x 7 x 7 latent values."""
    mu, logvar = model.encoder(x)
    rec = bernoulli_log_likelihood(model.decoder(reparameterise(mu, logvar, eps)), x)
    kl = kl_to_standard_normal(mu.flatten(1), logvar.flatten(1))  # (B, C*49) -> (B,)
    return (kl_weight * kl - rec).mean(), {"rec": -rec.mean().item(), "kl": kl.mean().item()}


def train_vae(vae: EncoderDecoder, cfg: Config, data: common.Data, device, gen) -> float:
    """Train the autoencoder for cfg.vae_steps; returns the seconds it took."""
    opt = torch.optim.Adam(vae.parameters(), lr=LR)
    stream = common.batches(data.x_train, data.y_train, cfg.batch_size, gen)
    progress = common.Progress(cfg.vae_steps, "autoencoder")
    for step in range(cfg.vae_steps):
        for g in opt.param_groups:  # section 5's warm-up and cosine decay
            g["lr"] = learning_rate(step, cfg.vae_steps, LR)
        x = next(stream)[0].to(device)
        with common.autocast(device):
            loss, parts = vae_loss(vae, x, cfg.kl_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        progress.update(step + 1, loss=loss.item(), kl=parts["kl"])
    return progress.elapsed()


# %% 2. Encoding the training digits: posterior means, standardised per channel
# Each digit is encoded once, to the mean mu(x) of q(z|x), the centre of the
# points that decode to much the same digit (Stable Diffusion draws a sample;
# either works). Then the scale: the schedule mixes signal and noise as it does
# only if x_0 is about as large as eps (10x larger codes would still show at
# t = T, 10x smaller ones drown early). Stable Diffusion multiplies its latents
# by one factor (0.18215); here each channel gets its own shift and scale, as a
# lightly regularised VAE leaves its channels at different sizes.
@torch.no_grad()
def fit_latents(vae: EncoderDecoder, x: torch.Tensor, device, chunk: int = 1000) -> torch.Tensor:
    """Set vae's shift, scale and bound from the images x; return their standardised
    posterior means: (N, 1, 28, 28) -> (N, C, 7, 7), mean 0 and variance 1 per channel."""
    mu = torch.cat([vae.encoder(x[i:i + chunk].to(device))[0] for i in range(0, len(x), chunk)])
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


# %% 4. The denoiser: 04's ResBlocks at 7x7, with the time and label embedding
# 04's UNet halves 28x28 twice to see the whole digit. A 7x7 latent has nothing
# left to halve, and need not: each 3x3 convolution widens the view by two, so
# four ResBlocks (eight convolutions) see the whole latent from every position.
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
    """(B, C_latent, 7, 7), t (B,), labels (B,) -> the target (B, C_latent, 7, 7)."""

    def __init__(self, latent_channels: int, c: int = 64, blocks: int = 4):
        super().__init__()
        t_dim = 4 * c
        self.c = c
        self.time_mlp = nn.Sequential(nn.Linear(c, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.label_emb = nn.Embedding(11, t_dim)  # rows 0..9 the digits, 10 "no label" (04)
        self.inp = nn.Conv2d(latent_channels, c, 3, padding=1)    # -> (B, c, 7, 7)
        self.blocks = nn.ModuleList([ResBlock(c, c, t_dim) for _ in range(blocks)])
        self.out = nn.Sequential(nn.GroupNorm(8, c), nn.SiLU(),
                                 nn.Conv2d(c, latent_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # start by predicting 0: a calm first step
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        temb = self.time_mlp(timestep_embedding(t, self.c)) + self.label_emb(label)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h)


# %% 5. The loss and training, as in 04, on the encoded digits
# 04's targets, label dropout and loss (where 04 says (B, 1, 28, 28), read
# (B, C, 7, 7)), but x0 by default: eps relies on clipping the clean estimate
# (03, section 4), and latents have no natural range; measured, x0 drew better
# digits that followed the label far more often (docs/experiments.md).
# from 04
def predictions(out, xt, t, sched: dict, target: str):  # new in 08: eps or x0, no xprev
    """The network output at timesteps t (B,) -> (eps_hat, x0_hat), each (B, 1, 28, 28)."""
    abar = at(sched, "abar", t)
    s, r = abar.sqrt(), (1 - abar).sqrt()
    if target == "eps":
        return out, (xt - r * out) / s           # x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)
    return (xt - s * out) / r, out               # eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)


# from 04: drop_labels, diffusion_loss, ema_update and learning_rate
def drop_labels(labels: torch.Tensor, p_uncond: float, gen=None) -> torch.Tensor:
    """Replace each label by NULL with probability p_uncond."""
    drop = torch.rand(labels.shape, generator=gen).to(labels.device) < p_uncond
    return torch.where(drop, torch.full_like(labels, NULL), labels)


def diffusion_loss(model, x0, labels, sched: dict, target: str,
                   gen=None) -> torch.Tensor:  # new in 08: every t equally often (04's plain)
    """One training loss: random t per image, noise it in closed form, regress the target."""
    t = torch.randint(1, sched["T"] + 1, (x0.shape[0],), generator=gen).to(x0.device)
    eps = torch.randn(x0.shape, generator=gen).to(x0.device)
    xt = q_sample(x0, t, eps, sched)
    labels = drop_labels(labels, P_UNCOND, gen)
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


def train(model: nn.ModuleDict, cfg: Config, data: common.Data, device, gen) -> dict:  # new in 08
    """The autoencoder (section 1), the encoding (section 2), then 04's training on latents."""
    vae, denoiser = model["vae"], model["denoiser"]
    start, vae_seconds = time.perf_counter(), train_vae(vae, cfg, data, device, gen)
    z, y, sched = fit_latents(vae, data.x_train, device), data.y_train.to(device), make_schedule(T)
    gen = torch.Generator().manual_seed(cfg.seed)
    ema_model = copy.deepcopy(denoiser).requires_grad_(False)
    opt = torch.optim.AdamW(denoiser.parameters(), lr=LR, weight_decay=0.0)
    batches = common.batches(z, y, cfg.batch_size, gen)
    progress, losses = common.Progress(cfg.steps, "denoiser"), []
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = learning_rate(step, cfg.steps, LR)
        z0, y0 = next(batches)
        with common.autocast(device):
            loss = diffusion_loss(denoiser, z0, y0, sched, cfg.target, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)  # a rare huge gradient cannot wreck it
        opt.step()
        # Early on, the average would be mostly the random initial weights: ramp decay up.
        ema_update(ema_model, denoiser, min(EMA, (1 + step) / (10 + step)))
        losses.append(loss.item())
        progress.update(step + 1, loss=float(np.mean(losses[-50:])))
    denoiser.load_state_dict(ema_model.state_dict())
    return {"train_seconds": time.perf_counter() - start, "vae_seconds": vae_seconds,
            "denoiser_seconds": progress.elapsed(), "denoiser_steps": cfg.steps}


# %% 6. Sampling with guidance in latent space, then one decoder pass
# 04's guided DDIM on (C, 7, 7) noise, then one decoder pass. The clean estimate
# is clipped to the largest value a training code reached (section 2), not to
# pixels' [-1, 1] (it matters for eps only). s = 1.5, below 04's: guidance pushes
# harder here, and followed the label about as often as 04 does at its default.
# from 04
@torch.no_grad()
def guided_output(model, xt, t, labels, s: float) -> torch.Tensor:
    """The guided network output; one of the two calls is skipped when s is 0 or 1."""
    if s in (0.0, 1.0):  # only the unconditional (s = 0) or conditional (s = 1) half counts
        return model(xt, t, labels if s == 1.0 else torch.full_like(labels, NULL)).float()
    both = model(torch.cat([xt, xt]), torch.cat([t, t]),
                 torch.cat([labels, torch.full_like(labels, NULL)])).float()
    out_c, out_u = both.chunk(2)  # (2B,1,28,28) -> two (B,1,28,28)
    return out_u + s * (out_c - out_u)


@torch.no_grad()
def denoise(model, xt, t: int, labels, s: float, sched: dict, target: str,
            clip: float = 0.0):  # new in 08: clip is a bound (0: none), not a switch
    tt = torch.full((xt.shape[0],), t, device=xt.device, dtype=torch.long)
    with common.autocast(xt.device):
        out = guided_output(model, xt, tt, labels, s)
    eps, x0 = predictions(out, xt, tt, sched, target)
    if clip:  # new in 08: the training latents' range, not [-1, 1]
        abar = at(sched, "abar", tt)
        x0 = x0.clamp(-clip, clip)
        eps = (xt - abar.sqrt() * x0) / (1 - abar).sqrt()  # the noise consistent with it
    return eps, x0


# from 04
def ddim_timesteps(T: int, steps: int) -> list[int]:
    """Evenly spaced timesteps from T down to 1, `steps` of them (at most T)."""
    steps = min(steps, T)
    return sorted({int(round(v)) for v in np.linspace(T, 1, steps)}, reverse=True)


@torch.no_grad()
def ddim_sample(model, labels, s: float, sched: dict, target: str, steps: int, device, gen=None,
                eta: float = 0.0, clip: float = 0.0,
                trace: list | None = None) -> torch.Tensor:  # new in 08: clip is a bound
    """DDIM from pure noise; `trace`, a list, gets (t, x_t, x0_hat) of 20 images a step."""
    x = torch.randn((len(labels), *LATENT), generator=gen).to(device)  # new in 08: a latent
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
def generate(model: nn.ModuleDict, cfg: Config, labels, device, trace: list | None = None,
             batch: int = 250) -> torch.Tensor:  # new in 08: on latents, then decoded
    """A sample per label in [0, 1], (n, 1, 28, 28): DDIM on latents (n, C, 7, 7), then the
    decoder, 250 at a time. `trace` follows the first batch's latents."""
    gen, out, vae = torch.Generator().manual_seed(cfg.seed + 1), [], model["vae"]
    progress = common.Progress(len(labels), "sampling")
    for i in range(0, len(labels), batch):
        z = ddim_sample(model["denoiser"], labels[i:i + batch], cfg.guidance, make_schedule(T),
                        cfg.target, cfg.sample_steps, device, gen, 1.0, vae.bound.item(),
                        trace if i == 0 else None)
        out.append(vae.decode_mean(z).cpu())  # (b, C, 7, 7) -> (b, 1, 28, 28)
        progress.update(i + len(z))
    return torch.cat(out)


# from 04
def balanced_labels(n: int, digit: int = -1) -> torch.Tensor:
    """0,1,...,9,0,1,... (n of them), or n copies of one digit."""
    return torch.full((n,), digit) if digit >= 0 else torch.arange(n) % 10


# %% 7. Putting it together
def save_animation(out, trace: list, labels, vae: EncoderDecoder) -> None:  # new in 08
    """generation.gif: the first samples' latents z_t, decoded, every DDIM step; a row's
    label lists the digits asked for, left to right."""
    n = len(trace[0][1])
    rows = ["".join(str(d) for d in labels[i:min(i + 10, n)].tolist()) for i in range(0, n, 10)]
    with torch.no_grad():
        frames = [vae.decode_mean(z.to(vae.shift.device)).cpu() for _, z, _ in trace]
    captions = [f"DDIM step {i + 1} of {len(trace)}: t = {t}, z_t decoded"
                for i, (t, _, _) in enumerate(trace)]
    common.save_images(out / "generation.gif", frames, min(n, 10), rows, captions)


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
            lambda c: nn.ModuleDict({"vae": EncoderDecoder(LATENT[0], VAE_WIDTH),
                                     "denoiser": LatentDenoiser(LATENT[0], c.channels)}).to(device),
            lambda m: train(m, cfg, data, device, gen))
        held = data.x_held[:cfg.samples]  # encoded and decoded: the best the latents give back
        with torch.no_grad():
            recon = model["vae"].decode_mean(model["vae"].encode(held.to(device))).cpu()
        ceiling = judge.evaluate(recon, data.y_held[:cfg.samples]) if judge else {}
        labels, start, trace = balanced_labels(cfg.samples), time.perf_counter(), []
        x = generate(model, cfg, labels, device, trace)
        metrics = {**extra, "sample_seconds": time.perf_counter() - start,
                   **(judge.evaluate(x, labels) if judge else {}), "guidance": cfg.guidance,
                   **{f"recon_{k}": ceiling[k] for k in ("fd", "fd_ratio") if k in ceiling},
                   "latent_values": math.prod(LATENT), "device": str(device),
                   "config": dataclasses.asdict(cfg)}
        common.save_images(out / "samples.png", x[:100], 10, titles=f"{SCRIPT}: s={cfg.guidance:g}")
        n = min(10, len(held) // 2)  # two pairs of rows, n digits each
        pairs = torch.cat([held[:n], recon[:n], held[n:2 * n], recon[n:2 * n]])
        common.save_images(out / "reconstructions.png", pairs, n, ["held out", "decoded"] * 2,
                           "held-out digits and their reconstructions: the ceiling")
        common.save_samples(out, x, labels)
        if cfg.gif and trace:
            save_animation(out, trace, labels, model["vae"])
        common.save_metrics(out, metrics)
    common.print_summary(metrics, [("recon_fd", "FD of the reconstructions, the samples' ceiling"),
                                   ("latent_values", "values per denoised image (04: 784)")])


# %% Run it (in a notebook too; common.run_main(main, ["--steps", "300"]) changes settings)
if __name__ == "__main__":
    common.run_main(main)
