"""Draw README's headline figure: FD against network evaluations per image, for
01 (one pixel per step), 02 (both orders of its k sweep) and 03 (DDIM at several
step counts), from the metrics.json files their runs wrote.

    python scripts/headline_figure.py            # after scripts/reproduce.sh, or the runs it lists

Every point is the judge's FD at the same N (HEADLINE_N = 500, chapter 02's
default): FD depends on N, so points at different N would not be comparable.
Chapter 01's run judges 1,000 samples; its point here is the judge's FD of the
first 500 of them (runs/01_autoregressive_pixels/samples.npz). Chapter 03's
sweep is run with --samples 500 (scripts/reproduce.sh).
"""
import json
import shutil
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for common
import common  # noqa: E402

HEADLINE_N = 500
RUNS = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs")
DOCS = Path("docs")
FIGURES = {
    "01_autoregressive_pixels": ["samples.png"],
    "02_patch_autoregression": ["samples.png"],
    "03_ddpm": ["samples.png", "noising.png", "forward_process.png"],
    "03_x0": ["samples.png"],
    "03_noclip": ["samples.png"],
    "04_cfg": ["samples.png", "guidance_grid.png"],
    "05_gan": ["samples.png", "training.png", "modes.png"],
    "06_vae": ["samples.png"],
    "07_causal_transformer": ["samples.png"],
}


def read(name):
    path = RUNS / name / "metrics.json"
    if not path.exists():
        print(f"missing {path}: run the command in scripts/reproduce.sh first")
        return None
    return json.loads(path.read_text())


def main():
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    floors = set()
    m01 = read("01_autoregressive_pixels")
    if m01:
        x01 = np.load(RUNS / "01_autoregressive_pixels" / "samples.npz")["x"][:HEADLINE_N]
        r01 = common.Judge.load().evaluate(x01)  # the same judge as every run's, on N of 01's samples
        print(f"01 at N={r01['n']}: FD {r01['fd']:.1f} ({r01['fd_ratio']:.1f}x floor)")
        ax.plot([m01["evaluations_per_image"]], [r01["fd"]], "s", ms=9, label=f"01 pixel by pixel (N={r01['n']})")
        floors.add((r01["fd_floor"], r01["fd_floor_n"]))
    m02 = read("02_patch_autoregression")
    if m02:
        for order, style in (("scattered", "o-"), ("contiguous", "^-")):
            rows = sorted((r for r in m02["sweep"] if r["order"] == order), key=lambda r: r["evaluations"])
            if rows:
                n = rows[0].get("n", "?")
                ax.plot([r["evaluations"] for r in rows], [r["fd"] for r in rows], style, label=f"02 {order} (N={n})")
                if "fd_floor" in rows[0]:
                    floors.add((rows[0]["fd_floor"], rows[0].get("fd_floor_n", n)))
    m03 = read("03_sweep")
    if m03 and m03.get("sweep"):
        rows = sorted(m03["sweep"], key=lambda r: r["evaluations"])
        ax.plot([r["evaluations"] for r in rows], [r["fd"] for r in rows], "D-", label=f"03 diffusion, DDIM eta=1 (N={rows[0]['n']})")
        floors.add((rows[0]["fd_floor"], rows[0]["fd_floor_n"]))
    if any(n != HEADLINE_N for _, n in floors):
        print(f"warning: not every series is at N={HEADLINE_N}: {sorted(floors)}; run scripts/reproduce.sh's commands")
    for floor, n in sorted(floors):
        ax.axhline(floor, ls=":", c="gray")
        ax.text(1.05, floor * 1.05, f"real-data floor, N={n}", fontsize=7, color="gray")
    ax.set(xscale="log", yscale="log", xlabel="network evaluations per image (log)",
           ylabel="FD to real digits (log; lower is better)",
           title="Quality against generation cost (2-core CPU default runs)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    DOCS.mkdir(exist_ok=True)
    fig.savefig(DOCS / "headline.png", dpi=110)
    print(f"wrote {DOCS / 'headline.png'}")
    # README embeds each chapter's sample grid and a few figures: copy them next to it.
    for run, files in FIGURES.items():
        for f in files:
            src = RUNS / run / f
            if src.exists():
                shutil.copyfile(src, DOCS / f"{run}_{f}")
                print(f"copied {src}")


if __name__ == "__main__":
    main()
