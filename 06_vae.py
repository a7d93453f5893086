"""06_vae.py: an autoencoder's latent space cannot be sampled; a variational autoencoder's can.

An encoder compresses a digit into a short latent "recipe" z and a decoder
turns the recipe back into a digit. A plain autoencoder learns recipes that
reconstruct well, but nothing says *where* in latent space they lie, so a
recipe drawn at random from N(0, I) decodes to a smudge: it can copy digits,
not invent them. A variational autoencoder (VAE, Kingma and Welling 2014)
changes only the loss: the encoder names a small Gaussian cloud
q(z|x) = N(mu(x), sigma(x)^2) instead of a point, the decoder reconstructs from
a random point of that cloud, and the loss pays the KL divergence from each
cloud to the prior N(0, I). That loss, the negative ELBO, pushes the recipes of
all training digits to fill the prior: draw z ~ N(0, I), decode, and you get a
new digit in one decoder pass.

Before: 05_gan.py (a sampler with no likelihood at all, taught by a critic).
This chapter brings back a likelihood, as a bound through a latent variable.
After: 07_causal_transformer.py (exact likelihoods again, chapter 01's
autoregression with the architecture of large language models).

Run:  python 06_vae.py            (train both models, sample 1,000 digits each; runs/06_vae/)
      python 06_vae.py --load runs/06_vae/model.pt
      python experiments/06_latent_map.py     (a VAE with a 2-D latent, and its map)
      python experiments/06_interpolation.py --load runs/06_vae/model.pt   (lines between codes)

samples.png holds the VAE's digits from the prior, vae_vs_ae.png both models sampled
the same way, generation.gif both models decoding the same closed walk through the prior.
"""
from __future__ import annotations

import common  # first: from here on Ctrl-C prints one line, even while torch loads

import dataclasses
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SCRIPT = "06_vae"
IMAGE_SHAPE = (1, 28, 28)  # MNIST: (channels, height, width)


# %% 0. Settings
@dataclasses.dataclass
class Config(common.BaseConfig):
    steps: int = common.flag(7000, "training steps (each updates both models once)", min=1)
    batch_size: int = common.flag(128, "images per training step", min=1)
    latent_dim: int = common.flag(16, "size of the latent recipe z", min=1, max=512)
    hidden: int = common.flag(512, "width of the hidden layers", min=8, max=8192)
    lr: float = common.flag(2e-3, "Adam learning rate", min=1e-7, max=1.0)


# %% 1. Encoder and decoder: the same network for the autoencoder and the VAE
# Both models below are this one pair; only the loss differs. That is the whole
# point of the chapter: the VAE's sampleable latent space comes from the loss,
# not from a different architecture. Fully connected layers, not convolutions:
# measured here, at equal CPU time they drew better digits from the prior,
# though conv nets reached a better held-out ELBO (docs/experiments.md).
class Encoder(nn.Module):
    """x (B, C, H, W) -> mu (B, d), log sigma^2 (B, d)."""

    def __init__(self, latent_dim: int, hidden: int, image_shape=IMAGE_SHAPE):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),                                  # (B, C, H, W) -> (B, C*H*W): 784
            nn.Linear(math.prod(image_shape), hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 2 * latent_dim),             # -> (B, 2d): mu and log sigma^2
        )

    def forward(self, x):
        # We predict log sigma^2 rather than sigma: any real number is a valid
        # log-variance, so the network needs no positivity constraint.
        mu, logvar = self.net(x).float().chunk(2, dim=1)   # (B, 2d) -> 2 x (B, d)
        return mu, logvar


class Decoder(nn.Module):
    """z (B, d) -> logits (B, C, H, W) of the Bernoulli likelihood p(x|z)."""

    def __init__(self, latent_dim: int, hidden: int, image_shape=IMAGE_SHAPE):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, math.prod(image_shape)),     # (B, d) -> (B, C*H*W)
            nn.Unflatten(1, tuple(image_shape)),           # -> (B, C, H, W)
        )

    def forward(self, z):
        return self.net(z).float()


class EncoderDecoder(nn.Module):
    """The pair for images of image_shape (channels, height, width): fully connected, so any
    number of channels and any height and width."""

    def __init__(self, latent_dim: int, hidden: int, image_shape=IMAGE_SHAPE):
        super().__init__()
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (channels, height, width), got {image_shape}")
        self.latent_dim, self.image_shape = latent_dim, tuple(image_shape)
        self.encoder = Encoder(latent_dim, hidden, image_shape)
        self.decoder = Decoder(latent_dim, hidden, image_shape)

    def decode_mean(self, z):
        # The picture of a latent point: the mean of p(x|z), i.e. each pixel's
        # Bernoulli probability sigmoid(logit), an intensity in [0, 1].
        return torch.sigmoid(self.decoder(z))


# %% 2. The reparameterisation trick: sampling that gradients can pass through
# The VAE's loss averages over z ~ N(mu, sigma^2), but "draw a random number"
# has no derivative with respect to mu or sigma. Draw the same z as a fixed
# function of noise that does not depend on the parameters,
#     z = mu + sigma * eps,   eps ~ N(0, I),
# and z is differentiable in mu and sigma (dz/dmu = 1, dz/dsigma = eps): the
# randomness sits in eps, and the gradient flows through z into the encoder.
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
# image, E_b[log Bernoulli(b | p)]: the log of a probability of a discrete
# image, so <= 0, and so is the ELBO. Our "negative ELBO in nats" is an upper
# bound on the expected -log p of a binarised digit, the number Bernoulli-VAE
# papers on MNIST quote. It is NOT comparable with chapter 01's held-out
# likelihood: 01 scores exactly the one 0/1 image made by cutting each digit at
# half intensity (K=2); ours bounds an average over random binarisations, other
# images (every grey pixel a coin flip, which alone costs nats), from above.
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


def vae_loss(model: EncoderDecoder, x, eps=None):
    """-ELBO per image, the mean over the batch of ( -log p(x|z) + KL ); eps as in vae_terms."""
    # The reduction, the classic confusion: SUM over the 784 pixels and the
    # latent dimensions (nats per image), then the MEAN over the batch, so that
    # reconstruction and KL keep the 1:1 balance the bound prescribes. Averaging
    # over pixels too (F.binary_cross_entropy's default) would divide only the
    # reconstruction by 784: silently a beta-VAE with beta = 784, all blur.
    rec, kl = vae_terms(model, x, eps)
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


def build(latent_dim: int, hidden: int, image_shape=IMAGE_SHAPE) -> nn.ModuleDict:
    """The VAE and the autoencoder of the same shape, as one module (one checkpoint)."""
    return nn.ModuleDict({"vae": EncoderDecoder(latent_dim, hidden, image_shape),
                          "ae": EncoderDecoder(latent_dim, hidden, image_shape)})


# %% 5. Training the two side by side
# Same architecture, same batches in the same order, same optimiser and steps:
# any difference between their samples is the loss's doing. With 4,000
# training digits the held-out bound is best early and then overfits while the
# prior samples keep improving; the default length is chosen for the samples
# (docs/experiments.md).
def train_step(model: EncoderDecoder, opt, x, loss_fn=vae_loss) -> dict:
    """One optimizer step on images x (B, C, H, W) in [0, 1] with loss_fn (the VAE's -ELBO, or
    ae_loss for the autoencoder); returns the loss and its parts as numbers."""
    loss, parts = loss_fn(model, x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"loss": loss.item(), **parts}


LOSSES = {"vae": vae_loss, "ae": ae_loss}


def train(models: nn.ModuleDict, cfg: Config, data: common.Data, device) -> dict:
    """Each step updates every model of `models` on one batch, each with its name's loss in
    LOSSES (a VAE alone, {"vae": ...}, trains too)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opts = {name: torch.optim.Adam(m.parameters(), lr=cfg.lr) for name, m in models.items()}
    models.train()
    stream = common.batches(data.x_train, data.y_train, cfg.batch_size, gen)
    progress = common.Progress(cfg.steps)
    for step in range(1, cfg.steps + 1):
        x = next(stream)[0].to(device)
        shown = {}  # this step's losses: Progress stops the run if any diverges
        for name, model in models.items():
            with common.autocast(device):
                parts = train_step(model, opts[name], x, LOSSES[name])
            shown.update({f"{name}_{k}": parts[k] for k in ("loss", "kl") if k in parts})
        progress.update(step, **shown)
    return {"train_seconds": progress.elapsed()}


# %% 6. Sampling from the prior, the held-out ELBO, and where the codes live
@torch.no_grad()
def sample_prior(model: EncoderDecoder, n: int, gen: torch.Generator, chunk: int = 1000):
    """z ~ N(0, I) -> decoder -> mean image: (n, C, H, W) in [0, 1] on the CPU, z drawn by gen
    on the CPU (the same numbers on any device). Used for both models."""
    out, device = [], next(model.parameters()).device
    for i in range(0, n, chunk):
        z = torch.randn(min(chunk, n - i), model.latent_dim, generator=gen).to(device)  # (b, d)
        out.append(model.decode_mean(z).float().cpu())
    return torch.cat(out)


# The held-out ELBO is an average over random latent draws; K draws per image
# shrink its noise by sqrt(K) for K decoder passes (1,000 images: cheap).
@torch.no_grad()
def held_out_elbo(model: EncoderDecoder, x, gen: torch.Generator, device: torch.device,
                  draws: int = 5, chunk: int = 500) -> dict:
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
    return {"neg_elbo_held": (kl_sum - rec_sum) / n, "rec_nats_held": -rec_sum / n,
            "kl_nats_held": kl_sum / n}


@torch.no_grad()
def ae_reconstruction_nats(model: EncoderDecoder, x, device: torch.device) -> float:
    """-log p(x | z = mu(x)) per image: the autoencoder's reconstruction cost, no KL paid."""
    mu, _ = model.encoder(x.to(device))
    return -bernoulli_log_likelihood(model.decoder(mu), x.to(device)).mean().item()


@torch.no_grad()
def code_second_moments(model: EncoderDecoder, x, device: torch.device,
                        variational: bool) -> list[float]:
    """Per latent dimension, E[z_j^2] over held-out digits' codes: (d,).

    Under the prior N(0, I) every entry is 1. For the VAE the codes are draws
    from q(z|x), so E[z^2] = mean of mu^2 + sigma^2; for the autoencoder, of mu^2.
    """
    mu, logvar = model.encoder(x.to(device))
    second = mu.pow(2) + (logvar.exp() if variational else 0.0)
    return second.mean(0).tolist()


def held_out(vae, ae, x, seed: int, device) -> dict:
    """The held-out numbers: the VAE's bound and its parts, the autoencoder's reconstruction,
    and where both models' codes live."""
    return {**held_out_elbo(vae, x, torch.Generator().manual_seed(seed), device),
            "ae_rec_nats_held": ae_reconstruction_nats(ae, x, device),
            "vae_code_second_moment": code_second_moments(vae, x, device, True),
            "ae_code_second_moment": code_second_moments(ae, x, device, False)}


# %% 7. A closed walk through the prior
# For a, b ~ N(0, I) independent,
#     z(theta) = a cos(theta) + b sin(theta)
# is N(0, cos^2 + sin^2) = N(0, I) at every theta: each frame is a fair draw
# from the prior, and the path closes at theta = 2 pi. (A straight line between
# two draws passes points of norm shrunk by up to sqrt(2), rare under the prior
# in 16 dimensions.) The autoencoder, whose codes do not fill N(0, I), decodes
# the same walk mostly to smudges.
def prior_loop(walkers: int, frames: int, latent_dim: int, gen: torch.Generator):
    """One closed loop per walker, `frames` points each: (frames, walkers, d)."""
    a = torch.randn(walkers, latent_dim, generator=gen)
    b = torch.randn(walkers, latent_dim, generator=gen)
    theta = torch.arange(frames) * (2 * math.pi / frames)  # stops a step short of 2 pi
    return torch.cos(theta)[:, None, None] * a + torch.sin(theta)[:, None, None] * b


@torch.no_grad()
def decode_path(model: EncoderDecoder, z, device: torch.device):
    """Decoder means along a path: (frames, walkers, d) -> (frames, walkers, C, H, W)."""
    f, w, d = z.shape
    with common.autocast(device):
        x = model.decode_mean(z.reshape(f * w, d).to(device)).float().cpu()
    return x.reshape(f, w, *model.image_shape)


# %% 8. Reporting: the judge's figures for both models, the pictures and the walk
def judged(judge, x_vae, x_ae) -> dict:
    """The judge's figures for the VAE's samples, and ae_* (all under "ae") for the
    autoencoder's, drawn the same way."""
    if judge is None:
        return {}
    ae = judge.evaluate(x_ae)
    return {**judge.evaluate(x_vae), "ae_fd": ae["fd"], "ae_fd_ratio": ae["fd_ratio"],
            "ae_confidence": ae["confidence"], "ae": ae}


def save_pictures(out, cfg: Config, vae, ae, x_vae, x_ae, device) -> None:
    """samples.png, vae_vs_ae.png (up to 36 samples of each) and generation.gif."""
    common.save_images(out / "samples.png", x_vae[:100], 10,
                       titles="VAE: decoder means at z ~ N(0, I)")
    ncol = min(12, len(x_vae))
    rows = min(36, len(x_vae)) // ncol  # whole rows of each model's samples
    common.save_images(out / "vae_vs_ae.png", torch.cat([x_vae[:rows * ncol], x_ae[:rows * ncol]]),
                       ncol, ["VAE"] * rows + ["autoencoder"] * rows,
                       "decoder means at z ~ N(0, I)")
    if cfg.gif:  # one closed walk through the prior, decoded by both models; a loop: no hold
        z = prior_loop(8, 48, vae.latent_dim, torch.Generator().manual_seed(cfg.seed + 1))
        frames = torch.cat([decode_path(vae, z, device), decode_path(ae, z, device)], 1)
        common.save_images(out / "generation.gif", list(frames), 8, ["VAE", "autoencoder"],
                           ["z(theta) = a cos theta + b sin theta"] * 48, fps=8, hold_s=0)


# %% 9. Putting it together
LINES = [("neg_elbo_held", "VAE held-out -ELBO, nats per image (lower is better)"),
         ("rec_nats_held", "  its reconstruction part"), ("kl_nats_held", "  its KL part"),
         ("ae_rec_nats_held", "autoencoder held-out reconstruction, nats (no KL: no bound)"),
         ("ae_fd", "autoencoder FD at z ~ N(0, I) (lower is better; the VAE's below)"),
         ("ae_confidence", "autoencoder: the judge's confidence (higher is better)")]


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__)
    with common.run_folder(cfg, SCRIPT) as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = common.load_judge(data)
        cfg, models, extra = common.load_or_train(
            cfg, out, SCRIPT, ("latent_dim", "hidden"),
            lambda c: build(c.latent_dim, c.hidden, data.x_train.shape[1:]).to(device),
            lambda m: train(m, cfg, data, device), data=data)
        vae, ae = models["vae"], models["ae"]
        # The VAE's samples are the chapter's samples: timed, saved, judged. The
        # autoencoder is sampled the same way, from the same generator, for contrast.
        gen, start = torch.Generator().manual_seed(cfg.seed), time.perf_counter()
        with common.autocast(device):
            x_vae = sample_prior(vae, cfg.samples, gen)
            sample_seconds = time.perf_counter() - start
            x_ae = sample_prior(ae, cfg.samples, gen)
        metrics = {**extra, "sample_seconds": sample_seconds, "device": str(device),
                   **judged(judge, x_vae, x_ae), **held_out(vae, ae, data.x_held, cfg.seed, device),
                   "config": dataclasses.asdict(cfg)}
        v, a = metrics["vae_code_second_moment"], metrics["ae_code_second_moment"]
        print(f"E[z_j^2] per latent dim over held-out codes (the prior has 1): VAE "
              f"{min(v):.2f}..{max(v):.2f}, autoencoder {min(a):.2f}..{max(a):.2f}")
        common.save_samples(out, x_vae)
        save_pictures(out, cfg, vae, ae, x_vae, x_ae, device)
        common.save_metrics(out, metrics)
    common.print_summary(metrics, LINES)


# %% Run it (in a notebook too; common.run_main(main, ["--steps", "300"]) changes settings)
if __name__ == "__main__":
    common.run_main(main)

# %% Exercises (answers: docs/exercises.md; patches for the code changes: docs/solutions/)
# The --load commands need the default run first.
# 1. Predict, then run: the printed E[z_j^2] of both models' codes (the prior's is 1), and
#    whose samples from N(0, I) the judge reads as digits.
#      python 06_vae.py --load runs/06_vae/model.pt
# 2. Predict, then run: decode the midpoint of the straight line between two held-out
#    digits' codes. Whose midpoints look more like digits, the VAE's or the autoencoder's?
#      python experiments/06_interpolation.py --load runs/06_vae/model.pt
# 3. Change the code: weight the KL term by beta = 4 in vae_loss (a beta-VAE). Predict the
#    held-out reconstruction and KL parts, and the samples' sharpness, then train
#    (a solution: docs/solutions/06_beta_vae.patch).
# 4. Explain: the VAE draws a digit in one decoder pass, where 03 takes 25 network
#    evaluations. Section 3's likelihood makes every pixel independent given z: which chapter
#    met that problem before, what did it cost there, and how was it fixed?
