"""07_one_pass.py: a causal network learns every step of an image in one evaluation, where the
same network evaluated once per step learns one.

07's transformer is trained --steps steps each way, from the same starting weights and on
the same batches: all 784 positions per evaluation (07's sequence_loss) and one position
per evaluation, run on the prefix before it (07's random_position_loss, the way a network
without the causal mask must be trained). Each training is timed; reported are the targets
learned per second both ways, their ratio, and each copy's held-out bits per pixel after
its steps (what the same number of updates taught it). Only the loss differs.

Why the ratio is not 784: the one-position pass runs on a prefix of L = i + 1 positions,
i uniform in 0..T-1 (T = 784), not on one. Its parts whose cost grows with L (embeddings,
the projections and MLPs, the head) cost on average (T + 1) / 2T = 0.50 of a full pass;
causal attention, whose cost grows with L(L + 1), costs (T + 2) / 3T = 0.33 of it. At 07's
default widths (d_model 64, 4x wider MLPs) attention is 0.51 of a full pass's multiply-adds
(per position and layer: 12 d^2 for the rest, d (T + 1) for attention), so a one-position
evaluation costs 0.49 x 0.50 + 0.51 x 0.33 = 0.42 of a full pass in arithmetic, and the
ratio would be 784 x 0.42, about 330, if arithmetic were all. Costs that do not grow with
the length (the optimizer step, Python's own overhead) are paid once per evaluation and
raise the measured ratio towards 784.

The same causality lets generation keep every position's keys and values (07, section 5):
the first rows of a few digits are generated with and without the key/value cache, from
the same random numbers; the tokens must be identical (the tests check it on small models
too), and both ways are timed.

    python experiments/07_one_pass.py            (fresh weights, 300 steps each way)
    python experiments/07_one_pass.py --load runs/07_causal_transformer/model.pt

With --load both copies start from 07's trained model. Writes metrics.json into
runs/07_one_pass/. The timings compare only within one run, on a quiet machine.
"""
import copy
import dataclasses

import lab
import common
import torch

ch = lab.chapter("07_causal_transformer")
CACHE_ROWS, CACHE_DIGITS = 7, 4  # a quarter of 4 digits: enough to time; the uncached way is slow


@dataclasses.dataclass
class Config(ch.Config):
    steps: int = common.flag(300, "training steps of each way", min=1)
    out: str = common.flag("runs/07_one_pass", "output folder")


def cache_check(model, seed: int) -> dict:
    """The first CACHE_ROWS rows of CACHE_DIGITS digits, with and without the cache."""
    length, got, seconds = CACHE_ROWS * ch.SIDE, {}, {}
    for use_cache in (True, False):
        got[use_cache], seconds[use_cache] = lab.timed(
            ch.generate, model, CACHE_DIGITS, 1.0, torch.Generator().manual_seed(seed),
            use_cache, length)
    return {"cache_identical": bool(torch.equal(got[True], got[False])),
            "cache_seconds": seconds[True], "nocache_seconds": seconds[False],
            "cache_check_pixels": length, "cache_check_digits": CACHE_DIGITS}


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__, leave_out=("samples", "temperature", "gif"))
    with common.run_folder(cfg, "07_one_pass") as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        start = ch.build(cfg).to(device)  # both ways start from these weights
        if cfg.load:  # or from 07's trained model (the checkpoint's shape replaces the flags')
            cfg, start, _ = common.load_or_train(cfg, out, ch.SCRIPT, ch.SHAPE_KEYS,
                                                 lambda c: ch.build(c).to(device), None)
        held = ch.quantize(data.x_held[:ch.EVAL_IMAGES], cfg.levels)
        metrics, nets = {"steps": cfg.steps, "batch_size": cfg.batch_size}, {}
        for way in ("causal", "one_position"):
            loss_fn = ch.sequence_loss if way == "causal" else ch.random_position_loss(
                torch.Generator().manual_seed(cfg.seed), ch.SIDE ** 2)
            batches = ch.digit_batches(data, cfg, torch.Generator().manual_seed(cfg.seed))
            net, label = copy.deepcopy(start), f"{way.replace('_', ' ')} training"
            # Two untimed steps first: a process's first steps also pay one-time set-up costs.
            ch.train(net, batches, dataclasses.replace(cfg, steps=2), device, label, loss_fn)
            trained = ch.train(net, batches, cfg, device, label, loss_fn)
            nets[way] = net
            metrics.update({f"{way}_targets_per_second": trained["targets_per_second"],
                            f"{way}_train_seconds": trained["train_seconds"],
                            f"{way}_bits_per_pixel": ch.bits_per_token(net, held, device)})
        metrics["causal_speedup"] = (metrics["causal_targets_per_second"]
                                     / metrics["one_position_targets_per_second"])
        metrics.update(cache_check(nets["causal"], cfg.seed), eval_images=len(held),
                       config=dataclasses.asdict(cfg))
        common.save_metrics(out, metrics)
    m = metrics
    print(f"targets learned per second, the same network: {m['causal_targets_per_second']:,.0f} "
          f"all positions per evaluation, {m['one_position_targets_per_second']:,.1f} one "
          f"position per evaluation: {m['causal_speedup']:.0f}x")
    print(f"held-out bits per pixel after {cfg.steps} steps each: {m['causal_bits_per_pixel']:.4f}"
          f" (all positions), {m['one_position_bits_per_pixel']:.4f} (one position)")
    print(f"key/value cache: the first {m['cache_check_pixels']} pixels of {CACHE_DIGITS} digits "
          f"in {m['cache_seconds']:.2f} s with the cache, {m['nocache_seconds']:.2f} s without; "
          f"identical tokens: {m['cache_identical']}")
    return metrics


if __name__ == "__main__":
    common.run_main(main)
