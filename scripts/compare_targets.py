"""Chapter 03's question, measured: what should the denoiser predict?

Trains one network per target of 03_ddpm.py's section 4 (and, with +minsnr, its
min-SNR loss weighting) with chapter 03's own code, at one budget and one seed,
samples each the same way, judges them, and draws each network's clean-image
estimate x0_hat along sampling (estimates.png): where the talk's "blurry mess
at the early steps" can be seen, or not.

    python scripts/compare_targets.py                    (eps, x0, v, xprev, eps+minsnr)
    python scripts/compare_targets.py --targets eps,x0 --steps 3500

Writes metrics.json (one row per target: FD, confidence, ...) and estimates.png
into runs/03_targets/ (or --out), plus the contract files of the first target's run.
"""
from __future__ import annotations

import dataclasses
import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the chapters and common.py
import common  # noqa: E402
import torch  # noqa: E402

ddpm = importlib.import_module("03_ddpm")


@dataclasses.dataclass
class Config(ddpm.Config):
    steps: int = common.flag(1200, "training steps of each network", min=1)
    targets: str = common.flag("eps,x0,v,xprev,eps+minsnr",
                               "targets to compare; +minsnr adds the min-SNR weighting")
    out: str = common.flag("runs/03_targets", "output folder")


def parse_variants(text: str) -> list[tuple[str, str]]:
    """'x0,eps+minsnr' -> [('x0', 'plain'), ('eps', 'minsnr')]."""
    variants = []
    for item in common.parse_list(text, str, "targets"):
        target, _, weighting = item.partition("+")
        if target not in ddpm.TARGETS or weighting not in ("", "minsnr"):
            raise common.UserError(f"--targets: '{item}' is not one of {', '.join(ddpm.TARGETS)}"
                                   ", optionally followed by +minsnr")
        variants.append((target, weighting or "plain"))
    return variants


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__)
    variants = parse_variants(cfg.targets)
    with common.run_folder(cfg, __file__) as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = common.Judge.load(data)
        sched = ddpm.make_schedule(cfg.schedule, cfg.timesteps)
        rows, pictures, shown = [], [], [0, 4, 8, 12, 16, 20, cfg.sample_steps - 1]
        for target, weighting in variants:
            run = dataclasses.replace(cfg, target=target, weighting=weighting)
            model, seconds, loss = ddpm.train(run, data, device, sched)
            start, trace = time.perf_counter(), []
            x = ddpm.generate(model, run, cfg.samples, sched, device, trace=trace)
            r = judge.evaluate(x)
            print(f"{target} ({weighting}): " + common.describe(r))
            rows.append({"target": target, "weighting": weighting, "train_seconds": seconds,
                         "sample_seconds": time.perf_counter() - start, "final_loss": loss,
                         **{k: r[k] for k in ("n", "fd", "fd_floor", "fd_floor_n", "fd_ratio",
                                              "score", "confidence", "coverage", "memorised")}})
            shown = [i for i in shown if i < len(trace)]
            for j in range(3):  # three samples' estimates at the shown steps
                pictures.append((f"{target}{'+' + weighting if weighting != 'plain' else ''}"
                                 f"\nsample {j + 1}",
                                 torch.stack([ddpm.to_pixels(trace[i][2][j:j + 1])[0]
                                              for i in shown])))
            if not rows[1:]:  # the first target's run keeps the usual contract files
                common.save_grid(out / "samples.png", x[:100], nrow=10, title=f"{target}")
                common.save_samples(out, x)
                common.save_checkpoint(out / "model.pt", ddpm.SCRIPT, run, model.state_dict(),
                                       {"train_seconds": seconds})
        common.save_rows(out / "estimates.png", pictures, [f"t={trace[i][0]}" for i in shown],
                         "each network's clean-image estimate x0_hat along DDIM sampling")
        metrics = {**rows[0], "targets": rows, "config": dataclasses.asdict(cfg)}
        common.save_metrics(out, metrics)
    for row in rows:
        print(f"{row['target']:>5} {row['weighting']:>6}: FD {row['fd']:.2f} "
              f"({row['fd_ratio']:.1f}x the floor), confidence {row['confidence']:.3f}")


if __name__ == "__main__":
    common.run_main(main)
