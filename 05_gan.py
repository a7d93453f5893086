"""05_gan.py: the artist and the critic, a GAN whose training you can watch.

Two networks play a game. The generator (the artist) turns a random vector
z ~ N(0, I) into an image; the discriminator (the critic) says how likely an
image is to be a real digit rather than one of the artist's. The critic learns
to tell them apart, the artist to fool the critic. Nothing computes a
likelihood: the artist's only teaching signal is the gradient of the critic's
opinion. At the game's equilibrium the artist's images are distributed like
real ones and the critic can do no better than a coin toss.

Before: 01 to 04 spent many network passes per sample; a GAN gives the
likelihood up for one pass and sharp images. The price: the game can oscillate
instead of converge, and the artist can settle on a few kinds of digit (mode
collapse). So this script watches the game (training.png: the critic's accuracy
and losses; modes.png and generation.gif: a fixed batch of z through training),
and at the end spends what the critic still knows on choosing the digits to keep.
After: 06_vae.py brings a likelihood back, through a latent variable.

Run:  python 05_gan.py            (train, keep 1,000 of 4,000 drawn digits; runs/05_gan/)
      python 05_gan.py --load runs/05_gan/model.pt --keep 1   (every drawn digit, unfiltered)
      python 05_gan.py --arch mlp     (the fully connected pair, for comparison)
      python experiments/05_walks.py --load runs/05_gan/model.pt   (walks between two z)
"""
from __future__ import annotations

import common  # first: from here on Ctrl-C prints one line, even while torch loads

import dataclasses
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SCRIPT = "05_gan"
IMAGE_SHAPE = (1, 28, 28)  # MNIST: (channels, height, width)
SMOOTH = 100  # the critic's figures are means over this many steps: one batch is too noisy
GIF_IMAGES = 16  # the first images of the fixed-z batch, kept from every check for the GIF


# %% 0. Settings
@dataclasses.dataclass
class Config(common.BaseConfig):
    steps: int = common.flag(3500, "training steps (each: critic update, then generator)", min=1)
    batch_size: int = common.flag(64, "real images (and as many generated) per step", min=2)
    arch: str = common.flag("dcgan", "conv or fully connected pair", choices=["dcgan", "mlp"])
    z_dim: int = common.flag(64, "size of the generator's input noise z", min=1, max=1024)
    width: int = common.flag(48, "first conv layer's channels, or mlp width / 4", min=4, max=1024)
    lr: float = common.flag(1e-3, "peak Adam step, held half, then cosine to 0", min=1e-7, max=1.0)
    monitor_every: int = common.flag(250, "steps between snapshots of the fixed-z batch", min=1)
    monitor_n: int = common.flag(500, "size of the fixed-z batch watched in training", min=10)
    keep: float = common.flag(0.25, "share of drawn digits kept by the critic", min=0.01, max=1.0)


# %% 1. The artist and the critic
# A small DCGAN-style convolutional pair (Radford et al., 2016) by default; the fully connected
# pair with --arch mlp. Convolutions build a digit from local strokes that look the same
# anywhere, which an MLP learns for every position separately (measured here, the conv pair won
# at equal time: docs/experiments.md). Images leave the generator and enter the critic in
# [-1, 1]: a tanh output saturates at exactly those ends, and inputs centred on 0 suit the critic.
# BatchNorm in the generator keeps each layer's activations at a sane scale while the game
# shifts the target under it (a copied bug to avoid: nn.BatchNorm2d(64, 0.8) sets eps, not
# momentum, to 0.8 and blurs the normalisation into nothing). The critic has NO BatchNorm: batch
# statistics would let it tell a real batch from a generated one by the batch, not the image.
# The generator's last layer is a plain 3x3 convolution at full resolution: a stride-2
# transposed convolution writing pixels directly paints alternate pixels from different kernel
# entries, a checkerboard the artist would spend its training ironing out; a 3x3 layer that
# mixes neighbours removes that work.
class Critic(nn.Sequential):
    """Layers read as a critic: image (B, C, H, W) in [-1, 1] -> logits (B,), real or not."""

    def forward(self, x):
        return super().forward(x).squeeze(1).float()


def conv_pair(z_dim: int, width: int, image_shape=IMAGE_SHAPE) -> tuple[nn.Module, nn.Module]:
    """The generator, z (B, z_dim) -> image (B, C, H, W) in [-1, 1], upsampling H/4 -> H/2 -> H
    (MNIST: 7, 14, 28), and the critic, back down (w = width): H and W divisible by 4."""
    (C, H, W), c, f = image_shape, 2 * width, max(1, width // 2)
    if H % 4 or W % 4:
        raise ValueError(f"the conv pair needs height and width divisible by 4, got {H}x{W} "
                         "(the mlp pair takes any)")
    G = nn.Sequential(
        nn.Linear(z_dim, c * (H // 4) * (W // 4), bias=False),  # (B, z) -> (B, 2w*H/4*W/4)
        nn.Unflatten(1, (c, H // 4, W // 4)),                # -> (B, 2w, H/4, W/4)
        nn.BatchNorm2d(c), nn.ReLU(),
        nn.ConvTranspose2d(c, width, 4, 2, 1, bias=False),   # -> (B, w, H/2, W/2)
        nn.BatchNorm2d(width), nn.ReLU(),
        nn.ConvTranspose2d(width, f, 4, 2, 1, bias=False),   # -> (B, w/2, H, W)
        nn.BatchNorm2d(f), nn.ReLU(),
        nn.Conv2d(f, C, 3, 1, 1), nn.Tanh())                 # -> (B, C, H, W), 3x3 mix
    # LeakyReLU rather than ReLU: a critic unit that is "off" for a generated
    # image would pass no gradient back to the generator at all.
    D = Critic(
        nn.Conv2d(C, width, 4, 2, 1), nn.LeakyReLU(0.2),          # -> (B, w, H/2, W/2)
        nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),  # -> (B, 2w, H/4, W/4)
        nn.Flatten(), nn.Linear(c * (H // 4) * (W // 4), 1))      # -> (B, 2w*H/4*W/4) -> (B, 1)
    return G, D


def mlp_pair(z_dim: int, width: int, image_shape=IMAGE_SHAPE) -> tuple[nn.Module, nn.Module]:
    """The fully connected pair, with the same inputs and outputs (h = 4 * width); any size."""
    h, pixels = 4 * width, math.prod(image_shape)
    G = nn.Sequential(
        nn.Linear(z_dim, h), nn.BatchNorm1d(h), nn.ReLU(),
        nn.Linear(h, 2 * h), nn.BatchNorm1d(2 * h), nn.ReLU(),
        nn.Linear(2 * h, pixels), nn.Tanh(),                     # (B, 2h) -> (B, C*H*W)
        nn.Unflatten(1, tuple(image_shape)))                     # -> (B, C, H, W)
    D = Critic(nn.Flatten(), nn.Linear(pixels, 2 * h), nn.LeakyReLU(0.2),
               nn.Linear(2 * h, h), nn.LeakyReLU(0.2), nn.Linear(h, 1))  # (B, CHW) -> (B, 1)
    return G, D


def build(arch: str, z_dim: int, width: int, image_shape=IMAGE_SHAPE) -> nn.ModuleDict:
    """The pair for images of image_shape (channels, height, width) as one module, so one
    checkpoint: ["generator"] and ["critic"]. dcgan: height and width divisible by 4."""
    if arch not in ("dcgan", "mlp"):
        raise ValueError(f"arch must be 'dcgan' or 'mlp', got {arch!r}")
    G, D = (conv_pair if arch == "dcgan" else mlp_pair)(z_dim, width, image_shape)
    pair = nn.ModuleDict({"generator": G, "critic": D})
    pair.image_shape = tuple(image_shape)
    return pair


# %% 2. The game and its losses
# With D(x) = sigmoid(critic logit) the critic's belief that x is real, the
# minimax game of Goodfellow et al. (2014) is
#     min_G max_D  V(D, G) = E_x[ log D(x) ] + E_z[ log(1 - D(G(z))) ]
# The critic maximises V: it is logistic regression, real = 1 and generated = 0,
# so its loss is the binary cross-entropy of both batches.
# log D = -softplus(-logit) and log(1 - D) = -softplus(logit) give every loss
# from the logit without forming sigmoid first, which underflows.
def critic_loss(real_logits, fake_logits):
    """-V averaged per image: -E log D(x) - E log(1 - D(G(z)))."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


# The generator minimises V, i.e. the term log(1 - D(G(z))). Early in training
# the critic rejects generated images easily, D(G(z)) ~ 0, and there that term
# is flat: its gradient with respect to the logit is -D(G(z)) ~ 0, so the
# generator learns nothing. So, like Goodfellow et al. and nearly everyone
# since, we use the non-saturating loss: maximise log D(G(z)) instead. Same
# fixed point (the generator still wants D(G(z)) high), but its gradient w.r.t.
# the logit is -(1 - D(G(z))) ~ -1 exactly when the artist is worst.
def generator_loss(fake_logits):
    """Non-saturating: -E log D(G(z)), the loss actually used."""
    return F.softplus(-fake_logits).mean()


def generator_loss_minimax(fake_logits):
    """The literal minimax term E log(1 - D(G(z))), kept for comparison (tests); not trained."""
    return -F.softplus(fake_logits).mean()


# %% 3. One training step: the critic first, then the generator
# Goodfellow et al.'s Algorithm 1 with k = 1: update the critic on the current generator's
# images, then the generator against that freshly updated critic (the other order trains it
# against a critic one step stale). One generated batch serves both updates: a second one cost a
# generator pass for no gain in quality (docs/experiments.md). No gradient may leak from one
# network's loss into the other: the critic step detaches the generated batch, so its loss
# cannot reach the generator's weights; the generator step freezes the critic's (requires_grad
# off), so backpropagation passes *through* the critic to the image but leaves its weights alone
# (and saves computing their gradients).
def critic_step(D, opt_d, real, fake) -> dict:
    """Update D on a real batch and a generated batch, both (B, C, H, W) in [-1, 1]."""
    # Both batches in one pass, (2B, C, H, W) -> (2B,) logits: exact, not an approximation,
    # because the critic has no BatchNorm (section 1): each logit depends on its image alone.
    logits = D(torch.cat([real, fake.detach()]))
    real_logits, fake_logits = logits[:len(real)], logits[len(real):]
    loss = critic_loss(real_logits, fake_logits)
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    # Its accuracy on this step's batches, before its update: real is right when D > 1/2.
    return {"d_loss": loss.item(), "acc_real": (real_logits > 0).float().mean().item(),
            "acc_fake": (fake_logits < 0).float().mean().item()}


def generator_step(D, opt_g, fake) -> dict:
    """Update G through a generated batch that still carries its graph back to G's weights."""
    D.requires_grad_(False)
    loss = generator_loss(D(fake))
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    opt_g.step()
    D.requires_grad_(True)
    return {"g_loss": loss.item()}


def train_step(G, D, opt_g, opt_d, real, z_dim: int) -> dict:
    """One round of the game on a real batch (B, C, H, W) in [-1, 1]; returns the figures."""
    fake = G(torch.randn(len(real), z_dim).to(real.device))  # (B, C, H, W), graph kept
    return {**critic_step(D, opt_d, real, fake), **generator_step(D, opt_g, fake)}


# %% 4. Training, watched: the critic's accuracy and a fixed batch of z
# The critic's accuracy tells who is winning: near 100% on both batches, the
# critic has the upper hand; at the ideal equilibrium both would sit at 50%.
# A fixed batch of z (so any change is the generator's) asks another question:
# does the generator still draw every kind of digit? Training keeps its images
# every few hundred steps; afterwards the judge sorts them into digits
# (modes.png: a collapsed generator piles its samples onto a few classes), and
# their first few make generation.gif: the same z through training.
@torch.no_grad()
def generate(G, z, chunk: int = 1000):
    """z (N, z_dim) -> images (N, C, H, W) in [0, 1] on the CPU; the generator in eval mode,
    so BatchNorm uses its running statistics and each image depends on its own z alone."""
    was_training, out, device = G.training, [], next(G.parameters()).device
    G.eval()
    for i in range(0, len(z), chunk):
        out.append(G(z[i:i + chunk].to(device)).float().cpu())
    G.train(was_training)
    return (torch.cat(out) + 1) / 2                              # [-1, 1] -> [0, 1]


# Both players step at the same rate, held for the first half and then brought
# down to 0 along a cosine: with a constant step the generator swings from step
# to step, and the decay lets both players settle (measured: docs/experiments.md).
def learning_rate(step: int, steps: int, peak: float) -> float:
    """Step size at `step` of `steps`: peak for the first half, then half a cosine down to 0."""
    frac = step / steps
    return peak if frac <= 0.5 else peak * 0.5 * (1 + math.cos(math.pi * (frac - 0.5) / 0.5))


def train(model: nn.ModuleDict, cfg: Config, data: common.Data, device) -> dict:
    """The whole game. Returns train_seconds and the history: per step the critic's accuracy
    on both batches and both losses; per check its step and the fixed batch's images (as
    uint8 (N, C, H, W), a quarter of float32's size)."""
    G, D = model["generator"], model["critic"]
    gen = torch.Generator().manual_seed(cfg.seed)
    # beta1 = 0.5 rather than Adam's 0.9 (Radford et al., 2016): less momentum,
    # because in a game yesterday's gradient points at where the opponent was.
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    z_fixed = torch.randn(cfg.monitor_n, cfg.z_dim,
                          generator=torch.Generator().manual_seed(cfg.seed + 1))
    history = {k: [] for k in "acc_real acc_fake d_loss g_loss monitor_steps snapshots".split()}
    model.train()
    stream = common.batches(data.x_train, data.y_train, cfg.batch_size, gen)
    progress = common.Progress(cfg.steps)
    for step in range(1, cfg.steps + 1):
        for group in opt_g.param_groups + opt_d.param_groups:
            group["lr"] = learning_rate(step, cfg.steps, cfg.lr)
        real = next(stream)[0].to(device) * 2 - 1                # [0, 1] -> [-1, 1]
        with common.autocast(device):
            for k, v in train_step(G, D, opt_g, opt_d, real, cfg.z_dim).items():
                history[k].append(v)
        # Means over the last SMOOTH steps, this one included: a NaN stops the run at once.
        progress.update(step, **{k: float(np.mean(history[k][-SMOOTH:]))
                                 for k in ("d_loss", "g_loss", "acc_real", "acc_fake")})
        if step % cfg.monitor_every == 0 or step == cfg.steps:
            history["monitor_steps"].append(step)
            with common.autocast(device):  # (monitor_n, C, H, W) as bytes
                history["snapshots"].append((generate(G, z_fixed) * 255).round().byte())
    return {"train_seconds": progress.elapsed(), "history": history}


def watch(extra: dict, judge) -> dict:
    """After training: the judge's classes of every snapshot (modes.png); then only each
    snapshot's first GIF_IMAGES images stay (generation.gif), for a small checkpoint."""
    history = extra["history"]
    if judge is not None:
        history["monitor_counts"] = [judge.evaluate(s.float() / 255)["class_counts"]
                                     for s in history["snapshots"]]
    # clone: a slice would be saved with the whole snapshot under it
    history["snapshots"] = [s[:GIF_IMAGES].clone() for s in history["snapshots"]]
    return extra


# %% 5. Sampling: the critic's last opinion picks the digits to keep
# The critic never falls to chance here (training.png): it still tells many
# generated images from real ones, knowledge to spend at sampling time. Draw
# more digits than asked for and keep the share it finds most real, a simple
# discriminator rejection sampling (Azadi et al., 2019): at its optimum a critic
# has logit(x) = log p_data(x) / p_G(x), so accepting x with probability in
# proportion to exp(logit) would give exactly the data's distribution. Ours is
# far from optimal, so we keep a fixed share (a quarter: 4x the generator
# passes). Measured here, the best quarter beat the unfiltered digits (judged
# too) on FD and confidence without favouring one class (README, claims table).
@torch.no_grad()
def critic_filter(D, x, n: int, chunk: int = 1000) -> torch.Tensor:
    """Images (M, C, H, W) in [0, 1] -> indices (n,) of the n (<= M) the critic scores
    highest, in their drawn order. (The critic has no BatchNorm: its mode does not matter.)"""
    scores, device = [], next(D.parameters()).device
    for i in range(0, len(x), chunk):
        scores.append(D((x[i:i + chunk] * 2 - 1).to(device)).float().cpu())  # sees [-1, 1]
    return torch.cat(scores).topk(n).indices.sort().values  # the n most real, in drawn order


def sample(G, D, cfg: Config, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ceil(--samples / --keep) digits and keep the --samples the critic likes best
    (with --keep 1, every drawn digit, in order). Returns (kept, drawn) in [0, 1]."""
    drawn = math.ceil(cfg.samples / cfg.keep)
    z = torch.randn(drawn, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed))
    with common.autocast(device):
        x_drawn = generate(G, z)                                 # (drawn, C, H, W)
        return x_drawn[critic_filter(D, x_drawn, cfg.samples)], x_drawn


# %% 6. Reporting: the judge's figures, the game and the modes over time, the GIF
def judge_samples(judge, x, x_drawn) -> dict:
    """The judge on the kept digits and, when the critic chose, on as many first drawn ones."""
    plain = judge.evaluate(x_drawn[:len(x)]) if judge and len(x_drawn) > len(x) else {}
    shown = ("fd", "fd_ratio", "score", "confidence", "coverage", "memorised")
    return {**{f"unfiltered_{k}": plain[k] for k in shown if k in plain},
            **(judge.evaluate(x) if judge else {})}


def game_metrics(history: dict) -> dict:
    """The critic's accuracy over the first and the last SMOOTH steps; the final losses."""
    def mean(key, part):
        return float(np.mean(history[key][part]))
    head, tail = slice(0, SMOOTH), slice(-SMOOTH, None)
    return {"d_acc_real_final": mean("acc_real", tail), "d_acc_fake_final": mean("acc_fake", tail),
            "d_loss_final": mean("d_loss", tail), "g_loss_final": mean("g_loss", tail),
            "d_acc_real_first": mean("acc_real", head), "d_acc_fake_first": mean("acc_fake", head),
            **{k: history[k] for k in ("monitor_steps", "monitor_counts") if k in history}}


def running_mean(values, window: int) -> np.ndarray:
    """At each position, the mean of the last `window` values (fewer at the start)."""
    v = np.asarray(values, dtype=np.float64)
    return np.convolve(v, np.ones(window))[:len(v)] / np.minimum(np.arange(1, len(v) + 1), window)


def save_game_figures(out, history: dict) -> None:
    """training.png: the critic's accuracy and both losses, means over the last SMOOTH steps,
    against where the ideal equilibrium puts them. modes.png: the share of the fixed batch
    the judge puts in each class, at every check (when a judge sorted them)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(11, 4))
    acc, loss = fig.subplots(1, 2)
    for ax, key in ((acc, "acc_real"), (acc, "acc_fake"), (loss, "d_loss"), (loss, "g_loss")):
        ax.plot(range(1, len(history[key]) + 1), running_mean(history[key], SMOOTH), label=key)
    acc.axhline(0.5, color="gray", ls=":", label="chance: the ideal equilibrium")
    loss.axhline(2 * math.log(2), color="C0", ls=":", label="d_loss there: 2 log 2")
    loss.axhline(math.log(2), color="C1", ls=":", label="g_loss there: log 2")
    acc.set(ylim=(0, 1.02), xlabel="step", ylabel=f"critic accuracy, mean of last {SMOOTH} steps")
    loss.set(xlabel="step", ylabel=f"loss in nats, mean of last {SMOOTH} steps")
    acc.legend()
    loss.legend()
    fig.savefig(out / "training.png", dpi=100, bbox_inches="tight")
    common.show(out / "training.png")
    if "monitor_counts" in history:
        share = np.array(history["monitor_counts"], dtype=np.float64).T   # (10, checks)
        n, share = share[:, 0].sum(), share / share[:, 0].sum()
        fig = Figure(figsize=(max(5, 0.5 * share.shape[1] + 2), 4))
        ax = fig.subplots()
        fig.colorbar(ax.imshow(share, aspect="auto", vmin=0, vmax=max(0.3, share.max())), ax=ax)
        ax.set(yticks=range(10), ylabel="digit the judge sees", xlabel="training step")
        ax.set_xticks(range(share.shape[1]), history["monitor_steps"], rotation=90, fontsize=7)
        ax.set_title(f"share of {n:.0f} fixed-z samples per class (real: 0.10 each)", fontsize=10)
        fig.savefig(out / "modes.png", dpi=100, bbox_inches="tight")
        common.show(out / "modes.png")


# %% 7. Putting it together
LINES = [("unfiltered_fd", "FD of as many digits unfiltered (lower is better)"),
         *[(f"d_acc_{kind}_{when}", f"critic accuracy on {kind} digits, {when} 100 steps")
           for when in ("first", "final") for kind in ("real", "fake")]]


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__)
    with common.run_folder(cfg, SCRIPT) as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = common.load_judge(data)
        cfg, model, extra = common.load_or_train(
            cfg, out, SCRIPT, ("arch", "z_dim", "width"),
            lambda c: build(c.arch, c.z_dim, c.width, data.x_train.shape[1:]).to(device),
            lambda m: watch(train(m, cfg, data, device), judge), data=data)
        start = time.perf_counter()
        x, x_drawn = sample(model["generator"], model["critic"], cfg, device)  # kept, drawn
        history = extra["history"]  # from the checkpoint on --load: the figures come back
        metrics = {"train_seconds": extra["train_seconds"],
                   "sample_seconds": time.perf_counter() - start, "drawn": len(x_drawn),
                   "keep": cfg.keep, "arch": cfg.arch, "device": str(device),
                   **judge_samples(judge, x, x_drawn), **game_metrics(history),
                   "config": dataclasses.asdict(cfg)}
        save_game_figures(out, history)
        chosen = f", the best {cfg.keep:.0%} by the critic" if len(x_drawn) > len(x) else ""
        common.save_images(out / "samples.png", x[:100], 10,
                           titles=f"{SCRIPT} ({cfg.arch}){chosen}")
        common.save_samples(out, x)
        if cfg.gif:  # generation.gif: the fixed batch's first images at every check
            steps = history["monitor_steps"]
            common.save_images(out / "generation.gif", [s / 255 for s in history["snapshots"]],
                               8, titles=[f"training step {s} of {steps[-1]}" for s in steps])
        common.save_metrics(out, metrics)
    common.print_summary(metrics, LINES)


# %% Run it (in a notebook too; common.run_main(main, ["--steps", "300"]) changes settings)
if __name__ == "__main__":
    common.run_main(main)

# %% Exercises (answers: docs/exercises.md; patches for the code changes: docs/solutions/)
# The --load commands need the default run first.
# 1. Predict, then run with every drawn digit kept: how much worse is FD without the
#    critic's choice of the best quarter?
#      python 05_gan.py --load runs/05_gan/model.pt --keep 1
# 2. Predict, then run: between two draws of z, which path decodes to better digits, the
#    straight line or the great circle? Think of the midpoint's length in 64 dimensions.
#      python experiments/05_walks.py --load runs/05_gan/model.pt
# 3. Change the code: train the generator on generator_loss_minimax, section 2's literal
#    term. Predict training.png's first few hundred steps and the samples, then train
#    (a solution: docs/solutions/05_minimax_loss.patch).
# 4. Explain: critic_step detaches the generated batch. Delete .detach() and predict what
#    happens at the first step before you run it.
# 5. Explain: at the ideal equilibrium the critic is right half the time. training.png shows
#    where ours ends: what does that say about the generator, and why does it make section
#    5's filter worth its four generator passes per digit?
