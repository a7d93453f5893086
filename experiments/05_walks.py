"""05_walks.py: between two z, the great circle keeps the GAN's generator on ground it was
trained on, while the middle of the straight line leaves it.

A draw z ~ N(0, I) in d dimensions has a norm close to sqrt(d); the midpoint of the
straight line between two independent draws has a norm close to 0.71 sqrt(d), where
N(0, I) puts almost no mass and the generator never saw an input. The great circle
(slerp) between them keeps the norm of its ends. The same trained 05 generator (its
default run, --load) decodes, for --samples pairs of draws, the pairs' first ends, the
straight line's midpoints and the great circle's; the judge scores each set (FD against
real digits, and its confidence). Only the path between the ends differs. walks.png
shows six walks of ten steps, each along the line and along the circle.

    python experiments/05_walks.py --load runs/05_gan/model.pt

Writes metrics.json and walks.png into runs/05_walks/.
"""
import dataclasses
import math

import lab
import common
import torch
import torch.nn.functional as F

gan = lab.chapter("05_gan")
JUDGED = ("n", "fd", "fd_floor", "fd_ratio", "confidence", "coverage")


@dataclasses.dataclass
class Config(gan.Config):
    out: str = common.flag("runs/05_walks", "output folder")


def slerp(a, b, t):
    """The great circle from a to b at t in [0, 1]: a, b (..., d), t (..., 1) or a number;
    for a and b of one norm, every point keeps it."""
    cos = F.cosine_similarity(a, b, dim=-1).clamp(-1 + 1e-7, 1 - 1e-7)
    omega = torch.acos(cos).unsqueeze(-1)                        # the angle between a and b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def lerp(a, b, t):
    """The straight line from a to b at t in [0, 1]."""
    return (1 - t) * a + t * b


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__, leave_out=("keep", "gif"))
    with common.run_folder(cfg, "05_walks") as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = lab.judge(data)
        cfg, model, _ = common.load_or_train(
            cfg, out, gan.SCRIPT, ("arch", "z_dim", "width"),
            lambda c: gan.build(c.arch, c.z_dim, c.width).to(device),
            lambda m: gan.watch(gan.train(m, cfg, data, device), judge), data=data)
        G = model["generator"]
        a, b = torch.randn(2, cfg.samples, cfg.z_dim,
                           generator=torch.Generator().manual_seed(cfg.seed + 2))
        metrics = {}
        for name, z in (("ends", a), ("line", lerp(a, b, 0.5)), ("circle", slerp(a, b, 0.5))):
            with common.autocast(device):
                r = judge.evaluate(gan.generate(G, z))
            metrics.update({f"{name}_norm": (z.norm(dim=1) / math.sqrt(cfg.z_dim)).mean().item(),
                            **{f"{name}_{k}": r[k] for k in JUDGED}})
            print(f"{name:6s} |z|/sqrt(d) {metrics[f'{name}_norm']:.2f}: FD {r['fd']:.1f}, "
                  f"confidence {r['confidence']:.3f}", flush=True)
        t = torch.linspace(0, 1, 10).unsqueeze(1)                # (10, 1)
        rows = [way(a[i], b[i], t) for i in range(min(6, cfg.samples)) for way in (lerp, slerp)]
        with common.autocast(device):
            x = gan.generate(G, torch.cat(rows))                 # (12 walks x 10 steps, C, H, W)
        common.save_images(out / "walks.png", x, 10,
                           ["line", "circle"] * (len(rows) // 2),
                           "walks between two z: the straight line and the great circle")
        common.save_metrics(out, {**metrics, "config": dataclasses.asdict(cfg)})
    print("the middle of the straight line has the smaller norm; compare their FDs above")


if __name__ == "__main__":
    common.run_main(main)
