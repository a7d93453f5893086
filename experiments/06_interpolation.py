"""06_interpolation.py: the VAE's codes leave no gaps between digits: the middle of the
straight line between two digits' codes decodes to something digit-like; the autoencoder's
middle, more often, to a smudge.

The same trained 06 pair (its default run, --load): the VAE and the autoencoder of the
same shape, differing only in the loss. For --samples pairs of held-out digits (each
digit with another drawn at random), each model's encoder finds both codes mu(x), and its
decoder decodes the line's ends and its midpoint; the judge scores each set (FD against
real digits, and its confidence). interpolation.png shows ten steps between look-alike
digits (1 and 7, 3 and 8, 4 and 9), by both models.

    python experiments/06_interpolation.py --load runs/06_vae/model.pt

Writes metrics.json and interpolation.png into runs/06_interpolation/.
"""
import dataclasses

import lab
import common
import torch

vae = lab.chapter("06_vae")
JUDGED = ("n", "fd", "fd_floor", "fd_ratio", "confidence", "coverage")


@dataclasses.dataclass
class Config(vae.Config):
    out: str = common.flag("runs/06_interpolation", "output folder")


@torch.no_grad()
def decode_between(model, x_a, x_b, t, device) -> torch.Tensor:
    """Images x_a, x_b (N, C, H, W) -> the decoder's mean at (1 - t) mu(x_a) + t mu(x_b),
    (N, C, H, W); t a number or (N, 1)."""
    mu_a, mu_b = model.encoder(x_a.to(device))[0], model.encoder(x_b.to(device))[0]  # (N, d)
    return model.decode_mean((1 - t) * mu_a + t * mu_b).cpu()


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__, leave_out=("gif",))
    with common.run_folder(cfg, "06_interpolation") as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = lab.judge(data)
        cfg, models, _ = common.load_or_train(
            cfg, out, vae.SCRIPT, ("latent_dim", "hidden"),
            lambda c: vae.build(c.latent_dim, c.hidden).to(device),
            lambda m: vae.train(m, cfg, data, device), data=data)
        x, y = data.x_held, data.y_held.tolist()
        n = min(cfg.samples, len(x))
        other = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed))[:n]
        metrics, rows, labels = {}, [], []
        for name, model in (("vae", models["vae"]), ("ae", models["ae"])):
            for where, t in (("end", 0.0), ("middle", 0.5)):
                r = judge.evaluate(decode_between(model, x[:n], x[other], t, device))
                metrics.update({f"{name}_{where}_{k}": r[k] for k in JUDGED})
                print(f"{name} at the line's {where}: FD {r['fd']:.1f}, confidence "
                      f"{r['confidence']:.3f}", flush=True)
        # look-alike pairs, when the held-out digits have them: 1 and 7, 3 and 8, 4 and 9
        pairs = [(y.index(a), y.index(b)) for a, b in ((1, 7), (3, 8), (4, 9)) if {a, b} <= set(y)]
        t = torch.linspace(0, 1, 10).unsqueeze(1)                # (10, 1)
        for i, j in pairs or [(0, 1)]:
            for name, model in (("VAE", models["vae"]), ("autoencoder", models["ae"])):
                rows.append(decode_between(model, x[[i] * 10], x[[j] * 10], t, device))
                labels.append(f"{name}: {y[i]} to {y[j]}")
        common.save_images(out / "interpolation.png", torch.cat(rows), 10, labels,
                           "straight lines between two held-out digits' codes")
        common.save_metrics(out, {**metrics, "config": dataclasses.asdict(cfg)})
    print(f"midpoints' confidence: VAE {metrics['vae_middle_confidence']:.3f}, autoencoder "
          f"{metrics['ae_middle_confidence']:.3f}")


if __name__ == "__main__":
    common.run_main(main)
