"""make_shapes.py: a small colour data set to try the chapters on, made in a second, no download.

Each image is 32x32 RGB: one square or circle, of a random size and place, on a light grey
background. Its label is its colour, one of four (red, green, blue, orange), so a model
asked for a class can be checked by the same rule that made the data: the colour of the
pixels that are not background.

    python scripts/make_shapes.py                     (2,000 images -> runs/shapes.npz)
    python 03_ddpm.py --data runs/shapes.npz --steps 300
    python 04_cfg.py --data runs/shapes.npz --steps 300

The file holds what `--data` reads: x uint8 (N, 32, 32, 3) and y int64 labels 0..3.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

COLOURS = np.array([[220, 40, 40], [40, 170, 60], [40, 70, 220], [240, 160, 20]], np.float32)
NAMES = ["red", "green", "blue", "orange"]
BACKGROUND = 230.0  # light grey, like the paper the digits are drawn on
SIDE = 32


def make_shapes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (n, 32, 32, 3), y int64 (n,)): a square or a circle per image, its colour
    its label, its size (radius or half-side 4 to 10 pixels) and place random."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(COLOURS), n)
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    x = np.full((n, SIDE, SIDE, 3), BACKGROUND, np.float32)
    for i in range(n):
        r = rng.uniform(4, 10)
        cy, cx = rng.uniform(r, SIDE - r, 2)
        if rng.random() < 0.5:  # a circle
            inside = (rows - cy) ** 2 + (cols - cx) ** 2 <= r ** 2
        else:  # a square
            inside = (abs(rows - cy) <= r) & (abs(cols - cx) <= r)
        x[i][inside] = COLOURS[y[i]]
    return x.astype(np.uint8), y.astype(np.int64)


def colour_class(x: np.ndarray) -> np.ndarray:
    """The data's own rule, for generated samples: float images (N, 32, 32, 3) in [0, 1] ->
    the class whose colour is nearest the mean of the pixels that are not background, or -1
    where no pixel stands out."""
    x = np.asarray(x, np.float32) * 255
    shape = np.abs(x - BACKGROUND).max(-1) > 60  # (N, H, W): pixels far from the background
    labels = np.full(len(x), -1)
    for i in np.flatnonzero(shape.any((1, 2))):
        mean = x[i][shape[i]].mean(0)
        labels[i] = int(np.argmin(((COLOURS - mean) ** 2).sum(1)))
    return labels


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="how many images (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same images")
    parser.add_argument("--out", default="runs/shapes.npz", help="where to write the .npz")
    args = parser.parse_args(argv)
    x, y = make_shapes(args.n, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, x=x, y=y)
    print(f"{args.out}: {len(x)} images {x.shape[1:]}, labels 0..{y.max()} "
          f"({', '.join(NAMES)})")


if __name__ == "__main__":
    main()
