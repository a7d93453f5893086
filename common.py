"""common.py: the small, boring pieces every numbered script shares; nothing about any one model.
1. device and seeding; 2. main() in a terminal or a notebook, every mistake one line; 3. data;
4. flags from a Config; 5. the run folder, whose files appear complete or not at all; 6. samples,
metrics, checkpoints; 7. progress lines and pictures; 8. scoring with judge.py, if it is there.
"""
from __future__ import annotations

import sys

# Ctrl-C outside run_main() (while torch loads, say) prints run_main's one line, not a traceback.
sys.excepthook = lambda kind, value, tb: print(_interrupted(), file=sys.stderr) \
    if issubclass(kind, KeyboardInterrupt) else sys.__excepthook__(kind, value, tb)

import argparse  # noqa: E402
import collections  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
# What is computed or downloaded once (the judge, full MNIST) is kept here.
CACHE_DIR = Path(os.environ.get("GENCOURSE_CACHE", Path.home() / ".cache" / "gencourse"))

# %% 1. Device, autocast and seeding
def pick_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then the CPU; an absent device is one clear error."""
    mps = getattr(torch.backends, "mps", None)
    present = ["cpu"] + ["cuda"] * torch.cuda.is_available() + \
        ["mps"] * bool(mps is not None and mps.is_available())
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if d in present))
    if name not in present:
        raise UserError(f"device '{name}' is not available here; available: {', '.join(present)}")
    return torch.device(name)

def autocast(device):
    """bf16 on CUDA (about twice the matrix speed), float32 elsewhere (bf16 is slow on CPUs)."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()

def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; a seeded CPU generator (drawn there, the same anywhere)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)

# %% 2. Running main(): one line for every mistake, in a terminal or a notebook
class UserError(Exception):
    """A mistake in the command line, the data or a file: printed as one line."""

def in_notebook() -> bool:
    """True inside Jupyter, Colab or VS Code's interactive window: they all run ipykernel."""
    return "ipykernel" in sys.modules

_finished: list[Path] = []  # run folders this process has finished writing


def _interrupted() -> str:
    """What an interrupt leaves, whenever it comes: a run's files appear only when finished."""
    return f"interrupted; the run's files were already saved in {_finished[-1]}" if _finished \
        else "interrupted; nothing was saved (a run saves only when finished)"

def run_main(main, argv=None) -> int:
    """Run main(argv): a UserError, a failed write, Ctrl-C or SIGTERM becomes one line and an
    exit code. A terminal exits with the code; a notebook gets it back and goes on."""
    try:
        # SIGTERM (what `timeout` and schedulers send) raises KeyboardInterrupt, as Ctrl-C does
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not the main thread: leave the signals alone
        previous = None
    code, line = 0, ""
    try:
        main(argv)
    except UserError as e:
        code, line = 2, f"error: {e}"
    except OSError as e:  # a full disk, a folder removed under the run: the system's words
        where = f": {e.filename}" if e.filename else ""
        code, line = 2, f"error: {e.strerror or e}{where}; the output folder was left as it was"
    except KeyboardInterrupt:
        code, line = 130, _interrupted()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if code:
        print(line, file=sys.stderr)
        if not in_notebook():
            raise SystemExit(code)
    return code

# %% 3. Data
# float32 images (N, C, H, W) in [0, 1], C = 1 (grey) or 3 (colour), int64 labels (N,) in
# 0..classes-1 (all 0 where the file has none); held-out ones are never trained on
Data = collections.namedtuple("Data", "name x_train y_train x_held y_held classes", defaults=(10,))

MIN_IMAGES = 100  # the judge learns from four fifths and measures on the rest: 80 and 20

def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """x uint8 (N, H, W) or (N, H, W, 3) and y int64 labels 0..K-1, K >= 2 (optional: without
    'y' every label is 0) from an .npz, every flaw one clear line."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            x = f["x"]
            y = f["y"] if "y" in f.files else np.zeros(len(x), np.int64)
    except Exception as e:  # not a zip, not an .npz, no 'x'
        raise UserError(f"{path}: not an .npz file with an array 'x' "
                        f"({type(e).__name__}: {e})") from None
    shape = x.ndim == 3 or (x.ndim == 4 and x.shape[3] == 3)
    labels = np.issubdtype(y.dtype, np.integer) and y.shape == (len(x),) and len(y) > 0
    if not (shape and x.dtype == np.uint8 and labels and len(x) >= MIN_IMAGES and y.min() >= 0
            and len(np.unique(y)) == y.max() + 1):  # every label of 0..K-1 has its images
        raise UserError(f"{path}: need 'x' uint8 (N, H, W) or (N, H, W, 3) with N >= "
                        f"{MIN_IMAGES}, and 'y', if any, integer labels 0..K-1 (N,), each one "
                        f"used; found x {x.dtype} {x.shape}, y {y.dtype} {y.shape}"
                        + (f" {y.min()}..{y.max()}, {len(np.unique(y))} used" if labels else ""))
    return x, y.astype(np.int64)

def split_indices(y: np.ndarray, held_fraction: float = 0.2, seed: int = 1234):
    """(train, held) indices: a fixed, class-stratified split, the same on every run (its
    seed is fixed on purpose: the run's --seed must not move images between the parts)."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_held = int(round(len(idx) * held_fraction))
        held.append(idx[:n_held])
        train.append(idx[n_held:])
    # Shuffled across classes, so that "the first N held-out images" is a fair sample.
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(held))

def load_data(name: str = "mnist5k") -> Data:
    """`mnist5k` (the bundled data/mnist_5k.npz), `mnist` (the full 70,000, fetched once by
    scripts/get_mnist.py, its 10,000 test digits held out) or the path of an .npz."""
    if name == "mnist":
        if not (CACHE_DIR / "mnist.npz").exists():
            raise UserError(f"full MNIST is not in {CACHE_DIR} yet: run python "
                            "scripts/get_mnist.py once (11 MB), or use --data mnist5k")
        x, y = load_npz(CACHE_DIR / "mnist.npz")  # the last 10,000 are MNIST's test digits
        train, held = np.arange(len(x) - 10000), np.arange(len(x) - 10000, len(x))
    elif name == "mnist5k" or name.endswith(".npz") or os.sep in name:
        path = HERE / "data" / "mnist_5k.npz" if name == "mnist5k" else Path(name)
        if name == "mnist5k" and not path.exists():
            raise UserError(f"the bundled digits data/mnist_5k.npz are not in {HERE}: copy the "
                            "course's data/ folder there, or pass --data PATH.npz")
        x, y = load_npz(path)
        train, held = split_indices(y)
    else:
        raise UserError(f"unknown data '{name}'; use mnist5k, mnist, or a path to an .npz file")
    images = torch.from_numpy(x.astype(np.float32) / 255.0)
    # (N, H, W) -> (N, 1, H, W); (N, H, W, 3) -> (N, 3, H, W), as convolutions take them
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(y)
    return Data(Path(name).stem, images[train], y[train], images[held], y[held],
                int(y.max()) + 1)

def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, gen: torch.Generator):
    """Endless shuffled batches, each pass a new order; one larger than the data shrinks."""
    if batch_size > len(x):
        print(f"note: --batch-size {batch_size} is more than the {len(x)} training images; "
              f"batches of {len(x)}", flush=True)
        batch_size = len(x)
    while True:
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - batch_size + 1, batch_size):
            yield x[order[i:i + batch_size]], y[order[i:i + batch_size]]

# %% 4. Flags: a Config dataclass becomes the command line
def flag(default, help: str, **limits):
    """A Config field: default, --help text, and `min`, `max`, `choices`, `multiple_of`."""
    return dataclasses.field(default=default, metadata={"help": help, **limits})

@dataclasses.dataclass
class BaseConfig:
    """The flags every script shares. Scripts subclass this and add their own."""
    steps: int = flag(1000, "training steps (optimizer updates)", min=1)
    batch_size: int = flag(64, "images per training step", min=1)
    samples: int = flag(1000, "how many samples to generate and evaluate", min=2)
    seed: int = flag(0, "same seed, same numbers on the CPU", min=0, max=2**32 - 1)
    device: str = flag("auto", "auto picks cuda, then mps, then cpu",
                       choices=["auto", "cpu", "cuda", "mps"])
    data: str = flag("mnist5k", "mnist5k (bundled), mnist (full) or the path of an .npz")
    out: str = flag("", "output folder (default: runs/<script name>)")
    load: str = flag("", "skip training: load this checkpoint, sample and evaluate")
    gif: bool = flag(True, "write generation.gif (--no-gif skips it)")

class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise UserError(f"{message} (see --help)")

def parse_config(cls, argv=None, description: str = "", leave_out=()):
    """argv (else sys.argv, but not in a notebook: a kernel's arguments are not ours) -> a
    checked Config. Field foo_bar is flag --foo-bar (a bool one, --x and --no-x); --help keeps
    the docstring's lines and shows each flag's default, if it has one to show. Fields named
    in `leave_out` keep their defaults and are not offered: a script offers what it reads."""
    parser = _OneLineParser(description=description,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in [f for f in dataclasses.fields(cls) if f.name not in leave_out]:
        kind = {"int": int, "float": float, "str": str, "bool": bool}.get(f.type, f.type)
        name, shown = f.name.replace("_", "-"), "" if f.default in ("", None) else \
            f" (default: {f.default})"
        how = {"action": "store_true"} if kind is bool else \
            {"type": kind, "choices": f.metadata.get("choices")}
        parser.add_argument("--" + name, default=f.default, help=f.metadata["help"] + shown, **how)
        if kind is bool:  # and --no-x turns it off
            parser.add_argument("--no-" + name, dest=f.name, action="store_false", help="")
    cfg = cls(**vars(parser.parse_args([] if argv is None and in_notebook() else argv)))
    for f in dataclasses.fields(cls):
        v, m = getattr(cfg, f.name), f.metadata
        if (isinstance(v, float) and not math.isfinite(v)) or v < m.get("min", v) \
                or v > m.get("max", v) or (m.get("multiple_of") and v % m["multiple_of"]):
            rule = ", ".join(f"{k.replace('_', ' ')} {m[k]}" for k in ("min", "max", "multiple_of")
                             if k in m)
            raise UserError(f"--{f.name.replace('_', '-')} must be a finite number ({rule}), "
                            f"got {v}: {m['help']}")
    return cfg

# %% 5. The run folder: complete files, or none at all
# A run writes into a hidden .unfinished-* folder in --out; finished, one rename makes it
# .finished-*, and from then on it counts as done: its files move in one by one, replacing
# the last run's (whose files it did not remake go). Killed before that rename, a run leaves
# --out as it was; killed during the move, the next run completes it. The system releases
# the lock when its process ends, however it ends.
try:
    from fcntl import LOCK_EX, LOCK_NB, flock
except ImportError:  # Windows: lock the lock file's first byte instead
    from msvcrt import LK_NBLCK as LOCK_EX, locking as _locking
    LOCK_NB, flock = 0, lambda fd, how: _locking(fd, how, 1)

@contextlib.contextmanager
def run_folder(cfg, script: str):
    """with run_folder(cfg, SCRIPT) as out: ... write files into out ..."""
    final = Path(cfg.out) if cfg.out else Path("runs") / script
    if final.exists() and not final.is_dir():
        raise UserError(f"--out {final} is a file; pass a folder")
    new, top = not final.exists(), final
    while not top.parent.exists():  # the highest folder this run creates (--out a/b: a)
        top = top.parent
    try:
        final.mkdir(parents=True, exist_ok=True)
        fd = os.open(final / ".lock", os.O_RDWR | os.O_CREAT, 0o644)  # left there: harmless
    except OSError as e:
        raise UserError(f"cannot write to --out {final} ({e.strerror or e})") from None
    try:
        flock(fd, LOCK_EX | LOCK_NB)  # released by the system when the process ends, however
    except OSError:
        os.close(fd)
        raise UserError(f"another run is writing to {final} right now; let it finish or pass "
                        "another --out") from None
    try:
        _move_in(final)  # a run killed while moving its files in: complete its move
        for stale in final.glob(".unfinished-*"):  # a killed run's half-written files
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=".unfinished-", dir=final))
        yield staging
        (staging / ".files").write_text("".join(p.name + "\n" for p in staging.iterdir()))
        os.replace(staging, final / staging.name.replace(".unfinished-", ".finished-"))
        _move_in(final)
        _finished.append(final)
    finally:
        for half in final.glob(".unfinished-*"):  # ours (we hold the lock), even half-made
            shutil.rmtree(half, ignore_errors=True)
        os.close(fd)
        if new and [p.name for p in final.iterdir()] == [".lock"]:
            shutil.rmtree(top)  # a failed first run leaves no folder of its own behind

def _move_in(final: Path) -> None:
    manifest = final / ".files"  # the names the last finished run wrote
    for done in sorted(final.glob(".finished-*")):
        if (done / ".files").exists():
            names = (done / ".files").read_text().split()
            old = set(manifest.read_text().split()) if manifest.exists() else set()
            for name in names:
                if (done / name).exists():
                    os.replace(done / name, final / name)
            for name in old - set(names):
                (final / name).unlink(missing_ok=True)
            os.replace(done / ".files", manifest)
        shutil.rmtree(done)

# %% 6. Samples, metrics and checkpoints; train or load
def save_samples(out: Path, x, y=None) -> None:
    """samples.npz: x float32 (N, H, W), or (N, H, W, 3) in colour, in [0, 1]; y int64 labels
    where the samples were asked for a class."""
    arrays = {"x": as_images(x)} if y is None else {"x": as_images(x), "y": np.int64(y)}
    np.savez_compressed(Path(out) / "samples.npz", **arrays)

def _plain(value):
    """Strict JSON: numpy and torch numbers become Python numbers, NaN and infinity null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return _plain(value.tolist())
    return None if isinstance(value, float) and not math.isfinite(value) else value

def save_metrics(out: Path, metrics: dict) -> None:
    text = json.dumps(_plain(metrics), indent=2, allow_nan=False)
    (Path(out) / "metrics.json").write_text(text + "\n")

def load_checkpoint(path, script: str) -> dict:
    """Load a checkpoint written by `script`; missing, corrupt or foreign files are one error."""
    if not Path(path).is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:  # weights_only: a checkpoint can hold tensors and plain values, never code
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or not {"state", "config", "extra"} <= set(ckpt):
        raise UserError(f"{path}: not a checkpoint of this course")
    if ckpt.get("script") != script:
        raise UserError(f"{path}: written by {ckpt.get('script')}, not {script}")
    return ckpt

def load_or_train(cfg, out: Path, script: str, shape: tuple, build, train, data=None):
    """(cfg, model, extra). Without --load: build(cfg), trained by train(model) -> extra, saved
    as out/model.pt. With --load: the checkpoint, copied into out; its `shape` settings replace
    the flags' (they define the model), so cfg comes back too. A model that cannot take the
    data is one line before training; given `data`, a checkpoint made for other images is too."""
    dims = None if data is None else [list(data.x_train.shape[1:]), data.classes]
    if not cfg.load:
        model = _built(build, cfg)
        extra = train(model)
        buffer = io.BytesIO()  # written by Python's own files: a full disk is one OSError
        torch.save({"script": script, "config": dataclasses.asdict(cfg), "dims": dims,
                    "state": model.state_dict(), "extra": extra}, buffer)
        (out / "model.pt").write_bytes(buffer.getvalue())
        return cfg, model.eval(), extra
    ckpt = load_checkpoint(cfg.load, script)
    if None not in (dims, ckpt.get("dims")) and ckpt["dims"] != dims:
        (c, *hw), k = ckpt["dims"]
        raise UserError(f"{cfg.load} was trained on {c}x{hw[0]}x{hw[1]} images with {k} "
                        f"label(s), not on --data {cfg.data}'s: pass the data it was trained on")
    cfg = dataclasses.replace(cfg, **{k: ckpt["config"][k] for k in shape if k in ckpt["config"]})
    model = _built(build, cfg)
    try:
        model.load_state_dict(ckpt["state"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{cfg.load}: checkpoint does not match this model ({first})") from None
    shutil.copyfile(cfg.load, out / "model.pt")
    print(f"loaded {cfg.load}; no training", flush=True)
    return cfg, model.eval(), ckpt["extra"]

def _built(build, cfg):
    try:  # the lessons' models say in a ValueError what shapes they take
        return build(cfg)
    except ValueError as e:
        raise UserError(str(e)) from None

# %% 7. Progress lines and pictures
DIVERGED = 1e6  # every loss here starts below a few thousand: beyond this, as bad as a NaN

class Progress:
    """One line every few seconds (step, figures, rate, time left); stops a diverged run."""

    def __init__(self, total: int, label: str = "train", every_s: float = 5.0):
        self.total, self.label, self.every_s = total, label, every_s
        self.start = self.last = time.perf_counter()

    def update(self, step: int, **values) -> None:
        for name, v in values.items():
            if not math.isfinite(v) or abs(v) > DIVERGED:
                raise UserError(f"training diverged at step {step} ({name} {v:.4g}); "
                                "try a smaller --lr; nothing was saved")
        now = time.perf_counter()
        if now - self.last < self.every_s and step != self.total:
            return
        self.last, rate = now, step / max(now - self.start, 1e-9)
        shown = "".join(f" {k} {v:.4g}" for k, v in values.items())
        print(f"{self.label} {step}/{self.total}{shown}, {rate:.3g}/s, "
              f"{format_seconds((self.total - step) / max(rate, 1e-9))} left", flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

def format_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"

def as_images(x) -> np.ndarray:
    """(N, 1, H, W) or (N, H, W) -> float32 (N, H, W) in [0, 1]; (N, 3, H, W) or (N, H, W, 3)
    -> (N, H, W, 3). NaN or infinity (divergence) refused."""
    x = np.asarray(x.detach().float().cpu() if isinstance(x, torch.Tensor) else x, np.float32)
    if not np.isfinite(x).all():
        raise UserError("the samples hold NaN or infinite values: the model diverged "
                        "(try a smaller --lr); nothing was saved")
    if x.ndim == 4 and x.shape[1] in (1, 3):  # channels first, as the models make them
        x = x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)
    return np.clip(x, 0.0, 1.0)

def tile(x, ncol: int, gap: int = 2) -> np.ndarray:
    """Images -> one (rows*(H+gap)-gap, ncol*(W+gap)-gap[, 3]) picture, thin grey gaps."""
    imgs = as_images(x)
    n, h, w = imgs.shape[:3]
    canvas = np.full((max(1, math.ceil(n / ncol)) * (h + gap) - gap, ncol * (w + gap) - gap,
                      *imgs.shape[3:]), 0.15 if imgs.ndim == 3 else 0.5, dtype=np.float32)
    for i, img in enumerate(imgs):
        r, c = divmod(i, ncol)
        canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = img
    return canvas

def show(path) -> Path:
    """In a notebook, show a saved picture or GIF below the cell; elsewhere, or without
    IPython (pip install -r requirements-notebook.txt), nothing: it is saved all the same."""
    if in_notebook():
        try:
            from IPython.display import Image, display
        except ImportError:
            return Path(path)
        display(Image(filename=str(path)))
    return Path(path)

def save_images(path, frames, ncol: int = 10, labels: list[str] | None = None,
                titles=None, fps: float = 4, hold_s: float = 1.5) -> Path:
    """Images (N, [C,] H, W) in [0, 1], grey ink dark on white like ink on paper (colour as it
    is), `ncol` to a row, each row labelled by `labels`: a PNG titled `titles`. A list of such
    image sets makes an animated GIF, each frame with its title, the last held `hold_s` s."""
    from matplotlib.animation import PillowWriter
    from matplotlib.figure import Figure

    canvases = [tile(f, ncol) for f in (frames if isinstance(frames, list) else [frames])]
    titles = [titles or ""] if isinstance(titles, str) or titles is None else titles
    h, w = canvases[0].shape[:2]
    left = 0.1 + 0.06 * max((len(part) for label in labels or [] for part in label.split("\n")),
                            default=0)  # inches for the row labels: 0.06 per character
    fig = Figure(figsize=(w / 50 + left, h / 50 + 0.3))  # two points per pixel
    ax = fig.add_axes((left / (w / 50 + left), 0, w / 50 / (w / 50 + left), h / (h + 15)))
    shown = ax.imshow(canvases[0], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    for r, label in enumerate(labels or []):
        ax.text(-3, (r + 0.5) * (h + 2) / len(labels) - 1, label, ha="right", va="center",
                fontsize=6)
    title = fig.text(0.5, 0.99, titles[0], ha="center", va="top", fontsize=7)
    if len(canvases) == 1:
        fig.savefig(path, dpi=120, bbox_inches="tight", pad_inches=0.05)  # nothing cut off
        return show(path)
    writer = PillowWriter(fps=fps)
    with writer.saving(fig, str(path), dpi=100):
        for i in list(range(len(canvases))) + [len(canvases) - 1] * int(hold_s * fps):
            shown.set_data(canvases[i])
            title.set_text(titles[i])
            writer.grab_frame()
    return show(path)

# %% 8. Scoring and the summary
def load_judge(data: Data):
    """judge.py's judge for this data; None and one line (the run goes on) without judge.py or
    for data it was not made for: it knows 28x28 grey digits in 10 classes."""
    shape = tuple(data.x_train.shape[1:])
    if shape != (1, 28, 28) or data.classes != 10:
        print(f"not scored: the judge knows 28x28 grey digits in 10 classes; these are "
              f"{'x'.join(map(str, shape))} images, {data.classes} label(s)")
        return None
    try:
        import judge
    except ImportError:
        print("scoring skipped: judge.py is not beside common.py, so nothing is judged")
        return None
    return judge.Judge.load(data)

def print_summary(metrics: dict, lines: list[tuple[str, str]] = ()) -> None:
    """The last lines: where the files went, the times, the run's own (key, meaning)s, and
    the judge's figures, each saying what it means and which way is better."""
    print(f"--- summary (the files are in {_finished[-1] if _finished else '--out'}) ---")
    for key, meaning in [("train_seconds", "training time"), ("sample_seconds", "sampling time"),
                         *lines]:
        value = metrics.get(key)
        if isinstance(value, float):
            value = format_seconds(value) if key.endswith("seconds") else f"{value:.4g}"
        if value is not None:
            print(f"{meaning}: {value}")
    if "fd" in metrics:
        import judge
        print("\n".join(judge.explain(metrics)))
