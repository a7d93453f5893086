"""05_gan.py: the artist and the critic, a GAN whose training you can watch.

Two networks play a game. The generator (the artist) turns a random vector
z ~ N(0, I) into an image; the discriminator (the critic) says how likely an
image is to be a real digit rather than one of the artist's. The critic learns
to tell them apart, the artist to fool the critic. Nothing computes a
likelihood: the artist's only teaching signal is the gradient of the critic's
opinion. At the game's equilibrium the artist's images are distributed like
real ones and the critic can do no better than a coin toss.

Before: 01 to 04 scored held-out digits in bits and spent many network passes
per sample; a GAN gives the likelihood up for one pass and sharp images. The
price: the game can oscillate instead of converge, and the artist can settle
on a few kinds of digit (mode collapse). So this script watches the critic's
accuracy and the judge's classes of a fixed batch through training, and at the
end spends what the critic still knows on choosing the digits to keep.
After: 06_vae.py brings a likelihood back, through a latent variable.

Run:  python 05_gan.py --samples 1000
      python 05_gan.py --load runs/05_gan/model.pt --samples 1000
      python 05_gan.py --arch mlp     (the fully connected pair, for comparison)
      python 05_gan.py --keep 1       (every generated digit, no filtering by the critic)

Writes samples.png, samples.npz, metrics.json, model.pt, training.png (critic
accuracy and losses), modes.png (the judge's classes through training),
interpolation.png (walks through z) and generation.gif (the same fixed z
through training) into runs/05_gan/.
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
# The critic-accuracy curves and final numbers are means over this many steps:
# one batch of 64 gives accuracies in steps of 1/64, too noisy to read a trend from.
SMOOTH = 100
GIF_IMAGES = 16  # the first images of the monitor's fixed batch, kept at every check


# %% 0. Settings
@dataclasses.dataclass
class Config(common.BaseConfig):
    steps: int = common.flag(3500, "training steps (each: critic update, then generator)", min=1)
    batch_size: int = common.flag(64, "real images (and as many generated) per step", min=2)
    arch: str = common.flag("dcgan", "conv or fully connected pair", choices=["dcgan", "mlp"])
    z_dim: int = common.flag(64, "size of the generator's input noise z", min=1, max=1024)
    width: int = common.flag(48, "first conv layer's channels, or mlp width / 4", min=4, max=1024)
    lr: float = common.flag(1e-3, "peak Adam step, held half, then cosine to 0", min=1e-7, max=1.0)
    monitor_every: int = common.flag(250, "steps between mode-monitor checks", min=1)
    monitor_n: int = common.flag(500, "size of the monitor's fixed-z batch", min=10)
    keep: float = common.flag(0.25, "share of drawn digits kept by the critic", min=0.01, max=1.0)
    gif: bool = common.flag(True, "write generation.gif (--no-gif skips it)")


# %% 1. The artist and the critic
# A small DCGAN-style convolutional pair (Radford et al., 2016) by default; the
# fully connected pair with --arch mlp. Convolutions build a digit from local
# strokes that look the same anywhere in the image, which an MLP has to learn
# separately for every position (measured here, the conv pair won at equal
# time: docs/experiments.md).
#
# Images enter the critic, and leave the generator, scaled to [-1, 1]: a tanh
# output layer saturates at exactly the ends of that range, and inputs centred
# on 0 suit the critic's first layer. They are mapped back to [0, 1] to save.
#
# BatchNorm in the generator keeps each layer's activations at a sane scale
# while the game shifts the target under it. A copied bug to avoid:
# nn.BatchNorm2d(64, 0.8) passes 0.8 as eps (added to the variance), not as
# momentum, and blurs the normalisation into nothing. We keep the defaults.
# The critic has NO BatchNorm: it sees a real batch and a generated batch, and
# batch statistics would let it tell them apart by the batch rather than by
# the image.
#
# The generator's last layer is a plain 3x3 convolution at full resolution
# rather than the upsampling layer itself. A stride-2 transposed convolution
# that writes pixels directly paints alternate pixels from different kernel
# entries, and the artist would spend much of its training ironing out the
# checkerboard; upsampling into a few feature maps and letting a 3x3 layer mix
# neighbours into each pixel removes that work.
class ConvGenerator(nn.Module):
    """z (B, z_dim) -> image (B, 1, 28, 28) in [-1, 1], upsampling 7 -> 14 -> 28."""

    def __init__(self, z_dim: int, width: int):
        super().__init__()
        c, f = 2 * width, max(1, width // 2)
        self.net = nn.Sequential(
            nn.Linear(z_dim, c * 7 * 7, bias=False),             # (B, z) -> (B, 2w*49)
            nn.Unflatten(1, (c, 7, 7)),                          # -> (B, 2w, 7, 7)
            nn.BatchNorm2d(c), nn.ReLU(),
            nn.ConvTranspose2d(c, width, 4, 2, 1, bias=False),   # -> (B, w, 14, 14)
            nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, f, 4, 2, 1, bias=False),   # -> (B, w/2, 28, 28)
            nn.BatchNorm2d(f), nn.ReLU(),
            nn.Conv2d(f, 1, 3, 1, 1),                            # -> (B, 1, 28, 28), 3x3 mix
            nn.Tanh(),
        )

    def forward(self, z):
        return self.net(z)


class ConvCritic(nn.Module):
    """image (B, 1, 28, 28) in [-1, 1] -> one logit per image (B,): log-odds that it is real."""

    def __init__(self, width: int):
        super().__init__()
        # LeakyReLU rather than ReLU: a critic unit that is "off" for a generated
        # image would pass no gradient back to the generator at all.
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2),          # -> (B, w, 14, 14)
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),  # -> (B, 2w, 7, 7)
            nn.Flatten(),                                             # -> (B, 2w*49)
            nn.Linear(2 * width * 49, 1),                             # -> (B, 1)
        )

    def forward(self, x):
        return self.net(x).squeeze(1).float()


class MLPGenerator(nn.Module):
    """The fully connected generator: z (B, z_dim) -> (B, 1, 28, 28) in [-1, 1]."""

    def __init__(self, z_dim: int, width: int):
        super().__init__()
        h = 4 * width
        self.net = nn.Sequential(
            nn.Linear(z_dim, h), nn.BatchNorm1d(h), nn.ReLU(),
            nn.Linear(h, 2 * h), nn.BatchNorm1d(2 * h), nn.ReLU(),
            nn.Linear(2 * h, 28 * 28), nn.Tanh(),                # (B, 2h) -> (B, 784)
            nn.Unflatten(1, (1, 28, 28)),                        # -> (B, 1, 28, 28)
        )

    def forward(self, z):
        return self.net(z)


class MLPCritic(nn.Module):
    """The fully connected critic: (B, 1, 28, 28) in [-1, 1] -> one logit per image (B,)."""

    def __init__(self, width: int):
        super().__init__()
        h = 4 * width
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, 2 * h), nn.LeakyReLU(0.2),
            nn.Linear(2 * h, h), nn.LeakyReLU(0.2),
            nn.Linear(h, 1),                                     # (B, 784) -> (B, 1)
        )

    def forward(self, x):
        return self.net(x).squeeze(1).float()


def build(arch: str, z_dim: int, width: int) -> tuple[nn.Module, nn.Module]:
    if arch == "dcgan":
        return ConvGenerator(z_dim, width), ConvCritic(width)
    return MLPGenerator(z_dim, width), MLPCritic(width)


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
# The order follows Goodfellow et al.'s Algorithm 1 with k = 1: update the
# critic on the current generator's images, then update the generator against
# that freshly updated critic, one that has just seen its latest work (the
# other order would train the generator against a critic one step stale).
#
# One generated batch serves both updates: the critic learns to reject it, then
# the generator learns to make those same images more convincing to the updated
# critic. A second batch for the generator would cost a second generator pass
# for no gain in quality (docs/experiments.md).
#
# No gradient may leak from one network's loss into the other network:
# - in the critic step the generated batch is detached: the critic loss cannot
#   reach the generator's weights;
# - in the generator step the critic's weights are frozen (requires_grad off):
#   backpropagation passes *through* the critic to the image but leaves the
#   critic's weights alone (and saves computing their gradients).
def critic_step(D, opt_d, real, fake) -> dict:
    """Update D on a real batch and a generated batch, both (B, 1, 28, 28) in [-1, 1]."""
    b = len(real)
    # Both batches in one pass: (2B, 1, 28, 28) -> (2B,) logits. This is exact,
    # not an approximation, because the critic has no BatchNorm (section 1):
    # each image's logit depends on that image alone.
    logits = D(torch.cat([real, fake.detach()]))
    real_logits, fake_logits = logits[:b], logits[b:]
    loss = critic_loss(real_logits, fake_logits)
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    # Accuracy of the critic on this step's batches, measured before its update:
    # real counted right when D > 1/2 (logit > 0), generated when D < 1/2.
    return {"d_loss": loss.item(),
            "acc_real": (real_logits > 0).float().mean().item(),
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


def train_step(G, D, opt_g, opt_d, real, z_dim: int, device: torch.device) -> dict:
    """One round of the game on a real batch in [-1, 1]: (B, 1, 28, 28)."""
    with common.autocast(device):
        fake = G(torch.randn(len(real), z_dim, device=device))  # (B, 1, 28, 28), graph kept
        stats = critic_step(D, opt_d, real, fake)
        stats.update(generator_step(D, opt_g, fake))
    return stats


# %% 4. Training, watched: the critic's accuracy and the mode monitor
# The critic's accuracy tells who is winning: near 100% on both batches, the
# critic has the upper hand; at the ideal equilibrium both would sit at 50%.
# The mode monitor asks a different question: does the generator still draw
# every kind of digit? A fixed batch of z (the same vectors every time, so any
# change is the generator's) is drawn and the judge classifies it; a collapsed
# generator piles its samples onto a few classes. The first images of that
# batch, kept at every check, make generation.gif: the same z through training.
@torch.no_grad()
def generate(G, z, device: torch.device, chunk: int = 1000):
    """z (N, z_dim) -> images (N, 1, 28, 28) in [0, 1]; the generator in eval mode, so
    BatchNorm uses its running statistics and each image depends on its own z alone."""
    was_training = G.training
    G.eval()
    out = []
    for i in range(0, len(z), chunk):
        with common.autocast(device):
            out.append(G(z[i:i + chunk].to(device)).float().cpu())
    G.train(was_training)
    return (torch.cat(out) + 1) / 2                              # [-1, 1] -> [0, 1]


def monitor(G, z_fixed, judge: common.Judge, history: dict, step: int, device) -> None:
    """Count the judge's classes of the fixed-z batch; keep its first GIF_IMAGES images (as
    bytes, so that they travel in the checkpoint and a --load run can draw the GIF too)."""
    x = generate(G, z_fixed, device)                             # (monitor_n, 1, 28, 28)
    pred = common.judge_logits(judge.net, x).argmax(1)           # the judge's digit, (monitor_n,)
    counts = np.bincount(pred.numpy(), minlength=10).tolist()
    history["monitor_steps"].append(step)
    history["monitor_counts"].append(counts)
    history["snapshots"].append((x[:GIF_IMAGES, 0] * 255).round().to(torch.uint8))
    print(f"monitor step {step}: judge's classes of {len(x)} fixed-z samples {counts}, "
          f"covered {sum(c >= 0.01 * len(x) for c in counts)}/10", flush=True)


# Both players step at the same rate, held for the first half and then brought
# down to 0 along a cosine: with a constant step the generator swings from step
# to step, and the decay lets both players settle (measured: docs/experiments.md).
def learning_rate(step: int, steps: int, peak: float) -> float:
    """Step size at `step` of `steps`: peak for the first half, then half a cosine down to 0."""
    frac = step / steps
    if frac <= 0.5:
        return peak
    return peak * 0.5 * (1 + math.cos(math.pi * (frac - 0.5) / 0.5))


def train(G, D, data: common.Data, cfg: Config, gen: torch.Generator, device: torch.device,
          judge: common.Judge) -> dict:
    """The whole game: per-step critic statistics, the monitor's histograms and snapshots."""
    # beta1 = 0.5 rather than Adam's 0.9 (Radford et al., 2016): less momentum,
    # because in a game yesterday's gradient points at where the opponent was.
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    z_monitor = torch.randn(cfg.monitor_n, cfg.z_dim,
                            generator=torch.Generator().manual_seed(cfg.seed + 1))
    history = {k: [] for k in ("acc_real", "acc_fake", "d_loss", "g_loss",
                               "monitor_steps", "monitor_counts", "snapshots")}
    G.train()
    D.train()
    stream = common.batches(data.x_train, data.y_train, cfg.batch_size, gen)
    progress = common.Progress(cfg.steps, "train")
    for step in range(1, cfg.steps + 1):
        real, _ = next(stream)
        for group in opt_g.param_groups + opt_d.param_groups:
            group["lr"] = learning_rate(step, cfg.steps, cfg.lr)
        real = real.to(device) * 2 - 1                           # [0, 1] -> [-1, 1]
        for k, v in train_step(G, D, opt_g, opt_d, real, cfg.z_dim, device).items():
            history[k].append(v)
        # Means over the last SMOOTH steps, this one included: a NaN stops the run at once.
        progress.update(step, **{k: float(np.mean(history[k][-SMOOTH:]))
                                 for k in ("d_loss", "g_loss", "acc_real", "acc_fake")})
        if step % cfg.monitor_every == 0 or step == cfg.steps:
            monitor(G, z_monitor, judge, history, step, device)
    G.eval()
    D.eval()
    return history


# %% 5. Sampling: the critic's last opinion picks the digits to keep
# In this chapter's runs the critic never falls to chance (training.png): at the
# end it still tells many generated images from real ones, knowledge that can be
# spent at sampling time. Draw more digits than asked for, let the critic score
# them, and keep the share it finds most real: a simple form of discriminator
# rejection sampling (Azadi et al., 2019). It is more than cosmetics: a critic
# at its optimum has logit(x) = log p_data(x) / p_G(x), so accepting x with
# probability proportional to exp(logit) would turn the generator's
# distribution into the data's exactly. Our critic is far from optimal and its
# extreme logits are the least trustworthy, so we keep a fixed share instead,
# the best-scored quarter by default. The generator is unchanged, so every run
# also judges the unfiltered digits. The price: 1 / --keep times the passes.
# Measured here, the best quarter beat the unfiltered digits on FD and
# confidence without favouring one class (README, claims table).
@torch.no_grad()
def critic_filter(D, x, n: int, device: torch.device, chunk: int = 1000) -> torch.Tensor:
    """Images (M, 1, 28, 28) in [0, 1] -> indices (n,) of the n (<= M) the critic
    scores highest, in their original order (not sorted by score)."""
    was_training = D.training
    D.eval()
    scores = []
    for i in range(0, len(x), chunk):
        with common.autocast(device):
            scores.append(D((x[i:i + chunk] * 2 - 1).to(device)).float().cpu())  # sees [-1, 1]
    D.train(was_training)
    return torch.cat(scores).topk(n).indices.sort().values  # the n most real, in drawn order


def sample(G, D, cfg: Config, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ceil(--samples / --keep) digits and keep the --samples the critic likes best
    (with --keep 1, every drawn digit, in order). Returns (kept, drawn) in [0, 1]."""
    drawn = math.ceil(cfg.samples / cfg.keep)
    z = torch.randn(drawn, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed))
    x_drawn = generate(G, z, device)                             # (drawn, 1, 28, 28)
    return x_drawn[critic_filter(D, x_drawn, cfg.samples, device)], x_drawn


# A walk between two z: the straight line's midpoint between two typical z has
# norm ~0.71 sqrt(d), a region where N(0, I) in many dimensions puts almost no
# mass and the generator was never trained; the great circle keeps the norm typical.
def slerp(a, b, t):
    """Walk the great circle from a to b (t in [0, 1]): (d,), (d,), (n, 1) -> (n, d)."""
    omega = torch.acos(torch.clamp(F.cosine_similarity(a, b, dim=0), -1 + 1e-7, 1 - 1e-7))
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def walks(G, z_dim: int, device, seed: int, rows: int = 6, n: int = 10) -> torch.Tensor:
    """`rows` great-circle walks of n steps between random z: (rows*n, 1, 28, 28) in [0, 1]."""
    g = torch.Generator().manual_seed(seed + 2)
    t = torch.linspace(0, 1, n).unsqueeze(1)                     # (n, 1)
    lines = [slerp(torch.randn(z_dim, generator=g), torch.randn(z_dim, generator=g), t)
             for _ in range(rows)]
    return generate(G, torch.cat(lines), device)


# %% 6. Reporting: the judge's figures, the game and the modes over time, the GIF
def judge_samples(judge: common.Judge, x, x_drawn) -> dict:
    """The judge on the kept digits and, when the critic chose, on as many first drawn ones."""
    found, chosen = {}, len(x_drawn) > len(x)
    if chosen:
        plain = judge.evaluate(x_drawn[:len(x)])
        print(common.describe(plain, prefix="unfiltered, the first --samples drawn: "))
        found = {f"unfiltered_{k}": plain[k] for k in
                 ("fd", "fd_ratio", "score", "confidence", "coverage", "memorised")}
    result = judge.evaluate(x)
    print(common.describe(result, prefix=f"kept by the critic, {len(x)} of {len(x_drawn)}: "
                          if chosen else ""))
    return {**found, **result}


def game_metrics(history: dict) -> dict:
    """The critic's accuracy over the first and the last SMOOTH steps; the final losses."""
    def mean(key, part):
        return float(np.mean(history[key][part]))
    head, tail = slice(0, SMOOTH), slice(-SMOOTH, None)
    return {"d_acc_real_final": mean("acc_real", tail), "d_acc_fake_final": mean("acc_fake", tail),
            "d_loss_final": mean("d_loss", tail), "g_loss_final": mean("g_loss", tail),
            "d_acc_real_first": mean("acc_real", head), "d_acc_fake_first": mean("acc_fake", head),
            "monitor_steps": history["monitor_steps"], "monitor_counts": history["monitor_counts"]}


def running_mean(values, window: int) -> np.ndarray:
    """At each position, the mean of the last `window` values (fewer at the start)."""
    v = np.asarray(values, dtype=np.float64)
    return np.convolve(v, np.ones(window))[:len(v)] / np.minimum(np.arange(1, len(v) + 1), window)


def save_game_figures(out, history: dict) -> None:
    """training.png: the critic's accuracy and both losses, means over the last SMOOTH steps,
    against where the ideal equilibrium puts them. modes.png: the share of the fixed-z batch
    the judge puts in each class, at every check."""
    plt = common.pyplot()
    curves, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in ((acc, "acc_real"), (acc, "acc_fake"), (loss, "d_loss"), (loss, "g_loss")):
        ax.plot(range(1, len(history[key]) + 1), running_mean(history[key], SMOOTH), label=key)
    acc.axhline(0.5, color="gray", ls=":", label="chance: the ideal equilibrium")
    loss.axhline(2 * math.log(2), color="C0", ls=":", label="d_loss there: 2 log 2")
    loss.axhline(math.log(2), color="C1", ls=":", label="g_loss there: log 2")
    acc.set(ylim=(0, 1.02), xlabel="step", ylabel=f"critic accuracy, mean of last {SMOOTH} steps")
    loss.set(xlabel="step", ylabel=f"loss in nats, mean of last {SMOOTH} steps")
    acc.legend()
    loss.legend()
    n = sum(history["monitor_counts"][0])
    share = np.array(history["monitor_counts"], dtype=np.float64).T / n     # (10, checks)
    modes, ax = plt.subplots(figsize=(max(5, 0.5 * share.shape[1] + 2), 4))
    modes.colorbar(ax.imshow(share, aspect="auto", vmin=0, vmax=max(0.3, share.max())), ax=ax)
    ax.set(yticks=range(10), ylabel="digit the judge sees", xlabel="training step")
    ax.set_xticks(range(share.shape[1]), history["monitor_steps"], rotation=90, fontsize=7)
    ax.set_title(f"share of {n} fixed-z samples per class (real digits: 0.10 each)", fontsize=10)
    for fig, name in ((curves, "training.png"), (modes, "modes.png")):
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)


def save_animation(out, history: dict) -> None:
    """generation.gif: the monitor's first fixed-z images at every check, 8 to a row."""
    if not history.get("snapshots"):
        print("no generation.gif: this checkpoint holds no monitor snapshots")
        return
    steps = history["monitor_steps"]
    common.save_animation(out / "generation.gif", [s.float() / 255 for s in history["snapshots"]],
                          [f"training step {s} of {steps[-1]}" for s in steps], ncol=8, fps=4)


# %% 7. Putting it together
SUMMARY = ["train_seconds", "sample_seconds", "n", "fd", "fd_floor", "fd_ratio", "score",
           "confidence", "coverage", "memorised", "unfiltered_fd_ratio", "unfiltered_confidence",
           "d_acc_real_first", "d_acc_fake_first", "d_acc_real_final", "d_acc_fake_final"]


def load_or_train(cfg: Config, data, gen, device, judge, out) -> tuple:
    """(generator, critic, extra): from --load, built at the checkpoint's sizes whatever the
    flags say (cfg is updated to match), or trained and saved. extra holds the history."""
    ckpt = common.load_checkpoint(cfg.load, SCRIPT) if cfg.load else None
    if ckpt:
        saved = ckpt["config"]
        if saved.get("arch") not in ("dcgan", "mlp") or not {"z_dim", "width"} <= set(saved):
            raise common.UserError(f"{cfg.load}: checkpoint lacks the model's sizes")
        cfg.arch, cfg.z_dim, cfg.width = saved["arch"], saved["z_dim"], saved["width"]
    G, D = (m.to(device) for m in build(cfg.arch, cfg.z_dim, cfg.width))
    if ckpt:
        common.load_state(G, ckpt["state"].get("generator", {}), cfg.load)
        common.load_state(D, ckpt["state"].get("critic", {}), cfg.load)
        common.copy_checkpoint(cfg.load, out)
        print(f"loaded {cfg.load}: {cfg.arch}, z_dim {cfg.z_dim}, width {cfg.width}")
        return G.eval(), D.eval(), ckpt["extra"]
    start = time.perf_counter()
    history = train(G, D, data, cfg, gen, device, judge)
    extra = {"history": history, "train_seconds": time.perf_counter() - start}
    common.save_checkpoint(out / "model.pt", SCRIPT, cfg,
                           {"generator": G.state_dict(), "critic": D.state_dict()}, extra)
    return G, D, extra


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__)
    with common.run_folder(cfg, __file__) as out:
        gen = common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = common.Judge.load(data)
        G, D, extra = load_or_train(cfg, data, gen, device, judge, out)
        start = time.perf_counter()
        x, x_drawn = sample(G, D, cfg, device)  # kept (samples, 1, 28, 28), drawn (drawn, ...)
        metrics = {"train_seconds": extra.get("train_seconds", 0.0),
                   "sample_seconds": time.perf_counter() - start, "keep": cfg.keep,
                   "drawn": len(x_drawn), **judge_samples(judge, x, x_drawn), "arch": cfg.arch}
        history = extra.get("history") or {}
        if history:  # it travels in the checkpoint, so a --load run draws these too
            metrics.update(game_metrics(history))
            save_game_figures(out, history)
        filtered = f", best {cfg.keep:.0%} by the critic" if len(x_drawn) > cfg.samples else ""
        common.save_grid(out / "samples.png", x[:100], nrow=10,
                         title=f"GAN ({cfg.arch}) samples{filtered}")
        common.save_samples(out, x)
        common.save_grid(out / "interpolation.png", walks(G, cfg.z_dim, device, cfg.seed),
                         nrow=10, title="walking between random z (great circle)")
        if cfg.gif:
            save_animation(out, history)
        common.save_metrics(out, {**metrics, "config": dataclasses.asdict(cfg)})
    common.print_summary(metrics, [k for k in SUMMARY if k in metrics])


if __name__ == "__main__":
    common.run_main(main)
