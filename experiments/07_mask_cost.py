"""07_mask_cost.py: the causal mask costs a little prediction quality.

Inside the prefix 0..i the mask is not needed for honesty: input j holds pixels before j
only (07's shift_right and hint), so no input of the prefix holds pixel i or a later one,
and full (two-way) attention inside it still predicts pixel i from pixels before i. It
gives every position more context, which is why the talk says causal networks predict
slightly worse. But such a network must be evaluated once per target, in training and in
generation alike (a new pixel changes every earlier position's keys and values, so there
is no cache). With a single block the two are the same: the last position attends to the
whole prefix either way; the mask changes only what earlier positions hand up to the
next block.

Two identically initialised copies of 07's transformer (its --d-model, --layers, --heads,
--levels and --hint; or those of the checkpoint --load names) are trained --steps
one-position steps each (07's random_position_loss) on the same batches and positions,
one with the causal mask and one without (07's causal=False). Both are measured on the
same held-out pixels (98 random positions of 100 held-out digits), each pixel from its
own pass over its prefix; reported: both bits per pixel and their paired difference with
its standard error. Only the mask differs.

    python experiments/07_mask_cost.py            (1,000 steps of 16 images each)

Writes metrics.json into runs/07_mask_cost/.
"""
import dataclasses
import math

import lab
import common
import torch
import torch.nn.functional as F

ch = lab.chapter("07_causal_transformer")
EVAL_IMAGES, EVAL_POSITIONS = 100, 98  # 98 random positions of 100 held-out digits


@dataclasses.dataclass
class Config(ch.Config):
    steps: int = common.flag(1000, "one-position training steps of each copy", min=1)
    batch_size: int = common.flag(16, "(image, position) pairs per step", min=1)
    out: str = common.flag("runs/07_mask_cost", "output folder")


@torch.no_grad()
def one_position_bits(model, tokens: torch.Tensor, positions: list[int],
                      device) -> torch.Tensor:
    """Bits of each of `positions` in each sequence, each from its own pass over the prefix
    up to it: tokens (N, T) -> (N, len(positions))."""
    model.eval()
    tokens, cols = tokens.to(device), []
    for i in positions:
        with common.autocast(device):
            logits = model(model.inputs(tokens, 0, i + 1))[:, -1]   # (N, vocab)
        nats = F.cross_entropy(logits.float(), tokens[:, i], reduction="none")
        cols.append(nats.cpu() / math.log(2))
    return torch.stack(cols, dim=1)


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__, leave_out=("samples", "temperature", "gif"))
    if cfg.load:  # only the checkpoint's architecture is used: both copies start afresh
        saved = common.load_checkpoint(cfg.load, ch.SCRIPT)["config"]
        cfg = dataclasses.replace(cfg, **{k: saved[k] for k in ch.SHAPE_KEYS if k in saved})
    with common.run_folder(cfg, "07_mask_cost") as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        held = ch.quantize(data.x_held[:EVAL_IMAGES], cfg.levels)
        pick = torch.Generator().manual_seed(0)
        positions = sorted(torch.randperm(ch.SIDE ** 2, generator=pick)[:EVAL_POSITIONS].tolist())
        bits, m = {}, {"steps": cfg.steps, "targets": cfg.steps * cfg.batch_size,
                       "eval_images": len(held), "eval_positions": len(positions)}
        for name, causal in (("causal", True), ("full", False)):
            torch.manual_seed(cfg.seed)  # the same starting weights both times
            net = ch.build(cfg, causal).to(device)
            trained = ch.train(net, ch.digit_batches(data, cfg, torch.Generator().manual_seed(
                cfg.seed)), cfg, device, f"{name} attention", ch.random_position_loss(
                torch.Generator().manual_seed(cfg.seed + 1), ch.SIDE ** 2))
            bits[name] = one_position_bits(net, held, positions, device)  # (N, P)
            m[f"{name}_bits_per_pixel"] = float(bits[name].mean())
            m[f"{name}_train_seconds"] = trained["train_seconds"]
        per_image = (bits["causal"] - bits["full"]).mean(1)  # paired: same digits, same pixels
        m["mask_cost_bits"] = float(per_image.mean())
        m["mask_cost_se"] = float(per_image.std() / math.sqrt(len(per_image)))
        common.save_metrics(out, {**m, "config": dataclasses.asdict(cfg)})
    print(f"after {m['targets']:,} one-position targets each: held-out "
          f"{m['causal_bits_per_pixel']:.4f} bits per pixel with the causal mask, "
          f"{m['full_bits_per_pixel']:.4f} with full attention inside the prefix "
          f"(the mask's cost {m['mask_cost_bits']:+.4f} +- {m['mask_cost_se']:.4f})")
    return m


if __name__ == "__main__":
    common.run_main(main)
