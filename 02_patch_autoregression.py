"""02_patch_autoregression.py: reveal k pixels per network evaluation, and measure what it costs.

Chapter 01 drew a digit one pixel at a time: 784 network evaluations per image,
each pixel drawn from p(x_i | the pixels before it). Here one network fills in
k missing pixels per evaluation, each drawn from its own distribution given the
same partial image, and *independently of the others drawn in that step*: the
network cannot make the pixels of one step agree with each other. k=1 is
chapter 01 again; k=784 draws every pixel at once from its marginal, around
the average digit (chapter 01's blur). Two orders of revealing: contiguous
patches (4x4 blocks in raster order at k=16; 2x2 at k=4, 7x7 at k=49, quarters
at k=196) and scattered random sets of the same size. One network per order,
trained on every k of the sweep, then a sweep of FD (the judge, same N at every
point) against network evaluations per image, 784 / k.

Run:  python 02_patch_autoregression.py          (writes runs/02_patch_autoregression/)
      python 02_patch_autoregression.py --ks 1,16,784 --samples 1000

The default run (two trainings of 3,000 steps, then 12 sweep points at N=500)
took 4m29s on a 2-core CPU (training 171 s, sweep 92 s). Measured FD at N=500
(floor 11.6 for real held-out digits):

    k (evals)      1 (784)  4 (196)  16 (49)  49 (16)  196 (4)  784 (1)
    scattered        169      179      184      231      458      789
    contiguous       642      658      701      728      747      792

Scattered k=16 (samples.npz): FD 184, confidence 0.81, all ten classes.
Quality falls as k grows in both orders. The contiguous network is far worse
already at k=1, where neither order draws two pixels together: that gap is its
training (its loss sees only the next patch, k pixels per image), not the order.
Also writes fd_vs_evaluations.png (the curve) and sweep_samples.png (rows of
samples at k = 1, 16, 196, 784 for each order, and the blur).
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import common

SCRIPT = "02_patch_autoregression"
SIDE = 28
PIXELS = SIDE * SIDE  # 784
ORDERS = ("contiguous", "scattered")


# %% 0. Flags
@dataclasses.dataclass
class Config(common.BaseConfig):
    steps: int = dataclasses.field(default=3000, metadata={"help": "training steps per order (two networks are trained)", "min": 1})
    batch_size: int = dataclasses.field(default=64, metadata={"help": "images per training step", "min": 1})
    samples: int = dataclasses.field(default=500, metadata={"help": "N: samples generated and judged at every point of the sweep", "min": 2})
    ks: str = dataclasses.field(default="1,4,16,49,196,784", metadata={"help": "the sweep: pixels revealed per network evaluation (each must divide 784)"})
    k: int = dataclasses.field(default=16, metadata={"help": "the headline setting written to samples.npz (with --order)", "min": 1})
    order: str = dataclasses.field(default="scattered", metadata={"help": "order of the headline setting", "choices": list(ORDERS)})
    train_k: int = dataclasses.field(default=0, metadata={"help": "0: train on every k of --ks at random (one network serves the sweep); or one k only", "min": 0})
    levels: int = dataclasses.field(default=4, metadata={"help": "K, intensity levels per pixel (2 = black/white)", "min": 2, "max": 256})
    hidden: int = dataclasses.field(default=1024, metadata={"help": "width of the network's two hidden layers", "min": 8})
    lr: float = dataclasses.field(default=2e-3, metadata={"help": "Adam learning rate (decays to 0 along a cosine)", "min": 0.0})
    gen_batch: int = dataclasses.field(default=128, metadata={"help": "images per network evaluation while generating", "min": 1})


# %% 1. Pixel values: K grey levels, one categorical per pixel
# A pixel's value is one of K levels 0, 1/(K-1), ..., 1, and the network gives a
# categorical distribution over them. Sampling from that distribution (rather
# than taking its mean) is what makes each generated digit a definite digit.
def to_classes(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Images in [0, 1] -> the nearest level's index, int64 of the same shape."""
    return torch.round(x.clamp(0, 1) * (levels - 1)).long()


def to_values(c: torch.Tensor, levels: int) -> torch.Tensor:
    """Level indices -> grey values in [0, 1]."""
    return c.float() / (levels - 1)


# %% 2. Orders: which pixels are revealed at which step
# A generation order is a partition of the 784 pixels into 784/k groups of k;
# step s reveals group s. We describe an order by one integer per pixel, the
# step that reveals it: `group[p] = s`. Then "revealed before step s" is
# `group < s` and "predicted at step s" is `group == s`, so every pixel is
# revealed exactly once by construction, which the tests check anyway.
def check_k(k: int) -> None:
    if not isinstance(k, int) or k < 1 or PIXELS % k:
        raise common.UserError(
            f"k={k} does not divide the {PIXELS} pixels into equal steps; choose a divisor such as 1, 4, 16, 49, 196, 784")


def block_shape(k: int) -> tuple[int, int]:
    """The contiguous patch of k pixels: h x w with h*w = k, both dividing 28, as square as possible.

    1 -> 1x1 (single pixels), 4 -> 2x2, 16 -> 4x4, 49 -> 7x7, 196 -> 14x14
    (quarters), 784 -> 28x28 (the whole image). Every divisor of 784 = 2^4 7^2
    has such a shape (28 = 2^2 7), e.g. 8 -> 2x4, 28 -> 4x7.
    """
    check_k(k)
    shapes = [(h, k // h) for h in range(1, SIDE + 1) if k % h == 0 and SIDE % h == 0
              and k // h <= SIDE and SIDE % (k // h) == 0 and h <= k // h]
    return min(shapes, key=lambda hw: hw[1] - hw[0])


def contiguous_groups(k: int) -> torch.Tensor:
    """(784,) step of each pixel: h x w patches, taken in raster order (left to right, top to bottom)."""
    h, w = block_shape(k)
    rows = torch.arange(SIDE).view(SIDE, 1) // h       # patch row of each pixel
    cols = torch.arange(SIDE).view(1, SIDE) // w       # patch column
    return (rows * (SIDE // w) + cols).flatten()       # (28, 28) -> (784,)


def scattered_groups(k: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 784) step of each pixel: a fresh random order per image, cut into runs of k."""
    check_k(k)
    order = torch.rand(n, PIXELS, generator=gen).argsort(1)  # order[i, j] = j-th pixel revealed
    rank = order.argsort(1)                                  # rank[i, p] = when pixel p comes
    return rank // k


def groups(order: str, k: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 784) int64: the step that reveals each pixel of each of n images."""
    if order == "contiguous":
        return contiguous_groups(k).expand(n, PIXELS).clone()
    if order == "scattered":
        return scattered_groups(k, n, gen)
    raise common.UserError(f"unknown order '{order}'; choose {' or '.join(ORDERS)}")


# %% 3. The network: partial image and mask in, K logits for every pixel out
# Input: two channels, the image with unknown pixels set to 0 and a mask that is
# 1 where a pixel is known. The mask is needed because 0 is also the most common
# *known* value (background); without it "black" and "not yet drawn" look alike.
#
# Should the network also be told which pixels it is asked for at this step (a
# second mask)? No. The best prediction for a missing pixel p is p(x_p | known
# pixels), whatever else is predicted alongside it, and the network outputs one
# distribution per pixel, each from the same partial image. A second mask could
# only change *which* outputs get trained, which the loss (section 4) already
# decides. In the contiguous order the next patch is anyway fixed by the mask;
# in the scattered order the next group is a random draw that says nothing about
# the image. So one mask channel carries all the information there is.
#
# Shape: chapter 01's kind of network, a multilayer perceptron, here fed the
# partial image and its mask (1568 numbers) and returning K logits for each of
# the 784 pixels. Every output sees every input, so a stroke at the top can
# shape the bottom. It is also cheap: the sweep below runs it about 2,100 times
# on every sample (784 + 196 + 49 + 16 + 4 + 1 per order), and on a 2-core CPU
# a small convolutional U-Net cost 5-10x more per image than this MLP.
class MaskedPixelNet(nn.Module):
    def __init__(self, levels: int, hidden: int):
        super().__init__()
        self.levels = levels
        self.net = nn.Sequential(
            nn.Linear(2 * PIXELS, hidden), nn.GELU(),                        # (B, 1568) -> (B, H)
            nn.Linear(hidden, hidden), nn.GELU(),
            nn.Linear(hidden, levels * PIXELS))                               # -> (B, K*784)

    def forward(self, values: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """values, known: (B, 784) -> logits (B, K, 784)."""
        k = known.float()
        return self.net(torch.cat([values * k, k], 1)).view(len(values), self.levels, PIXELS)


# %% 4. Training that matches generation: reveal s groups, predict group s+1
# One training example is one generation step: draw k (from the sweep, or the
# fixed --train-k), draw a step s uniformly, show the network the pixels of
# groups 0..s-1 and put the loss on group s, the pixels that step fills in.
# Two ways to get this wrong, both common in MaskGIT-style code:
#   - loss on every pixel: most of it is then spent copying pixels the network
#     can already see, which teaches nothing;
#   - the mask inverted: the loss lands on the known pixels only.
#
# The scattered order gets one exact shortcut. Its group s is a uniform random
# k-subset G of the M missing pixels, so the expected next-group loss is
#   E_G[ (1/k) sum_{p in G} l_p ] = (1/M) sum_{p in M} l_p,
# the mean over *all* missing pixels: the same objective, computed without
# drawing G (about 390 pixels of signal per image instead of k). The contiguous
# order has no such average, since its next patch is fixed by the mask; there
# the loss stays on the k pixels of the next patch. Measured on a 2-core CPU:
# with the next-group loss for both orders, 1,500 steps taught the scattered
# network almost nothing beyond per-pixel averages (k=1 samples were speckle).
#
# Why several k in one network: a network trained at k=16 only ever sees a
# known set of 0, 16, 32, ... pixels (in 4x4 patches for the contiguous order).
# Drawing k per example makes one network per order cover every point of the
# sweep, so the curve compares generation procedures, not six trainings.
def training_masks(order: str, ks: list[int], n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks for n training examples: known (n, 784) bool, target (n, 784) bool (group s)."""
    which = torch.randint(len(ks), (n,), generator=gen)
    known = torch.zeros(n, PIXELS, dtype=torch.bool)
    target = torch.zeros(n, PIXELS, dtype=torch.bool)
    for i, k in enumerate(ks):
        rows = (which == i).nonzero().flatten()
        if len(rows) == 0:
            continue
        g = groups(order, k, len(rows), gen)                             # (m, 784)
        s = torch.randint(PIXELS // k, (len(rows), 1), generator=gen)    # the step being trained
        known[rows], target[rows] = g < s, g == s
    return known, target


def loss_weights(order: str, known: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Which pixels carry the loss: the next patch (contiguous), or, for the scattered
    order, every missing pixel, the exact expectation over its random next group."""
    return (~known if order == "scattered" else target).float()


def masked_loss(logits: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over images of the mean cross-entropy on that image's weighted pixels only.

    logits (B, K, 784), classes (B, 784), weights (B, 784) in {0, 1}. Pixels
    with weight 0 (revealed ones above all) contribute exactly zero, and so
    does their gradient.
    """
    nll = F.cross_entropy(logits, classes, reduction="none")             # (B, 784): -log p(x_p | known)
    return ((nll * weights).sum(1) / weights.sum(1).clamp_min(1)).mean()


def train(net: nn.Module, order: str, classes: torch.Tensor, cfg: Config, ks: list[int],
          gen: torch.Generator, device: torch.device) -> list[float]:
    """Adam with a cosine-decayed learning rate; returns the loss every step."""
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / cfg.steps)))
    data = common.batches(classes, torch.zeros(len(classes)), cfg.batch_size, gen)
    progress = common.Progress(cfg.steps, label=f"train {order}")
    losses = []
    net.train()
    for step in range(1, cfg.steps + 1):
        c, _ = next(data)
        known, target = training_masks(order, ks, len(c), gen)
        c, known, target = c.to(device), known.to(device), target.to(device)
        with common.autocast(device):
            logits = net(to_values(c, cfg.levels), known)
        loss = masked_loss(logits.float(), c, loss_weights(order, known, target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        progress.update(step, loss=float(np.mean(losses[-50:])))
    net.eval()
    return losses


# %% 5. Generation: k pixels per network evaluation, each drawn on its own
# Every step runs the network once on the partial image and draws each of the
# step's k pixels from its own categorical. The draws are independent: nothing
# lets pixel a see what was drawn for pixel b in the same step. With k=1 this is
# exact autoregression, p(x) = prod_i p(x_i | x_<i), as in chapter 01; with k>1
# it samples prod_{p in group} p(x_p | known) instead of the joint
# p(x_group | known), and the larger and more tightly correlated the group,
# the worse that approximation.
@torch.no_grad()
def generate(net: nn.Module, order: str, k: int, n: int, levels: int, gen: torch.Generator,
             device: torch.device, batch: int = 128, return_steps: bool = False):
    """n images (n, 784) of level indices, made in 784/k network evaluations each.

    With return_steps, also the image after every step (steps, n, 784) and the
    step of every pixel (n, 784), for tests.
    """
    g = groups(order, k, n, gen)                                         # (n, 784)
    out, history = [], []
    for lo in range(0, n, batch):
        gb = g[lo:lo + batch].to(device)
        c = torch.zeros_like(gb)                                         # level index of each pixel
        known = torch.zeros_like(gb, dtype=torch.bool)
        steps = []
        for s in range(PIXELS // k):
            with common.autocast(device):
                logits = net(to_values(c, levels), known).float()        # (b, K, 784)
            now = gb == s                                                # the k pixels of this step
            probs = F.softmax(logits.permute(0, 2, 1)[now], -1)          # (b*k, K)
            # Drawn on the CPU with the run's generator: the same seed gives the same digits.
            draw = torch.multinomial(probs.cpu(), 1, generator=gen).flatten().to(device)
            c[now] = draw
            known |= now
            if return_steps:
                steps.append(c.clone().cpu())
        out.append(c.cpu())
        history.append(torch.stack(steps) if return_steps else None)
    x = torch.cat(out)
    if return_steps:
        return x, torch.cat(history, 1), g
    return x


@torch.no_grad()
def mean_image(net: nn.Module, levels: int, device: torch.device) -> torch.Tensor:
    """E[x_p] for every pixel with nothing known: what predicting all 784 at once gives
    if one takes the mean instead of a sample. This is chapter 01's blur."""
    zeros = torch.zeros(1, PIXELS, device=device)
    probs = F.softmax(net(zeros, zeros.bool()).float(), 1)               # (1, K, 784)
    lv = torch.linspace(0, 1, levels, device=device).view(1, levels, 1)
    return (probs * lv).sum(1).cpu()                                     # (1, 784)


# %% 6. The sweep: FD against network evaluations per image
def parse_ks(text: str) -> list[int]:
    ks = common.parse_list(text, int, "ks")
    for k in ks:
        if k < 1 or PIXELS % k:
            raise common.UserError(
                f"--ks: k={k} does not divide the {PIXELS} pixels into equal steps; "
                "choose divisors such as 1,4,16,49,196,784")
    return sorted(set(ks))


def run_sweep(nets: dict, ks: list[int], cfg: Config, judge: common.Judge, gen: torch.Generator,
              device: torch.device) -> tuple[list[dict], dict]:
    """Every (order, k): N samples, judged. Returns the table rows and the images."""
    rows, images = [], {}
    for order in ORDERS:
        for k in ks:
            start = time.perf_counter()
            c = generate(nets[order], order, k, cfg.samples, cfg.levels, gen, device, cfg.gen_batch)
            seconds = time.perf_counter() - start
            x = to_values(c, cfg.levels).view(-1, SIDE, SIDE)
            r = judge.evaluate(x)
            rows.append({"order": order, "k": k, "evaluations": PIXELS // k, "fd": r["fd"],
                         "fd_ratio": r["fd_ratio"], "confidence": r["confidence"], "score": r["score"],
                         "coverage": r["coverage"], "memorised": r["memorised"], "n": r["n"],
                         "seconds": seconds, "result": r})
            images[(order, k)] = x
            print(f"  {order:10s} k={k:3d} ({PIXELS // k:3d} evaluations, {seconds:5.1f}s): " + common.describe(r),
                  flush=True)
    return rows, images


def print_table(rows: list[dict], floor: float, n: int) -> None:
    print(f"FD at N={n} (floor {floor:.2f}: real held-out digits at the same N)")
    print(f"{'order':10s} {'k':>4s} {'evals':>6s} {'FD':>8s} {'xfloor':>7s} {'conf':>6s} {'classes':>7s} {'sec':>6s}")
    for r in rows:
        print(f"{r['order']:10s} {r['k']:4d} {r['evaluations']:6d} {r['fd']:8.2f} {r['fd_ratio']:7.1f} "
              f"{r['confidence']:6.3f} {r['coverage']:7d} {r['seconds']:6.1f}")


def plot_sweep(path, rows: list[dict], floor: float, n: int, blur_fd: float | None = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for order, style in zip(ORDERS, ("o-", "s-")):
        pts = sorted((r["evaluations"], r["fd"], r["k"]) for r in rows if r["order"] == order)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=order)
        for e, fd, k in pts:
            ax.annotate(f"k={k}", (e, fd), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axhline(floor, color="gray", ls="--", lw=1, label=f"real digits (floor, N={n})")
    if blur_fd is not None:
        ax.axhline(blur_fd, color="tab:red", ls=":", lw=1, label="the mean image (chapter 01's blur)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations per image (784 / k)")
    ax.set_ylabel(f"FD (judge features, N={n}; lower is better)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_rows(path, rows_of_images: list[tuple[str, torch.Tensor]], per_row: int = 10) -> None:
    """One labelled row of samples per setting."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows_of_images), per_row, squeeze=False,
                             figsize=(per_row * 0.7 + 1.6, len(rows_of_images) * 0.75))
    for r, (label, x) in enumerate(rows_of_images):
        for j in range(per_row):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(x):
                ax.imshow(x[j].reshape(SIDE, SIDE), cmap="gray_r", vmin=0, vmax=1)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# %% 7. Conclusions, read off the measured numbers
def conclusions(rows: list[dict], blur: dict, floor: float) -> list[str]:
    """The transcript's three claims, each checked against this run's table."""
    fd = {(r["order"], r["k"]): r["fd"] for r in rows}
    ks = sorted({r["k"] for r in rows})
    lines = []
    # Claim 1: quality falls as k grows.
    for order in ORDERS:
        seq = [fd[(order, k)] for k in ks]
        rises = [b >= a for a, b in zip(seq, seq[1:])]
        trail = " -> ".join(f"{v:.1f}" for v in seq)
        if all(rises):
            verdict = "yes, at every step of the sweep"
        else:
            dips = [f"k={ks[i]}->{ks[i + 1]}" for i, ok in enumerate(rises) if not ok]
            verdict = f"mostly; FD falls instead at {', '.join(dips)} (disagrees with the transcript there)"
        lines.append(f"quality falls as k grows ({order}): FD {trail} for k = {', '.join(map(str, ks))}: {verdict}")
    # Claim 2: scattered beats contiguous at equal k. At k=784 the two orders are
    # the same procedure (one group, the whole image), so only k<784 is a test.
    fair = [k for k in ks if k < PIXELS]
    wins = [k for k in fair if fd[("scattered", k)] < fd[("contiguous", k)]]
    losses = [k for k in fair if k not in wins]
    msg = f"scattered beats contiguous at equal k: at {len(wins)} of {len(fair)} k < 784"
    if losses:
        msg += f"; not at k = {', '.join(map(str, losses))} (" + ", ".join(
            f"{fd[('scattered', k)]:.1f} vs {fd[('contiguous', k)]:.1f}" for k in losses) + ")"
        if 1 in losses:
            msg += "; at k=1 both are exact autoregression and differ only in order and training"
    if 1 in ks:
        # At k=1 both orders are exact autoregression: a gap there measures the two
        # trainings (section 4: the scattered loss sees ~390 pixels per image, the
        # contiguous one k), not the independence of pixels drawn together.
        a, b = fd[("scattered", 1)], fd[("contiguous", 1)]
        msg += (f"; caution: at k=1, where neither order draws two pixels together, FD is already "
                f"{a:.1f} (scattered) vs {b:.1f} (contiguous), so that much of the gap is the training, "
                f"not the order")
    lines.append(msg)
    # Claim 3: k = 784 is chapter 01's blur.
    if PIXELS in ks:
        r784 = next(r for r in rows if r["order"] == "scattered" and r["k"] == PIXELS)
        worse = [k for k in ks if k < PIXELS and fd[("scattered", k)] > r784["fd"]]
        lines.append(
            f"k=784, all pixels in one evaluation, each from p(x_p) alone: FD {r784['fd']:.1f} "
            f"({r784['fd'] / floor:.0f}x the floor), confidence {r784['confidence']:.2f}; the mean of that "
            f"distribution is chapter 01's blur (FD {blur['fd']:.1f}, confidence {blur['confidence']:.2f}), and a "
            f"sample is that blur with independent per-pixel noise; "
            + ("it is the worst point of the scattered sweep" if not worse
               else f"yet k = {', '.join(map(str, worse))} scored worse (disagrees with the transcript)"))
    return lines


# %% 8. Putting it together
def build_net(levels: int, hidden: int, device: torch.device) -> MaskedPixelNet:
    return MaskedPixelNet(levels, hidden).to(device)


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__)
    ks = parse_ks(cfg.ks)
    check_k(cfg.k)
    if cfg.train_k:
        check_k(cfg.train_k)
    gen = common.seed_everything(cfg.seed)
    device = common.pick_device(cfg.device)
    data = common.load_data(cfg.data)
    out = common.out_dir(cfg, __file__)
    judge = common.Judge.load(data)
    sweep_ks = sorted(set(ks) | {cfg.k})
    train_ks = [cfg.train_k] if cfg.train_k else ks

    nets, train_seconds, extra = {}, 0.0, {}
    if cfg.load:
        ckpt = common.load_checkpoint(cfg.load, SCRIPT)
        saved = ckpt["config"]
        cfg.levels, cfg.hidden = int(saved["levels"]), int(saved["hidden"])  # the architecture is the checkpoint's
        for order in ORDERS:
            nets[order] = build_net(cfg.levels, cfg.hidden, device)
            if order not in ckpt["state"]:
                raise common.UserError(f"{cfg.load}: has no network for the {order} order")
            common.load_state(nets[order], ckpt["state"][order], cfg.load)
            nets[order].eval()
        print(f"loaded {cfg.load} (levels {cfg.levels}, hidden {cfg.hidden}); skipping training")
        if Path(cfg.load).resolve() != (out / "model.pt").resolve():  # every run folder is complete
            common.save_checkpoint(out / "model.pt", SCRIPT, cfg, ckpt["state"], ckpt["extra"])
    else:
        classes = to_classes(data.x_train.flatten(1), cfg.levels)       # (N, 784) level indices
        for order in ORDERS:
            nets[order] = build_net(cfg.levels, cfg.hidden, device)
            n_params = sum(p.numel() for p in nets[order].parameters())
            print(f"training the {order} network ({n_params:,} parameters) on k in {train_ks}")
            start = time.perf_counter()
            losses = train(nets[order], order, classes, cfg, train_ks, gen, device)
            train_seconds += time.perf_counter() - start
            extra[f"final_loss_{order}"] = float(np.mean(losses[-100:]))
        common.save_checkpoint(out / "model.pt", SCRIPT, cfg, {o: n.state_dict() for o, n in nets.items()},
                               {"train_ks": train_ks, **extra})

    print(f"sweep: N={cfg.samples} samples per point, orders {', '.join(ORDERS)}, k in {sweep_ks}")
    start = time.perf_counter()
    rows, images = run_sweep(nets, sweep_ks, cfg, judge, gen, device)
    sweep_seconds = time.perf_counter() - start

    # The blur: the mean image of the k=784 distribution, repeated N times.
    blur_img = mean_image(nets["scattered"], cfg.levels, device).view(1, SIDE, SIDE)
    blur = judge.evaluate(blur_img.expand(cfg.samples, SIDE, SIDE))
    floor = rows[0]["result"]["fd_floor"]
    print_table(rows, floor, cfg.samples)
    plot_sweep(out / "fd_vs_evaluations.png", rows, floor, cfg.samples, blur["fd"])
    shown = [k for k in (1, 16, 196, 784) if k in sweep_ks] or sweep_ks
    grid_rows = [(f"{o} k={k}\n({PIXELS // k} evals)", images[(o, k)][:10]) for o in ORDERS for k in shown]
    grid_rows.append(("mean at k=784\n(the blur)", blur_img.expand(10, SIDE, SIDE)))
    plot_rows(out / "sweep_samples.png", grid_rows)
    lines = conclusions(rows, blur, floor)
    print("conclusions, from the table above:")
    for line in lines:
        print("  - " + line)

    # The headline setting: its sweep point is the run's samples.
    head = next(r for r in rows if r["order"] == cfg.order and r["k"] == cfg.k)
    x = images[(cfg.order, cfg.k)]
    common.save_grid(out / "samples.png", x[:64], title=f"{cfg.order}, k={cfg.k}: {PIXELS // cfg.k} evaluations")
    common.save_samples(out, x)
    result = head["result"]
    print(common.describe(result, prefix=f"{cfg.order} k={cfg.k}: "))
    metrics = {
        "train_seconds": train_seconds,
        "sample_seconds": head["seconds"],
        "sweep_seconds": sweep_seconds,
        **result,
        "order": cfg.order,
        "k": cfg.k,
        "evaluations": PIXELS // cfg.k,
        "levels": cfg.levels,
        "train_ks": train_ks,
        "blur_fd": blur["fd"],
        "sweep": [{key: v for key, v in r.items() if key != "result"} for r in rows],
        "conclusions": lines,
        **extra,
    }
    common.save_metrics(out, metrics)
    common.print_summary(metrics, ["train_seconds", "sample_seconds", "sweep_seconds", "order", "k", "evaluations",
                                   "n", "fd", "fd_floor", "fd_ratio", "score", "confidence", "coverage", "memorised"])
    return metrics


if __name__ == "__main__":
    common.run_main(main)
