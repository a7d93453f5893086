"""08_versus_04.py: diffusion in a learned latent space is cheaper per step, at a bounded
cost in quality.

Chapter 04 denoises 784 pixels; chapter 08 denoises 196 latent values and decodes them.
This trains 08 with its own code: first its autoencoder (its default steps), then its
denoiser for the wall-clock time 04's default run trained (read from 04's metrics.json;
the number of steps comes from a short pilot run), and sets the two denoisers side by
side: training images per second, seconds per sample, FD and label accuracy, with 08's
reconstructions as its ceiling. The autoencoder is not counted in the race, because it
is trained once and then serves every denoiser trained on its latents, as large image
generators reuse theirs; its own time is reported beside the race. The networks differ
(a UNet on pixels against ResBlocks on latents), and so do the batch sizes (04: 64,
08: 128).

    python experiments/08_versus_04.py --metrics-04 runs/04_cfg/metrics.json

--steps bounds every network's training (the pilot's, the autoencoder's and the race's);
by default the race alone sets the denoiser's steps.

Writes metrics.json (the table) into runs/08_versus_04/.
"""
import dataclasses
import math
import time

import lab
import common
import torch

ld = lab.chapter("08_latent_diffusion")
KEYS = ("train_seconds", "sample_seconds", "n", "fd", "fd_ratio", "label_accuracy", "guidance")


@dataclasses.dataclass
class Config(ld.Config):
    steps: int = common.flag(100_000, "the most steps any network trains (the race: the denoiser)",
                             min=1)
    metrics_04: str = common.flag("runs/04_cfg/metrics.json", "chapter 04's metrics.json")
    out: str = common.flag("runs/08_versus_04", "output folder")


def main(argv=None):
    # It saves no model and no animation: --load and --gif would mean nothing here.
    cfg = common.parse_config(Config, argv, __doc__, leave_out=("load", "gif"))
    cfg = dataclasses.replace(cfg, vae_steps=min(cfg.vae_steps, cfg.steps))  # --steps bounds all
    other = lab.read_metrics(cfg.metrics_04, KEYS, "python 04_cfg.py")
    with common.run_folder(cfg, "08_versus_04") as out:
        gen = common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = lab.judge(data)
        # A pilot of 50 denoiser steps measures the denoiser's pace on this machine, now.
        shape, pilot_steps = data.x_train.shape[1:], min(50, cfg.steps)
        pilot = ld.train(ld.build(cfg, shape, data.classes).to(device),
                         dataclasses.replace(cfg, steps=pilot_steps, vae_steps=1),
                         data, device, torch.Generator().manual_seed(cfg.seed))
        den_step = pilot["denoiser_seconds"] / pilot_steps
        race = max(1, int(other["train_seconds"] / den_step))
        run = dataclasses.replace(cfg, steps=min(race, cfg.steps))
        print(f"04 trained {other['train_seconds']:.0f} s: time for about {race} of 08's "
              f"denoiser steps, after its autoencoder; training {run.steps}", flush=True)
        common.seed_everything(cfg.seed)
        model = ld.build(run, shape, data.classes).to(device)
        trained = ld.train(model, run, data, device, gen)
        start = time.perf_counter()
        labels = torch.arange(cfg.samples) % data.classes  # each class in turn
        x = ld.generate(model.eval(), run, labels, device)
        sample_seconds = time.perf_counter() - start
        mine = judge.evaluate(x, labels)
        with torch.no_grad():
            held = data.x_held[:cfg.samples]
            recon = model["vae"].decode_mean(model["vae"].encode(held.to(device))).cpu()
        ceiling = judge.evaluate(recon, data.y_held[:cfg.samples])
        table = {
            "04": {"values_per_image": 784, "train_seconds": other["train_seconds"],
                   "steps_per_second": other["config"]["steps"] / other["train_seconds"],
                   "batch_size": other["config"]["batch_size"],
                   "sample_seconds_per_image": other["sample_seconds"] / other["n"],
                   **{k: other[k] for k in ("n", "fd", "fd_ratio", "label_accuracy", "guidance")}},
            "08": {"values_per_image": math.prod(model["vae"].latent_shape),
                   "train_seconds": trained["denoiser_seconds"],
                   "autoencoder_seconds": trained["vae_seconds"],
                   "steps_per_second": run.steps / trained["denoiser_seconds"],
                   "batch_size": run.batch_size, "steps": run.steps,
                   "sample_seconds_per_image": sample_seconds / len(x),
                   "guidance": run.guidance,
                   **{k: mine[k] for k in ("n", "fd", "fd_ratio", "label_accuracy")}}}
        common.save_metrics(out, {"compare": table, "recon_fd": ceiling["fd"], **trained,
                                  "config": dataclasses.asdict(run)})
    for name, row in table.items():
        print(f"{name}: {row['steps_per_second'] * row['batch_size']:.0f} training images per "
              f"second, {row['sample_seconds_per_image']:.3f} s per sample, FD {row['fd']:.1f}, "
              f"label accuracy {row['label_accuracy']:.3f}")
    print(f"08's reconstructions (its ceiling): FD {ceiling['fd']:.2f}; its autoencoder "
          f"trained {trained['vae_seconds']:.0f} s before the race")


if __name__ == "__main__":
    common.run_main(main)
