"""03_targets.py: predict the clean image rather than the slightly less noisy one, and then
the noise rather than the clean image (the talk's order, 03_ddpm.py section 4).

One network per target (xprev, x0, eps, and eps with min-SNR weighting, 03's default)
is trained with 03's own code at one budget and seed, sampled alike and judged, and
each network's clean-image estimate x0_hat along sampling is drawn (estimates.png):
where the talk's "blurry mess at the early steps" can be seen, or not. With --load (03's
default model) it also samples that model without clipping its clean-image estimate,
which is what makes predicting the noise work at all (03, section 6).

    python experiments/03_targets.py --steps 1000 --samples 500 --load runs/03_ddpm/model.pt

Writes metrics.json (a row per target) and estimates.png into runs/03_targets/.
"""
import dataclasses
import time

import lab
import common
import torch

ddpm = lab.chapter("03_ddpm")


@dataclasses.dataclass
class Config(ddpm.Config):
    steps: int = common.flag(1000, "training steps of each network", min=1)
    targets: str = common.flag("xprev,x0,eps,eps+minsnr",
                               "targets to compare; +minsnr adds the min-SNR weighting")
    out: str = common.flag("runs/03_targets", "output folder")


def parse_variants(text: str) -> list[tuple[str, str]]:
    """'x0,eps+minsnr' -> [('x0', 'plain'), ('eps', 'minsnr')]."""
    variants = []
    for item in lab.parse_list(text, str, "targets"):
        target, _, weighting = item.partition("+")
        if target not in ddpm.TARGETS or weighting not in ("", "minsnr"):
            raise common.UserError(f"--targets: '{item}' is not one of {', '.join(ddpm.TARGETS)}"
                                   ", optionally followed by +minsnr")
        variants.append((target, weighting or "plain"))
    return variants


JUDGED = ("n", "fd", "fd_floor", "fd_floor_n", "fd_ratio", "score", "confidence", "coverage")


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__, leave_out=("target", "weighting", "gif"))
    variants = parse_variants(cfg.targets)
    with common.run_folder(cfg, "03_targets") as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = lab.judge(data)
        sched = ddpm.make_schedule(ddpm.T)
        rows, pictures, shown = [], [], [0, 4, 8, 12, 16, 20, cfg.sample_steps - 1]
        for target, weighting in variants:
            run = dataclasses.replace(cfg, target=target, weighting=weighting, load="")
            torch.manual_seed(cfg.seed)  # every network starts from the same random weights
            model = ddpm.UNet(run.channels).to(device, memory_format=torch.channels_last)
            trained = ddpm.train(model, run, data, device, sched)
            start, trace = time.perf_counter(), []
            with common.autocast(device):  # as the chapter samples
                x = ddpm.generate(model.eval(), run, cfg.samples, sched, device, trace)
            r = judge.evaluate(x)
            rows.append({"target": target, "weighting": weighting, **trained,
                         "sample_seconds": time.perf_counter() - start,
                         **{k: r[k] for k in JUDGED}})
            print(f"{target} ({weighting}): FD {r['fd']:.1f} ({r['fd_ratio']:.1f}x the floor)")
            shown = [i for i in shown if i < len(trace)]
            name = target + ("+minsnr" if weighting == "minsnr" else "")
            pictures.append((name, torch.stack([ddpm.to_pixels(trace[i][2][:3]) for i in shown])
                             .transpose(0, 1).flatten(0, 1)))  # (3 * len(shown), C, H, W)
        labels = [f"{name}\nsample {j + 1}" for name, _ in pictures for j in range(3)]
        common.save_images(out / "estimates.png", torch.cat([p for _, p in pictures]),
                           len(shown), labels, "each network's clean-image estimate x0_hat along "
                           "DDIM sampling, at t = " + ", ".join(str(trace[i][0]) for i in shown))
        metrics = {"targets": rows, "config": dataclasses.asdict(cfg)}
        if cfg.load:  # 03's default model, sampled without clipping its estimate
            default_cfg, model, _ = common.load_or_train(
                cfg, out, ddpm.SCRIPT, ("target", "weighting", "channels"),
                lambda c: ddpm.UNet(c.channels).to(device, memory_format=torch.channels_last),
                None)
            with common.autocast(device):
                x = ddpm.generate(model, dataclasses.replace(default_cfg, clip=False),
                                  cfg.samples, sched, device)
            r = judge.evaluate(x)
            metrics["unclipped"] = {k: r[k] for k in JUDGED}
            print(f"03's model without clipping: FD {r['fd']:.1f}")
        common.save_metrics(out, metrics)


if __name__ == "__main__":
    common.run_main(main)
