"""01_blur.py: a network trained to output a whole digit from a blank input learns the blurry
average (01_autoregressive_pixels.py, section 1).

A small network always gets the same blank input and is fitted, with the squared error,
to whole training digits. The input tells it nothing, so the best it can do is one answer
for every digit: their average. Compared: its output against the training digits' average
(RMS pixel difference), beside how far a training digit is from that average (the scale);
and the judge's figures for N copies of the output, as if it were a generator of N samples.

    python experiments/01_blur.py             (300 steps, N = 1000 copies judged)

Writes metrics.json and blur.png (the output, the average, their difference) into
runs/01_blur/.
"""
import dataclasses

import lab
import common  # importable once lab has put the repository on the path
import torch
from judge import describe
import torch.nn as nn
import torch.nn.functional as F

JUDGED = ("n", "fd", "fd_floor", "fd_ratio", "confidence", "coverage")


@dataclasses.dataclass
class Config(common.BaseConfig):
    steps: int = common.flag(300, "training steps of the blank-input network", min=1)
    batch_size: int = common.flag(256, "digits per training step", min=1)
    out: str = common.flag("runs/01_blur", "output folder")


def train_whole_image(images: torch.Tensor, steps: int, batch_size: int, gen: torch.Generator,
                      lr: float = 1e-2, hidden: int = 64) -> nn.Module:
    """Fit a blank-input network to images (N, side*side) in [0, 1] with the squared error:
    argmin_y E_x |y - x|^2 = E[x], so it can only learn their average."""
    n_images, n_pixels = images.shape
    model = nn.Sequential(nn.Linear(n_pixels, hidden), nn.ReLU(),  # (B, n) -> (B, n)
                          nn.Linear(hidden, n_pixels)).to(images.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    # The decay to 0 removes the last mini-batches' jitter from the answer.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    blank = torch.zeros(min(batch_size, n_images), n_pixels, device=images.device)
    progress = common.Progress(steps, "blur")
    for step in range(1, steps + 1):
        idx = torch.randint(n_images, (len(blank),), generator=gen).to(images.device)
        loss = F.mse_loss(model(blank), images[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        progress.update(step, loss=loss.item())
    return model


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root-mean-square pixel difference: 0 = identical, 1 = black against white everywhere."""
    return float(((a.float() - b.float()) ** 2).mean().sqrt())


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__, leave_out=("load", "gif"))
    with common.run_folder(cfg, "01_blur") as out:
        gen = common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        data = common.load_data(cfg.data)
        judge = common.load_judge(data)
        flat = data.x_train.flatten(1).to(device)                       # (N, 784) in [0, 1]
        model = train_whole_image(flat, cfg.steps, cfg.batch_size, gen)
        with torch.no_grad():
            blur = model(torch.zeros(1, flat.shape[1], device=device))[0].clamp(0, 1).cpu()
        shape = data.x_train.shape[1:]                                   # (C, H, W)
        blur, average = blur.view(shape), flat.mean(0).view(shape).cpu()
        metrics = {"blur_rms_to_mean": rms(blur, average),
                   "digit_rms_to_mean": rms(data.x_train.flatten(1), average.flatten()),
                   "config": dataclasses.asdict(cfg)}
        if judge:  # the blur as a "generator": the same image N times
            r = judge.evaluate(blur.expand(cfg.samples, *shape))
            metrics.update({f"blur_{k}": r[k] for k in JUDGED})
        common.save_images(out / "blur.png",
                           torch.stack([blur, average, ((blur - average).abs() * 10).clamp(0, 1)]),
                           3, titles="learned, average, |diff.| x10")
        common.save_metrics(out, metrics)
    print(f"the blank-input network's output is {metrics['blur_rms_to_mean']:.4f} RMS from the "
          f"average digit; a training digit is {metrics['digit_rms_to_mean']:.3f} from it")
    if judge:
        print(describe(r, "judge, the output repeated: "))


if __name__ == "__main__":
    common.run_main(main)
