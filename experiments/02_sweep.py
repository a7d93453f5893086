"""02_sweep.py: revealing several pixels per network evaluation is faster but loses quality,
and loses less when the pixels revealed together are spread out, because neighbouring
pixels depend on each other (02_patch_autoregression.py, sections 4 to 6).

02's two networks, one per order (contiguous patches or scattered pixels), sample N
digits at every k of --ks (784 / k network evaluations per image), each with several
sampling seeds, and the judge scores every set. Per order and k: FD over the seeds
(mean, spread), and how strongly the pixels of one step depend on each other in real
held-out digits (02, section 6). The control: at k = 1 both orders are exact one-pixel
auto-regression, so only the networks differ, yet FD(contiguous) / FD(scattered) there
is not 1 and moves with the random stream. Its spread over the seeds is the yardstick
for the ratio at larger k, and each seed's ratio at k is also divided by the same seed's
ratio at k = 1 (normalised: 1 means no gap beyond the control's).

    python experiments/02_sweep.py --load runs/02_patch_autoregression/model.pt

Without --load it trains both networks first, with 02's own code and flags. Writes
metrics.json, fd_vs_evaluations.png and sweep_samples.png (the first seed's samples)
into runs/02_sweep/.
"""
import dataclasses
import math
import time

import lab
import common  # importable once lab has put the repository on the path
import numpy as np
import torch

ch = lab.chapter("02_patch_autoregression")
JUDGED = ("n", "fd", "fd_floor", "fd_ratio", "confidence", "score", "coverage", "memorised")


# How strongly the pixels of one step depend on each other (02, section 6).
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
# Both are measured beside the FD of every k.
RIDGE = 1e-3


def pixel_covariance(x: torch.Tensor, levels: int) -> np.ndarray:
    """S: (784, 784) covariance of images (N, 1, 28, 28) at the model's K levels."""
    values = ch.dequantize(ch.quantize(x, levels), levels).flatten(1)   # (N, 784)
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
    side = math.isqrt(len(cov))
    for g in ch.groups(order, k, 1 if order == "contiguous" else draws, gen, side):
        steps = torch.argsort(g, stable=True).view(-1, k).numpy()       # (784/k, k) pixels
        alone = cov[steps[:, :, None], steps[:, None, :]]               # (784/k, k, k)
        given = step_covariances(cov, steps)[len(steps) // 2:]
        figures.append((mean_pair_correlation(alone), mean_pair_correlation(given)))
    a, b = np.mean(figures, 0)
    return float(a), float(b)


@dataclasses.dataclass
class Config(ch.Config):
    samples: int = common.flag(500, "N: samples judged per order, k and seed", min=2)
    ks: str = common.flag("1,4,16,49,196,784", "pixels per evaluation, each dividing 784; "
                          "1, the control, must be among them")
    seeds: int = common.flag(5, "sampling seeds per point: --seed + 1, ..., --seed + this", min=1)
    out: str = common.flag("runs/02_sweep", "output folder")


def spread(values) -> dict:
    """mean, std (over seeds, 0 for one), min, max and the values themselves."""
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "per_seed": v.tolist()}


@torch.no_grad()
def mean_image(net, levels: int, device) -> torch.Tensor:
    """E[x_p] for every pixel with nothing known: all 784 at once, each averaged on its own,
    is chapter 01's blur. (28, 28)."""
    zeros = torch.zeros(1, ch.PIXELS, device=device)
    probs = torch.softmax(net(zeros, zeros.bool()).float(), 1)           # (1, K, 784)
    return (probs * torch.linspace(0, 1, levels, device=device).view(1, levels, 1)).sum(1) \
        .view(28, 28).cpu()


def parse_ks(text: str) -> list[int]:
    ks = sorted(set(lab.parse_list(text, int, "ks")))
    for k in ks:
        try:
            ch.check_k(k)
        except ValueError as e:
            raise common.UserError(f"--ks: {e}") from None
    if 1 not in ks:
        raise common.UserError("--ks must include 1: k = 1 is the control every ratio is "
                               "compared with")
    return ks


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__, leave_out=("k", "order", "gif"))
    ks = parse_ks(cfg.ks)
    with common.run_folder(cfg, "02_sweep") as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = lab.judge(data)
        cfg, nets, _ = ch.load_or_train(cfg, out, data, device)
        cov = pixel_covariance(data.x_held, cfg.levels)
        dep_gen = torch.Generator().manual_seed(cfg.seed)
        seeds = [cfg.seed + 1 + r for r in range(cfg.seeds)]  # the first is the chapter's
        rows, fd, dep_table, shown = [], {}, {o: {} for o in ch.ORDERS}, []
        for order in ch.ORDERS:
            for k in ks:
                dep, dep_half = dependence(cov, order, k, dep_gen)
                dep_table[order][str(k)] = {"given_nothing": dep, "given_half": dep_half}
                for s in seeds:
                    start = time.perf_counter()
                    tokens = ch.generate(nets[order], order, k, cfg.samples, cfg.levels,
                                         torch.Generator().manual_seed(s), device)
                    seconds, x = time.perf_counter() - start, ch.dequantize(tokens, cfg.levels)
                    r = judge.evaluate(x)
                    fd[order, k, s] = r["fd"]
                    rows.append({"order": order, "k": k, "evaluations": ch.PIXELS // k,
                                 "seed": s, "seconds": seconds, **{j: r[j] for j in JUDGED},
                                 "dependence": dep, "dependence_given_half": dep_half})
                    if s == seeds[0]:
                        shown.append((f"{order}\nk={k}", x[:10]))  # a row of 10 (or N)
                    print(f"{order:10s} k={k:3d} ({ch.PIXELS // k:3d} evaluations) seed {s}: "
                          f"FD {r['fd']:.1f} ({r['fd_ratio']:.1f}x the floor), dependence "
                          f"{dep:.3f}, given half {dep_half:.3f}", flush=True)
        ratio = {k: [fd["contiguous", k, s] / fd["scattered", k, s] for s in seeds] for k in ks}
        normalised = {k: [a / b for a, b in zip(ratio[k], ratio[1])] for k in ks}
        blur = mean_image(nets["scattered"], cfg.levels, device)
        blur_fd = judge.evaluate(blur.expand(cfg.samples, 28, 28))["fd"]
        metrics = {
            "n": cfg.samples, "ks": ks, "seeds": seeds, "fd_floor": r["fd_floor"],
            "fd": {o: {str(k): spread([fd[o, k, s] for s in seeds]) for k in ks}
                   for o in ch.ORDERS},
            "fd_contiguous_over_scattered": {str(k): spread(ratio[k]) for k in ks},
            "control_ratio_k1": spread(ratio[1]),
            "ratio_over_control": {str(k): spread(normalised[k]) for k in ks},
            "dependence": dep_table, "blur_fd": blur_fd, "sweep": rows,
            "config": dataclasses.asdict(cfg)}
        lab.save_curves(out / "fd_vs_evaluations.png",
                        [(o, [ch.PIXELS // k for k in ks],
                          [metrics["fd"][o][str(k)]["mean"] for k in ks]) for o in ch.ORDERS]
                        + [("the mean image (01's blur)", [1, ch.PIXELS], [blur_fd] * 2)],
                        "network evaluations per image (784 / k)",
                        f"FD (N={cfg.samples}, mean of {len(seeds)} seeds; lower is better)",
                        r["fd_floor"])
        common.save_images(out / "sweep_samples.png",
                           torch.cat([x for _, x in shown] + [blur[None]]), min(10, cfg.samples),
                           [label for label, _ in shown] + ["01's blur"],
                           f"seed {seeds[0]}: the first 10 samples of each order and k")
        common.save_metrics(out, metrics)
    control = metrics["control_ratio_k1"]
    print(f"the control, FD contiguous / scattered at k = 1: {control['mean']:.2f} "
          f"(min {control['min']:.2f}, max {control['max']:.2f} over {len(seeds)} seeds)")
    for k in map(str, ks):
        a, b = metrics["fd_contiguous_over_scattered"][k], metrics["ratio_over_control"][k]
        print(f"k={k:>3s}: FD contiguous / scattered {a['mean']:.2f} +- {a['std']:.2f}; over the "
              f"control {b['mean']:.2f} +- {b['std']:.2f} (min {b['min']:.2f}, max {b['max']:.2f})")


if __name__ == "__main__":
    common.run_main(main)
