"""03_scale_down.py: scale the image down before adding noise, and repeated noising ends at
pure noise, N(0, I); without the scale-down the spread grows forever.

Both noising rules of 03_ddpm.py's section 1 run from the same 64 training digits
(in the model's [-1, 1] range) with the same noise, 1,000 steps of beta = 0.02:
    plain:  x <- x + sqrt(beta) * eps                  (variance var(x_0) + t beta)
    scaled: x <- sqrt(1 - beta) * x + sqrt(beta) * eps (variance settles at 1)
It records the pixels' spread (std) along the way and how much of the image is
left (the correlation of x_t with x_0), and draws one digit noised in closed form
at several t with 03's own schedule.

    python experiments/03_scale_down.py

Writes metrics.json, noising.png and forward_process.png into runs/03_scale_down/.
"""
import dataclasses
import math

import lab
import common
import torch

ddpm = lab.chapter("03_ddpm")


@dataclasses.dataclass
class Config(common.BaseConfig):
    out: str = common.flag("runs/03_scale_down", "output folder")


def noising_demo(x0: torch.Tensor, beta: float = 0.02, steps: int = 1000, gen=None) -> dict:
    """Iterate both noising rules from the same images; the spread (std) along the way."""
    plain, scaled, rows = x0.clone(), x0.clone(), []
    for t in range(1, steps + 1):
        eps = torch.randn(x0.shape, generator=gen)
        plain = plain + math.sqrt(beta) * eps                          # variance grows by beta
        scaled = math.sqrt(1 - beta) * scaled + math.sqrt(beta) * eps  # scale down, then add noise
        if t in (1, 10, 100, 1000) or t == steps:
            # How much of the image is left: correlation between x_t and x_0 over all pixels.
            corr = torch.corrcoef(torch.stack([scaled.flatten(), x0.flatten()]))[0, 1].item()
            rows.append({"t": t, "plain_std": plain.std().item(),
                         "scaled_std": scaled.std().item(), "scaled_corr_with_x0": corr})
    return {"beta": beta, "rows": rows}


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__, leave_out=(
        "steps", "batch_size", "samples", "device", "load", "gif"))  # it trains nothing
    with common.run_folder(cfg, "03_scale_down") as out:
        data = common.load_data(cfg.data)
        x0 = ddpm.to_model_space(data.x_train[:64])
        demo = noising_demo(x0, gen=torch.Generator().manual_seed(cfg.seed))
        ts = [r["t"] for r in demo["rows"]]
        lab.save_curves(out / "noising.png", [
            ("x + sqrt(beta) eps", ts, [r["plain_std"] for r in demo["rows"]]),
            ("sqrt(1 - beta) x + sqrt(beta) eps", ts, [r["scaled_std"] for r in demo["rows"]])],
            "noising steps (beta = 0.02)", "spread (std) of pixel values")
        sched = ddpm.make_schedule(ddpm.T)
        ts = [0] + [ddpm.T * k // 8 for k in (1, 2, 4, 6, 8)]
        eps = torch.randn((1, 1, 28, 28), generator=torch.Generator().manual_seed(cfg.seed))
        frames = torch.cat([ddpm.to_pixels(ddpm.q_sample(x0[:1], torch.tensor([t]), eps, sched))
                            for t in ts])
        common.save_images(out / "forward_process.png", frames, len(ts),
                           titles="one digit noised to t = " + ", ".join(map(str, ts)))
        common.save_metrics(out, {**demo, "config": dataclasses.asdict(cfg)})
    last = demo["rows"][-1]
    print(f"after {last['t']} steps: spread {last['plain_std']:.2f} without the scale-down, "
          f"{last['scaled_std']:.3f} with it; correlation with the image "
          f"{last['scaled_corr_with_x0']:.3f}")


if __name__ == "__main__":
    common.run_main(main)
