"""01_argmax.py: always taking the most likely value draws one image; sampling draws a
different one each time (01_autoregressive_pixels.py, section 4).

The trained 01 network generates with both ways of choosing a pixel's level: argmax,
twice from an empty canvas (the same image? how much ink?); from the same given top
half of a held-out digit, 5 completions each by argmax and by sampling (how many
different?); and N samples from an empty canvas, as 01's default run draws them (the
same seed gives the same digits): how many different images, and the judge's figures.

    python experiments/01_argmax.py --load runs/01_autoregressive_pixels/model.pt

Without --load it trains a 01 network first, with 01's own code and flags. Writes
metrics.json and argmax_vs_sampling.png into runs/01_argmax/.
"""
import dataclasses

import lab
import common  # importable once lab has put the repository on the path
import torch
import torch.nn.functional as F

ch = lab.chapter("01_autoregressive_pixels")
JUDGED = ("n", "fd", "fd_floor", "fd_ratio", "confidence", "coverage")


@dataclasses.dataclass
class Config(ch.Config):
    out: str = common.flag("runs/01_argmax", "output folder")


def distinct(tokens: torch.Tensor) -> int:
    """How many different images among the rows of (N, side*side) tokens."""
    return len({tuple(row.tolist()) for row in tokens})


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__, leave_out=("gif",))
    with common.run_folder(cfg, "01_argmax") as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = common.load_judge(data)
        cfg, model, _ = ch.load_or_train(cfg, out, data, device)
        a = ch.generate(model, 4, device, "argmax")
        b = ch.generate(model, 4, device, "argmax")
        start = ch.quantize(data.x_held[:1], cfg.levels)[:, :model.side ** 2 // 2]  # 14 rows
        done = {mode: ch.generate(model, 5, device, mode, cfg.temperature, cfg.seed,
                                  given=start.expand(5, -1)) for mode in ("argmax", "sample")}
        sampled = ch.generate(model, cfg.samples, device, "sample", cfg.temperature, cfg.seed)
        metrics = {"argmax_identical": bool(torch.equal(a, b)),
                   "argmax_distinct": distinct(torch.cat([a, b])),
                   "argmax_inked_pixels": int((a[0] > 0).sum()),
                   "completions": 5, "completions_argmax_distinct": distinct(done["argmax"]),
                   "completions_sampled_distinct": distinct(done["sample"]),
                   "sampled_n": len(sampled), "sampled_distinct": distinct(sampled),
                   "levels": cfg.levels, "config": dataclasses.asdict(cfg)}
        if judge:
            r = judge.evaluate(ch.dequantize(sampled, cfg.levels))
            metrics.update({f"sampled_{k}": r[k] for k in JUDGED})
        shown = F.pad(start, (0, sampled.shape[1] - start.shape[1]))  # the given half, rest paper
        rows = [a[:1].expand(6, -1), torch.cat([shown, done["argmax"]]),
                torch.cat([shown, done["sample"]]), sampled[:6]]
        common.save_images(out / "argmax_vs_sampling.png", ch.dequantize(torch.cat(rows),
                                                                         cfg.levels), 6,
                           ["empty,\nargmax", "half given,\nargmax", "half given,\nsampled",
                            "empty,\nsampled"],
                           "argmax: one image per start; sampling: a new one every time")
        common.save_metrics(out, metrics)
    m = metrics
    print(f"argmax from an empty canvas, two runs of 4: {m['argmax_distinct']} distinct image(s) "
          f"with {m['argmax_inked_pixels']} inked pixels; a given top half completed 5 times: "
          f"argmax {m['completions_argmax_distinct']} distinct, sampling "
          f"{m['completions_sampled_distinct']}; {m['sampled_n']} samples: "
          f"{m['sampled_distinct']} distinct" + (f", FD {m['sampled_fd_ratio']:.1f}x the floor"
                                                  if judge else ""))


if __name__ == "__main__":
    common.run_main(main)
