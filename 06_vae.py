"""06_vae.py: the master forger - an autoencoder versus a variational autoencoder.

The idea. An encoder compresses a digit into a short latent "recipe" z, and a
decoder turns the recipe back into a digit. A plain autoencoder learns recipes
that reconstruct well, but nothing says *where* in latent space they lie, so a
recipe drawn at random from N(0, I) decodes to a smudge: you can copy digits,
not invent them. A variational autoencoder (VAE) changes only the loss: the
encoder names a small Gaussian cloud q(z|x) = N(mu(x), sigma(x)^2) instead of a
point, the decoder must reconstruct from a random point of that cloud, and the
loss pays the KL divergence from each cloud to the prior N(0, I). That loss is
the negative ELBO, a lower bound on the log-likelihood turned upside down, and
it pushes the recipes of all training digits to fill the prior: draw
z ~ N(0, I), decode, and you get a new digit - a forgery.

Where it sits. 05_gan.py learned a sampler with no likelihood at all, judged
by a second network. This chapter brings a likelihood back, as the
autoregressive and diffusion chapters have, but through a latent variable and
a bound: one decoder pass per sample, and a number (nats per image) we can
compare on held-out digits.

Run:
    python 06_vae.py --samples 1000        # VAE + autoencoder + a 2-D VAE for the map
    python 06_vae.py --load runs/06_vae/model.pt --samples 1000

What it writes into --out (default runs/06_vae/): samples.png and samples.npz
(the VAE's samples from the prior), vae_vs_ae.png (both models sampled the same
way), interpolation.png, latent_map.png (the 2-D VAE), metrics.json, model.pt.

Measured on a 2-core CPU, the default run with --samples 1000: 3m45s in all
(10,000 steps of the VAE and the autoencoder side by side plus 2,000 of the
2-D VAE, 219 s; sampling 1,000 digits 0.01 s). Held-out -ELBO 121.6 nats per
image (reconstruction 102.2 + KL 19.5). Sampled from N(0, I), the VAE scores
FD 106 at N=1000 (22x the floor of 4.8 real held-out digits reach), judge
confidence 0.86, all ten classes; the autoencoder, sampled the same way,
FD 986 (206x), confidence 0.43, 7 classes: smudges.
"""
from __future__ import annotations

import dataclasses
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import common

SCRIPT = "06_vae"
PIXELS = 28 * 28
# The held-out ELBO is an average over random latent draws; K draws per image
# shrink its noise by sqrt(K) for K decoder passes (1,000 images: cheap).
ELBO_DRAWS = 5


@dataclasses.dataclass
class Config(common.BaseConfig):
    steps: int = dataclasses.field(default=10000, metadata={"help": "training steps (each updates the VAE and the autoencoder once)", "min": 1})
    batch_size: int = dataclasses.field(default=128, metadata={"help": "images per training step", "min": 1})
    latent_dim: int = dataclasses.field(default=16, metadata={"help": "size of the latent recipe z", "min": 1, "max": 512})
    hidden: int = dataclasses.field(default=512, metadata={"help": "width of the encoder's and decoder's hidden layers", "min": 8, "max": 8192})
    lr: float = dataclasses.field(default=1e-3, metadata={"help": "Adam learning rate", "min": 1e-7, "max": 1.0})
    map_steps: int = dataclasses.field(default=2000, metadata={"help": "training steps of the extra 2-D VAE drawn as latent_map.png (0 skips it)", "min": 0})


# %% 1. Encoder and decoder: the same network for the autoencoder and the VAE
# Both models below are this one pair; only the loss differs. That is the whole
# point of the chapter: the VAE's sampleable latent space comes from the loss,
# not from a different architecture.
#
# Why fully connected layers and not convolutions: measured on a 2-core CPU,
# 40 s of training each, 1,000 prior samples judged: this MLP (8 ms per step of
# 128 images) reached FD 139; a conv encoder/decoder with 32/64 channels
# (27 ms per step) FD 243, one with 16/32 channels (9 ms) FD 178. The conv nets
# had the better held-out ELBO (109-110 against 114 nats) but drew worse
# digits from the prior per second of CPU, and the samples are what we judge.
class Encoder(nn.Module):
    """x (B, 1, 28, 28) -> mu (B, d), log sigma^2 (B, d)."""

    def __init__(self, latent_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),                                  # (B, 1, 28, 28) -> (B, 784)
            nn.Linear(PIXELS, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 2 * latent_dim),             # -> (B, 2d): mu and log sigma^2 side by side
        )

    def forward(self, x):
        # We predict log sigma^2 rather than sigma: any real number is a valid
        # log-variance, so the network needs no positivity constraint.
        mu, logvar = self.net(x).float().chunk(2, dim=1)   # (B, 2d) -> 2 x (B, d)
        return mu, logvar


class Decoder(nn.Module):
    """z (B, d) -> logits (B, 1, 28, 28) of the Bernoulli likelihood p(x|z)."""

    def __init__(self, latent_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, PIXELS),                     # (B, d) -> (B, 784)
            nn.Unflatten(1, (1, 28, 28)),                  # -> (B, 1, 28, 28)
        )

    def forward(self, z):
        return self.net(z).float()


class EncoderDecoder(nn.Module):
    def __init__(self, latent_dim: int, hidden: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = Encoder(latent_dim, hidden)
        self.decoder = Decoder(latent_dim, hidden)

    def decode_mean(self, z):
        # The picture of a latent point: the mean of p(x|z), i.e. each pixel's
        # Bernoulli probability sigmoid(logit), an intensity in [0, 1].
        return torch.sigmoid(self.decoder(z))


# %% 2. The reparameterisation trick: sampling that gradients can pass through
# The VAE's loss needs an average over z ~ N(mu, sigma^2). Sampling z directly
# is a dead end for backpropagation: "draw a random number" has no derivative
# with respect to mu or sigma. Rewrite the same draw as a fixed transformation
# of noise that does not depend on the parameters:
#     z = mu + sigma * eps,   eps ~ N(0, I)
# Now z is an ordinary differentiable function of mu and sigma
# (dz/dmu = 1, dz/dsigma = eps), the randomness sits in eps, and the gradient
# of the loss flows through z into the encoder.
def reparameterise(mu, logvar, eps=None):
    """z = mu + exp(log sigma^2 / 2) * eps; eps is drawn if not given. (B, d) -> (B, d)."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps


# %% 3. The likelihood, the KL term, and the ELBO (reduced per image, in nats)
# The decoder's likelihood: every pixel is an independent Bernoulli whose
# probability is sigmoid(logit). Our pixels are intensities in [0, 1], not
# just 0 or 1, and we use them directly as targets:
#     log p(x|z) = sum_pixels [ x log p + (1 - x) log(1 - p) ]
# For a grey x this is not a normalised density on [0, 1]. It is, exactly, the
# expected log-probability of a random binarisation b ~ Bernoulli(x) of the
# image, E_b[log Bernoulli(b | p)]. Each such term is the log of a probability
# of a discrete image, so it is <= 0, and so is the ELBO: our "negative ELBO in
# nats" is an upper bound on the expected -log p of a binarised digit, the
# number Bernoulli-VAE papers on MNIST quote. (The continuous Bernoulli of
# Loaiza-Ganem and Cunningham, 2019, adds the missing normaliser, a density on
# [0, 1]; its log-likelihood can be positive, so its ELBO is not capped at 0,
# and its numbers are not comparable with ours.)
def bernoulli_log_likelihood(logits, x):
    """log p(x|z) summed over the 784 pixels: (B, 1, 28, 28) -> (B,), in nats."""
    # binary_cross_entropy_with_logits is -[x log p + (1-x) log(1-p)], computed
    # from the logit without forming log(sigmoid), which underflows.
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def kl_to_standard_normal(mu, logvar):
    """KL( N(mu, sigma^2) || N(0, I) ) in closed form, summed over latent dims: (B, d) -> (B,)."""
    # KL = 1/2 * sum_j ( mu_j^2 + sigma_j^2 - 1 - log sigma_j^2 )
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def vae_terms(model: EncoderDecoder, x, eps=None):
    """One-sample estimates per image: (log p(x|z), KL), each (B,).

    ELBO(x) = E_{z ~ q(z|x)}[ log p(x|z) ] - KL( q(z|x) || p(z) )  <=  log p(x)
    """
    mu, logvar = model.encoder(x)
    z = reparameterise(mu, logvar, eps)
    return bernoulli_log_likelihood(model.decoder(z), x), kl_to_standard_normal(mu, logvar)


def vae_loss(model: EncoderDecoder, x):
    # The reduction, stated because it is the classic confusion: sum over the
    # 784 pixels and over the latent dimensions (one number per image, in
    # nats), then the MEAN over the batch. The loss is "negative ELBO per image",
    # independent of the batch size, and reconstruction and KL keep the 1:1
    # balance the bound prescribes. Averaging over pixels as well (the default
    # reduction="mean" of F.binary_cross_entropy) would divide the
    # reconstruction by 784 but not the KL: silently a beta-VAE with beta = 784,
    # whose reconstructions all blur toward the average digit.
    rec, kl = vae_terms(model, x)
    return (kl - rec).mean(), {"rec": -rec.mean().item(), "kl": kl.mean().item()}


# %% 4. The plain autoencoder: the same network, a point instead of a cloud
# It keeps only mu (the log-variance half of the encoder's output is unused),
# decodes it without noise, and pays no KL: the loss is the reconstruction
# alone, in the same nats. Nothing ties its codes to N(0, I): they may sit far
# from the origin, spread in some directions and squashed in others, with gaps
# between the digits. Section 6 measures how far.
def ae_loss(model: EncoderDecoder, x):
    mu, _ = model.encoder(x)
    rec = bernoulli_log_likelihood(model.decoder(mu), x)
    return -rec.mean(), {"rec": -rec.mean().item()}


# %% 5. Training the two side by side
# Same architecture, same batches in the same order, same optimiser and steps:
# any difference between their samples is the loss's doing.
#
# How long: 4,000 training digits are few for 1.35M weights, and the held-out
# -ELBO is best early. Measured on a 2-core CPU (one VAE, lr 1e-3): after 2,000
# steps held-out -ELBO 113.4 nats and prior-sample FD 192; after 5,000 steps
# 115.6 nats but FD 133. The bound starts to overfit while the samples keep
# improving, so the default (10,000 steps) is chosen for the samples, and the
# held-out number it prints (about 122) is not this model's best.
def train(models: dict, data: common.Data, steps: int, batch_size: int, lr: float,
          gen: torch.Generator, device: torch.device, label: str = "train") -> dict:
    """models: name -> (EncoderDecoder, loss_fn). Each step updates every model on the same batch."""
    opts = {name: torch.optim.Adam(m.parameters(), lr=lr) for name, (m, _) in models.items()}
    for m, _ in models.values():
        m.train()
    stream = common.batches(data.x_train, data.y_train, batch_size, gen)
    progress = common.Progress(steps, label)
    shown = {}
    for step in range(1, steps + 1):
        x, _ = next(stream)
        x = x.to(device)
        for name, (model, loss_fn) in models.items():
            with common.autocast(device):
                loss, parts = loss_fn(model, x)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            shown[f"{name}_loss"] = loss.item()
            if "kl" in parts:
                shown[f"{name}_kl"] = parts["kl"]
        progress.update(step, **shown)
    for m, _ in models.values():
        m.eval()
    return shown


# %% 6. Sampling from the prior, held-out ELBO, and where the codes live
@torch.no_grad()
def sample_prior(model: EncoderDecoder, n: int, gen: torch.Generator, device: torch.device, chunk: int = 1000):
    """z ~ N(0, I) -> decoder -> mean image: (n, 1, 28, 28) in [0, 1]. Used for both models."""
    out = []
    for i in range(0, n, chunk):
        z = torch.randn(min(chunk, n - i), model.latent_dim, generator=gen).to(device)  # (b, d)
        with common.autocast(device):
            out.append(model.decode_mean(z).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def held_out_elbo(model: EncoderDecoder, x, gen: torch.Generator, device: torch.device,
                  draws: int = ELBO_DRAWS, chunk: int = 500) -> dict:
    """Held-out -ELBO per image in nats, split into reconstruction (-E log p(x|z)) and KL."""
    rec_sum, kl_sum = 0.0, 0.0
    for i in range(0, len(x), chunk):
        xb = x[i:i + chunk].to(device)
        for _ in range(draws):
            eps = torch.randn(len(xb), model.latent_dim, generator=gen).to(device)
            with common.autocast(device):
                rec, kl = vae_terms(model, xb, eps)
            rec_sum += rec.sum().item() / draws
            kl_sum += kl.sum().item() / draws
    n = len(x)
    return {"neg_elbo": (kl_sum - rec_sum) / n, "rec": -rec_sum / n, "kl": kl_sum / n}


@torch.no_grad()
def ae_reconstruction_nats(model: EncoderDecoder, x, device: torch.device) -> float:
    """-log p(x | z = mu(x)) per image: the autoencoder's reconstruction cost, no KL paid."""
    mu, _ = model.encoder(x.to(device))
    return -bernoulli_log_likelihood(model.decoder(mu), x.to(device)).mean().item()


@torch.no_grad()
def code_second_moments(model: EncoderDecoder, x, device: torch.device, variational: bool) -> np.ndarray:
    """Per latent dimension, E[z_j^2] over held-out digits' codes: (d,).

    Under the prior N(0, I) every entry is 1. For the VAE the codes are draws
    from q(z|x), so E[z^2] = mean of mu^2 + sigma^2; for the autoencoder, of mu^2.
    """
    mu, logvar = model.encoder(x.to(device))
    second = mu.pow(2) + (logvar.exp() if variational else 0.0)
    return second.mean(0).cpu().numpy()


# %% 7. Figures: both models' samples, interpolation, and the 2-D latent map
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _tile(x, nrow: int) -> np.ndarray:
    """(N, 1, 28, 28) -> one (rows*28, nrow*28) image, ink dark on white."""
    x = x[:, 0].cpu().numpy()
    rows = math.ceil(len(x) / nrow)
    canvas = np.zeros((rows * 28, nrow * 28), dtype=np.float32)
    for i, img in enumerate(x):
        r, c = divmod(i, nrow)
        canvas[r * 28:(r + 1) * 28, c * 28:(c + 1) * 28] = img
    return canvas


def save_comparison(path, vae_x, ae_x, vae_eval: dict, ae_eval: dict) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    for ax, x, name, ev in ((axes[0], vae_x, "VAE", vae_eval), (axes[1], ae_x, "autoencoder", ae_eval)):
        ax.imshow(_tile(x[:64], 8), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"{name}, z ~ N(0, I)\nFD {ev['fd']:.1f} at N={ev['n']} ({ev['fd_ratio']:.0f}x floor), "
                     f"confidence {ev['confidence']:.2f}", fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def interpolate(model: EncoderDecoder, x_a, x_b, n: int, device: torch.device):
    """Decode n evenly spaced points on the line between the codes (mu) of two digits: (n, 1, 28, 28)."""
    mu, _ = model.encoder(torch.stack([x_a, x_b]).to(device))        # (2, d)
    t = torch.linspace(0, 1, n, device=device).unsqueeze(1)          # (n, 1)
    z = (1 - t) * mu[0] + t * mu[1]                                  # (n, d)
    return model.decode_mean(z).cpu()


def pick_pairs(y, pairs=((1, 7), (3, 8), (4, 9))) -> list[tuple[int, int]]:
    """Indices of the first held-out digit of each class in each pair (classes present only)."""
    y = np.asarray(y)
    found = []
    for a, b in pairs:
        ia, ib = np.flatnonzero(y == a), np.flatnonzero(y == b)
        if len(ia) and len(ib):
            found.append((int(ia[0]), int(ib[0])))
    return found or [(0, 1)]


def save_interpolation(path, rows: list, names: list[str], n: int) -> None:
    plt = _plt()
    fig, axes = plt.subplots(len(rows), 1, figsize=(n * 0.7, len(rows) * 0.85 + 0.4), squeeze=False)
    for ax, row, name in zip(axes[:, 0], rows, names):
        ax.imshow(_tile(row, n), cmap="gray_r", vmin=0, vmax=1)
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Straight lines between two held-out digits' codes (left to right)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def save_latent_map(path, model: EncoderDecoder, x, y, device: torch.device, grid: int = 15) -> None:
    """The classic 2-D VAE picture: where held-out digits land, and what every place decodes to."""
    plt = _plt()
    mu, _ = model.encoder(x.to(device))
    mu = mu.cpu().numpy()
    # Grid points at evenly spaced quantiles of N(0, 1) in each axis, so each
    # cell covers the same prior probability (Kingma and Welling's figure).
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.03, 0.97, grid))
    zz = torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), -1).reshape(-1, 2)  # (grid^2, 2), row 0 = top
    imgs = model.decode_mean(zz.to(device)).cpu()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.8))
    sc = axes[0].scatter(mu[:, 0], mu[:, 1], c=np.asarray(y), cmap="tab10", s=6, vmin=-0.5, vmax=9.5)
    fig.colorbar(sc, ax=axes[0], ticks=range(10), label="digit")
    axes[0].set_xlim(-3.5, 3.5)
    axes[0].set_ylim(-3.5, 3.5)
    axes[0].set_aspect("equal")
    axes[0].set_title("held-out digits' codes mu(x)")
    axes[1].imshow(_tile(imgs, grid), cmap="gray_r", vmin=0, vmax=1,
                   extent=(0, grid, 0, grid))
    axes[1].set_title(f"decoded {grid}x{grid} grid at N(0,1) quantiles 3%..97%")
    axes[1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# %% 8. Putting it together
def copy_checkpoint(src, dst) -> None:
    if Path(src).resolve() != Path(dst).resolve():
        shutil.copyfile(src, dst)


def build(cfg_dict: dict, device: torch.device) -> tuple[EncoderDecoder, EncoderDecoder, EncoderDecoder | None]:
    """The VAE, the autoencoder and (if map_steps > 0) the 2-D VAE, from a config as a dict."""
    vae = EncoderDecoder(cfg_dict["latent_dim"], cfg_dict["hidden"]).to(device)
    ae = EncoderDecoder(cfg_dict["latent_dim"], cfg_dict["hidden"]).to(device)
    vae2d = EncoderDecoder(2, cfg_dict["hidden"]).to(device) if cfg_dict["map_steps"] > 0 else None
    return vae, ae, vae2d


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__)
    if cfg.samples < 2:
        raise common.UserError("--samples must be at least 2: the judge compares sets of samples")
    gen = common.seed_everything(cfg.seed)
    device = common.pick_device(cfg.device)
    data = common.load_data(cfg.data)
    out = common.out_dir(cfg, __file__)
    judge = common.Judge.load(data)

    if cfg.load:
        ckpt = common.load_checkpoint(cfg.load, SCRIPT)
        saved = ckpt["config"]
        if not all(k in saved for k in ("latent_dim", "hidden", "map_steps")):
            raise common.UserError(f"{cfg.load}: checkpoint lacks the model's sizes")
        vae, ae, vae2d = build(saved, device)
        common.load_state(vae, ckpt["state"].get("vae", {}), cfg.load)
        common.load_state(ae, ckpt["state"].get("ae", {}), cfg.load)
        if vae2d is not None:
            common.load_state(vae2d, ckpt["state"].get("vae2d", {}), cfg.load)
        for m in (vae, ae, vae2d):
            if m is not None:
                m.eval()
        copy_checkpoint(cfg.load, out / "model.pt")  # every run's folder holds its model.pt
        train_seconds = 0.0
        print(f"loaded {cfg.load}: latent_dim {saved['latent_dim']}, hidden {saved['hidden']}")
    else:
        vae, ae, vae2d = build(dataclasses.asdict(cfg), device)
        start = time.perf_counter()
        train({"vae": (vae, vae_loss), "ae": (ae, ae_loss)}, data, cfg.steps, cfg.batch_size, cfg.lr, gen, device)
        if vae2d is not None:
            train({"vae2d": (vae2d, vae_loss)}, data, cfg.map_steps, cfg.batch_size, cfg.lr, gen, device, "2-D VAE")
        train_seconds = time.perf_counter() - start
        state = {"vae": vae.state_dict(), "ae": ae.state_dict()}
        if vae2d is not None:
            state["vae2d"] = vae2d.state_dict()
        common.save_checkpoint(out / "model.pt", SCRIPT, cfg, state, {"train_seconds": train_seconds})

    # The VAE's samples are the chapter's samples: timed, saved, judged.
    sample_gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    x_vae = sample_prior(vae, cfg.samples, sample_gen, device)
    sample_seconds = time.perf_counter() - t0
    x_ae = sample_prior(ae, cfg.samples, sample_gen, device)
    vae_eval, ae_eval = judge.evaluate(x_vae), judge.evaluate(x_ae)
    print(common.describe(vae_eval, "VAE         z ~ N(0,I): "))
    print(common.describe(ae_eval, "autoencoder z ~ N(0,I): "))

    held = held_out_elbo(vae, data.x_held, torch.Generator().manual_seed(cfg.seed), device)
    ae_rec = ae_reconstruction_nats(ae, data.x_held, device)
    print(f"held-out VAE: -ELBO {held['neg_elbo']:.2f} nats/image = reconstruction {held['rec']:.2f} + KL {held['kl']:.2f} "
          f"({len(data.x_held)} digits, {ELBO_DRAWS} draws each)")
    print(f"held-out autoencoder: reconstruction {ae_rec:.2f} nats/image (no KL paid, so no bound on anything)")
    m_vae = code_second_moments(vae, data.x_held, device, variational=True)
    m_ae = code_second_moments(ae, data.x_held, device, variational=False)
    print(f"E[z_j^2] per latent dim over held-out codes (the prior has 1): VAE {m_vae.min():.2f}..{m_vae.max():.2f}, "
          f"autoencoder {m_ae.min():.2f}..{m_ae.max():.2f}")

    common.save_grid(out / "samples.png", x_vae[:100], nrow=10, title="VAE: decoder means at z ~ N(0, I)")
    common.save_samples(out, x_vae)
    save_comparison(out / "vae_vs_ae.png", x_vae, x_ae, vae_eval, ae_eval)
    pairs = pick_pairs(data.y_held)
    rows, names = [], []
    for ia, ib in pairs:
        for name, model in (("VAE", vae), ("AE", ae)):
            rows.append(interpolate(model, data.x_held[ia], data.x_held[ib], 10, device))
            names.append(f"{name} {int(data.y_held[ia])}->{int(data.y_held[ib])}")
    save_interpolation(out / "interpolation.png", rows, names, 10)
    figures = ["samples.png", "vae_vs_ae.png", "interpolation.png"]

    metrics = {"train_seconds": train_seconds, "sample_seconds": sample_seconds, **vae_eval,
               "neg_elbo_held": held["neg_elbo"], "rec_nats_held": held["rec"], "kl_nats_held": held["kl"],
               "ae_fd": ae_eval["fd"], "ae_fd_ratio": ae_eval["fd_ratio"], "ae_confidence": ae_eval["confidence"],
               "ae_rec_nats_held": ae_rec, "ae": ae_eval,
               "vae_code_second_moment": [float(v) for v in m_vae], "ae_code_second_moment": [float(v) for v in m_ae]}
    if vae2d is not None:
        held2 = held_out_elbo(vae2d, data.x_held, torch.Generator().manual_seed(cfg.seed), device)
        print(f"held-out 2-D VAE: -ELBO {held2['neg_elbo']:.2f} nats/image (reconstruction {held2['rec']:.2f} + KL {held2['kl']:.2f})")
        save_latent_map(out / "latent_map.png", vae2d, data.x_held, data.y_held, device)
        metrics["neg_elbo_held_2d"] = held2["neg_elbo"]
        figures.append("latent_map.png")
    common.save_metrics(out, metrics)
    print(f"wrote {', '.join(figures)}, samples.npz, metrics.json, model.pt to {out}")
    common.print_summary(metrics, ["train_seconds", "sample_seconds", "neg_elbo_held", "n", "fd", "fd_floor",
                                   "fd_ratio", "score", "confidence", "coverage", "memorised", "ae_fd", "ae_fd_ratio"])


if __name__ == "__main__":
    common.run_main(main)
