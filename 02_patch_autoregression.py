"""02_patch_autoregression.py: reveal k pixels per network evaluation, and what it costs.

Chapter 01 drew a digit one pixel at a time, 784 network evaluations per image.
Here a network fills in k missing pixels per evaluation, each drawn from its
own distribution given the same partial image, independently of the others in
that step. k=1 is chapter 01 again; k=784 draws every pixel at once from its
marginal (01's blur, with noise). The talk's claim: fewer evaluations cost
quality, and cost less when the pixels revealed together are scattered rather
than a contiguous patch, because neighbouring pixels depend on each other
(section 6). One network per order (patches in raster order, or random sets) is
trained the same way (section 4); this run samples both at k=16 (49 evaluations
per image) and judges them side by side.

Before: 01_autoregressive_pixels.py (one pixel per step). After: 03_ddpm.py (remove
information by adding noise to every pixel at once), or 07_causal_transformer.py right away.

Run:  python 02_patch_autoregression.py     (train both networks, sample 1,000 digits
                                             per order at k=16; runs/02_patch_autoregression/)
      python 02_patch_autoregression.py --load runs/02_patch_autoregression/model.pt --k 49
      python experiments/02_sweep.py --load runs/02_patch_autoregression/model.pt
                                            (FD against evaluations per image, k = 1 to 784)

samples.png and samples.npz hold the --order's samples (scattered by default);
generation.gif shows both orders side by side, one frame per step.
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

SCRIPT = "02_patch_autoregression"
SIDE = 28  # MNIST's side: 784 pixels, each a grey level; every function takes any other side
PIXELS = SIDE * SIDE  # 784
ORDERS = ("contiguous", "scattered")


# %% 0. Settings
@dataclasses.dataclass
class Config(common.BaseConfig):
    steps: int = common.flag(5000, "training steps per order (two networks are trained)", min=1)
    k: int = common.flag(16, "pixels per network evaluation, dividing 784", min=1)
    order: str = common.flag("scattered", "the order in samples.npz and samples.png",
                             choices=list(ORDERS))
    levels: int = common.flag(2, "K, grey levels per pixel (2: black/white, as 01)", min=2, max=256)
    hidden: int = common.flag(1024, "width of the network's two hidden layers", min=8)
    lr: float = common.flag(2e-3, "Adam learning rate (decays to 0 along a cosine)", min=0.0)


# %% 1. Pixel values: K grey levels, one categorical per pixel
# A pixel's value is one of K levels 0, 1/(K-1), ..., 1, and the network gives a
# categorical distribution over them. Sampling from that distribution (rather
# than taking its mean) is what makes each generated digit a definite digit.
# from 01
def quantize(images: torch.Tensor, levels: int) -> torch.Tensor:
    """Images (N, [1,] side, side) in [0, 1] -> tokens (N, side*side): each pixel's
    nearest of the K levels 0, 1/(K-1), ..., 1 as an index 0..K-1, in raster order."""
    return torch.round(images.reshape(len(images), -1).clamp(0, 1) * (levels - 1)).long()


# from 01
def dequantize(tokens: torch.Tensor, levels: int) -> torch.Tensor:
    """Tokens (N, side*side) -> images (N, side, side) in [0, 1]: level / (K-1)."""
    side = math.isqrt(tokens.shape[1])
    return (tokens.float() / (levels - 1)).view(len(tokens), side, side)


# %% 2. Orders: which pixels are revealed at which step
# A generation order is a partition of the 784 pixels into 784/k groups of k;
# step s reveals group s. We describe an order by one integer per pixel, the
# step that reveals it: `group[p] = s`. Then "revealed before step s" is
# `group < s` and "predicted at step s" is `group == s`, so every pixel is
# revealed exactly once by construction, which the tests check anyway.
def square_ks(side: int = SIDE) -> list[int]:
    """Each k whose patch is a square dividing the image: 28 -> 1, 4, 16, 49, 196, 784. The
    networks learn them all; experiments/02_sweep.py samples each."""
    return [d * d for d in range(1, side + 1) if side % d == 0]


def check_k(k: int, side: int = SIDE) -> None:
    if k < 1 or side * side % k:
        raise ValueError(f"k={k} does not divide the {side * side} pixels into equal steps; "
                         f"choose a divisor such as {', '.join(map(str, square_ks(side)))}")


def block_shape(k: int, side: int = SIDE) -> tuple[int, int]:
    """The patch of k pixels, h x w = k, both dividing the side, as square as possible (28:
    4 -> 2x2, 16 -> 4x4, 49 -> 7x7, 196 -> quarters). Every divisor of side^2 has one."""
    check_k(k, side)
    shapes = [(h, k // h) for h in range(1, side + 1) if k % h == 0 and side % h == 0
              and k // h <= side and side % (k // h) == 0 and h <= k // h]
    return min(shapes, key=lambda hw: hw[1] - hw[0])


def contiguous_groups(k: int, side: int = SIDE) -> torch.Tensor:
    """(784,) step of each pixel: h x w patches in raster order (left to right, top down)."""
    h, w = block_shape(k, side)
    rows = torch.arange(side).view(side, 1) // h       # patch row of each pixel
    cols = torch.arange(side).view(1, side) // w       # patch column
    return (rows * (side // w) + cols).flatten()       # (28, 28) -> (784,)


def scattered_groups(k: int, n: int, gen: torch.Generator, side: int = SIDE) -> torch.Tensor:
    """(n, 784) step of each pixel: a fresh random order per image, cut into runs of k."""
    check_k(k, side)
    order = torch.rand(n, side * side, generator=gen).argsort(1)  # order[i, j]: j-th revealed
    rank = order.argsort(1)                                  # rank[i, p] = when pixel p comes
    return rank // k


def groups(order: str, k: int, n: int, gen: torch.Generator, side: int = SIDE) -> torch.Tensor:
    """(n, 784) int64: the step that reveals each pixel of each of n images."""
    if order == "contiguous":
        return contiguous_groups(k, side).expand(n, side * side).clone()
    if order == "scattered":
        return scattered_groups(k, n, gen, side)
    raise ValueError(f"unknown order '{order}'; choose {' or '.join(ORDERS)}")


# %% 3. The network: partial image and mask in, K logits for every pixel out
# Input: the image with unknown pixels set to 0, and a mask, 1 where a pixel is
# known: 0 is also the commonest *known* value (background), and without the
# mask "black" and "not yet drawn" would look alike. Need it also be told which
# pixels this step asks for? No: the best prediction for a missing pixel p is
# p(x_p | known pixels), whatever else is asked alongside it, so one mask
# carries all the information there is, in either order.
# A multilayer perceptron: every output sees every input, so a stroke at the top
# can shape the bottom, and it is cheap, which matters since experiments/02_sweep.py
# runs it about 1,050 times per sample and order (784 + 196 + 49 + 16 + 4 + 1).
class MaskedPixelNet(nn.Module):
    """Any side of at least 1 (square images), levels K of at least 2."""

    def __init__(self, levels: int = 2, hidden: int = 1024, side: int = SIDE):
        if side < 1 or levels < 2 or hidden < 1:
            raise ValueError(f"need levels >= 2, hidden >= 1, side >= 1; got {levels}, {hidden}, "
                             f"{side}")
        super().__init__()
        self.levels, self.side, n = levels, side, side * side
        self.net = nn.Sequential(
            nn.Linear(2 * n, hidden), nn.GELU(),                       # (B, 1568) -> (B, H)
            nn.Linear(hidden, hidden), nn.GELU(),
            nn.Linear(hidden, levels * n))                              # -> (B, K*784)

    def forward(self, values: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """values, known: (B, 784) -> logits (B, K, 784)."""
        k = known.float()
        return self.net(torch.cat([values * k, k], 1)).view(len(values), self.levels, -1)


# %% 4. Training: one objective for both orders, the loss on every missing pixel
# One training example is one network evaluation of a sampling run, drawn
# uniformly: a k of TRAIN_KS with a chance in proportion to its 784/k steps,
# then a step s; the network sees what its order has revealed by then, groups
# 0..s-1: the first s patches in raster order (contiguous), or a random set of
# s*k pixels (scattered). The loss is on EVERY pixel still missing:
#   loss = (1/M) sum_{p missing} -log p_net(x_p | known),   M = number missing,
# not only on the k of the next step: by section 3 the best output at a missing
# pixel is p(x_p | known) whichever pixels are asked for, so every missing pixel
# is a correct target for any known set, raster prefix or random (about 390 per
# image instead of k). For the scattered order it is moreover exactly the
# expected next-group loss, as the next group G is a random k-subset of them:
#   E_G[ (1/k) sum_{p in G} l_p ] = (1/M) sum_{p missing} l_p.
# So both orders get the same objective and the same kind of examples. At k=1
# both are exact one-pixel auto-regression: perfect networks would sample equally
# well in either order. Trained ones differ (the contiguous network learns its
# next-pixel conditional at p only from examples whose frontier is at p), so
# FD(contiguous) / FD(scattered) at k=1, the control, is not 1, and it moves
# with the random stream; experiments/02_sweep.py measures its spread over
# sampling seeds, the yardstick for the gap between the orders at larger k.
# Why weight k by its steps: k=1 makes 784 of the sweep's 1,050 evaluations
# per image. Random known sets look alike whatever k, but the contiguous
# order's differ with k (pixel prefixes at k=1, 4x4-patch prefixes at k=16), and
# drawing k uniformly would give its most used setting a sixth of the training.
def training_masks(order: str, ks: list[int], n: int, gen: torch.Generator,
                   side: int = SIDE) -> torch.Tensor:
    """known (n, 784) bool for n training examples: the pixels of groups 0..s-1."""
    pixels = side * side
    steps = torch.tensor([pixels // k for k in ks], dtype=torch.float)
    which = torch.multinomial(steps, n, replacement=True, generator=gen)  # k by its steps
    known = torch.zeros(n, pixels, dtype=torch.bool)
    for i, k in enumerate(ks):
        rows = (which == i).nonzero().flatten()
        if len(rows) == 0:
            continue
        g = groups(order, k, len(rows), gen, side)                       # (m, 784)
        s = torch.randint(pixels // k, (len(rows), 1), generator=gen)    # the step being trained
        known[rows] = g < s
    return known


def masked_loss(logits: torch.Tensor, tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over images of the mean cross-entropy on that image's weighted pixels only.
    logits (B, K, 784), tokens (B, 784), weights (B, 784) in {0, 1}. Pixels with weight 0
    (the revealed ones) contribute exactly zero, and so does their gradient."""
    nll = F.cross_entropy(logits, tokens, reduction="none")    # (B, 784): -log p(x_p | known)
    return ((nll * weights).sum(1) / weights.sum(1).clamp_min(1)).mean()


def train_step(net: MaskedPixelNet, opt, tokens: torch.Tensor, order: str, ks: list[int],
               gen: torch.Generator | None = None) -> float:
    """One optimizer update on tokens (B, 784), each image at a generation step of one of the
    ks drawn as above, with the loss on every missing pixel; returns the loss."""
    known = training_masks(order, ks, len(tokens), gen, net.side).to(tokens.device)
    logits = net(dequantize(tokens, net.levels).flatten(1), known)
    loss = masked_loss(logits.float(), tokens, (~known).float())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def train(net: MaskedPixelNet, order: str, tokens: torch.Tensor, cfg: Config, ks: list[int],
          gen: torch.Generator, device) -> list[float]:
    """Adam with a cosine-decayed learning rate; returns the loss every step."""
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / cfg.steps)))
    stream = common.batches(tokens, torch.zeros(len(tokens)), cfg.batch_size, gen)
    progress, losses = common.Progress(cfg.steps, label=f"train {order}"), []
    net.train()
    for step in range(1, cfg.steps + 1):
        with common.autocast(device):
            losses.append(train_step(net, opt, next(stream)[0].to(device), order, ks, gen))
        sched.step()
        progress.update(step, loss=float(np.mean(losses[-50:])))
    net.eval()
    return losses


def train_both(nets: nn.ModuleDict, cfg: Config, data: common.Data, device) -> dict:
    """Each order's network in turn, the same recipe, one random stream; returns extra."""
    gen = torch.Generator().manual_seed(cfg.seed)
    tokens = quantize(data.x_train, cfg.levels)                        # (N, 784) level indices
    ks = square_ks(nets[ORDERS[0]].side)                               # every k of the sweep
    extra = {"train_ks": ks, "train_seconds": 0.0}
    for order, net in nets.items():
        n_params = sum(p.numel() for p in net.parameters())
        print(f"training the {order} network ({n_params:,} parameters) on k in {list(ks)}")
        start = time.perf_counter()
        losses = train(net, order, tokens, cfg, list(ks), gen, device)
        extra["train_seconds"] += time.perf_counter() - start
        extra[f"final_loss_{order}"] = float(np.mean(losses[-100:]))
    return extra


# %% 5. Generation: k pixels per network evaluation, each drawn on its own
# Every step runs the network once and draws each of the step's k pixels from
# its own categorical, independently: nothing lets pixel a see what was drawn
# for pixel b in the same step. With k=1 this is exact autoregression,
# p(x) = prod_i p(x_i | x_<i), as in chapter 01; with k>1 it samples
# prod_{p in group} p(x_p | known) instead of the joint p(x_group | known), the
# worse the more the group's pixels depend on each other (section 6).
UNKNOWN = 0.3  # the grey that stands for "not drawn yet" in the animation


@torch.no_grad()
def generate(net: nn.Module, order: str, k: int, n: int, levels: int, gen: torch.Generator,
             device, batch: int = 128, trace: list | None = None, progress=None) -> torch.Tensor:
    """n images (n, 784) of tokens, made in 784/k network evaluations each. `trace`
    (a list), if given, receives the first 8 images after every step as values (8, 784),
    with the pixels not drawn yet at the grey UNKNOWN; progress(images done), if given, is
    called after each batch of images."""
    g, out = groups(order, k, n, gen, net.side), []                      # (n, 784)
    for lo in range(0, n, batch):
        gb = g[lo:lo + batch].to(device)
        c = torch.zeros_like(gb)                                         # token of each pixel
        known = torch.zeros_like(gb, dtype=torch.bool)
        for s in range(net.side ** 2 // k):
            logits = net(dequantize(c, levels).flatten(1), known).float()  # (b, K, 784)
            now = gb == s                                                # the k pixels of this step
            probs = F.softmax(logits.permute(0, 2, 1)[now], -1)          # (b*k, K)
            # Drawn on the CPU with the run's generator: the same seed gives the same digits.
            draw = torch.multinomial(probs.cpu(), 1, generator=gen).flatten().to(device)
            c[now] = draw
            known |= now
            if trace is not None and lo == 0:
                trace.append(torch.where(known, dequantize(c, levels).flatten(1), UNKNOWN)[:8]
                             .cpu())
        out.append(c.cpu())
        if progress:
            progress(lo + len(gb))
    return torch.cat(out)


# %% 6. Why the order matters: how strongly the pixels of one step depend on each other
# Drawing a step's pixels independently is exact when they are independent given
# the known pixels; the talk's reason why scattered beats contiguous is that
# neighbours depend strongly on each other. experiments/02_sweep.py measures that
# on real held-out digits, beside the FD of every k, from the pixels' covariance S:
#   corr_ij = S_ij / sqrt(S_ii S_jj), 0 where pixel i or j never changes;
#   dependence of a group G = mean over its pairs i != j of |corr_ij|,
# given nothing, and given every pixel revealed before the group's step (the
# partial correlations of the Gaussian approximation).


# %% 7. Putting it together
def data_side(data: common.Data, k: int = 1) -> int:
    """The side of the data's images, checked: grey and square, and k dividing its pixels."""
    channels, side, width = data.x_train.shape[1:]
    if channels != 1 or side != width:
        raise common.UserError(f"02 models grey levels of square images: pass grey images "
                               f"(N, H, H), not {channels}x{side}x{width}")
    try:
        check_k(k, side)
    except ValueError as e:
        raise common.UserError(f"--k: {e}") from None
    return side


def load_or_train(cfg: Config, out, data: common.Data, device):
    """(cfg, nets, extra): both networks by order, from --load or trained here (the sweep too)."""
    side = data_side(data)
    return common.load_or_train(cfg, out, SCRIPT, ("levels", "hidden"), lambda c: nn.ModuleDict(
        {o: MaskedPixelNet(c.levels, c.hidden, side) for o in ORDERS}).to(device),
        lambda m: train_both(m, cfg, data, device), data)


def save_animation(out, traces: dict, k: int) -> None:
    """generation.gif: both orders, a row each, a frame per step (at most 64, the last kept)."""
    n, side = len(traces[ORDERS[0]]), math.isqrt(traces[ORDERS[0]][0].shape[1])
    shown = range(n - 1, -1, -math.ceil(n / 64))[::-1]
    frames = [torch.cat([traces[o][s] for o in ORDERS]).view(-1, side, side) for s in shown]
    common.save_images(out / "generation.gif", frames, len(frames[0]) // 2, list(ORDERS),
                       [f"k={k}: step {s + 1} of {n}, {k * (s + 1)} pixels drawn" for s in shown])


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__)
    data = common.load_data(cfg.data)
    pixels = data_side(data, cfg.k) ** 2  # grey square images, or one line before --out
    with common.run_folder(cfg, SCRIPT) as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        judge = common.load_judge(data)
        cfg, nets, extra = load_or_train(cfg, out, data, device)
        images, judged, seconds, traces = {}, {}, {}, {o: [] for o in ORDERS}
        for order in ORDERS:  # the same sampling seed for both (not training's: --load agrees)
            start, gen = time.perf_counter(), torch.Generator().manual_seed(cfg.seed + 1)
            with common.autocast(device):
                tokens = generate(nets[order], order, cfg.k, cfg.samples, cfg.levels, gen, device,
                                  trace=traces[order] if cfg.gif else None, progress=common.
                                  Progress(cfg.samples, f"sampling {order}, k={cfg.k}").update)
            seconds[order] = time.perf_counter() - start
            images[order] = dequantize(tokens, cfg.levels)               # (N, 28, 28)
            judged[order] = judge.evaluate(images[order]) if judge else {}
        metrics = {**extra, "sample_seconds": sum(seconds.values()), "k": cfg.k,
                   "evaluations_per_image": pixels // cfg.k, "order": cfg.order,
                   "levels": cfg.levels, "device": str(device), **judged[cfg.order],
                   **{f"sample_seconds_{o}": seconds[o] for o in ORDERS},
                   **{f"{key}_{o}": judged[o][key] for o in ORDERS for key in judged[o]
                      if key in ("fd", "fd_ratio", "confidence", "coverage")},
                   "config": dataclasses.asdict(cfg)}
        if judge:  # above 1: the scattered order's samples are closer to real digits
            metrics["fd_contiguous_over_scattered"] = judged["contiguous"]["fd"] / judged[
                "scattered"]["fd"]
        common.save_images(out / "samples.png", images[cfg.order][:100], 10,
                           titles=f"{SCRIPT}: {cfg.order}, k={cfg.k}, "
                                  f"{pixels // cfg.k} evaluations per image")
        common.save_samples(out, images[cfg.order])
        if cfg.gif:
            save_animation(out, traces, cfg.k)
        common.save_metrics(out, metrics)
    common.print_summary(metrics, [
        ("evaluations_per_image", "network evaluations per image (784 / k)"),
        ("fd_contiguous", "FD of the contiguous order's samples (lower is better)"),
        ("fd_scattered", "FD of the scattered order's samples"),
        ("fd_contiguous_over_scattered", "FD contiguous / scattered (above 1: scattered is "
                                         "better; experiments/02_sweep.py gives its spread)"),
        ("order", "the judge's figures below are for the order")])


# %% Run it (in a notebook too; common.run_main(main, ["--steps", "300"]) changes settings)
if __name__ == "__main__":
    common.run_main(main)

# %% Exercises (answers: docs/exercises.md; patches for the code changes: docs/solutions/)
# The --load commands need the default run first.
# 1. Predict, then run: k = 49 takes 16 network evaluations per image instead of 49. How much
#    worse will each order's FD be than at k = 16?
#      python 02_patch_autoregression.py --load runs/02_patch_autoregression/model.pt --k 49
# 2. Predict, then run with --k 1, then with --k 784: at which k do both orders score the
#    same FD, and why not at the other one?
#      python 02_patch_autoregression.py --load runs/02_patch_autoregression/model.pt --k 1
# 3. Change the code: add a third order, "strided", in which step s reveals pixels s,
#    s + 784/k, s + 2*784/k, ...: spread out like "scattered", but the same for every image.
#    Predict its FD at k = 16 against scattered's, then train all three
#    (a solution: docs/solutions/02_strided_order.patch).
# 4. Explain: README's claims table compares the two orders at every k against the k = 1
#    control. Why might scattered's advantage shrink, even reverse, when each step reveals a
#    quarter of the image (k = 196)?
