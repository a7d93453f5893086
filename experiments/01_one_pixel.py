"""01_one_pixel.py: one missing pixel, predicted from the rest of the image, comes out right:
the average of the colours it could have is still a colour (01_autoregressive_pixels.py,
section 2).

For the centre pixel (406) of held-out digits, two guesses are set against the truth:
the average colour the trained 01 network gives it GIVEN every other pixel, and the
data set's average colour of that pixel (what a predictor that sees nothing would say).
01's network only sees the pixels before the one it predicts, but its exact likelihood
gives the pixel given all the others (01, section 5):
    p(x_i = k | rest) = p(x with x_i = k) / sum_k' p(x with x_i = k'),
and the network's average is sum_k p(k | rest) * k / (K-1).

    python experiments/01_one_pixel.py --load runs/01_autoregressive_pixels/model.pt

Without --load it trains a 01 network first, with 01's own code and flags. Writes
metrics.json (RMS error of each guess, and the first guesses) into runs/01_one_pixel/.
"""
import dataclasses

import lab
import common  # importable once lab has put the repository on the path
import torch

ch = lab.chapter("01_autoregressive_pixels")
CENTRE = (ch.SIDE // 2) * ch.SIDE + ch.SIDE // 2  # pixel 406: ink in about half of all digits


@dataclasses.dataclass
class Config(ch.Config):
    images: int = common.flag(100, "held-out digits whose centre pixel is predicted", min=1)
    out: str = common.flag("runs/01_one_pixel", "output folder")


def one_pixel_check(model, data: common.Data, n: int, device, i: int = CENTRE) -> dict:
    """Pixel i of n held-out digits: the truth, the network's average given the rest, the
    data-set average, and the RMS error of both guesses."""
    levels = model.levels
    held = ch.quantize(data.x_held[:n], levels)                       # (n, 784) tokens
    truth = held[:, i].float() / (levels - 1)                         # (n,) in [0, 1]
    colours = torch.arange(levels) / (levels - 1)                     # (K,) each level's colour
    given_rest = ch.pixel_given_rest(model, held, i, device) @ colours  # (n, K) @ (K,) -> (n,)
    dataset_mean = float(ch.quantize(data.x_train, levels)[:, i].float().mean() / (levels - 1))
    return {"index": i, "images": len(held), "dataset_mean": dataset_mean,
            "rms_dataset_mean": float((dataset_mean - truth).pow(2).mean().sqrt()),
            "rms_given_rest": float((given_rest - truth).pow(2).mean().sqrt()),
            "truth": truth[:8].tolist(), "given_rest": given_rest[:8].tolist()}


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__, leave_out=("samples", "temperature", "gif"))
    with common.run_folder(cfg, "01_one_pixel") as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        cfg, model, _ = ch.load_or_train(cfg, out, data, device)
        p = one_pixel_check(model, data, cfg.images, device)
        common.save_metrics(out, {**p, "levels": cfg.levels, "config": dataclasses.asdict(cfg)})
    print(f"pixel {p['index']} of {p['images']} held-out digits: RMS error "
          f"{p['rms_given_rest']:.3f} for the network's average given the rest, "
          f"{p['rms_dataset_mean']:.3f} for the data set's average ({p['dataset_mean']:.2f})")


if __name__ == "__main__":
    common.run_main(main)
