"""09_prompt_following.py: a sentence can steer the image: guided by its caption, a digit
comes out as the digit, the stroke width and the slant its prompt names.

The same trained 09 model (its default run, --load) draws the chapter's default prompts
(every digit with every combination of thin / thick and slanted left / right) from the
same starting noise at guidance scales 0 (the caption ignored: what the words get by
chance), 1 (the plain conditional model) and the chapter's default. Per scale: the
judge's label accuracy against the prompt's digit, FD, and for each attribute word the
share of the samples asked for it that the chapter's caption rules describe with it
(follow_<word>), with the mean measured stroke width of the samples asked "thin" and
"thick" and the mean slant of those asked "slanted left" and "right". Real held-out
digits with their own captions give the ceiling: the judge's label accuracy on them, and
the width and slant that their words stand for in the data (their follow_<word> is 1 by
construction: their captions were written from those measurements).
prompt_following.png: four prompts at each scale, from the same starting noise.

    python experiments/09_prompt_following.py --load runs/09_text_to_image/model.pt

Writes metrics.json (a row per scale in "sweep", the real digits in "real") and
prompt_following.png into runs/09_prompt_following/.
"""
import dataclasses
import time

import lab
import common
import numpy as np
import torch

ch = lab.chapter("09_text_to_image")
FIGURES = ("label_accuracy", "n", "fd", "fd_floor", "fd_ratio", "confidence", "coverage")
GRID = ["a thin two", "a thick two", "a two, slanted left", "a two, slanted right"]


@dataclasses.dataclass
class Config(ch.Config):
    scales: str = common.flag(f"0,1,{ch.Config.guidance:g}", "guidance scales to measure")
    out: str = common.flag("runs/09_prompt_following", "output folder")


def measures(x: torch.Tensor, prompts: list[str]) -> dict:
    """follow_<word>, and the mean stroke width (slant) of the images asked thin or thick
    (slanted left or right)."""
    asked, width, slant = [ch.parse(p)[1] for p in prompts], ch.stroke_width(x), ch.slant(x)
    means = {}
    for word, key, values in [("thin", "width_thin", width), ("thick", "width_thick", width),
                              ("left", "slant_left", slant), ("right", "slant_right", slant)]:
        picked = torch.tensor([word in a for a in asked])
        if picked.any():
            means[key] = values[picked].mean().item()
    follow = ch.following(x, prompts)
    return {**follow, "follow_mean": float(np.mean(list(follow.values()))), **means}


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__, leave_out=("prompt", "guidance", "gif"))
    scales = lab.parse_list(cfg.scales, float, "scales")
    if min(scales) < 0:
        raise common.UserError("--scales must be non-negative")
    with common.run_folder(cfg, "09_prompt_following") as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = lab.judge(data)
        sched = ch.make_schedule(ch.T)
        cfg, model, _ = common.load_or_train(
            cfg, out, ch.SCRIPT, ("target", "weighting", "channels"),
            lambda c: ch.UNet(c.channels).to(device, memory_format=torch.channels_last),
            lambda m: ch.train(m, cfg, data, device, sched,
                               ch.tokenize(ch.describe(data.x_train, data.y_train))))
        prompts = ch.default_prompts(cfg.samples)
        tokens, labels = ch.tokenize(prompts), torch.tensor([ch.parse(p)[0] for p in prompts])
        grid_tokens, rows, grid = ch.tokenize([p for p in GRID for _ in range(5)]), [], []
        for s in scales:
            run = dataclasses.replace(cfg, guidance=s)
            start = time.perf_counter()
            x = ch.generate(model, run, tokens, sched, device)
            seconds, r = time.perf_counter() - start, judge.evaluate(x, labels)
            rows.append({"guidance": s, "seconds": seconds, **{k: r[k] for k in FIGURES},
                         **measures(x, prompts)})
            print(f"s={s:g}: label accuracy {r['label_accuracy']:.3f}, FD {r['fd']:.1f}, "
                  + ", ".join(f"{k} {v:.2f}" for k, v in rows[-1].items()
                              if k.startswith("follow_")), flush=True)
            grid.append(ch.generate(model, run, grid_tokens, sched, device).view(4, 5, 28, 28))
        held, y_held = data.x_held[:cfg.samples], data.y_held[:cfg.samples]
        real = {"label_accuracy": judge.evaluate(held, y_held)["label_accuracy"],
                **measures(held, ch.describe(held, y_held))}
        common.save_images(out / "prompt_following.png", torch.stack(grid, 1).reshape(-1, 28, 28),
                           5 * len(scales), GRID, "five samples of each prompt at s = "
                           + ", ".join(f"{s:g}" for s in scales))
        common.save_metrics(out, {"sweep": rows, "real": real, "config": dataclasses.asdict(cfg)})
    print("real held-out digits with their captions: label accuracy "
          f"{real['label_accuracy']:.3f}, " + ", ".join(
              f"{k} {v:.2f}" for k, v in real.items() if k[:5] in ("width", "slant")))


if __name__ == "__main__":
    common.run_main(main)
