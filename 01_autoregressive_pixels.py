"""01_autoregressive_pixels.py: generate a digit one pixel at a time.

Generation is prediction, and prediction is curve fitting: a network fitted to
pairs (an input, the answer that goes with it). Here the images are their own
labels: remove part of a digit and ask for it back, so that generating is undoing
a removal. Asked for a whole digit from nothing, a network can only learn the
average digit: a blur (section 1). Asked for ONE missing pixel given the rest, it
has an easy task: the answer is a sensible colour (section 2). One network, told
which pixel to produce, does this at every position; run 784 times in raster
order, each time on what it has drawn so far, it draws a digit (sections 3 and 4).
That is auto-regression, each output fed back as an input of the next step: how
language models write, one token given the ones before (07 makes pixels tokens).
It predicts K probabilities rather than one value, so that generation can sample
(argmax draws one image every time), and so that the 784 probabilities multiply
into the exact likelihood of an image, reported on held-out digits in bits per
pixel (section 5).

This is the first chapter. After it, 02 fills in several pixels per step and
measures what that costs; 03 spreads the removal out with noise (diffusion);
07 learns all 784 steps of an image in one pass.

Run:  python 01_autoregressive_pixels.py     (train, sample 1,000 digits, judge them;
                                              runs/01_autoregressive_pixels/)
      python 01_autoregressive_pixels.py --levels 4   (grey digits: 4 intensity levels)
      python 01_autoregressive_pixels.py --load runs/01_autoregressive_pixels/model.pt
      python experiments/01_argmax.py --load runs/01_autoregressive_pixels/model.pt
                                   (section 4; 01_blur.py and 01_one_pixel.py: sections 1, 2)

generation.gif shows 16 samples filling in, pixel by pixel.
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

SCRIPT = "01_autoregressive_pixels"
SIDE = 28  # MNIST's side: 784 pixels, each a grey level; every function takes any other side


# %% 0. Settings
@dataclasses.dataclass
class Config(common.BaseConfig):
    steps: int = common.flag(5000, "training steps (optimizer updates)", min=1)
    levels: int = common.flag(2, "K, intensity levels per pixel (2 = paper or ink)", min=2, max=256)
    positions: int = common.flag(32, "random positions i trained per image per step", min=1)
    hidden: int = common.flag(512, "width of the network's hidden layers", min=8)
    lr: float = common.flag(2e-3, "Adam learning rate (decays to 0 along a cosine)", min=0.0)
    temperature: float = common.flag(1.0, "sampling temperature (1 = as learned)", min=0.01)


# %% 1. The blurry mess: predicting a whole image at once
# The simplest "generator" imaginable: a network whose input is always the same
# blank image and whose label is a whole training digit. The input carries no
# information, so the network has to give one answer for every digit, and the
# answer that minimises the squared error over all of them is their average:
#   argmin_y  E_x |y - x|^2  =  E[x]
# A classifier that averages its labels still gives a useful answer (0.5 cat,
# 0.5 dog: "not sure"); an image that averages a 1, a 7 and an 8 is a grey
# smudge, not a digit. That is the problem every model in this course solves in
# its own way. experiments/01_blur.py trains such a network and compares its
# output with the average digit (README, claims table).


# %% 2. One missing pixel: a regression would do; we predict a distribution anyway
# Shrink the task to its smallest: hide ONE pixel and predict it from all the
# others. A squared-error regression now gives a sensible answer: the average
# of the colours that pixel could have GIVEN the rest of the image. Inside a
# stroke that is ink, on empty paper it is paper, at a stroke's edge something
# between, and an average of colours is still a colour. (Section 1's blur was
# the average given nothing; it returns only when many pixels are predicted at
# once, each averaged on its own: chapter 02 shows it.)
# The labels cost nothing: the images are their own labels. Hide a pixel, ask
# for it back; nobody annotates anything (self-supervision). And it is all
# curve fitting: a network fitted to (partial image, missing pixel) pairs.
# experiments/01_one_pixel.py checks this on held-out digits (section 5 says how).
#
# Why then does this chapter predict K probabilities, one per intensity level,
# trained with the cross-entropy -log p(true level), instead of one value?
# To SAMPLE from them when generating: draws give a new digit every run, while
# always taking the likeliest level gives one image (section 4). And because
# probabilities multiply into an exact likelihood of a whole image (section 5).
# K=2 (paper or ink, cut at half intensity) is the binarised MNIST of MADE and
# PixelCNN; measured here, the judge preferred K=2's samples to K=4's at equal
# steps (docs/experiments.md).
def quantize(images: torch.Tensor, levels: int) -> torch.Tensor:
    """Images (N, [1,] side, side) in [0, 1] -> tokens (N, side*side): each pixel's
    nearest of the K levels 0, 1/(K-1), ..., 1 as an index 0..K-1, in raster order."""
    return torch.round(images.reshape(len(images), -1).clamp(0, 1) * (levels - 1)).long()


def dequantize(tokens: torch.Tensor, levels: int) -> torch.Tensor:
    """Tokens (N, side*side) -> images (N, side, side) in [0, 1]: level / (K-1)."""
    side = math.isqrt(tokens.shape[1])
    return (tokens.float() / (levels - 1)).view(len(tokens), side, side)


# %% 3. From a chain of networks to one network for every step
# Now hide more: remove every pixel from position i on (raster order: row by
# row, left to right) and predict pixel i. Picture a chain of 784 separate
# networks, one per pixel: network i sees pixels 0..i-1 and predicts pixel i.
# Start from a blank image, let network 0 draw pixel 0, network 1 pixel 1 from
# it, and so on: a whole digit. By the chain rule of probability
#   p(x) = p(x_0) p(x_1 | x_0) p(x_2 | x_0, x_1) ... p(x_783 | x_0..x_782)
# the product of the 784 predicted distributions is the probability of the
# whole image: the model is an exact likelihood model (section 5 uses this).
#
# 784 networks are 784 times the weights and the training. One shared network
# with the position i as one more input is slightly worse (it must serve every
# step with the same weights) but far cheaper, so that is what we train. (The
# talk gives it the number of pixels removed, 784 - i: the same information.)
# It sees only what is left:
#   - the whole partial image, for the shape of the digit so far;
#   - a close-up of the pixels just above and to the left of pixel i. A plain
#     network would have to learn, for each of the 784 positions separately,
#     which inputs are pixel i's neighbours; the close-up hands them over, so
#     the same weights read "a stroke comes down from above-left" everywhere
#     (PixelCNN's idea; measured here, a clear gain: docs/experiments.md);
#   - the position i, as a learned vector (an embedding: one row per position);
# and it answers with K logits for pixel i.
def causal_window(side: int, rows: int = 3, cols: int = 3) -> torch.Tensor:
    """(side*side, rows*(2*cols+1) + cols) int64: for each i, the raster indices of `rows`
    rows above it (`cols` to each side) and `cols` pixels to its left; side*side marks
    "outside the image". Every index listed for i is < i: only pixels already there."""
    offsets = [(dr, dc) for dr in range(-rows, 1) for dc in range(-cols, cols + 1)
               if dr < 0 or dc < 0]
    table = torch.full((side * side, len(offsets)), side * side, dtype=torch.long)
    for i in range(side * side):
        r, c = divmod(i, side)
        for k, (dr, dc) in enumerate(offsets):
            if 0 <= r + dr < side and 0 <= c + dc < side:
                table[i, k] = (r + dr) * side + (c + dc)
    return table


class NextPixelNet(nn.Module):
    """p(x_i | x_<i): (B, side*side) values in [0, 1] and (B,) positions i -> (B, K) logits.
    Pixels i, i+1, ... are removed inside forward(), whatever the caller passes. Any side
    of at least 1 (square images), levels K of at least 2."""

    def __init__(self, side: int = SIDE, levels: int = 2, hidden: int = 512):
        if side < 1 or levels < 2 or hidden < 1:
            raise ValueError(f"need side >= 1, levels >= 2, hidden >= 1; got {side}, {levels}, "
                             f"{hidden}")
        super().__init__()
        n = side * side
        self.side, self.levels = side, levels
        self.register_buffer("raster", torch.arange(n), persistent=False)
        self.register_buffer("window", causal_window(side), persistent=False)
        self.whole = nn.Linear(n, hidden)                        # the whole partial image
        self.close = nn.Linear(self.window.shape[1], hidden)     # the close-up around pixel i
        self.position = nn.Embedding(n, hidden)                  # which pixel to produce
        self.mid = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, levels)                    # K logits for pixel i

    def forward(self, values: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        # Remove pixels i, i+1, ...: known pixels are mapped to [-1, 1] (paper -1,
        # ink +1) and removed ones to 0, so "removed" and "paper" look different.
        known = self.raster < i[:, None]                                  # (B, n) bool
        x = torch.where(known, 2 * values - 1, torch.zeros_like(values))   # (B, n)
        # (B, n+1) -> (B, W): index n of the padded row is the 0 "outside the image"
        close = F.pad(x, (0, 1)).gather(1, self.window[i])
        h = F.relu(self.whole(x) + self.close(close) + self.position(i))  # (B, hidden)
        h = F.relu(self.mid(h)) + h                 # residual: an easy identity to start from
        return self.head(h)                                               # (B, hidden) -> (B, K)


# Training: each example is (an image, a random position i), and its label is
# pixel i of that image. Each such pair is a network evaluation for ONE target
# of the image's 784: to learn all 784 steps of a digit once, the network runs
# 784 times, on ever longer copies of one partial image. A causal architecture
# (chapter 07, which can be read right after 02) trains all 784 steps of an
# image in one evaluation.
def train_step(model: NextPixelNet, opt, tokens: torch.Tensor, positions: int = 32,
               gen: torch.Generator | None = None) -> float:
    """One optimizer update on `positions` random i in each image of tokens (B, side*side);
    returns the loss, -log2 p(true level), in bits per pixel."""
    batch = tokens.repeat_interleave(positions, 0)                 # (B, n) -> (B*R, n)
    i = torch.randint(batch.shape[1], (len(batch),), generator=gen).to(batch.device)  # (B*R,)
    target = batch.gather(1, i[:, None]).squeeze(1)               # (B*R,) the level of pixel i
    logits = model(batch.float() / (model.levels - 1), i)
    loss = F.cross_entropy(logits.float(), target)                # -log p(true level), nats
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item() / math.log(2)                              # nats -> bits


def train(model: NextPixelNet, cfg: Config, data: common.Data, device) -> dict:
    """Train on `positions` random i in each of `batch_size` images per step; returns the
    seconds, targets per second and the last 50 steps' bits per pixel."""
    gen = torch.Generator().manual_seed(cfg.seed)
    tokens = quantize(data.x_train, cfg.levels)                       # (N, 784) levels
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    # Decaying the step size to 0 lets the last steps settle instead of jittering.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    progress = common.Progress(cfg.steps, "train")
    stream = common.batches(tokens, torch.zeros(len(tokens)), cfg.batch_size, gen)
    losses = []
    model.train()
    for step in range(1, cfg.steps + 1):
        with common.autocast(device):
            losses.append(train_step(model, opt, next(stream)[0].to(device), cfg.positions, gen))
        sched.step()
        progress.update(step, bits_per_pixel=float(np.mean(losses[-50:])))
    model.eval()
    seconds = progress.elapsed()
    return {"train_seconds": seconds, "final_bits_per_pixel": float(np.mean(losses[-50:])),
            "targets_per_second": cfg.steps * cfg.batch_size * cfg.positions / seconds}


# %% 4. Generation: one pixel at a time, in raster order
# Start from an empty canvas. At step i the network sees pixels 0..i-1 (all
# generated by itself), outputs K probabilities for pixel i, and we choose a
# level; then i moves on. Two ways to choose:
#   - argmax: take the most probable level. Nothing random happens anywhere,
#     so the empty canvas always leads to the same first pixel, the same second
#     pixel, ... the same image. Here it is an empty page: most of any digit is
#     paper, so paper is pixel 0's likelier level, and given only paper so far,
#     paper stays the likelier level at every step: argmax never inks a pixel
#     (experiments/01_argmax.py counts them: none).
#   - sampling: draw the level with its predicted probability. Different draws
#     take different branches early on, and the network completes each branch
#     into its own digit: this is where variety comes from. The temperature T
#     sharpens (T < 1) or flattens (T > 1) each step's p: softmax(logits / T).
# The likeliest level at each step does not make a likely digit. Every image
# costs 784 network evaluations, one after the other (step i needs pixel i-1).
# That is fine for a 28x28 digit and far too slow for real images of millions
# of pixels: the next chapters cut the count. All N images go through each
# step together, as (N, ...) tensors.
@torch.no_grad()
def generate(model: NextPixelNet, n: int, device, mode: str = "sample",
             temperature: float = 1.0, seed: int = 0, given: torch.Tensor | None = None,
             trace: list | None = None, progress=None) -> torch.Tensor:
    """n images as (n, side*side) tokens. `given` (n, j) tokens are the first j pixels of
    every image, completed from step j on; `trace`, a list, gets (i, the first 16 canvases)
    every 16th pixel i and at the end; progress(steps done), if given, is called each step.
    Sampling takes the first level whose cumulative probability reaches a uniform number
    drawn on the CPU from `seed` (inverse-CDF sampling): the same seed, the same images on
    any device."""
    if mode not in ("sample", "argmax") or temperature <= 0:
        raise ValueError(f"need mode 'sample' or 'argmax' and temperature > 0, got {mode!r}, "
                         f"{temperature}")
    n_pixels, levels = model.side ** 2, model.levels
    gen = torch.Generator().manual_seed(seed)
    canvas = torch.zeros(n, n_pixels, dtype=torch.long, device=device)  # (n, 784), all removed
    first = 0 if given is None else given.shape[1]
    if given is not None:
        canvas[:, :first] = given.to(device)
    for i in range(first, n_pixels):
        if trace is not None and i % 16 == 0:
            trace.append((i, canvas[:16].cpu().clone()))
        values = canvas.float() / (levels - 1)
        logits = model(values, torch.full((n,), i, device=device)).float()    # (n, K)
        if mode == "argmax":
            choice = logits.argmax(1)
        else:
            cdf = torch.softmax(logits / temperature, 1).cumsum(1)              # (n, K)
            u = torch.rand(n, 1, generator=gen).to(device)                      # (n, 1)
            choice = (cdf < u).sum(1).clamp(max=levels - 1)     # first level with cdf >= u
        canvas[:, i] = choice
        if progress:
            progress(i - first + 1)
    if trace is not None:
        trace.append((n_pixels, canvas[:16].cpu().clone()))
    return canvas.cpu()


# %% 5. Evaluation: the exact likelihood, and one pixel given the rest
# By section 3's chain rule, -log p(x) = sum_i -log p(x_i | x_<i): the sum of
# the 784 per-step cross-entropies, exact, in nats per image; divided by 784
# and ln 2, bits per pixel: what a compressor built on the model would need, so
# lower is better, comparable at the same K on the same images (07 compares
# with it). It says little about whether samples look like digits: the judge.
# Scoring costs what sampling does, 784 evaluations per image, so a run scores
# as many held-out digits as it draws samples (all 1,000 by default).
@torch.no_grad()
def nll_per_image(model: NextPixelNet, tokens: torch.Tensor, device, batch: int = 1000,
                  first: int = 0, progress=None) -> torch.Tensor:
    """Exact -log p(x) in nats, (N, side*side) tokens -> (N,), float64; `first` > 0 sums only
    the steps first..end, the part of -log p(x) that pixel `first` can change.
    progress(evaluations done), if given, is called after each step."""
    n_images, n_pixels = tokens.shape
    total = torch.zeros(n_images, dtype=torch.float64)
    for start in range(0, n_images, batch):
        x = tokens[start:start + batch].to(device)
        values = x.float() / (model.levels - 1)
        for i in range(first, n_pixels):
            logits = model(values, torch.full((len(x),), i, device=device)).float()
            nats = F.cross_entropy(logits, x[:, i], reduction="none")           # (b,)
            total[start:start + len(x)] += nats.double().cpu()
            if progress:
                progress(start * (n_pixels - first) + len(x) * (i - first + 1))
    return total


# The exact likelihood also answers section 2's question, one pixel given ALL
# the others, though the network only sees the pixels before the one it predicts:
#   p(x_i = k | rest) = p(x with x_i = k) / sum_k' p(x with x_i = k')
# and the steps before i do not involve x_i, so they cancel.
def pixel_given_rest(model: NextPixelNet, tokens: torch.Tensor, i: int,
                     device) -> torch.Tensor:
    """p(x_i = k | every other pixel) for each image: (N, side*side) tokens -> (N, K)."""
    n, levels = len(tokens), model.levels
    filled = tokens.repeat_interleave(levels, 0)                   # (N*K, n): K copies each
    filled[:, i] = torch.arange(levels).repeat(n)                  # copy k has x_i = k
    log_p = -nll_per_image(model, filled, device, first=i)         # log p(x) + a constant
    return torch.softmax(log_p.view(n, levels), 1).float()         # (N*K,) -> (N, K)


def held_out_likelihood(model: NextPixelNet, data: common.Data, n: int, device) -> dict:
    """-log p(x) of the first n held-out digits, per image (nats) and per pixel (bits)."""
    held = quantize(data.x_held[:n], model.levels)
    progress = common.Progress(held.numel(), "held-out likelihood")
    with common.autocast(device):
        nats = float(nll_per_image(model, held, device, progress=progress.update).mean())
    return {"nats_per_image": nats, "bits_per_pixel": nats / held.shape[1] / math.log(2),
            "nll_images": len(held)}


# %% 6. Putting it together
def save_animation(out, trace: list, levels: int) -> None:
    """generation.gif: the traced samples filling in; pixels not yet drawn light grey."""
    frames, n = [], trace[0][1].shape[1]
    for s, canvas in trace:
        drawn = (torch.arange(n) < s).view(1, *dequantize(canvas[:1], levels).shape[1:])
        frames.append(torch.where(drawn, dequantize(canvas, levels), 0.25))  # (16, 28, 28)
    common.save_images(out / "generation.gif", frames, 8,
                       titles=[f"pixel {s} of {n}" for s, _ in trace])


def data_side(data: common.Data) -> int:
    """The side of the data's images, which 01 needs grey and square."""
    channels, side, width = data.x_train.shape[1:]
    if channels != 1 or side != width:
        raise common.UserError(f"01 models grey levels of square images: pass grey images "
                               f"(N, H, H), not {channels}x{side}x{width}")
    return side


def load_or_train(cfg: Config, out, data: common.Data, device):
    """(cfg, model, extra): --load's network (its levels and width replace the flags'), or
    one trained here, for the data's side; the experiments get theirs the same way."""
    side = data_side(data)
    return common.load_or_train(cfg, out, SCRIPT, ("levels", "hidden"),
                                lambda c: NextPixelNet(side, c.levels, c.hidden).to(device),
                                lambda m: train(m, cfg, data, device), data)


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__)
    data = common.load_data(cfg.data)
    data_side(data)  # grey square images, or one line before --out is touched
    with common.run_folder(cfg, SCRIPT) as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        judge = common.load_judge(data)
        cfg, model, extra = load_or_train(cfg, out, data, device)
        start, trace = time.perf_counter(), []
        with common.autocast(device):
            tokens = generate(model, cfg.samples, device, "sample", cfg.temperature, cfg.seed,
                              trace=trace if cfg.gif else None,
                              progress=common.Progress(model.side ** 2, "sampling").update)
        sample_seconds = time.perf_counter() - start
        images = dequantize(tokens, cfg.levels)                      # (N, 28, 28) in [0, 1]
        metrics = {**extra, "sample_seconds": sample_seconds,
                   "evaluations_per_image": model.side ** 2,
                   "levels": cfg.levels, **held_out_likelihood(model, data, cfg.samples, device),
                   "device": str(device), **(judge.evaluate(images) if judge else {}),
                   "config": dataclasses.asdict(cfg)}
        common.save_images(out / "samples.png", images[:100], 10,
                           titles=f"{SCRIPT}: {cfg.levels} levels, one pixel at a time")
        common.save_samples(out, images)
        if trace:
            save_animation(out, trace, cfg.levels)
        common.save_metrics(out, metrics)
    common.print_summary(metrics, [
        ("evaluations_per_image", "network evaluations per image"),
        ("bits_per_pixel", f"held-out bits per pixel, exact ({metrics['nll_images']} digits; "
                           "lower is better)")])


# %% Run it (in a notebook too; common.run_main(main, ["--steps", "300"]) changes settings)
if __name__ == "__main__":
    common.run_main(main)

# %% Exercises (answers: docs/exercises.md; patches for the code changes: docs/solutions/)
# The --load commands need the default run first.
# 1. Predict, then run: how many pixels does argmax ink, starting from an empty canvas?
#      python experiments/01_argmax.py --load runs/01_autoregressive_pixels/model.pt
# 2. Predict, then run at temperature 0.5: do the samples' FD and the held-out bits per pixel
#    change? One of the two cannot: which one, and why?
#      python 01_autoregressive_pixels.py --load runs/01_autoregressive_pixels/model.pt \
#          --temperature 0.5
# 3. Change the code: take the close-up away, so that NextPixelNet sees only the whole partial
#    image and the position. Predict the held-out bits per pixel and the look of the samples,
#    then train it (a solution: docs/solutions/01_no_close_up.patch).
# 4. Explain: one hidden pixel, predicted from the rest, comes out right (section 2;
#    experiments/01_one_pixel.py checks it), yet section 1's network, asked for every pixel
#    at once, draws a blur. What differs between the two questions?
