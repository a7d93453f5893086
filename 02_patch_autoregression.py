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
information by adding noise to every pixel at once).

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
SIDE = 28
PIXELS = SIDE * SIDE  # 784
ORDERS = ("contiguous", "scattered")
TRAIN_KS = [1, 4, 16, 49, 196, 784]  # every k the networks learn (experiments/02_sweep.py's)


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
def check_k(k: int, flag_name: str = "k") -> None:
    if k < 1 or PIXELS % k:
        raise common.UserError(f"--{flag_name}: k={k} does not divide the {PIXELS} pixels into "
                               "equal steps; choose a divisor such as 1, 4, 16, 49, 196, 784")


def block_shape(k: int) -> tuple[int, int]:
    """The patch of k pixels, h x w = k, both dividing 28, as square as possible: 4 -> 2x2,
    16 -> 4x4, 49 -> 7x7, 196 -> quarters. Every divisor of 784 = 2^4 7^2 has one."""
    check_k(k)
    shapes = [(h, k // h) for h in range(1, SIDE + 1) if k % h == 0 and SIDE % h == 0
              and k // h <= SIDE and SIDE % (k // h) == 0 and h <= k // h]
    return min(shapes, key=lambda hw: hw[1] - hw[0])


def contiguous_groups(k: int) -> torch.Tensor:
    """(784,) step of each pixel: h x w patches in raster order (left to right, top down)."""
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
    def __init__(self, levels: int, hidden: int):
        super().__init__()
        self.levels = levels
        self.net = nn.Sequential(
            nn.Linear(2 * PIXELS, hidden), nn.GELU(),                  # (B, 1568) -> (B, H)
            nn.Linear(hidden, hidden), nn.GELU(),
            nn.Linear(hidden, levels * PIXELS))                         # -> (B, K*784)

    def forward(self, values: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """values, known: (B, 784) -> logits (B, K, 784)."""
        k = known.float()
        return self.net(torch.cat([values * k, k], 1)).view(len(values), self.levels, PIXELS)


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
def training_masks(order: str, ks: list[int], n: int, gen: torch.Generator) -> torch.Tensor:
    """known (n, 784) bool for n training examples: the pixels of groups 0..s-1."""
    steps = torch.tensor([PIXELS // k for k in ks], dtype=torch.float)
    which = torch.multinomial(steps, n, replacement=True, generator=gen)  # k by its steps
    known = torch.zeros(n, PIXELS, dtype=torch.bool)
    for i, k in enumerate(ks):
        rows = (which == i).nonzero().flatten()
        if len(rows) == 0:
            continue
        g = groups(order, k, len(rows), gen)                             # (m, 784)
        s = torch.randint(PIXELS // k, (len(rows), 1), generator=gen)    # the step being trained
        known[rows] = g < s
    return known


def masked_loss(logits: torch.Tensor, tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over images of the mean cross-entropy on that image's weighted pixels only.
    logits (B, K, 784), tokens (B, 784), weights (B, 784) in {0, 1}. Pixels with weight 0
    (the revealed ones) contribute exactly zero, and so does their gradient."""
    nll = F.cross_entropy(logits, tokens, reduction="none")    # (B, 784): -log p(x_p | known)
    return ((nll * weights).sum(1) / weights.sum(1).clamp_min(1)).mean()


def train(net: nn.Module, order: str, tokens: torch.Tensor, cfg: Config, ks: list[int],
          gen: torch.Generator, device) -> list[float]:
    """Adam with a cosine-decayed learning rate; returns the loss every step."""
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / cfg.steps)))
    data = common.batches(tokens, torch.zeros(len(tokens)), cfg.batch_size, gen)
    progress = common.Progress(cfg.steps, label=f"train {order}")
    losses = []
    net.train()
    for step in range(1, cfg.steps + 1):
        c, _ = next(data)
        known = training_masks(order, ks, len(c), gen)
        c, known = c.to(device), known.to(device)
        with common.autocast(device):
            logits = net(dequantize(c, cfg.levels).flatten(1), known)
        loss = masked_loss(logits.float(), c, (~known).float())  # every missing pixel
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        progress.update(step, loss=float(np.mean(losses[-50:])))
    net.eval()
    return losses


def train_both(nets: nn.ModuleDict, cfg: Config, data: common.Data, device,
               ks: list[int] = TRAIN_KS) -> dict:
    """Each order's network in turn, the same recipe, one random stream; returns extra."""
    gen = torch.Generator().manual_seed(cfg.seed)
    tokens = quantize(data.x_train, cfg.levels)                        # (N, 784) level indices
    extra = {"train_ks": list(ks), "train_seconds": 0.0}
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
             device, batch: int = 128, trace: list | None = None) -> torch.Tensor:
    """n images (n, 784) of tokens, made in 784/k network evaluations each. `trace`
    (a list), if given, receives the first 8 images after every step as values (8, 784),
    with the pixels not drawn yet at the grey UNKNOWN."""
    g = groups(order, k, n, gen)                                         # (n, 784)
    out, progress = [], common.Progress(n, f"sampling {order}, k={k}")
    for lo in range(0, n, batch):
        gb = g[lo:lo + batch].to(device)
        c = torch.zeros_like(gb)                                         # token of each pixel
        known = torch.zeros_like(gb, dtype=torch.bool)
        for s in range(PIXELS // k):
            with common.autocast(device):
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
        progress.update(lo + len(gb))
    return torch.cat(out)


# %% 6. Why the order matters: how strongly the pixels of one step depend on each other
# Drawing a step's pixels independently is exact when they are independent given
# the known pixels; the talk's reason why scattered beats contiguous is that
# neighbours depend strongly on each other. Measured on real held-out digits,
# from the pixels' covariance S (784 x 784):
#   corr_ij = S_ij / sqrt(S_ii S_jj), 0 where pixel i or j never changes;
#   dependence of a group G = mean over its pairs i != j of |corr_ij|
#   (one pixel has no pairs: 0, nothing is drawn together).
# `dependence`: given nothing, averaged over all the steps of the order.
# `dependence_given_half`: the partial correlations instead, those of the
# Gaussian approximation's conditional covariance given K, every pixel revealed
# before the group's step:   C = S_GG - S_GK (S_KK + ridge I)^-1 S_KG,
# averaged over the steps of the second half (at least half the image known;
# k=784 has one step, given nothing). The ridge keeps S_KK invertible (corner
# pixels never change). Scattered: averaged over a few random orders.
# experiments/02_sweep.py measures both beside the FD of every k.
RIDGE = 1e-3


def pixel_covariance(x: torch.Tensor, levels: int) -> np.ndarray:
    """S: (784, 784) covariance of images (N, 1, 28, 28) at the model's K levels."""
    values = dequantize(quantize(x, levels), levels).flatten(1)         # (N, 784)
    return np.cov(values.double().numpy(), rowvar=False)


def mean_pair_correlation(blocks: np.ndarray, tiny: float = 1e-10) -> float:
    """Covariance blocks (m, k, k) -> the mean |correlation| over blocks and pairs i != j."""
    m, k, _ = blocks.shape
    if k < 2:
        return 0.0
    var = np.diagonal(blocks, axis1=1, axis2=2)                         # (m, k)
    scale = np.where(var > tiny, 1 / np.sqrt(np.maximum(var, tiny)), 0.0)
    corr = np.abs(blocks) * scale[:, :, None] * scale[:, None, :]        # (m, k, k)
    off = corr.sum((1, 2)) - np.diagonal(corr, axis1=1, axis2=2).sum(1)
    return float(off.mean() / (k * (k - 1)))


def step_covariances(cov: np.ndarray, steps: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """(S, k, k): each step's pixels' covariance C given all earlier steps' pixels.
    steps (S, k): the pixels of each step. With the pixels in generation order,
    S + ridge I = L L^T (Cholesky), and C_s = L_ss L_ss^T - ridge I for every s at once."""
    n_steps, k = steps.shape
    p = steps.ravel()
    chol = np.linalg.cholesky(cov[np.ix_(p, p)] + ridge * np.eye(len(p)))
    diag = chol.reshape(n_steps, k, n_steps, k)[np.arange(n_steps), :, np.arange(n_steps), :]
    return diag @ diag.transpose(0, 2, 1) - ridge * np.eye(k)           # (S, k, k)


def dependence(cov: np.ndarray, order: str, k: int, gen: torch.Generator,
               draws: int = 4) -> tuple[float, float]:
    """(dependence, dependence_given_half) of the order at k, as defined above."""
    figures = []
    for g in groups(order, k, 1 if order == "contiguous" else draws, gen):
        steps = torch.argsort(g, stable=True).view(-1, k).numpy()       # (784/k, k) pixels
        alone = cov[steps[:, :, None], steps[:, None, :]]               # (784/k, k, k)
        given = step_covariances(cov, steps)[len(steps) // 2:]
        figures.append((mean_pair_correlation(alone), mean_pair_correlation(given)))
    a, b = np.mean(figures, 0)
    return float(a), float(b)


# %% 7. Putting it together
def load_or_train(cfg: Config, out, data: common.Data, device):
    """(cfg, nets, extra): both networks by order, from --load or trained here (the sweep too)."""
    return common.load_or_train(
        cfg, out, SCRIPT, ("levels", "hidden"),
        lambda c: nn.ModuleDict({o: MaskedPixelNet(c.levels, c.hidden) for o in ORDERS}).to(device),
        lambda m: train_both(m, cfg, data, device))


def save_animation(out, traces: dict, k: int) -> None:
    """generation.gif: both orders, a row each, a frame per step (at most 64, the last kept)."""
    n = len(traces[ORDERS[0]])
    shown = range(n - 1, -1, -math.ceil(n / 64))[::-1]
    frames = [torch.cat([traces[o][s] for o in ORDERS]).view(-1, SIDE, SIDE) for s in shown]
    common.save_images(out / "generation.gif", frames, len(frames[0]) // 2, list(ORDERS),
                       [f"k={k}: step {s + 1} of {n}, {k * (s + 1)} pixels drawn" for s in shown])


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__)
    check_k(cfg.k)
    with common.run_folder(cfg, SCRIPT) as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = common.load_judge(data)
        cfg, nets, extra = load_or_train(cfg, out, data, device)
        images, judged, seconds, traces = {}, {}, {}, {o: [] for o in ORDERS}
        for order in ORDERS:  # the same sampling seed for both (not training's: --load agrees)
            start, gen = time.perf_counter(), torch.Generator().manual_seed(cfg.seed + 1)
            tokens = generate(nets[order], order, cfg.k, cfg.samples, cfg.levels, gen, device,
                              trace=traces[order] if cfg.gif else None)
            seconds[order] = time.perf_counter() - start
            images[order] = dequantize(tokens, cfg.levels)               # (N, 28, 28)
            judged[order] = judge.evaluate(images[order]) if judge else {}
        metrics = {**extra, "sample_seconds": sum(seconds.values()), "k": cfg.k,
                   "evaluations_per_image": PIXELS // cfg.k, "order": cfg.order,
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
                                  f"{PIXELS // cfg.k} evaluations per image")
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
