"""judge.py: how the course scores generated digits, with nothing to download.

A small convolutional digit classifier, the judge, is trained once on a run's own
training digits (about half a minute on two CPU cores) and cached. Its figures:
FD, the FID formula on the judge's 128 features (lower is better; it grows as N
shrinks, so it comes with its N and the floor, what N real held-out digits score),
score, confidence, coverage, label accuracy and memorisation; explain() says what
each one means. A chapter copied out without this file still runs, unscored.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import common

JUDGE_VERSION = 2
JUDGE_STEPS = 1240  # 20 passes over the bundled set's 4,000 training digits, 64 at a time
TRUSTED = 0.9  # held-out accuracy below which the judge's figures mean little
FEW = 300  # below this many samples, FD and confidence vary too much to compare runs


class JudgeNet(nn.Module):
    """Two conv blocks and 128 features: >= 98% on held-out digits, trained in under a minute."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # -> (B,32,14,14)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # -> (B,64,7,7)
            nn.Flatten(), nn.Dropout(0.3),
            nn.Linear(64 * 7 * 7, 128), nn.ReLU(),                        # -> (B,128): features
        )
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        return self.head(self.body(x))


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    # Random translation by up to 2 pixels: cheap augmentation that makes a
    # 4,000-image classifier generalise like one trained on far more digits.
    pad = F.pad(x, (max_shift,) * 4)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,), generator=gen).tolist()
    return pad[:, :, dy:dy + 28, dx:dx + 28]


def train_judge(data, steps: int = JUDGE_STEPS, seed: int = 0) -> tuple[JudgeNet, float]:
    """Deterministic training on the CPU; returns the net and its held-out accuracy."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = JudgeNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    per_pass, done = max(1, len(data.x_train) // 64), 0
    progress = common.Progress(steps, "training the judge")
    while done < steps:
        net.train()
        order = torch.randperm(len(data.x_train), generator=gen)
        for i in range(min(per_pass, steps - done)):
            idx = order[i * 64:(i + 1) * 64]
            loss = F.cross_entropy(net(_shift(data.x_train[idx], gen)), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            progress.update(done, loss=loss.item())
    net.eval()
    return net, (logits(net, data.x_held).argmax(1) == data.y_held).float().mean().item()


@torch.no_grad()
def logits(net: JudgeNet, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([net(x[i:i + batch].float().cpu()) for i in range(0, len(x), batch)])


@torch.no_grad()
def features(net: JudgeNet, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([net.body(x[i:i + batch].float().cpu()) for i in range(0, len(x), batch)])


def fd_from_stats(mu1, cov1, mu2, cov2) -> float:
    """Frechet distance between Gaussians: |mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2).
    That inner matrix is symmetric positive semi-definite, so a symmetric eigen-decomposition
    gives its root without scipy; tiny negative eigenvalues from rounding are clipped to 0."""
    mu1, mu2, cov1, cov2 = (np.asarray(a, dtype=np.float64) for a in (mu1, mu2, cov1, cov2))
    w, v = np.linalg.eigh(cov1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ cov2 @ root1), 0, None)).sum()
    fd = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)
    return max(fd, 0.0)


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(feats, dtype=np.float64)
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))  # one feature gives a 0-d cov


def classifier_score(probs) -> float:
    """exp(E_x KL(p(y|x) || p(y))): 1 = all alike or all unsure, 10 = confident and balanced."""
    p = np.asarray(probs, dtype=np.float64)
    marginal = p.mean(0, keepdims=True)
    kl = (p * (np.log(p + 1e-12) - np.log(marginal + 1e-12))).sum(1)
    return float(np.clip(np.exp(kl.mean()), 1.0, p.shape[1]))


def nearest_distances(x, ref, batch: int = 1000) -> np.ndarray:
    """Euclidean pixel distance from each image in x to its nearest image in ref."""
    # float32 is plenty for a nearest-neighbour test and keeps full MNIST (60,000 images) fast.
    a = torch.as_tensor(common.as_images(x)).flatten(1)
    b = torch.as_tensor(common.as_images(ref)).flatten(1)
    bb, out = (b * b).sum(1), []
    for i in range(0, len(a), batch):
        ai = a[i:i + batch]
        d2 = (ai * ai).sum(1, keepdim=True) - 2 * ai @ b.T + bb
        out.append(d2.clamp_min(0).min(1).values.sqrt())
    return torch.cat(out).numpy()


def fingerprint(data) -> str:
    """A short hash of the training images and labels: which data a judge was trained on."""
    h = hashlib.sha256(data.x_train.numpy().tobytes())
    h.update(data.y_train.numpy().tobytes())
    return h.hexdigest()[:12]


class Judge:
    """`Judge.load(data)`, then `evaluate(samples)`: FD against the training digits."""

    MEMO_QUANTILE = 0.05  # real held-out digits score this by construction (see evaluate)
    _loaded: dict[str, "Judge"] = {}  # one judge per data set and cache, kept for the process

    def __init__(self, net: JudgeNet, data, accuracy: float):
        self.net, self.data, self.accuracy = net.eval(), data, accuracy
        self.ref_stats = feature_stats(features(net, data.x_train))
        self.held_feats = features(net, data.x_held).numpy()
        self.real_confidence = logits(net, data.x_held).softmax(1).max(1).values.mean().item()
        held_nn = nearest_distances(data.x_held, data.x_train)
        self.memo_threshold = float(np.quantile(held_nn, self.MEMO_QUANTILE))
        self._floors: dict[int, float] = {}

    @classmethod
    def load(cls, data, cache_dir: Path | None = None) -> "Judge":
        """The cached judge for this data, trained once (about half a minute) if absent."""
        name = f"judge-v{JUDGE_VERSION}-{fingerprint(data)}.pt"
        path = Path(cache_dir or common.CACHE_DIR) / name
        if str(path) in cls._loaded:
            return cls._loaded[str(path)]
        net, acc = JudgeNet(), None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(saved["state"])
            acc = float(saved["accuracy"])
        except FileNotFoundError:
            print("the judge: first use with this data, so its digit classifier is trained once "
                  f"(kept in {path.parent})", flush=True)
        except Exception:  # a damaged cache file is simply trained again
            print(f"the judge: the cached classifier {path} is damaged; training it again")
        if acc is None:
            with torch.random.fork_rng():
                net, acc = train_judge(data)
            _save(net, acc, path)
        judge = cls._loaded[str(path)] = cls(net, data, acc)
        return judge

    def floor(self, n: int) -> tuple[float, int]:
        """FD of n held-out real digits against the training digits: the best FD a perfect
        generator can expect at this n. Held-out images are limited, so n is capped."""
        n = min(n, len(self.held_feats))
        if n not in self._floors:
            self._floors[n] = fd_from_stats(*feature_stats(self.held_feats[:n]), *self.ref_stats)
        return self._floors[n], n

    def evaluate(self, x, labels=None) -> dict:
        """Every figure of this module's docstring for samples (N, [1,] 28, 28) in [0, 1]."""
        imgs = torch.as_tensor(common.as_images(x)).unsqueeze(1)
        if len(imgs) < 2:
            raise common.UserError("need at least 2 samples to evaluate")
        feats = features(self.net, imgs).numpy()
        with torch.no_grad():
            probs = F.softmax(self.net.head(torch.as_tensor(feats)), 1).numpy()
        counts = np.bincount(probs.argmax(1), minlength=10)
        fd = fd_from_stats(*feature_stats(feats), *self.ref_stats)
        floor, floor_n = self.floor(len(imgs))
        result = {
            "n": len(imgs), "fd": fd, "fd_floor": floor, "fd_floor_n": floor_n,
            "fd_ratio": fd / max(floor, 1e-12), "score": classifier_score(probs),
            "confidence": float(probs.max(1).mean()),
            "coverage": int((counts >= max(1, 0.01 * len(imgs))).sum()),
            "class_counts": counts.tolist(),
            "memorised": float((nearest_distances(imgs, self.data.x_train)
                                < self.memo_threshold).mean()),
            "judge_accuracy": self.accuracy, "real_confidence": self.real_confidence}
        if labels is not None:
            labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
            result["label_accuracy"] = float((probs.argmax(1) == labels).mean())
        return result


def _save(net: JudgeNet, acc: float, path: Path) -> None:
    """Cache the judge; an unwritable cache costs only the training time of the next run."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")  # renamed into place when whole
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state": net.state_dict(), "accuracy": acc}, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        print(f"the judge: cannot keep it in {path.parent} ({e}); going on without it "
              "(set GENCOURSE_CACHE to a writable folder to keep it)")
        if tmp.exists():
            tmp.unlink()


def describe(m: dict, prefix: str = "") -> str:
    """One line of a result's figures, FD always with its N and floor."""
    line = (f"{prefix}FD {m['fd']:.2f} at N={m['n']} (floor {m['fd_floor']:.2f}, "
            f"{m['fd_ratio']:.1f}x) | score {m['score']:.2f} | confidence {m['confidence']:.3f}"
            f" | coverage {m['coverage']}/10 | memorised {m['memorised']:.3f}")
    return line + (f" | label accuracy {m['label_accuracy']:.3f}" if "label_accuracy" in m else "")


def explain(m: dict) -> list[str]:
    """The judge's figures for a beginner: each with what it means and which way is better."""
    lines = [f"FD {m['fd']:.3g} at N={m['n']}: how far the samples are from real digits, as "
             f"the judge sees them (lower is better); {m['fd_floor_n']} real held-out digits "
             f"score {m['fd_floor']:.3g}, so this is {m['fd_ratio']:.1f}x that floor",
             f"confidence {m['confidence']:.2f}: how sure the judge is of each sample's digit "
             f"(real digits: {m['real_confidence']:.2f})",
             f"coverage {m['coverage']}/10: digits found in at least 1% of the samples",
             f"score {m['score']:.2f} of 10: high when each sample is clearly one digit and all "
             "ten appear",
             f"memorised {m['memorised']:.2f}: share of samples nearly copying a training digit"
             " (real digits: 0.05)"]
    if "label_accuracy" in m:
        lines.append(f"label accuracy {m['label_accuracy']:.3f}: share read as the digit asked")
    if m["n"] < FEW:
        lines.append(f"note: at N={m['n']}, FD and confidence say little (the floor alone is "
                     f"{m['fd_floor']:.3g}); compare runs with --samples 1000")
    strong = m["judge_accuracy"] >= TRUSTED
    lines.append(f"{'judge' if strong else 'warning: the judge'} recognises "
                 f"{m['judge_accuracy']:.0%} of this data's held-out digits (chance: 10%)"
                 + ("" if strong else ", so its figures above mean little"))
    return lines
