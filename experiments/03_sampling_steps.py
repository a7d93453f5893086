"""03_sampling_steps.py: diffusion needs tens of network evaluations per image, where
auto-regression needs one per pixel (784).

The same trained 03 model (its default run, --load) is sampled with DDIM at 5, 10, 25,
50 and 100 steps, each from the same seed, and each set of N digits is judged. README
sets these FDs beside chapter 01's (784 evaluations) and chapter 02's sweep at the
same N. Without --load it trains a model with 03's own code first (--steps).

    python experiments/03_sampling_steps.py --load runs/03_ddpm/model.pt --samples 500

Writes metrics.json (a row per step count) and sweep.png into runs/03_sampling_steps/.
"""
import dataclasses
import time

import lab
import common
import torch

ddpm = lab.chapter("03_ddpm")


@dataclasses.dataclass
class Config(ddpm.Config):
    sweep: str = common.flag("5,10,25,50,100", "DDIM step counts to measure")
    out: str = common.flag("runs/03_sampling_steps", "output folder")


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__, leave_out=("sample_steps", "gif"))
    counts = lab.parse_list(cfg.sweep, int, "sweep")
    if min(counts) < 1:
        raise common.UserError("--sweep: step counts must be positive")
    with common.run_folder(cfg, "03_sampling_steps") as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = lab.judge(data)
        sched = ddpm.make_schedule(ddpm.T)
        cfg, model, _ = common.load_or_train(
            cfg, out, ddpm.SCRIPT, ("target", "weighting", "channels"),
            lambda c: ddpm.UNet(c.channels).to(device, memory_format=torch.channels_last),
            lambda m: ddpm.train(m, cfg, data, device, sched))
        rows = []
        for steps in counts:
            start = time.perf_counter()
            with common.autocast(device):  # as the chapter samples
                x = ddpm.generate(model, dataclasses.replace(cfg, sample_steps=steps),
                                  cfg.samples, sched, device)
            r = judge.evaluate(x)
            rows.append({"evaluations": len(ddpm.ddim_timesteps(ddpm.T, steps)),
                         "seconds": time.perf_counter() - start,
                         **{k: r[k] for k in ("n", "fd", "fd_floor", "fd_floor_n", "fd_ratio",
                                              "confidence", "coverage")}})
            print(f"{rows[-1]['evaluations']} evaluations per image: FD {r['fd']:.1f} "
                  f"({r['fd_ratio']:.1f}x the floor)", flush=True)
        lab.save_curves(out / "sweep.png", [("03, DDIM", [r["evaluations"] for r in rows],
                                            [r["fd"] for r in rows])],
                        "network evaluations per image", f"FD (N={cfg.samples})",
                        rows[0]["fd_floor"])
        common.save_metrics(out, {"sweep": rows, "config": dataclasses.asdict(cfg)})


if __name__ == "__main__":
    common.run_main(main)
