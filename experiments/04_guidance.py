"""04_guidance.py: classifier-free guidance makes samples follow the label, at the cost of
variety.

The same trained 04 model (its default run, --load) samples the same labels from the
same starting noise at several guidance scales s (0 ignores the label, 1 is the plain
conditional model). Per scale: does the digit match the prompt (the judge's label
accuracy), how close is the set to real digits (FD), and how varied are the samples
within a prompted class (the mean pixel distance between two samples asked for the
same digit; at s = 0 the label is ignored, so that is the whole set's variety there;
real held-out digits grouped by their label give the reference). guidance_grid.png
shows three samples of every digit at each scale, from the same starting noise.

    python experiments/04_guidance.py --load runs/04_cfg/model.pt

Writes metrics.json (a row per scale) and guidance_grid.png into runs/04_guidance/.
"""
import dataclasses
import time

import lab
import common
import torch

cfg_mod = lab.chapter("04_cfg")


@dataclasses.dataclass
class Config(cfg_mod.Config):
    scales: str = common.flag("0,1,1.75,2,4", "guidance scales to measure")
    out: str = common.flag("runs/04_guidance", "output folder")


def within_class_diversity(x: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean Euclidean pixel distance between pairs of images with the same label."""
    flat, values = x.reshape(len(x), -1).double(), []
    for c in labels.unique():
        f = flat[labels == c]
        if len(f) > 1:  # the mean over pairs i != j
            values.append(torch.cdist(f, f).sum().item() / (len(f) * (len(f) - 1)))
    return sum(values) / len(values) if values else float("nan")


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__, leave_out=("guidance", "digit", "gif"))
    scales = lab.parse_list(cfg.scales, float, "scales")
    if min(scales) < 0:
        raise common.UserError("--scales must be non-negative")
    with common.run_folder(cfg, "04_guidance") as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = lab.judge(data)
        sched = cfg_mod.make_schedule(cfg_mod.T)
        cfg, model, _ = common.load_or_train(
            cfg, out, cfg_mod.SCRIPT, ("target", "weighting", "channels"),
            lambda c: cfg_mod.UNet(c.channels).to(device, memory_format=torch.channels_last),
            lambda m: cfg_mod.train(m, cfg, data, device, sched))
        labels, rows, grid = cfg_mod.balanced_labels(cfg.samples), [], []
        three = torch.arange(30) // 3  # 0,0,0,1,1,1,...,9,9,9: the grid's prompts
        for s in scales:
            run = dataclasses.replace(cfg, guidance=s)
            start = time.perf_counter()
            x = cfg_mod.generate(model, run, labels, sched, device)
            seconds, r = time.perf_counter() - start, judge.evaluate(x, labels)
            rows.append({"guidance": s, "seconds": seconds,
                         "diversity": within_class_diversity(x[:, 0], labels),
                         **{k: r[k] for k in ("label_accuracy", "n", "fd", "fd_floor",
                                              "fd_ratio", "confidence", "coverage")}})
            print(f"s={s:g}: label accuracy {r['label_accuracy']:.3f}, FD {r['fd']:.1f}, "
                  f"variety within a class {rows[-1]['diversity']:.2f}", flush=True)
            grid.append(cfg_mod.generate(model, run, three, sched, device).view(10, 3, 28, 28))
        # a row per digit: three samples at each scale, scale by scale
        common.save_images(out / "guidance_grid.png", torch.stack(grid, 1).reshape(-1, 28, 28),
                           3 * len(scales), [f"digit {d}" for d in range(10)],
                           "three samples of each digit at s = "
                           + ", ".join(f"{s:g}" for s in scales))
        real = within_class_diversity(data.x_held[:cfg.samples, 0], data.y_held[:cfg.samples])
        common.save_metrics(out, {"sweep": rows, "real_diversity": real,
                                  "config": dataclasses.asdict(cfg)})
    print(f"real held-out digits: variety within a class {real:.2f}")


if __name__ == "__main__":
    common.run_main(main)
