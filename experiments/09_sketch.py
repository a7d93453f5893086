"""09_sketch.py: the same mechanism conditions on anything: handed a 7x7 sketch instead of
words, the chapter's network turns sketches into digits that fit them.

The chapter's UNet with sketch=True (section 8) reads each digit shrunk to 7x7 as a
second input channel where the caption was, and trains with the chapter's own train():
the same loss, dropout (a blank sketch is the null) and steps; only the condition
differs. It then draws a digit for each of the first --samples held-out digits' sketches
(never trained on), from the same starting noise at guidance 0 (the sketch ignored), 1
and the chapter's default. Measured per scale: how far each result's own 7x7 version is
from its sketch (sketch_error: the mean absolute difference, ink from 0 to 1), the
judge's label accuracy against the digit the sketch was made from, and FD. The fair
reference for sketch_error is a real digit against another digit's sketch
(other_digit_error, the next held-out digit): a real digit that ignores the sketch.
A 7x7 sketch in shades of grey holds most of a digit, so two results from one sketch
differ little: this is closer to enlarging than to drawing from a doodle.
sketches.png: held-out digits, their sketches, and two results from each sketch.

    python experiments/09_sketch.py        (trains the sketch network, then measures)
    python experiments/09_sketch.py --load runs/09_sketch/model.pt

Writes metrics.json (a row per scale in "sweep"), sketches.png and model.pt into
runs/09_sketch/.
"""
import dataclasses

import lab
import common
import torch
import torch.nn.functional as F

ch = lab.chapter("09_text_to_image")
FIGURES = ("label_accuracy", "n", "fd", "fd_floor", "fd_ratio", "confidence", "coverage")


def sketch(x: torch.Tensor) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] -> sketches (N, C, H/4, W/4): each 4x4 patch's mean, the
    condition that the chapter's UNet(sketch=True) takes (section 8)."""
    return F.avg_pool2d(x, 4)


@dataclasses.dataclass
class Config(ch.Config):
    scales: str = common.flag(f"0,1,{ch.Config.guidance:g}", "guidance scales to measure")
    out: str = common.flag("runs/09_sketch", "output folder")


def sketch_error(x: torch.Tensor, sketches: torch.Tensor) -> float:
    """Mean absolute difference between each image's 7x7 version and its sketch."""
    return (sketch(x.reshape(-1, 1, 28, 28)) - sketches).abs().mean().item()


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__, leave_out=("prompt", "gif"))
    scales = lab.parse_list(cfg.scales, float, "scales")
    if min(scales) < 0:
        raise common.UserError("--scales must be non-negative")
    with common.run_folder(cfg, "09_sketch") as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = lab.judge(data)
        sched = ch.make_schedule(ch.T)
        cfg, model, extra = common.load_or_train(
            cfg, out, "09_sketch", ("target", "weighting", "channels"),
            lambda c: ch.UNet(c.channels, sketch=True).to(device,
                                                          memory_format=torch.channels_last),
            lambda m: ch.train(m, cfg, data, device, sched, sketch(data.x_train)))
        held, labels = data.x_held[:cfg.samples], data.y_held[:cfg.samples]
        sketches, rows = sketch(held), []
        for s in scales:
            x = ch.generate(model, dataclasses.replace(cfg, guidance=s), sketches, sched, device)
            r = judge.evaluate(x, labels)
            rows.append({"guidance": s, "sketch_error": sketch_error(x, sketches),
                         **{k: r[k] for k in FIGURES}})
            print(f"s={s:g}: sketch error {rows[-1]['sketch_error']:.3f}, label accuracy "
                  f"{r['label_accuracy']:.3f}, FD {r['fd']:.1f}", flush=True)
        other = sketch_error(held.roll(1, 0), sketches)  # a real digit, another's sketch
        n = min(10, len(held))
        twice = ch.generate(model, cfg, torch.cat([sketches[:n]] * 2), sched, device)
        blown_up = F.interpolate(sketches[:n], scale_factor=4)  # 7x7 -> 28x28 blocks
        common.save_images(out / "sketches.png", torch.cat([held[:n], blown_up, twice]), n,
                           ["held-out digit", "its 7x7 sketch", "drawn from it", "and again"],
                           f"sketches to digits, s={cfg.guidance:g}")
        common.save_metrics(out, {**extra, "sweep": rows, "other_digit_error": other,
                                  "config": dataclasses.asdict(cfg)})
    print(f"a real digit against another digit's sketch: sketch error {other:.3f}")


if __name__ == "__main__":
    common.run_main(main)
