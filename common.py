"""common.py: the small, boring pieces every numbered script shares.

Nothing here is about any one model. What lives here:

1. Errors a user can cause, reported as one line (`UserError`, `run_main`).
2. Device choice and seeding.
3. The data: the bundled 5,000 digits, full MNIST (downloaded once), or a
   user's `.npz`, always split the same way into training and held-out images.
4. A dataclass-to-command-line helper, so every script gets the same flags.
5. A progress line, image grids, `samples.npz`, `metrics.json`, checkpoints.
6. The judge: a small digit classifier trained on the bundled data on first
   use, and the metrics built on it (FD, its floor, score, confidence,
   coverage, label accuracy, memorisation).

Read a numbered script first; come here when it calls something.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gzip
import hashlib
import http.client
import json
import math
import os
import random
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent
BUNDLED_DATA = REPO / "data" / "mnist_5k.npz"
# Everything downloaded or computed once (full MNIST, the judge) is cached
# here. Set GENCOURSE_CACHE to move it.
CACHE_DIR = Path(os.environ.get("GENCOURSE_CACHE", Path.home() / ".cache" / "gencourse"))

IMAGE_SHAPE = (28, 28)


# %% 1. Errors a user can cause
class UserError(Exception):
    """A mistake in the command line, the data or a file: printed as one line."""


def run_main(main, argv=None) -> int:
    """Run a script's main(); a UserError becomes one line on stderr and exit 2."""
    try:
        main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130)
    return 0


# %% 2. Device and seeding
def available_devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def pick_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then the CPU; anything absent is one clear error."""
    present = available_devices()
    if name == "auto":
        for choice in ("cuda", "mps", "cpu"):
            if choice in present:
                return torch.device(choice)
    if name not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device '{name}'; choose auto, cpu, cuda or mps")
    if name not in present:
        raise UserError(f"device '{name}' is not available here; available: {', '.join(present)}")
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast on CUDA, where it roughly doubles matrix throughput; plain float32 elsewhere.

    On the CPU bf16 is slower on most laptops and costs accuracy, so we leave it off.
    """
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch in one call; returns a torch generator for the CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# %% 3. Data
@dataclasses.dataclass
class Data:
    """Images as float32 tensors (N, 1, 28, 28) in [0, 1] and int64 labels.

    `train` is what models learn from; `held` (held out) is never trained on:
    likelihoods and the metric's floor are measured on it.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_held: torch.Tensor
    y_held: torch.Tensor


def check_arrays(x, y, where: str) -> None:
    """Validate a digit set: x uint8 (N, 28, 28), y integer labels 0-9 of length N."""
    if not isinstance(x, np.ndarray) or x.ndim != 3 or tuple(x.shape[1:]) != IMAGE_SHAPE:
        shape = getattr(x, "shape", None)
        raise UserError(f"{where}: 'x' must have shape (N, 28, 28), got {shape}")
    if x.dtype != np.uint8:
        raise UserError(f"{where}: 'x' must be uint8 (0-255), got {x.dtype}")
    if len(x) < 20:
        raise UserError(f"{where}: need at least 20 images, got {len(x)}")
    if not isinstance(y, np.ndarray) or y.ndim != 1 or len(y) != len(x):
        raise UserError(f"{where}: 'y' must have shape ({len(x)},), got {getattr(y, 'shape', None)}")
    if not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{where}: 'y' must hold integer labels, got {y.dtype}")
    if y.min() < 0 or y.max() > 9:
        raise UserError(f"{where}: labels must lie in 0-9, found {int(y.min())}..{int(y.max())}")


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("x", "y") if k not in f.files]
            if missing:
                raise UserError(f"{path}: missing array(s) {', '.join(missing)}; need 'x' and 'y'")
            x, y = f["x"], f["y"]
    except UserError:
        raise
    except Exception as e:  # zip or format errors: the file is not a readable .npz
        raise UserError(f"{path}: not a readable .npz file ({type(e).__name__})") from None
    check_arrays(x, y, str(path))
    return x, y.astype(np.int64)


def split_indices(y: np.ndarray, held_fraction: float = 0.2, seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, seeded, class-stratified split: the same images are held out on every run.

    The seed is fixed here on purpose (not the run's --seed): changing the run's
    seed must not move images between training and evaluation.
    """
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_held = int(round(len(idx) * held_fraction))
        held.append(idx[:n_held])
        train.append(idx[n_held:])
    train, held = np.concatenate(train), np.concatenate(held)
    # Shuffle across classes so that "the first N held-out images" is a fair sample.
    return rng.permutation(train), rng.permutation(held)


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    # uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1]
    return torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)


def make_data(name: str, x: np.ndarray, y: np.ndarray, held_fraction: float = 0.2) -> Data:
    tr, he = split_indices(y, held_fraction)
    return Data(name, _to_tensor(x[tr]), torch.from_numpy(y[tr]), _to_tensor(x[he]), torch.from_numpy(y[he]))


# Full MNIST: the four IDX files, with the sha256 of each, and mirrors tried in order.
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_file(name: str, sha256: str, folder: Path, mirrors: list[str], timeout: float = 30.0) -> Path:
    """Fetch `name` into `folder` from the first mirror that serves the right bytes.

    The bytes go to a temporary file in the same folder and are renamed into
    place only after the checksum matches, so an interrupted or corrupted
    transfer never leaves a file that a later run would trust.
    """
    target = folder / name
    if target.exists() and sha256_of(target) == sha256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    problems = []
    for mirror in mirrors:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(mirror + name, timeout=timeout) as resp:
                expected = resp.headers.get("Content-Length")
                copied = 0
                for block in iter(lambda: resp.read(1 << 16), b""):
                    out.write(block)
                    copied += len(block)
            if expected is not None and copied != int(expected):
                raise OSError(f"transfer cut short ({copied} of {expected} bytes)")
            got = sha256_of(Path(tmp))
            if got != sha256:
                raise OSError(f"checksum mismatch (sha256 {got[:12]}..., expected {sha256[:12]}...)")
            os.replace(tmp, target)
            return target
        except (OSError, http.client.HTTPException, ValueError) as e:  # try the next mirror (URLError is an OSError)
            problems.append(f"{mirror}: {getattr(e, 'reason', e)}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise UserError(
        f"could not download {name} (offline, or every mirror failed: {'; '.join(problems)}); "
        "use --data mnist5k, the bundled set, which works offline"
    )


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format: magic, dimensions, then raw uint8)."""
    with gzip.open(path, "rb") as f:
        zero, dtype, ndim = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype != 0x08:
            raise UserError(f"{path}: not an IDX file of unsigned bytes")
        shape = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if data.size != int(np.prod(shape)):
        raise UserError(f"{path}: truncated IDX file")
    return data.reshape(shape)


def load_mnist(folder: Path | None = None, mirrors: list[str] | None = None,
               files: dict[str, str] | None = None) -> Data:
    """Full MNIST, downloaded once into CACHE_DIR/mnist. Held out = the official 10,000 test digits."""
    folder = Path(folder) if folder is not None else CACHE_DIR / "mnist"
    files = files if files is not None else MNIST_FILES
    mirrors = mirrors if mirrors is not None else MNIST_MIRRORS
    paths = {n: download_file(n, s, folder, mirrors) for n, s in files.items()}
    arrays = {n: read_idx(p) for n, p in paths.items()}
    xs = [arrays[n] for n in files if "images" in n]
    ys = [arrays[n].astype(np.int64) for n in files if "labels" in n]
    for x, y in zip(xs, ys):
        check_arrays(x, y, str(folder))
    (x_tr, x_te), (y_tr, y_te) = xs, ys
    return Data("mnist", _to_tensor(x_tr), torch.from_numpy(y_tr), _to_tensor(x_te), torch.from_numpy(y_te))


def load_data(name: str = "mnist5k") -> Data:
    """`mnist5k` (bundled, default), `mnist` (full, downloaded once), or a path to an .npz."""
    if name == "mnist5k":
        x, y = load_npz(BUNDLED_DATA)
        return make_data("mnist5k", x, y)
    if name == "mnist":
        return load_mnist()
    if name.endswith(".npz") or os.sep in name:
        x, y = load_npz(Path(name))
        return make_data(Path(name).stem, x, y)
    raise UserError(f"unknown data '{name}'; use mnist5k, mnist, or a path to an .npz file")


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, gen: torch.Generator):
    """Endless shuffled mini-batches (each pass over the data in a new order)."""
    n = len(x)
    while True:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n - batch_size + 1, batch_size):
            idx = order[i:i + batch_size]
            yield x[idx], y[idx]
        if batch_size > n:
            raise UserError(f"--batch-size {batch_size} is larger than the {n} training images")


# %% 4. Config to command line
@dataclasses.dataclass
class BaseConfig:
    """The flags every script shares (see CONVENTIONS.md). Scripts subclass this."""

    steps: int = dataclasses.field(default=1000, metadata={"help": "training steps (optimizer updates)", "min": 1})
    batch_size: int = dataclasses.field(default=64, metadata={"help": "images per training step", "min": 1})
    samples: int = dataclasses.field(default=64, metadata={"help": "how many samples to generate and evaluate", "min": 1})
    seed: int = dataclasses.field(default=0, metadata={"help": "same seed, same numbers on the CPU", "min": 0})
    device: str = dataclasses.field(default="auto", metadata={"help": "auto|cpu|cuda|mps", "choices": ["auto", "cpu", "cuda", "mps"]})
    data: str = dataclasses.field(default="mnist5k", metadata={"help": "mnist5k (bundled), mnist (full, downloaded once) or a .npz path"})
    out: str = dataclasses.field(default="", metadata={"help": "output folder (default runs/<script name>/)"})
    load: str = dataclasses.field(default="", metadata={"help": "skip training: load this checkpoint, sample and evaluate"})


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        # argparse prints usage plus the message; we keep it to one line like every other error.
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def parse_config(cls, argv=None, description: str = ""):
    """Build an argparse parser from a Config dataclass, parse argv, validate, return a Config.

    Each field `foo_bar` becomes `--foo-bar`; its metadata may hold `help`,
    `choices`, `min` (inclusive) and `max`. Bools become `--x/--no-x`.
    """
    parser = _OneLineParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str, "bool": bool}[f.type]
        kw = {"default": f.default, "help": f.metadata.get("help", " ")}
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            parser.add_argument(flag, type=kind, choices=f.metadata.get("choices"), **kw)
    args = parser.parse_args(argv)
    cfg = cls(**vars(args))
    for f in dataclasses.fields(cls):
        value, lo, hi = getattr(cfg, f.name), f.metadata.get("min"), f.metadata.get("max")
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{flag} must be a finite number, got {value}")
        if lo is not None and value < lo:
            raise UserError(f"{flag} must be at least {lo}, got {value}")
        if hi is not None and value > hi:
            raise UserError(f"{flag} must be at most {hi}, got {value}")
    return cfg


def parse_list(text: str, kind=int, flag: str = "list") -> list:
    """'1,4,16' -> [1, 4, 16], with one clear line for anything else."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--{flag} must be a comma-separated list of {kind.__name__}s, got '{text}'") from None
    if not values:
        raise UserError(f"--{flag} must not be empty")
    return values


def out_dir(cfg, script_file: str) -> Path:
    """The run's output folder: --out, or runs/<script name>/."""
    path = Path(cfg.out) if cfg.out else Path("runs") / Path(script_file).stem
    path.mkdir(parents=True, exist_ok=True)
    return path


# %% 5. Progress, files, checkpoints
class Progress:
    """One line per few seconds: step, loss, steps/s and time left. No dependency needed."""

    def __init__(self, total: int, label: str = "train", every_s: float = 5.0):
        self.total, self.label, self.every_s = total, label, every_s
        self.start = self.last = time.perf_counter()

    def update(self, step: int, **values) -> None:
        now = time.perf_counter()
        if now - self.last < self.every_s and step != self.total:
            return
        self.last = now
        rate = step / max(now - self.start, 1e-9)
        eta = (self.total - step) / max(rate, 1e-9)
        shown = " ".join(f"{k} {v:.4g}" for k, v in values.items())
        print(f"{self.label} {step}/{self.total} {shown} {rate:.1f} steps/s ETA {format_seconds(eta)}", flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def format_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _as_images(x) -> np.ndarray:
    # Accept (N, 28, 28) or (N, 1, 28, 28), tensor or array -> float32 (N, 28, 28) in [0, 1].
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4:
        x = x[:, 0]
    return np.clip(x, 0.0, 1.0)


def save_grid(path, x, nrow: int | None = None, titles: list[str] | None = None, title: str | None = None) -> Path:
    """Save images (N, [1,] H, W) in [0, 1] as one PNG grid, ink dark on white like ink on paper."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imgs = _as_images(x)
    n = len(imgs)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    ncol = int(math.ceil(n / nrow))
    fig, axes = plt.subplots(ncol, nrow, figsize=(nrow * 0.8, ncol * 0.8 + (0.4 if title else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(imgs[i], cmap="gray_r", vmin=0, vmax=1)
            if titles:
                ax.set_title(titles[i], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def save_samples(out: Path, x, y=None) -> Path:
    """samples.npz: x float32 (N, 28, 28) in [0, 1]; y int64 labels where samples were asked for a class."""
    arrays = {"x": _as_images(x)}
    if y is not None:
        arrays["y"] = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y, dtype=np.int64)
    path = Path(out) / "samples.npz"
    np.savez_compressed(path, **arrays)
    return path


def save_metrics(out: Path, metrics: dict) -> Path:
    path = Path(out) / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    return path


def print_summary(metrics: dict, keys: list[str] | None = None) -> None:
    """The run's last lines: times and quality figures, as in metrics.json."""
    print("--- summary ---")
    for k in keys or [k for k, v in metrics.items() if isinstance(v, (int, float, str))]:
        v = metrics[k]
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")


def save_checkpoint(path, script: str, config, state: dict, extra: dict | None = None) -> Path:
    torch.save({"script": script, "config": dataclasses.asdict(config), "state": state, "extra": extra or {}}, path)
    return Path(path)


def load_checkpoint(path, script: str) -> dict:
    """Load a checkpoint written by `script`; missing, corrupt or foreign files are one clear error."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    try:
        # weights_only=True: a checkpoint can hold tensors and plain values, never code.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "state" not in ckpt or "config" not in ckpt:
        raise UserError(f"{path}: not a checkpoint of this course")
    if ckpt.get("script") != script:
        raise UserError(f"{path}: written by {ckpt.get('script')}, not {script}")
    return ckpt


def load_state(model: nn.Module, state: dict, path) -> None:
    """load_state_dict with a mismatch turned into one line."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: checkpoint does not match this model ({first})") from None


# %% 6. The judge: a small digit classifier, and the metrics built on it
class JudgeNet(nn.Module):
    """Two conv blocks and a 128-wide feature layer: big enough for >= 98% on held-out digits,
    small enough to train in well under a minute on two CPU cores."""

    FEATURES = 128

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (B,1,28,28) -> (B,32,14,14)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # -> (B,64,7,7)
            nn.Flatten(), nn.Dropout(0.3),
            nn.Linear(64 * 7 * 7, self.FEATURES), nn.ReLU(),                # -> (B,128): the features FD uses
        )
        self.head = nn.Linear(self.FEATURES, 10)

    def forward(self, x):
        return self.head(self.body(x))


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    # Random translation by up to 2 pixels: cheap augmentation that makes a
    # 4,000-image classifier generalise like one trained on far more digits.
    pad = F.pad(x, (max_shift,) * 4)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,), generator=gen).tolist()
    return pad[:, :, dy:dy + 28, dx:dx + 28]


JUDGE_VERSION = 1
JUDGE_EPOCHS = 20


def train_judge(data: Data, epochs: int = JUDGE_EPOCHS, seed: int = 0, verbose: bool = True) -> tuple[JudgeNet, float]:
    """Deterministic training on the CPU; returns the net and its held-out accuracy."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = JudgeNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    steps_per_epoch = len(data.x_train) // 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch)
    start = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(data.x_train), generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * 64:(i + 1) * 64]
            loss = F.cross_entropy(net(_shift(data.x_train[idx], gen)), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    acc = (judge_logits(net, data.x_held).argmax(1) == data.y_held).float().mean().item()
    if verbose:
        print(f"judge: trained in {time.perf_counter() - start:.1f}s, held-out accuracy {acc:.4f}", flush=True)
    return net, acc


@torch.no_grad()
def judge_logits(net: JudgeNet, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([net(x[i:i + batch].float().cpu()) for i in range(0, len(x), batch)])


@torch.no_grad()
def judge_features(net: JudgeNet, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([net.body(x[i:i + batch].float().cpu()) for i in range(0, len(x), batch)])


def fd_from_stats(mu1, cov1, mu2, cov2) -> float:
    """Frechet distance between Gaussians: |mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2).

    tr((C1 C2)^1/2) equals tr((C1^1/2 C2 C1^1/2)^1/2), and the inner matrix is
    symmetric positive semi-definite, so a symmetric eigen-decomposition gives
    it without scipy. Tiny negative eigenvalues from rounding are clipped to 0.
    """
    mu1, mu2, cov1, cov2 = (np.asarray(a, dtype=np.float64) for a in (mu1, mu2, cov1, cov2))
    w, v = np.linalg.eigh(cov1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ cov2 @ root1)
    tr_sqrt = np.sqrt(np.clip(inner, 0, None)).sum()
    fd = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)
    return max(fd, 0.0)


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(feats, dtype=np.float64)
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))  # atleast_2d: one feature gives a 0-d cov


def frechet_distance(feats1, feats2) -> float:
    return fd_from_stats(*feature_stats(feats1), *feature_stats(feats2))


def classifier_score(probs) -> float:
    """The Inception Score idea: exp(E_x KL(p(y|x) || p(y))). 1 = all alike or all unsure, 10 = confident and balanced."""
    p = np.asarray(probs, dtype=np.float64)
    marginal = p.mean(0, keepdims=True)
    kl = (p * (np.log(p + 1e-12) - np.log(marginal + 1e-12))).sum(1)
    return float(np.clip(np.exp(kl.mean()), 1.0, p.shape[1]))


def nearest_distances(x, ref, batch: int = 1000) -> np.ndarray:
    """Euclidean pixel distance from each image in x to its nearest image in ref."""
    # float32 is plenty for a nearest-neighbour test and keeps full MNIST (60,000 references) fast.
    a = torch.as_tensor(_as_images(x)).flatten(1)
    b = torch.as_tensor(_as_images(ref)).flatten(1)
    bb = (b * b).sum(1)
    out = []
    for i in range(0, len(a), batch):
        ai = a[i:i + batch]
        d2 = (ai * ai).sum(1, keepdim=True) - 2 * ai @ b.T + bb
        out.append(d2.clamp_min(0).min(1).values.sqrt())
    return torch.cat(out).numpy()


class Judge:
    """The course's evaluator. Build with `Judge.load(data)`; call `evaluate(samples)`.

    The classifier is always trained on the bundled set's training split, so
    numbers stay comparable whatever --data a run uses. FD and memorisation
    are measured against the run's own training images; the floor uses its
    held-out images.
    """

    MEMO_QUANTILE = 0.05  # see evaluate(): the share real held-out digits would score by construction

    def __init__(self, net: JudgeNet, data: Data, accuracy: float):
        self.net, self.data, self.accuracy = net.eval(), data, accuracy
        self.ref_stats = feature_stats(judge_features(net, data.x_train))
        self.held_feats = judge_features(net, data.x_held).numpy()
        held_nn = nearest_distances(data.x_held, data.x_train)
        self.memo_threshold = float(np.quantile(held_nn, self.MEMO_QUANTILE))
        self._floors: dict[int, float] = {}

    @classmethod
    def load(cls, data: Data | None = None, cache_dir: Path | None = None, verbose: bool = True) -> "Judge":
        """Load the cached judge, training it once (about half a minute on two cores) if absent."""
        cache_dir = Path(cache_dir) if cache_dir is not None else CACHE_DIR
        bundled = load_data("mnist5k")
        data = data if data is not None else bundled
        path = cache_dir / f"judge-v{JUDGE_VERSION}-{sha256_of(BUNDLED_DATA)[:12]}.pt"
        net = JudgeNet()
        if path.exists():
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
                net.load_state_dict(saved["state"])
                return cls(net, data, float(saved["accuracy"]))
            except Exception:
                pass  # a corrupt cache is simply retrained
        if verbose:
            print("judge: first use, training the digit classifier once (cached afterwards)...", flush=True)
        with torch.random.fork_rng():
            net, acc = train_judge(bundled, verbose=verbose)
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".part")
        os.close(fd)
        torch.save({"state": net.state_dict(), "accuracy": acc}, tmp)
        os.replace(tmp, path)
        return cls(net, data, acc)

    def floor(self, n: int) -> tuple[float, int]:
        """FD of n held-out real digits against the training digits: the best FD a perfect
        generator can expect at this n. Held-out images are limited, so n is capped."""
        n = min(n, len(self.held_feats))
        if n not in self._floors:
            self._floors[n] = fd_from_stats(*feature_stats(self.held_feats[:n]), *self.ref_stats)
        return self._floors[n], n

    def evaluate(self, x, labels=None) -> dict:
        """All of the judge's figures for a set of samples (N, [1,] 28, 28) in [0, 1].

        - fd: Frechet distance of judge features against the training digits, at this N.
        - fd_floor, fd_floor_n: the same for held-out real digits; fd_ratio = fd / floor.
        - score: classifier score in [1, 10]; confidence: mean top probability;
          coverage: classes the judge gives at least 1% of samples (and at least one).
        - label_accuracy: share matching `labels`, when samples were asked for a class.
        - memorised: share of samples closer to their nearest training image than
          95% of real held-out digits are to theirs (real digits score 0.05).
        """
        imgs = torch.as_tensor(_as_images(x)).unsqueeze(1)
        n = len(imgs)
        if n < 2:
            raise UserError("need at least 2 samples to evaluate")
        feats = judge_features(self.net, imgs).numpy()
        with torch.no_grad():
            probs = F.softmax(self.net.head(torch.as_tensor(feats)), 1).numpy()
        pred = probs.argmax(1)
        counts = np.bincount(pred, minlength=10)
        fd = fd_from_stats(*feature_stats(feats), *self.ref_stats)
        floor, floor_n = self.floor(n)
        result = {
            "n": n,
            "fd": fd,
            "fd_floor": floor,
            "fd_floor_n": floor_n,
            "fd_ratio": fd / max(floor, 1e-12),
            "score": classifier_score(probs),
            "confidence": float(probs.max(1).mean()),
            "coverage": int((counts >= max(1, 0.01 * n)).sum()),
            "class_counts": counts.tolist(),
            "memorised": float((nearest_distances(imgs, self.data.x_train) < self.memo_threshold).mean()),
        }
        if labels is not None:
            labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
            result["label_accuracy"] = float((pred == labels).mean())
        return result


def describe(metrics: dict, prefix: str = "") -> str:
    """One human line for a judge result, FD always with its N and floor."""
    m = metrics
    line = (f"{prefix}FD {m['fd']:.2f} at N={m['n']} (floor {m['fd_floor']:.2f} at N={m['fd_floor_n']}, "
            f"{m['fd_ratio']:.1f}x) | score {m['score']:.2f} | confidence {m['confidence']:.3f} | "
            f"coverage {m['coverage']}/10 | memorised {m['memorised']:.3f}")
    if "label_accuracy" in m:
        line += f" | label accuracy {m['label_accuracy']:.3f}"
    return line
