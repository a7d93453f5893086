"""08_latent_diffusion.py: diffusion in a VAE's latent space, as the big image generators do it.

The image generators people know (Stable Diffusion and its kin) are latent
diffusion models (Rombach et al. 2022): they do not denoise pixels. An
autoencoder first squeezes each image into a smaller grid of latent values and
back; the diffusion model of chapters 03 and 04 is then trained, and sampled,
on those latents, and only the finished latent is decoded into pixels. Each
denoising step now works on 196 values (4 x 7 x 7) instead of 784, so it is
cheaper, and the expensive part of drawing strokes moves into the decoder,
trained once. The cost moves too: a sample can be no better than the
autoencoder's reconstructions, so their quality is the ceiling, measured here
every run with the same judge as the samples.

This file is chapter 06's VAE (made convolutional, with a 4 x 7 x 7 latent and
a light KL weight) followed by chapter 04's guided diffusion (on the latents);
pieces copied from them are marked "from 04" / "from 06", and every changed
line "new in 08". Before: 04_cfg.py and 06_vae.py; this is the course's answer
to "so how does Stable Diffusion do it?".

Run:  python 08_latent_diffusion.py          (autoencoder, then latent diffusion, 1,000 digits)
      python 08_latent_diffusion.py --compare runs/04_cfg/metrics.json   (04's training time)
      python 08_latent_diffusion.py --load runs/08_latent_diffusion/model.pt --guidance 4

Writes samples.png and samples.npz (with labels y), reconstructions.png (held-out
digits above their reconstructions), generation.gif (latents decoded at every
denoising step, a row per digit), metrics.json and model.pt into runs/08_latent_diffusion/.
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
TARGETS = ["eps", "x0", "v", "xprev"]
NULL = 10  # the learned "no label" token, as in 04 (labels are 0..9)
LATENT_SIDE = 7  # two stride-2 convolutions: 28 -> 14 -> 7
PIXELS = 28 * 28


# %% 0. Settings
@dataclasses.dataclass
class Config(common.BaseConfig):  # new in 08: the autoencoder's flags, then 04's
    steps: int = common.flag(2500, "the denoiser's training steps", min=1)
    batch_size: int = common.flag(128, "images (latents) per training step", min=1)
    samples: int = common.flag(1000, "samples to draw (balanced over the digits)", min=2)
    vae_steps: int = common.flag(2000, "the autoencoder's training steps", min=1)
    vae_lr: float = common.flag(2e-3, "the autoencoder's peak learning rate", min=1e-6)
    vae_width: int = common.flag(32, "autoencoder channels at 14x14 (twice that at 7x7)", min=1)
    latent_channels: int = common.flag(4, "C of the C x 7 x 7 latent", min=1, max=64)
    kl_weight: float = common.flag(0.01, "weight of the KL term (06 used 1)", min=0.0)
    schedule: str = common.flag("cosine", "noise schedule", choices=["cosine", "linear"])
    timesteps: int = common.flag(1000, "T, the number of small noising steps", min=2)
    target: str = common.flag("x0", "what the denoiser predicts (03, section 4; here x0, "
                              "section 5)", choices=TARGETS)
    weighting: str = common.flag("plain", "loss weighting over noise levels (03, section 4)",
                                 choices=["plain", "minsnr"])
    channels: int = common.flag(64, "the denoiser's width: a multiple of 8, at least 16 (GroupNorm "
                                "makes 8 groups; one channel each would erase the label)",
                                min=16, multiple_of=8)
    blocks: int = common.flag(4, "the denoiser's ResBlocks, all at 7x7", min=1)
    lr: float = common.flag(2e-3, "the denoiser's peak learning rate", min=1e-6)
    ema: float = common.flag(0.995, "decay of the weights' moving average used for sampling",
                             min=0.0, max=1.0)
    sample_steps: int = common.flag(25, "DDIM steps; each costs two evaluations when guided",
                                    min=1)
    eta: float = common.flag(1.0, "DDIM noise: 0 = deterministic, 1 = fresh noise as in DDPM",
                             min=0.0, max=1.0)
    clip: bool = common.flag(True, "clip each step's clean-latent estimate to the training "
                             "latents' range")
    p_uncond: float = common.flag(0.2, "chance of hiding the label during training",
                                  min=0.0, max=1.0)
    guidance: float = common.flag(1.5, "guidance scale s (0: unconditional, 1: conditional; "
                                  "section 6)", min=0.0)
    compare: str = common.flag("", "chapter 04's metrics.json: train for its time, compare")
    gif: bool = common.flag(True, "write generation.gif (--no-gif skips it)")


# %% 1. The autoencoder: 06's VAE with a spatial latent and a light KL weight
# Two changes from 06. The latent is a grid, C x 7 x 7, made by convolutions:
# each latent position describes its own 4 x 4 patch of the digit, and the
# denoiser of section 4 can again be a convolutional network. And the KL term
# is weighted lightly. In 06 the KL was what made the latent sampleable: new
# digits came from z ~ N(0, I), so the codes had to fill N(0, I). Here the
# diffusion model learns where the codes lie, whatever their shape, so the KL
# only has to keep them from spreading without bound; a weight of 1 over 196
# latent values would blur the reconstructions, and those are the ceiling.
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

    def forward(self, x):
        # We predict log sigma^2 rather than sigma: any real number is a valid
        # log-variance, so the network needs no positivity constraint.
        mu, logvar = self.net(x).float().chunk(2, dim=1)   # (B, 2C, 7, 7) -> 2 x (B, C, 7, 7)
        return mu, logvar


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
        self.latent_channels = latent_channels
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


# from 06
def reparameterise(mu, logvar, eps=None):
    """z = mu + exp(log sigma^2 / 2) * eps; eps is drawn if not given. (B, d) -> (B, d)."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps


# from 06
def bernoulli_log_likelihood(logits, x):
    """log p(x|z) summed over the 784 pixels: (B, 1, 28, 28) -> (B,), in nats."""
    # binary_cross_entropy_with_logits is -[x log p + (1-x) log(1-p)], computed
    # from the logit without forming log(sigmoid), which underflows.
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


# from 06
def kl_to_standard_normal(mu, logvar):
    """KL( N(mu, sigma^2) || N(0, I) ) in closed form, summed over latent dims: (B, d) -> (B,)."""
    # KL = 1/2 * sum_j ( mu_j^2 + sigma_j^2 - 1 - log sigma_j^2 )
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def vae_terms(model: EncoderDecoder, x, eps=None):  # new in 08: KL over all C x 7 x 7 values
    """One-sample estimates per image: (log p(x|z), KL), each (B,).

    ELBO(x) = E_{z ~ q(z|x)}[ log p(x|z) ] - KL( q(z|x) || p(z) )  <=  log p(x)
    """
    mu, logvar = model.encoder(x)
    z = reparameterise(mu, logvar, eps)
    kl = kl_to_standard_normal(mu.flatten(1), logvar.flatten(1))  # new in 08: (B, C*49) -> (B,)
    return bernoulli_log_likelihood(model.decoder(z), x), kl


def vae_loss(model: EncoderDecoder, x, kl_weight: float, eps=None):  # new in 08: kl_weight
    """Per image, the mean over the batch of ( -log p(x|z) + kl_weight * KL ); 06's -ELBO at 1."""
    rec, kl = vae_terms(model, x, eps)
    return (kl_weight * kl - rec).mean(), {"rec": -rec.mean().item(), "kl": kl.mean().item()}


def train_vae(cfg: Config, data: common.Data, device, gen) -> tuple[EncoderDecoder, float]:
    """The autoencoder, trained for cfg.vae_steps; returns it and the seconds it took."""
    vae = EncoderDecoder(cfg.latent_channels, cfg.vae_width).to(device)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.vae_lr)
    stream = common.batches(data.x_train, data.y_train, cfg.batch_size, gen)
    progress = common.Progress(cfg.vae_steps, "autoencoder")
    for step in range(cfg.vae_steps):
        for g in opt.param_groups:  # section 5's warm-up and cosine decay
            g["lr"] = learning_rate(step, cfg.vae_steps, cfg.vae_lr)
        x = next(stream)[0].to(device)
        with common.autocast(device):
            loss, parts = vae_loss(vae, x, cfg.kl_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        progress.update(step + 1, loss=loss.item(), kl=parts["kl"])
    return vae.eval(), progress.elapsed()


# %% 2. Encoding the training digits: posterior means, standardised per channel
# Each digit is encoded once, to the mean mu(x) of q(z|x), not to a random
# draw. The decoder was trained on draws z = mu + sigma * eps, so every point
# within about sigma of mu decodes to much the same digit: the mean is the
# centre of that region, and the denoiser's own small errors stay inside it.
# A draw would ask the denoiser to learn that blur too (sigma is not small
# here: the run prints it relative to the spread of the means), and one
# deterministic pass over the 4,000 digits serves every training step.
# (Stable Diffusion draws a sample; either works.)
# Then the scale. The noise schedule assumes data of about unit variance: x_t
# = sqrt(abar) x_0 + sqrt(1 - abar) eps mixes signal and noise in the
# proportions it does only if x_0 is as large as eps. Codes that were 10x
# larger would still be clearly visible at t = T, where sampling starts from
# pure noise; codes 10x smaller would drown early and most steps would be
# wasted. Stable Diffusion multiplies its latents by one global factor
# (0.18215) for this; here each channel gets its own shift and scale, because
# a lightly regularised VAE leaves its channels at different sizes.
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


@torch.no_grad()
def posterior_spread(vae: EncoderDecoder, x: torch.Tensor, device) -> float:
    """Mean posterior sigma over the standard deviation of the means (both unscaled): the
    noise a random draw would add, relative to the signal (0 = a plain autoencoder)."""
    mu, logvar = vae.encoder(x.to(device))
    return (logvar.mul(0.5).exp().mean() / mu.std((0, 2, 3)).mean()).item()


# %% 3. The schedule and the closed form q(z_t | z_0), as in 04, on latents
# z_t = sqrt(abar_t) * z_0 + sqrt(1 - abar_t) * eps: nothing in the forward
# process knows what the values mean, only that they are of unit scale.
# from 04
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


# from 04
def at(sched: dict, key: str, t: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """sched[key] at timesteps t (B,), as (B, 1, 1, 1) on t's device."""
    return sched[key].to(t.device)[t].to(dtype).view(-1, 1, 1, 1)


# from 04
def q_sample(x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, sched: dict) -> torch.Tensor:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, for a batch of timesteps t (B,)."""
    abar = at(sched, "abar", t)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


# from 04
def posterior_coefficients(sched: dict, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c0, ct) of the posterior mean  mean = c0 * x_0 + ct * x_t  (see posterior), (B,1,1,1).
    Computed in float64: near t = 1, 1 - abar_t is too small for float32's digits."""
    ab, ab_prev = at(sched, "abar", t, torch.float64), at(sched, "abar", t - 1, torch.float64)
    b, a = at(sched, "betas", t, torch.float64), at(sched, "alphas", t, torch.float64)
    c0, ct = ab_prev.sqrt() * b / (1 - ab), a.sqrt() * (1 - ab_prev) / (1 - ab)
    return c0.float(), ct.float()


# %% 4. The denoiser: 04's ResBlocks at 7x7, with the time and label embedding
# 04's UNet halves 28x28 twice to see the whole digit. A 7x7 latent has
# nothing left to halve (3x3, then 1x1, loses the layout), and it does not
# need to: each 3x3 convolution widens the view by two positions, so four
# ResBlocks (eight convolutions) see 17x17, the whole latent, from every
# position. So: a convolution into C channels, a few of 04's ResBlocks, each
# given the timestep-plus-label embedding, and a convolution back out.
# from 04
def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t (as in transformers' positions): (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


# from 04
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
# The same targets, label dropout and loss as 04 (all shape-agnostic: where
# 04's comments say (B, 1, 28, 28), read (B, C, 7, 7)). One default differs:
# the target. Predicting the noise (eps) relies on clipping the clean estimate
# it implies (03, section 4), and latents have no natural range to clip to;
# measured here, x0 drew better digits that followed the label far more often
# (README, claims table).
# from 04
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


# from 04
def training_target(x0, eps, xt, t, sched: dict, target: str) -> torch.Tensor:
    if target == "xprev":
        c0, ct = posterior_coefficients(sched, t)
        return c0 * x0 + ct * xt
    abar = at(sched, "abar", t)
    return {"eps": eps, "x0": x0, "v": abar.sqrt() * eps - (1 - abar).sqrt() * x0}[target]


# from 04
def x0_error_scale(t, sched: dict, target: str) -> torch.Tensor:
    """k with (error in target)^2 = k * (error in x0)^2, per image: (B,)."""
    snr = (at(sched, "abar", t) / (1 - at(sched, "abar", t))).flatten()
    if target == "xprev":
        return posterior_coefficients(sched, t)[0].flatten() ** 2
    return {"eps": snr, "x0": torch.ones_like(snr), "v": snr + 1}[target]


# from 04
def drop_labels(labels: torch.Tensor, p_uncond: float, gen=None) -> torch.Tensor:  # new in 04
    """Replace each label by NULL with probability p_uncond."""
    drop = torch.rand(labels.shape, generator=gen).to(labels.device) < p_uncond
    return torch.where(drop, torch.full_like(labels, NULL), labels)


# from 04
def timestep_weights(sched: dict, target: str) -> torch.Tensor:
    """min-SNR's weight (gamma = 5) on the target's squared error, for t = 1..T: (T,)."""
    t = torch.arange(1, sched["T"] + 1)
    snr = (at(sched, "abar", t) / (1 - at(sched, "abar", t))).flatten()
    return snr.clamp(max=5.0) / x0_error_scale(t, sched, target)


# from 04
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


# from 04
@torch.no_grad()
def ema_update(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    # ema <- decay * ema + (1 - decay) * weights: averages out the last few hundred
    # steps' noise in the weights, which gives visibly cleaner samples.
    for pe, p in zip(ema_model.parameters(), model.parameters()):
        pe.lerp_(p, 1 - decay)


# from 04
def learning_rate(step: int, total: int, peak: float, warmup: int = 100) -> float:
    """Linear warm-up (Adam's early steps are noisy), then cosine decay to zero.
    Ending at a small rate matters on a short budget: the last steps polish instead of jitter."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def train_denoiser(cfg: Config, z, y, device, sched: dict, seconds: float | None = None):
    """04's train() on latents z (N, C, 7, 7) with labels y: cfg.steps steps, or as many as
    `seconds` allow (--compare). Returns (the EMA model, seconds, steps)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    model = LatentDenoiser(cfg.latent_channels, cfg.channels, cfg.blocks).to(device)
    ema_model = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    batches = common.batches(z.to(device), y.to(device), cfg.batch_size, gen)
    total = cfg.steps if seconds is None else 10**9  # a clock's step count is found below
    progress, losses, step = common.Progress(total, "denoiser"), [], 0
    while step < total:
        if seconds is not None and step >= 10:
            # The steps the clock allows at the pace so far: the cosine decay of the learning
            # rate (a function of step / total) then ends at zero when the time runs out.
            total = progress.total = max(step + 1, round(step * seconds / progress.elapsed()))
        for g in opt.param_groups:
            g["lr"] = learning_rate(step, total, cfg.lr)
        z0, y0 = next(batches)
        with common.autocast(device):
            loss = diffusion_loss(model, z0, y0, sched, cfg.target, cfg.weighting, cfg.p_uncond,
                                  gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # a rare huge gradient cannot wreck it
        opt.step()
        ema_update(ema_model, model, min(cfg.ema, (1 + step) / (10 + step)))
        losses.append(loss.item())
        step += 1
        progress.update(step, loss=float(np.mean(losses[-50:])))
    return ema_model.eval(), progress.elapsed(), step


# %% 6. Sampling with guidance in latent space, then one decoder pass
# 04's guided DDIM, run on (C, 7, 7) noise; the decoder runs once, on the
# finished latent. The one change inside a step is the clipping of the clean
# estimate: 04 clipped it to [-1, 1], the range of pixels; latents have no
# such range, so the bound is the largest value a training digit's
# standardised code reached (section 2). It matters for --target eps only.
# The default scale is lower than 04's: guidance pushes harder here, and
# measured, s = 1.5 followed the label about as often as 04 does at its default
# (README).
# from 04
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
            clip: float = 0.0):  # new in 08: clip is a bound (0: none), not a switch
    tt = torch.full((xt.shape[0],), t, device=xt.device, dtype=torch.long)
    with common.autocast(xt.device):
        out_c, out_u = guided_output(model, xt, tt, labels, s)
    eps_c, _ = predictions(out_c, xt, tt, sched, target)
    eps_u, _ = predictions(out_u, xt, tt, sched, target)
    abar = at(sched, "abar", tt)
    eps = eps_u + s * (eps_c - eps_u)
    x0 = (xt - (1 - abar).sqrt() * eps) / abar.sqrt()
    if clip:
        x0 = x0.clamp(-clip, clip)  # new in 08: the training latents' range, not [-1, 1]
        eps = (xt - abar.sqrt() * x0) / (1 - abar).sqrt()  # the noise consistent with it
    return eps, x0


# from 04
def ddim_timesteps(T: int, steps: int) -> list[int]:
    """Evenly spaced timesteps from T down to 1, `steps` of them (at most T)."""
    steps = min(steps, T)
    return sorted({int(round(v)) for v in np.linspace(T, 1, steps)}, reverse=True)


@torch.no_grad()
def ddim_sample(model, labels, s: float, sched: dict, target: str, steps: int, device, gen=None,
                eta: float = 0.0, clip: float = 0.0, trace: list | None = None,
                shape: tuple = (4, 7, 7)) -> torch.Tensor:  # new in 08: clip, shape
    """DDIM from pure noise; `trace` (a list), if given, receives (t, x_t, x0_hat) of the
    first 40 images every step."""
    x = torch.randn((len(labels), *shape), generator=gen).to(device)  # new in 08: a latent
    labels = labels.to(device)
    ts = ddim_timesteps(sched["T"], steps)
    for i, t in enumerate(ts):
        eps, x0 = denoise(model, x, t, labels, s, sched, target, clip)
        if trace is not None:
            trace.append((t, x[:40].cpu(), x0[:40].cpu()))
        ab = sched["abar"][t].item()
        ab_next = sched["abar"][ts[i + 1]].item() if i + 1 < len(ts) else 1.0
        sigma = eta * math.sqrt((1 - ab_next) / (1 - ab) * (1 - ab / ab_next))
        noise = torch.randn(x.shape, generator=gen).to(device) if sigma > 0 else 0.0
        x = math.sqrt(ab_next) * x0 + math.sqrt(max(1 - ab_next - sigma**2, 0.0)) * eps \
            + sigma * noise
    return x


@torch.no_grad()
def generate(model, vae: EncoderDecoder, cfg: Config, labels, sched: dict, device,
             trace: list | None = None, batch: int = 500) -> torch.Tensor:  # new in 08: decode
    """Samples in [0, 1], (n, 1, 28, 28), one per label, 500 at a time: DDIM on latents
    (n, C, 7, 7), then the decoder. `trace` follows the first batch's latents."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    clip = vae.bound.item() if cfg.clip else 0.0
    out = []
    for i in range(0, len(labels), batch):
        z = ddim_sample(model, labels[i:i + batch], cfg.guidance, sched, cfg.target,
                        cfg.sample_steps, device, gen, cfg.eta, clip, trace if i == 0 else None,
                        (cfg.latent_channels, LATENT_SIDE, LATENT_SIDE))
        out.append(vae.decode_mean(z).cpu())  # (b, C, 7, 7) -> (b, 1, 28, 28)
    return torch.cat(out)


# from 04
def balanced_labels(n: int, digit: int = -1) -> torch.Tensor:  # new in 04
    """0,1,...,9,0,1,... (n of them), or n copies of one digit."""
    return torch.full((n,), digit) if digit >= 0 else torch.arange(n) % 10


# %% 7. Reporting: the reconstructions, chapter 04 side by side, the animation
@torch.no_grad()
def reconstruct(vae: EncoderDecoder, x: torch.Tensor, device, chunk: int = 1000) -> torch.Tensor:
    """Encode to the posterior mean and decode: the best the latent space can give back."""
    return torch.cat([vae.decode_mean(vae.encode(x[i:i + chunk].to(device))).cpu()
                      for i in range(0, len(x), chunk)])


COMPARE_KEYS = ("train_seconds", "sample_seconds", "n", "fd", "fd_ratio", "label_accuracy",
                "guidance")


def read_04_metrics(path: str) -> dict:
    """Chapter 04's metrics.json, checked: the keys the table needs."""
    other = common.read_metrics(path, COMPARE_KEYS, "04_cfg.py")
    config = other["config"] if isinstance(other.get("config"), dict) else {}
    missing = [f"config.{k}" for k in ("steps", "batch_size") if not isinstance(config.get(k), int)]
    if missing:
        raise common.UserError(f"--compare: {path} lacks {', '.join(missing)}")
    return other


def side_by_side(other: dict, m: dict) -> dict:
    """04's figures and this run's under the same names (08's training time includes the
    autoencoder's; its steps and steps per second are the denoiser's)."""
    def row(values, train, denoiser_seconds, steps, sample, r):
        return {"values_per_image": values, "train_seconds": train, "steps": steps,
                "steps_per_second": steps / max(denoiser_seconds, 1e-9),
                "sample_seconds_per_image": sample / r["n"],
                **{k: r[k] for k in ("n", "fd", "fd_ratio", "label_accuracy", "guidance")}}
    return {"04": row(PIXELS, other["train_seconds"], other["train_seconds"],
                      other["config"]["steps"], other["sample_seconds"], other),
            "08": row(m["latent_values"], m["train_seconds"], m["denoiser_seconds"],
                      m["denoiser_steps"], m["sample_seconds"], m)}


def comparison_table(c: dict) -> str:
    rows = [("values the denoiser sees", "values_per_image", "{:.0f}"),
            ("training seconds, in all", "train_seconds", "{:.0f}"),
            ("denoiser steps", "steps", "{:.0f}"),
            ("denoiser steps per second", "steps_per_second", "{:.1f}"),
            ("sample seconds per image", "sample_seconds_per_image", "{:.4f}"),
            ("guidance s", "guidance", "{:g}"), ("N", "n", "{:.0f}"), ("FD", "fd", "{:.2f}"),
            ("FD / floor", "fd_ratio", "{:.2f}"), ("label accuracy", "label_accuracy", "{:.3f}")]
    lines = [f"{'':26s} {'04 (pixels)':>12s} {'08 (latent)':>12s}"]
    lines += [f"{name:26s} {fmt.format(c['04'][k]):>12s} {fmt.format(c['08'][k]):>12s}"
              for name, k, fmt in rows]
    return "\n".join(lines)


def save_animation(out, trace: list, vae: EncoderDecoder) -> None:  # new in 08: decoded latents
    """generation.gif: the latents z_t of four samples per digit, decoded at every DDIM step."""
    order = [d + 10 * k for d in range(10) for k in range(4)]  # a row of four per digit
    with torch.no_grad():
        frames = [vae.decode_mean(z[order].to(vae.shift.device)).cpu()[:, 0] for _, z, _ in trace]
    captions = [f"DDIM step {i + 1} of {len(trace)}: t = {t}, z_t decoded"
                for i, (t, _, _) in enumerate(trace)]
    common.save_animation(out / "generation.gif", frames, captions, 4,
                          [f"{d}" for d in range(10)], fps=4)


def save_figures(out, cfg: Config, x, labels, held, recon, recon_fd: float, trace, vae):
    common.save_grid(out / "samples.png", x[:100], nrow=10,
                     title=f"{SCRIPT}: s={cfg.guidance:g}")
    common.save_rows(out / "reconstructions.png",
                     [(name, imgs[k * 12:(k + 1) * 12]) for k in range(2)
                      for name, imgs in (("held out", held), ("decoded", recon))],
                     title=f"held-out digits and their reconstructions: FD {recon_fd:.2f}")
    if cfg.gif and trace and len(trace[0][1]) == 40 and (labels[:40] == torch.arange(40) % 10
                                                         ).all():
        save_animation(out, trace, vae)


# %% 8. Putting it together
SUMMARY = ["train_seconds", "vae_seconds", "denoiser_seconds", "sample_seconds",
           "vae_steps_per_second", "denoiser_steps_per_second", "sample_seconds_per_image",
           "recon_fd", "recon_fd_ratio", "n", "fd", "fd_floor", "fd_ratio", "label_accuracy",
           "confidence", "coverage", "memorised"]


def load_or_train(cfg: Config, data: common.Data, device, gen, out,
                  budget: float | None):  # new in 08: two models, and --compare's budget
    """(vae, denoiser, schedule, timings): from --load, or trained now (the autoencoder, the
    encoding, then the denoiser; with `budget` the denoiser gets what time is left)."""
    ckpt = common.load_checkpoint(cfg.load, SCRIPT) if cfg.load else None
    if ckpt:  # these define the models: the checkpoint's, whatever the flags say
        for key in ("latent_channels", "vae_width", "channels", "blocks", "schedule",
                    "timesteps", "target"):
            setattr(cfg, key, ckpt["config"][key])
    sched = make_schedule(cfg.schedule, cfg.timesteps)
    if ckpt:
        vae = EncoderDecoder(cfg.latent_channels, cfg.vae_width).to(device).eval()
        model = LatentDenoiser(cfg.latent_channels, cfg.channels, cfg.blocks).to(device).eval()
        common.load_state(vae, ckpt["state"].get("vae", {}), cfg.load)
        common.load_state(model, ckpt["state"].get("denoiser", {}), cfg.load)
        common.copy_checkpoint(cfg.load, out)
        return vae, model, sched, ckpt["extra"]
    start = time.perf_counter()
    vae, vae_seconds = train_vae(cfg, data, device, gen)
    z = fit_latents(vae, data.x_train, device)
    left = None if budget is None else max(0.0, budget - (time.perf_counter() - start))
    model, seconds, steps = train_denoiser(cfg, z, data.y_train, device, sched, left)
    times = {"train_seconds": time.perf_counter() - start, "vae_seconds": vae_seconds,
             "denoiser_seconds": seconds, "denoiser_steps": steps,
             "vae_steps_per_second": cfg.vae_steps / vae_seconds,
             "denoiser_steps_per_second": steps / seconds,
             "posterior_spread": posterior_spread(vae, data.x_held, device)}
    common.save_checkpoint(out / "model.pt", SCRIPT, cfg, {"vae": vae.state_dict(),
                                                           "denoiser": model.state_dict()}, times)
    return vae, model, sched, times


def main(argv=None):  # new in 08: autoencoder, latents, denoiser; one guidance scale
    cfg = common.parse_config(Config, argv, __doc__)
    other = read_04_metrics(cfg.compare) if cfg.compare else None
    with common.run_folder(cfg, __file__) as out:
        gen = common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = common.Judge.load(data)
        budget = float(other["train_seconds"]) if other else None  # --compare: 04's time
        vae, model, sched, times = load_or_train(cfg, data, device, gen, out, budget)
        held = data.x_held[:cfg.samples]
        recon = reconstruct(vae, held, device)
        recon_eval = judge.evaluate(recon, data.y_held[:cfg.samples])
        print(common.describe(recon_eval, "reconstructions (the ceiling): ") + " | posterior "
              f"sigma / spread of the means {times['posterior_spread']:.2f}")
        labels, start, trace = balanced_labels(cfg.samples), time.perf_counter(), []
        x = generate(model, vae, cfg, labels, sched, device, trace)
        sample_seconds = time.perf_counter() - start
        result = judge.evaluate(x, labels)
        print(common.describe(result, f"samples at s={cfg.guidance:g}: "))
        metrics = {**times, "sample_seconds": sample_seconds,
                   "sample_seconds_per_image": sample_seconds / len(x), **result,
                   "guidance": cfg.guidance, "recon_fd": recon_eval["fd"],
                   "recon_fd_ratio": recon_eval["fd_ratio"], "reconstruction": recon_eval,
                   "latent_values": cfg.latent_channels * LATENT_SIDE ** 2,
                   "pixel_values": PIXELS, "latent_scale": vae.scale.flatten().tolist(),
                   "latent_bound": vae.bound.item(), "device": str(device),
                   "denoiser_parameters": sum(p.numel() for p in model.parameters()),
                   "vae_parameters": sum(p.numel() for p in vae.parameters()),
                   "config": dataclasses.asdict(cfg)}
        if other is not None:
            metrics["compare"] = side_by_side(other, metrics)
            print(comparison_table(metrics["compare"]))
        save_figures(out, cfg, x, labels, held, recon, recon_eval["fd"], trace, vae)
        common.save_samples(out, x, labels)
        common.save_metrics(out, metrics)
    common.print_summary(metrics, SUMMARY)
    return metrics


if __name__ == "__main__":
    common.run_main(main)
