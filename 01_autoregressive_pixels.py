"""01_autoregressive_pixels.py: generate a digit one pixel at a time.

A network asked for a whole digit from nothing can only learn the average
digit: a blur (section 1). Asked for ONE missing pixel given the rest, it has
an easy task: the images are their own labels, and the answer is a sensible
colour (section 2). One network, told which pixel to produce, does this at
every position; run 784 times in raster order, each time on what it has drawn
so far, it draws a digit (sections 3 and 4). It predicts K probabilities
rather than one value, so that generation can sample (argmax draws the same
image every time), and so that the 784 probabilities multiply into the exact
likelihood of an image, reported on held-out digits in bits per pixel (section 5).

This is the first chapter. After it, 02 fills in several pixels per step and
measures what that costs; 03 spreads the removal out with noise (diffusion);
07 learns all 784 steps of an image in one pass.

Run:  python 01_autoregressive_pixels.py              (train, sample 1,000 digits, judge them)
      python 01_autoregressive_pixels.py --levels 4   (grey digits: 4 intensity levels)
      python 01_autoregressive_pixels.py --load runs/01_autoregressive_pixels/model.pt

Writes samples.png, samples.npz, metrics.json, model.pt, generation.gif (16 samples
filling in), blur.png and argmax_vs_sampling.png into runs/01_autoregressive_pixels/.
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
SIDE = 28  # MNIST's side; every function also takes a smaller one (the tests use 1 to 8)
CENTRE = (SIDE // 2) * SIDE + SIDE // 2  # pixel 406: ink in about half of all digits


# %% 0. Settings
@dataclasses.dataclass
class Config(common.BaseConfig):
    steps: int = common.flag(5000, "training steps (optimizer updates)", min=1)
    batch_size: int = common.flag(64, "images per training step", min=1)
    samples: int = common.flag(1000, "how many samples to generate and evaluate", min=2)
    levels: int = common.flag(2, "K, intensity levels per pixel (2 = paper or ink)", min=2, max=256)
    positions: int = common.flag(32, "random positions i trained per image per step", min=1)
    hidden: int = common.flag(512, "width of the network's hidden layers", min=8)
    lr: float = common.flag(2e-3, "Adam learning rate (decays to 0 along a cosine)", min=0.0)
    temperature: float = common.flag(1.0, "sampling temperature (1 = as learned)", min=0.01)
    eval_images: int = common.flag(1000, "held-out digits for the likelihood (0 = skip)", min=0)
    blur_steps: int = common.flag(300, "training steps of section 1's blur predictor", min=1)
    gif: bool = common.flag(True, "write generation.gif (--no-gif skips it)")


# %% 1. The blurry mess: predicting a whole image at once
# The simplest "generator" imaginable: a network whose input is always the same
# blank image and whose label is a whole training digit. The input carries no
# information, so the network has to give one answer for every digit, and the
# answer that minimises the squared error over all of them is their average:
#   argmin_y  E_x |y - x|^2  =  E[x]
# The average of a 1, a 7 and an 8 is not a digit; it is a grey smudge. That is
# the problem every model in this course solves in its own way.
def train_whole_image(images: torch.Tensor, steps: int, batch_size: int, gen: torch.Generator,
                      lr: float = 1e-2, hidden: int = 64) -> nn.Module:
    """Fit a blank-input network to images (N, side*side) in [0, 1] with the squared error."""
    n_images, n_pixels = images.shape
    model = nn.Sequential(nn.Linear(n_pixels, hidden), nn.ReLU(),  # (B, n) -> (B, n)
                          nn.Linear(hidden, n_pixels)).to(images.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    # The decay to 0 removes the last mini-batches' jitter from the answer.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    blank = torch.zeros(min(batch_size, n_images), n_pixels, device=images.device)
    progress = common.Progress(steps, "blur")
    for step in range(1, steps + 1):
        idx = torch.randint(n_images, (len(blank),), generator=gen).to(images.device)
        loss = F.mse_loss(model(blank), images[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        progress.update(step, loss=loss.item())
    return model


def blurry_mess(x_train: torch.Tensor, steps: int, gen: torch.Generator, device):
    """Section 1 end to end: (what the predictor learned, the true average image), (28, 28)."""
    flat = x_train.reshape(len(x_train), -1).to(device)                 # (N, 784) in [0, 1]
    model = train_whole_image(flat, steps, 256, gen)
    with torch.no_grad():
        blur = model(torch.zeros(1, flat.shape[1], device=device))[0].clamp(0, 1)
    return blur.reshape(SIDE, SIDE).cpu(), flat.mean(0).reshape(SIDE, SIDE).cpu()


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root-mean-square pixel difference: 0 = identical, 1 = black against white everywhere."""
    return float(((a.float() - b.float()) ** 2).mean().sqrt())


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
# Section 5 checks this on held-out digits: at the centre pixel, the average
# the network implies given the rest against the data-set average and the truth.
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
    """(N, [1,] side, side) floats in [0, 1] -> (N, side*side) int64 levels 0..K-1, raster order."""
    return torch.round(images.reshape(len(images), -1).clamp(0, 1) * (levels - 1)).long()


def to_images(levels_: torch.Tensor, levels: int) -> torch.Tensor:
    """(N, side*side) int64 levels -> (N, side, side) float32 in [0, 1] (level / (K-1))."""
    side = int(math.isqrt(levels_.shape[1]))
    return (levels_.float() / (levels - 1)).reshape(len(levels_), side, side)


# %% 3. One network for every step
# Now hide more: remove every pixel from position i on (raster order: row by
# row, left to right) and predict pixel i. Repeating this for i = 0, 1, ..., 783
# builds a whole image one pixel at a time, and by the chain rule of probability
#   p(x) = p(x_0) p(x_1 | x_0) p(x_2 | x_0, x_1) ... p(x_783 | x_0..x_782)
# the product of the 784 predicted distributions is the probability of the
# whole image: the model is an exact likelihood model (section 5 uses this).
#
# We do not train 784 networks. One network serves every step; it is told
# which step it is on by the position i (the talk says: the number of pixels
# removed, 784 - i; the same information). It sees only what is left:
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
    Pixels i, i+1, ... are removed inside forward(), whatever the caller passes."""

    def __init__(self, side: int = SIDE, levels: int = 2, hidden: int = 512):
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


def train_next_pixel(model: NextPixelNet, levels_train: torch.Tensor, cfg: Config,
                     gen: torch.Generator, device: torch.device) -> dict:
    """Train on `positions` random i in each of `batch_size` images per step; returns the
    seconds, targets per second and the last 50 steps' bits per pixel.

    Each (image, i) pair is a forward pass for ONE target of the image's 784:
    to learn all 784 steps of a digit once the network runs 784 times, on ever
    longer copies of one partial image. Chapter 07 removes that waste.
    """
    n_pixels = levels_train.shape[1]
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    # Decaying the step size to 0 lets the last steps settle instead of jittering.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    progress = common.Progress(cfg.steps, "train")
    images = common.batches(levels_train, torch.zeros(len(levels_train)), cfg.batch_size, gen)
    losses = []
    model.train()
    for step in range(1, cfg.steps + 1):
        batch, _ = next(images)
        batch = batch.repeat_interleave(cfg.positions, 0).to(device)          # (B, n) -> (B*R, n)
        i = torch.randint(n_pixels, (len(batch),), generator=gen).to(device)  # (B*R,)
        target = batch.gather(1, i[:, None]).squeeze(1)          # (B*R,) the level of pixel i
        with common.autocast(device):
            logits = model(batch.float() / (model.levels - 1), i)
        loss = F.cross_entropy(logits.float(), target)          # -log p(true level), nats
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item() / math.log(2))                # nats -> bits
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
#     pixel, ... the same image. Every "sample" is one and the same digit.
#   - sampling: draw the level with its predicted probability. Different draws
#     take different branches early on, and the network completes each branch
#     into its own digit: this is where variety comes from.
# The most likely pixel at each step does not make the most likely image
# (argmax_vs_sampling.png). Every image costs 784 network evaluations, one
# after the other (step i needs pixel i-1); all N images go through each step
# together, so they run on (N, ...) tensors rather than N * 784 tiny ones.
@torch.no_grad()
def generate(model: NextPixelNet, n: int, device: torch.device, mode: str = "sample",
             temperature: float = 1.0, seed: int = 0, snapshots: tuple[int, ...] = (),
             given: torch.Tensor | None = None,
             keep: int | None = None) -> tuple[torch.Tensor, dict]:
    """n images as (n, side*side) int64 levels, and {step: the first `keep` canvases just
    before pixel `step` is drawn} for each step in `snapshots`. `given` (n, j) levels are
    the first j pixels of every image, completed from step j on. Sampling takes the first
    level whose cumulative probability reaches a uniform number drawn on the CPU from
    `seed` (inverse-CDF sampling): the same seed gives the same images on any device."""
    if mode not in ("sample", "argmax"):
        raise ValueError(f"mode must be 'sample' or 'argmax', got {mode!r}")
    n_pixels, levels = model.side ** 2, model.levels
    gen = torch.Generator().manual_seed(seed)
    canvas = torch.zeros(n, n_pixels, dtype=torch.long, device=device)  # (n, 784), all removed
    first = 0 if given is None else given.shape[1]
    if given is not None:
        canvas[:, :first] = given.to(device)
    seen = {}
    for i in range(first, n_pixels):
        if i in snapshots:
            seen[i] = canvas[:keep].cpu().clone()
        with common.autocast(device):
            values = canvas.float() / (levels - 1)
            logits = model(values, torch.full((n,), i, device=device)).float()  # (n, K)
        if mode == "argmax":
            choice = logits.argmax(1)
        else:
            cdf = torch.softmax(logits / temperature, 1).cumsum(1)              # (n, K)
            u = torch.rand(n, 1, generator=gen).to(device)                      # (n, 1)
            choice = (cdf < u).sum(1).clamp(max=levels - 1)     # first level with cdf >= u
        canvas[:, i] = choice
    if n_pixels in snapshots:
        seen[n_pixels] = canvas[:keep].cpu().clone()
    return canvas.cpu(), seen


def distinct(images: torch.Tensor) -> int:
    return len({tuple(row.tolist()) for row in images})


def argmax_vs_sampling(model: NextPixelNet, start: torch.Tensor, device, temperature: float,
                       seed: int) -> dict:
    """argmax twice from an empty canvas (4 images each), then 5 argmax and 5 sampled
    completions of one given start (1, j): the images and what they show, counted."""
    a, _ = generate(model, 4, device, "argmax")
    b, _ = generate(model, 4, device, "argmax")
    done = {mode: generate(model, 5, device, mode, temperature, seed,
                           given=start.expand(5, -1))[0] for mode in ("argmax", "sample")}
    return {"empty": a, "completions": done, "argmax_identical": bool(torch.equal(a, b)),
            "argmax_distinct": distinct(torch.cat([a, b])),
            "argmax_inked_pixels": int((a[0] > 0).sum())}


# %% 5. Evaluation: the exact likelihood, one pixel given the rest, and the judge
# By section 3's chain rule, -log p(x) = sum_i -log p(x_i | x_<i): the sum of
# the 784 per-step cross-entropies, exact, in nats per image; divided by 784
# and ln 2, bits per pixel: what a compressor built on the model would need, so
# lower is better, comparable at the same K on the same images (07 compares
# with it). It says little about whether samples look like digits: the judge.
@torch.no_grad()
def nll_per_image(model: NextPixelNet, levels_: torch.Tensor, device: torch.device,
                  batch: int = 1000, first: int = 0) -> torch.Tensor:
    """Exact -log p(x) in nats, (N, side*side) levels -> (N,), float64; `first` > 0 sums only
    the steps first..end, the part of -log p(x) that pixel `first` can change."""
    n_images, n_pixels = levels_.shape
    total = torch.zeros(n_images, dtype=torch.float64)
    for start in range(0, n_images, batch):
        x = levels_[start:start + batch].to(device)
        values = x.float() / (model.levels - 1)
        for i in range(first, n_pixels):
            with common.autocast(device):
                logits = model(values, torch.full((len(x),), i, device=device)).float()
            nats = F.cross_entropy(logits, x[:, i], reduction="none")           # (b,)
            total[start:start + len(x)] += nats.double().cpu()
    return total


# The exact likelihood also answers section 2's question, one pixel given ALL
# the others, though the network only sees the pixels before the one it predicts:
#   p(x_i = k | rest) = p(x with x_i = k) / sum_k' p(x with x_i = k')
# and the steps before i do not involve x_i, so they cancel.
def pixel_given_rest(model: NextPixelNet, levels_: torch.Tensor, i: int,
                     device: torch.device) -> torch.Tensor:
    """p(x_i = k | every other pixel) for each image: (N, side*side) levels -> (N, K)."""
    n, levels = len(levels_), model.levels
    filled = levels_.repeat_interleave(levels, 0)                  # (N*K, n): K copies each
    filled[:, i] = torch.arange(levels).repeat(n)                  # copy k has x_i = k
    log_p = -nll_per_image(model, filled, device, first=i)         # log p(x) + a constant
    return torch.softmax(log_p.view(n, levels), 1).float()         # (N*K,) -> (N, K)


def one_pixel_check(model: NextPixelNet, data: common.Data, n: int, device,
                    i: int = CENTRE) -> dict:
    """Pixel i of n held-out digits: the truth, the network's average given the rest
    (sum_k p(k | rest) * k / (K-1)), the data-set average, and the RMS errors of both."""
    levels = model.levels
    held = quantize(data.x_held[:n], levels)                        # (n, 784)
    truth = held[:, i].float() / (levels - 1)                       # (n,) in [0, 1]
    colours = torch.arange(levels) / (levels - 1)                   # (K,) each level's colour
    given_rest = pixel_given_rest(model, held, i, device) @ colours  # (n, K) @ (K,) -> (n,)
    dataset_mean = float(quantize(data.x_train, levels)[:, i].float().mean() / (levels - 1))
    return {"index": i, "images": n, "dataset_mean": dataset_mean,
            "rms_dataset_mean": rms(torch.full_like(truth, dataset_mean), truth),
            "rms_given_rest": rms(given_rest, truth),
            "truth": truth[:8].tolist(), "given_rest": given_rest[:8].tolist()}


def likelihood(model: NextPixelNet, data: common.Data, cfg: Config, device) -> dict:
    """Held-out NLL and the one-pixel check (on K copies of each digit: about 200 rows)."""
    if not cfg.eval_images:
        return {}
    held = quantize(data.x_held[:cfg.eval_images], cfg.levels)
    nats = float(nll_per_image(model, held, device).mean())
    n = min(len(held), max(2, 200 // cfg.levels))
    return {"nats_per_image": nats, "bits_per_pixel": nats / held.shape[1] / math.log(2),
            "nll_images": len(held), "one_pixel": one_pixel_check(model, data, n, device)}


# %% 6. Reporting: the blur, argmax against sampling, one pixel, the animation
def report_blur(out, blur, mean_image, data: common.Data, judge, n: int) -> dict:
    result, off = judge.evaluate(blur.expand(n, -1, -1)), rms(blur, mean_image)
    spread = rms(data.x_train.flatten(1), mean_image.flatten())
    print(f"section 1: the blank-input predictor is {off:.4f} RMS from the average digit (a "
          f"training digit is {spread:.3f} from it)\n" + common.describe(result, "judge: "))
    common.save_rows(out / "blur.png", [("", torch.stack([blur, mean_image,
                                                          (blur - mean_image).abs()]))],
                     ["learned", "average", "|diff.|"])
    return {"blur_rms_to_mean": off, "digit_rms_to_mean": spread,
            **{f"blur_{k}": result[k] for k in ("fd", "fd_ratio", "confidence", "coverage")}}


def report_choices(out, demo: dict, start, sampled: torch.Tensor, levels: int) -> None:
    shown = F.pad(start, (0, sampled.shape[1] - start.shape[1]))  # the given start, rest paper
    done = demo["completions"]
    rows = [("empty,\nargmax", demo["empty"][:1].expand(6, -1)),
            ("half given,\nargmax", torch.cat([shown, done["argmax"]])),
            ("half given,\nsampled", torch.cat([shown, done["sample"]])),
            ("empty,\nsampled", sampled[:6])]
    common.save_rows(out / "argmax_vs_sampling.png",
                     [(label, to_images(x, levels)) for label, x in rows],
                     title="argmax: one image per start; sampling: a new one every time")
    print(f"section 4: argmax from an empty canvas, two runs of 4: {demo['argmax_distinct']} "
          f"distinct image(s) with {demo['argmax_inked_pixels']} inked pixels; a given top half "
          f"completed 5 times: argmax {distinct(done['argmax'])} distinct, sampling "
          f"{distinct(done['sample'])}")


def report_one_pixel(p: dict | None) -> None:
    if p:  # None with --eval-images 0
        print(f"section 2, pixel {p['index']} of {p['images']} held-out digits: RMS error "
              f"{p['rms_given_rest']:.3f} given the rest, {p['rms_dataset_mean']:.3f} for the "
              f"data-set average ({p['dataset_mean']:.2f}); metrics.json lists every guess")


def save_generation_gif(out, snaps: dict, levels: int, ncol: int = 8) -> None:
    """generation.gif: the kept samples filling in; pixels not yet drawn shown light grey."""
    frames, n_pixels = [], SIDE * SIDE
    for s in sorted(snaps):
        drawn = torch.arange(n_pixels) < s                                  # (784,) bool
        canvas = torch.where(drawn, snaps[s].float() / (levels - 1), 0.25)  # (n, 784)
        frames.append(canvas.view(len(canvas), SIDE, SIDE))
    common.save_animation(out / "generation.gif", frames,
                          [f"pixel {s} of {n_pixels}" for s in sorted(snaps)], ncol)


# %% 7. Putting it together
GIF_STEPS = tuple(range(0, SIDE * SIDE + 1, 16))  # a frame every 16 pixels: 50 frames
GIF_IMAGES = 16
SUMMARY = ["train_seconds", "sample_seconds", "bits_per_pixel", "nats_per_image", "fd",
           "fd_ratio", "score", "confidence", "coverage", "memorised"]


def train_or_load(cfg: Config, ckpt, data: common.Data, gen, device, out):
    """The trained network and its training figures; a loaded checkpoint is copied as is."""
    model = NextPixelNet(SIDE, cfg.levels, cfg.hidden).to(device)
    if ckpt is None:
        trained = train_next_pixel(model, quantize(data.x_train, cfg.levels), cfg, gen, device)
        common.save_checkpoint(out / "model.pt", SCRIPT, cfg, model.state_dict(), trained)
        return model, trained
    common.load_state(model.eval(), ckpt["state"], cfg.load)
    common.copy_checkpoint(cfg.load, out)
    return model, {k: ckpt["extra"].get(k, 0.0) for k in ("train_seconds", "targets_per_second")}


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__)
    with common.run_folder(cfg, __file__) as out:
        run_start = time.perf_counter()
        gen = common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = common.Judge.load(data)
        ckpt = common.load_checkpoint(cfg.load, SCRIPT) if cfg.load else None
        if ckpt:  # the network's shape is the checkpoint's, whatever the flags say
            cfg = dataclasses.replace(cfg, **{k: int(ckpt["config"].get(k, getattr(cfg, k)))
                                              for k in ("levels", "hidden")})
        blur, mean_image = blurry_mess(data.x_train, cfg.blur_steps, gen, device)
        metrics = report_blur(out, blur, mean_image, data, judge, cfg.samples)
        model, trained = train_or_load(cfg, ckpt, data, gen, device, out)
        start = quantize(data.x_held[:1], cfg.levels)[:, :SIDE * SIDE // 2]  # top 14 rows
        demo = argmax_vs_sampling(model, start, device, cfg.temperature, cfg.seed)
        t0 = time.perf_counter()
        sampled, snaps = generate(model, cfg.samples, device, "sample", cfg.temperature,
                                  cfg.seed, GIF_STEPS if cfg.gif else (), keep=GIF_IMAGES)
        sample_seconds = time.perf_counter() - t0
        images = to_images(sampled, cfg.levels)                        # (N, 28, 28) in [0, 1]
        result = judge.evaluate(images)
        metrics.update(trained, **likelihood(model, data, cfg, device), **result,
                       sample_seconds=sample_seconds, levels=cfg.levels,
                       sample_seconds_per_image=sample_seconds / cfg.samples,
                       evaluations_per_image=SIDE * SIDE, config=dataclasses.asdict(cfg),
                       **{k: v for k, v in demo.items() if k.startswith("argmax_")})
        report_choices(out, demo, start, sampled, cfg.levels)
        report_one_pixel(metrics.get("one_pixel"))
        print(common.describe(result, "judge on the samples: "))
        common.save_grid(out / "samples.png", images[:100], nrow=10,
                         title=f"{cfg.levels}-level samples, one pixel at a time")
        common.save_samples(out, images)
        if cfg.gif:
            save_generation_gif(out, snaps, cfg.levels)
        common.save_metrics(out, {**metrics, "total_seconds": time.perf_counter() - run_start})
    common.print_summary(metrics, [k for k in SUMMARY if k in metrics])


if __name__ == "__main__":
    common.run_main(main)
