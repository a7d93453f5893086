"""common.py: the small, boring pieces the numbered scripts' drivers share; no lesson is here.
1. device; 2. main(), every mistake one line; 3. data; 4. flags; 5. the run folder, complete
or untouched; 6. samples, metrics, checkpoints; 7. progress and pictures; 8. the judge."""
from __future__ import annotations

import sys

_finished: list = []  # run folders this process has finished writing


def _interrupted() -> str:
    """What an interrupt leaves, whenever it comes: a run's files appear only when finished."""
    return f"interrupted; the run's files were already saved in {_finished[-1]}" if _finished \
        else "interrupted; nothing was saved (a run saves only when finished)"


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
    present = ["cpu", *["cuda"] * torch.cuda.is_available(),
               *["mps"] * bool(mps and mps.is_available())]
    if name == "auto":
        name = next(d for d in ("cuda", "mps", "cpu") if d in present)
    elif name not in present:
        raise UserError(f"device '{name}' is not available here; available: {', '.join(present)}")
    return torch.device(name)


def autocast(device):
    """bf16 on CUDA (about twice the matrix speed), float32 elsewhere (bf16 is slow on CPUs)."""
    cuda = torch.device(device).type == "cuda"
    return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()


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


def run_main(main, argv=None) -> int:
    """Run main(argv): a UserError, a failed write, Ctrl-C or SIGTERM becomes one line and an
    exit code. A terminal exits with the code; a notebook gets it back and goes on."""
    try:  # SIGTERM (from `timeout`, schedulers) raises KeyboardInterrupt, as Ctrl-C does
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
# images float32 (N, C, H, W) in [0, 1], C 1 or 3; labels int64 (N,); held out: never trained on
Data = collections.namedtuple("Data", "name x_train y_train x_held y_held classes", defaults=(10,))
MIN_IMAGES = 100  # the judge learns from four fifths and measures on the rest: 80 and 20


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """x uint8 (N, H, W) or (N, H, W, 3), y int64 0..K-1 (0 without 'y'); a flaw is one line."""
    if not Path(path).exists():  # the bundled digits live in the course's data/ folder
        raise UserError(f"data file not found: {path}; copy data/ too, or pass --data PATH")
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"], f["y"] if "y" in f.files else np.zeros(len(f["x"]), np.int64)
    except Exception as e:  # not a zip, not an .npz, no 'x'
        raise UserError(f"{path}: not an .npz with an array 'x' ({e})") from None
    labels = np.issubdtype(y.dtype, np.integer) and y.shape == (len(x),) and len(y) > 0
    if not ((x.ndim == 3 or x.ndim == 4 and x.shape[3] == 3) and x.dtype == np.uint8 and labels
            and len(x) >= MIN_IMAGES and len(np.unique(y)) == y.max() + 1 and y.min() == 0):
        raise UserError(f"{path}: need 'x' uint8 (N, H, W) or (N, H, W, 3), N >= {MIN_IMAGES}, "
                        "and 'y', if any, integer labels 0..K-1 (N,), each one used; found x "
                        f"{x.dtype} {x.shape}, y {y.dtype} {y.shape}"
                        + (f" {y.min()}..{y.max()}, {len(np.unique(y))} used" if labels else ""))
    return x, y.astype(np.int64)


def split_indices(y: np.ndarray, held_fraction: float = 0.2, seed: int = 1234):
    """(train, held) indices, stratified by class, by a fixed seed: --seed never moves images."""
    rng = np.random.default_rng(seed)
    parts = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    n = [int(round(len(idx) * held_fraction)) for idx in parts]
    # Shuffled across classes, so that "the first N held-out images" is a fair sample.
    return (rng.permutation(np.concatenate([i[k:] for i, k in zip(parts, n)])),
            rng.permutation(np.concatenate([i[:k] for i, k in zip(parts, n)])))


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
        x, y = load_npz(HERE / "data" / "mnist_5k.npz" if name == "mnist5k" else Path(name))
        train, held = split_indices(y)
    else:
        raise UserError(f"unknown data '{name}'; use mnist5k, mnist, or a path to an .npz file")
    # (N, H, W) -> (N, 1, H, W); (N, H, W, 3) -> (N, 3, H, W), as convolutions take them
    images = torch.from_numpy((x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2))
                              .astype(np.float32, order="C") / 255.0)
    y = torch.from_numpy(y)
    return Data(Path(name).stem, images[train], y[train], images[held], y[held], int(y.max()) + 1)


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


def parse_config(cls, argv=None, description: str = "", leave_out=()):
    """argv (else sys.argv, but not in a notebook: a kernel's arguments are not ours) -> a
    checked Config. Field foo_bar is flag --foo-bar (a bool one, --x and --no-x); --help keeps
    the docstring's lines and shows each flag's default, if it has one to show. Fields named
    in `leave_out` keep their defaults and are not offered: a script offers what it reads."""
    class OneLineParser(argparse.ArgumentParser):
        def error(self, message):
            raise UserError(f"{message} (see --help)")
    parser = OneLineParser(description=description,
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
# A run writes into a hidden .unfinished-* folder in --out, renamed .finished-* when done:
# then its files move in, replacing the last run's (those it did not remake go). Killed before
# the rename, it leaves --out as it was; during the move, the next run completes it.
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
        staging = Path(tempfile.mkdtemp(prefix=".unfinished-", dir=final))
        yield staging
        (staging / ".files").write_text("".join(p.name + "\n" for p in staging.iterdir()))
        os.replace(staging, final / staging.name.replace(".unfinished-", ".finished-"))
        _move_in(final)
        _finished.append(final)
    finally:
        for half in final.glob(".unfinished-*"):  # ours, even half-made, or a killed run's
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
            for name in [n for n in names if (done / n).exists()]:
                os.replace(done / name, final / name)
            for name in old - set(names):
                (final / name).unlink(missing_ok=True)
            os.replace(done / ".files", manifest)
        shutil.rmtree(done)


# %% 6. Samples, metrics and checkpoints; train or load
def save_samples(out: Path, x, y=None) -> None:
    """samples.npz: x float32 (N, H, W), or (N, H, W, 3) in colour, in [0, 1]; y, if given."""
    arrays = {"x": as_images(x)} if y is None else {"x": as_images(x), "y": np.int64(y)}
    np.savez_compressed(Path(out) / "samples.npz", **arrays)


def save_metrics(out: Path, metrics: dict) -> None:
    """metrics.json, strict JSON: numpy and torch numbers become Python's, NaN and inf null."""
    def plain(v):
        v = v.tolist() if isinstance(v, (torch.Tensor, np.ndarray, np.generic)) else v
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return None if isinstance(v, float) and not math.isfinite(v) else v
    text = json.dumps(plain(metrics), indent=2, allow_nan=False)
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
    """(cfg, model, extra): build(cfg) (a ValueError is one line, before training), trained by
    train(model) -> extra and saved as out/model.pt; or with --load, the checkpoint (not one
    made for other `data`), its `shape` settings replacing the flags', copied into out."""
    dims = None if data is None else [list(data.x_train.shape[1:]), data.classes]
    ckpt = load_checkpoint(cfg.load, script) if cfg.load else {"config": {}}
    if dims and ckpt.get("dims") not in (None, dims):
        raise UserError(f"{cfg.load} was made for {'x'.join(map(str, ckpt['dims'][0]))} images "
                        f"with {ckpt['dims'][1]} label(s): pass the --data it was trained on")
    cfg = dataclasses.replace(cfg, **{k: ckpt["config"][k] for k in shape if k in ckpt["config"]})
    try:  # the lessons' models say in a ValueError which shapes they take
        model = build(cfg)
    except ValueError as e:
        raise UserError(str(e)) from None
    if not cfg.load:
        extra = train(model)
        buffer = io.BytesIO()  # written by Python's own files: a full disk is one OSError
        torch.save({"script": script, "config": dataclasses.asdict(cfg), "dims": dims,
                    "state": model.state_dict(), "extra": extra}, buffer)
        (out / "model.pt").write_bytes(buffer.getvalue())
        return cfg, model.eval(), extra
    try:
        model.load_state_dict(ckpt["state"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{cfg.load}: checkpoint does not match this model ({first})") from None
    shutil.copyfile(cfg.load, out / "model.pt")
    print(f"loaded {cfg.load}; no training", flush=True)
    return cfg, model.eval(), ckpt["extra"]


# %% 7. Progress lines and pictures
DIVERGED = 1e6  # every loss here starts below a few thousand: beyond this, as bad as a NaN


class Progress:
    """A line at the first step, every few seconds and at the last; stops a diverged run."""

    def __init__(self, total: int, label: str = "train", every_s: float = 5.0):
        self.total, self.label, self.every_s = total, label, every_s
        self.start = self.last = time.perf_counter()

    def update(self, step: int, **values) -> None:
        for name, v in values.items():
            if not math.isfinite(v) or abs(v) > DIVERGED:
                raise UserError(f"training diverged at step {step} ({name} {v:.4g}); "
                                "try a smaller --lr; nothing was saved")
        now = time.perf_counter()
        if now - self.last < self.every_s and step not in (1, self.total):
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
    """In a notebook with IPython, show a saved picture or GIF below the cell; else nothing."""
    if in_notebook():
        with contextlib.suppress(ImportError):
            from IPython.display import Image, display
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
        ax.text(-3, (r + .5) * (h + 2) / len(labels) - 1, label, ha="right", va="center", size=6)
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
    """judge.py's judge, or None and one line why (no judge.py; data that are not digits)."""
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
    """Where the files went, the times, the run's (key, meaning)s and the judge's figures."""
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
