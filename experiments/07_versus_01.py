"""07_versus_01.py: with the hint, the transformer beats chapter 01's network at equal
training time.

Chapter 01's network is told a position and predicts that one pixel; 07's causal
transformer predicts all 784 in one pass. This trains 07 with its own code for the
wall-clock time 01's run trained (read from 01's metrics.json): a short pilot measures
07's time per step on this machine, now, and sets the step count that fits. The two are
then set side by side on two figures: held-out bits per pixel (the first 1,000 held-out
digits at 01's defaults, the same K levels) and the FD of their samples. The networks,
batch sizes and learning rates differ; the data, the quantization and the training time
are the same. With --no-hint, the plain GPT against 01.

    python experiments/07_versus_01.py --metrics-01 runs/01_autoregressive_pixels/metrics.json

Writes metrics.json (the table) and samples.png into runs/07_versus_01/.
"""
import dataclasses
import time

import lab
import common
import torch

ch = lab.chapter("07_causal_transformer")
KEYS = ("bits_per_pixel", "train_seconds", "fd")
PILOT_STEPS = 20  # timed, after 2 untimed ones that pay the one-time set-up costs


@dataclasses.dataclass
class Config(ch.Config):
    metrics_01: str = common.flag("runs/01_autoregressive_pixels/metrics.json",
                                  "chapter 01's metrics.json")
    out: str = common.flag("runs/07_versus_01", "output folder")


def read_01(cfg: Config) -> dict:
    """01's metrics, checked: the figures compared, and the same K (bits depend on it)."""
    other = lab.read_metrics(cfg.metrics_01, KEYS, "python 01_autoregressive_pixels.py")
    saved = other.get("config") if isinstance(other.get("config"), dict) else {}
    levels = other.get("levels", saved.get("levels"))
    if not isinstance(levels, int):
        raise common.UserError(f"{cfg.metrics_01} does not say its K (levels)")
    if levels != cfg.levels:
        raise common.UserError(f"{cfg.metrics_01} used K={levels} levels, this run "
                               f"K={cfg.levels}: pass --levels {levels}")
    return other


def step_seconds(cfg: Config, data, device) -> float:
    """07's seconds per training step, from a pilot on a throwaway model."""
    with torch.random.fork_rng(devices=[]):  # the real model's weights stay as 07 draws them
        model = ch.build(cfg).to(device)
    batches = ch.digit_batches(data, cfg, torch.Generator().manual_seed(cfg.seed))
    ch.train(model, batches, dataclasses.replace(cfg, steps=2), device, "pilot")
    pilot = ch.train(model, batches, dataclasses.replace(cfg, steps=PILOT_STEPS), device, "pilot")
    return pilot["train_seconds"] / PILOT_STEPS


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__, leave_out=("load", "gif"))
    other = read_01(cfg)
    with common.run_folder(cfg, "07_versus_01") as out:
        gen = common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = common.load_judge(data)
        per_step = step_seconds(cfg, data, device)
        run = dataclasses.replace(cfg, steps=max(1, round(other["train_seconds"] / per_step)))
        print(f"01 trained {other['train_seconds']:.0f} s: about {run.steps} steps of 07 "
              f"({per_step:.3f} s each)", flush=True)
        model = ch.build(run).to(device)  # the weights 07's own run would start from
        trained = ch.train(model, ch.digit_batches(data, run, gen), run, device)
        bpp = ch.bits_per_token(model, ch.quantize(data.x_held[:ch.EVAL_IMAGES], run.levels),
                                device)
        start = time.perf_counter()
        tokens = ch.generate_batched(model, cfg.samples, ch.SAMPLE_BATCH, cfg.temperature,
                                     torch.Generator().manual_seed(cfg.seed)).cpu()
        x = ch.dequantize(tokens, run.levels)
        mine = {**trained, "sample_seconds": time.perf_counter() - start, "bits_per_pixel": bpp,
                "nll_images": ch.EVAL_IMAGES, **(judge.evaluate(x) if judge else {})}
        shown = ("train_seconds", "bits_per_pixel", "nll_images", "fd", "fd_ratio", "n",
                 "confidence")
        table = {"01": {k: other[k] for k in shown if k in other},
                 "07": {k: mine[k] for k in shown + ("steps",) if k in mine}}
        common.save_images(out / "samples.png", x[:100], 10,
                           titles=f"07 trained {trained['train_seconds']:.0f} s, as long as 01")
        common.save_metrics(out, {"compare": table, "levels": run.levels,
                                  "bpp_gain_vs_01": other["bits_per_pixel"] - bpp,
                                  "config": dataclasses.asdict(run)})
    for name, row in table.items():
        print(f"{name}: trained {row['train_seconds']:.0f} s, held-out "
              f"{row['bits_per_pixel']:.4f} bits per pixel, FD {row.get('fd', float('nan')):.1f}"
              f" at N={row.get('n', '?')}")
    if table["01"].get("nll_images", ch.EVAL_IMAGES) != ch.EVAL_IMAGES:
        print(f"note: 01's bits are over {table['01']['nll_images']} held-out digits, 07's over "
              f"{ch.EVAL_IMAGES}")
    return table


if __name__ == "__main__":
    common.run_main(main)
