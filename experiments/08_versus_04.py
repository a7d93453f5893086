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

Writes metrics.json (the table) into runs/08_versus_04/.
"""
import dataclasses
import math
import time

import lab
import common
import torch
import torch.nn as nn

ld = lab.chapter("08_latent_diffusion")
KEYS = ("train_seconds", "sample_seconds", "n", "fd", "fd_ratio", "label_accuracy", "guidance")


@dataclasses.dataclass
class Config(ld.Config):
    metrics_04: str = common.flag("runs/04_cfg/metrics.json", "chapter 04's metrics.json")
    out: str = common.flag("runs/08_versus_04", "output folder")


def build(cfg, device) -> nn.ModuleDict:
    return nn.ModuleDict({"vae": ld.EncoderDecoder(ld.LATENT[0], ld.VAE_WIDTH),
                          "denoiser": ld.LatentDenoiser(ld.LATENT[0], cfg.channels)}).to(device)


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__)
    other = lab.read_metrics(cfg.metrics_04, KEYS, "python 04_cfg.py")
    with common.run_folder(cfg, "08_versus_04") as out:
        gen = common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = common.load_judge(data)
        # A pilot of 50 denoiser steps measures the denoiser's pace on this machine, now.
        pilot = ld.train(build(cfg, device), dataclasses.replace(cfg, steps=50, vae_steps=1),
                         data, device, torch.Generator().manual_seed(cfg.seed))
        den_step = pilot["denoiser_seconds"] / 50
        run = dataclasses.replace(cfg, steps=max(1, int(other["train_seconds"] / den_step)))
        print(f"04 trained {other['train_seconds']:.0f} s: time for about {run.steps} of 08's "
              "denoiser steps, after its autoencoder", flush=True)
        common.seed_everything(cfg.seed)
        model = build(run, device)
        trained = ld.train(model, run, data, device, gen)
        start = time.perf_counter()
        labels = ld.balanced_labels(cfg.samples)
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
            "08": {"values_per_image": math.prod(ld.LATENT),
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
