"""06_latent_map.py: with a 2-D latent a VAE lays the digits out over its prior: held-out
digits land in the bulk of N(0, I), look-alike digits side by side, and every point of the
prior decodes to a digit-like picture.

06's own model class (EncoderDecoder) at latent size 2, trained with 06's own train
function as a VAE alone (no autoencoder beside it), for --steps. latent_map.png shows
where held-out digits' codes mu(x) land, coloured by digit, and what a grid of N(0, 1)
quantiles decodes to. metrics.json holds the held-out -ELBO and its parts at d = 2 (06's
default run has them at d = 16), E[z_j^2] of the codes per axis (the prior has 1) and
the judge's figures for --samples digits drawn from the prior.

    python experiments/06_latent_map.py

Writes metrics.json, latent_map.png and model.pt into runs/06_latent_map/.
"""
import dataclasses

import lab
import common
import torch
import torch.nn as nn

vae = lab.chapter("06_vae")
SCRIPT = "06_latent_map"


@dataclasses.dataclass
class Config(common.BaseConfig):
    steps: int = common.flag(2000, "training steps", min=1)
    batch_size: int = common.flag(vae.Config.batch_size, "images per training step", min=1)
    hidden: int = common.flag(vae.Config.hidden, "width of the hidden layers", min=8, max=8192)
    lr: float = common.flag(vae.Config.lr, "Adam learning rate", min=1e-7, max=1.0)
    out: str = common.flag("runs/" + SCRIPT, "output folder")


@torch.no_grad()
def save_latent_map(path, model, x, y, device, grid: int = 15) -> None:
    """The classic 2-D VAE picture: where held-out digits land, and what every place decodes to."""
    from matplotlib.figure import Figure

    mu = model.encoder(x.to(device))[0].cpu()
    # Grid points at evenly spaced quantiles of N(0, 1) in each axis, so each
    # cell covers the same prior probability (Kingma and Welling's figure).
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.03, 0.97, grid))
    zz = torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), -1).reshape(-1, 2)  # row 0: top
    fig = Figure(figsize=(12, 6))
    left, right = fig.subplots(1, 2)
    dots = left.scatter(*mu.T, c=y, cmap="tab10", s=6, vmin=-0.5, vmax=9.5)
    fig.colorbar(dots, ax=left, ticks=range(10), label="digit")
    left.set(xlim=(-3.5, 3.5), ylim=(-3.5, 3.5), aspect="equal", title="held-out codes mu(x)")
    right.imshow(common.tile(model.decode_mean(zz.to(device)), grid), cmap="gray_r", vmin=0,
                 vmax=1)
    right.set(title="decoded at a grid of N(0, 1) quantiles", xticks=[], yticks=[])
    fig.savefig(path, dpi=100, bbox_inches="tight")
    common.show(path)


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__, leave_out=("gif",))
    with common.run_folder(cfg, SCRIPT) as out:
        common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = lab.judge(data)
        cfg, models, extra = common.load_or_train(
            cfg, out, SCRIPT, ("hidden",),
            lambda c: nn.ModuleDict({"vae": vae.EncoderDecoder(2, c.hidden)}).to(device),
            lambda m: vae.train(m, cfg, data, device), data=data)
        model, x = models["vae"], data.x_held
        with common.autocast(device):
            x_prior = vae.sample_prior(model, cfg.samples, torch.Generator().manual_seed(cfg.seed))
        r = judge.evaluate(x_prior)
        metrics = {**extra, **vae.held_out_elbo(model, x, torch.Generator().manual_seed(cfg.seed),
                                                device),
                   "code_second_moment": vae.code_second_moments(model, x, device, True),
                   **{k: r[k] for k in ("n", "fd", "fd_floor", "fd_ratio", "confidence",
                                        "coverage")},
                   "config": dataclasses.asdict(cfg)}
        save_latent_map(out / "latent_map.png", model, x, data.y_held, device)
        common.save_images(out / "samples.png", x_prior[:100], 10,
                           titles="2-D VAE: decoder means at z ~ N(0, I)")
        common.save_metrics(out, metrics)
    m = metrics
    print(f"2-D VAE: held-out -ELBO {m['neg_elbo_held']:.1f} nats = reconstruction "
          f"{m['rec_nats_held']:.1f} + KL {m['kl_nats_held']:.2f}; E[z_j^2] "
          + ", ".join(f"{v:.2f}" for v in m["code_second_moment"]) + " (the prior: 1)")
    print(f"prior samples: FD {m['fd']:.1f} ({m['fd_ratio']:.1f}x the floor), "
          f"confidence {m['confidence']:.3f}")


if __name__ == "__main__":
    common.run_main(main)
