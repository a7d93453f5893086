"""common.py: the small, boring pieces every numbered script shares.

Nothing here is about any one model. Read a numbered script first; come here
when it calls something. In order:

1. The device (CUDA, then Apple MPS, then the CPU), autocast and seeding:
   everything a GPU changes is in this section.
2. Errors a user can cause, and Ctrl-C, each reported as one line.
3. The data: the bundled 5,000 digits, full MNIST (downloaded once) or your
   own .npz, always split the same way into training and held-out images.
4. Flags: a script's Config dataclass becomes its command line.
5. The run folder: a run's files appear in --out complete, or not at all.
6. Training and pictures: the progress line (which also stops a run whose
   loss has diverged), image grids, labelled rows, curves, animated GIFs.
7. The judge: a small digit classifier trained once on the run's data, and
   the scores built on it (FD and its floor, confidence, coverage, label
   accuracy, memorisation).
"""
from __future__ import annotations

import sys


def _one_line_interrupt(kind, value, traceback):
    # Ctrl-C while the script is still importing torch (a second or two) would
    # print a traceback; once main() runs, run_main() handles it instead.
    if issubclass(kind, KeyboardInterrupt):
        print("interrupted while starting up; nothing was written", file=sys.stderr)
    else:
        sys.__excepthook__(kind, value, traceback)


sys.excepthook = _one_line_interrupt  # set before the slow imports below, on purpose

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import gzip  # noqa: E402
import hashlib  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = Path(__file__).resolve().parent
# Everything downloaded or computed once (full MNIST, the judge) is cached here.
# Set GENCOURSE_CACHE to move it.
CACHE_DIR = Path(os.environ.get("GENCOURSE_CACHE", Path.home() / ".cache" / "gencourse"))
SIDE = 28  # MNIST digits are 28 x 28


# %% 1. Device, autocast and seeding
def available_devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def pick_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then the CPU; an absent device is one clear error."""
    present = available_devices()
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if d in present))
    if name not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device '{name}'; choose auto, cpu, cuda or mps")
    if name not in present:
        raise UserError(f"device '{name}' is not available here; available: {', '.join(present)}")
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast on CUDA, where it roughly doubles matrix throughput; float32 elsewhere.

    On the CPU bf16 is slower on most laptops and costs accuracy, so it stays off.
    Losses and sampler arithmetic are done in float32 by the scripts either way.
    """
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch in one call; returns a seeded torch generator (CPU).

    Random numbers are drawn on the CPU and moved to the device, so one seed
    gives the same numbers on every machine's CPU.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# %% 2. Errors a user can cause, and Ctrl-C
class UserError(Exception):
    """A mistake in the command line, the data or a file: printed as one line."""


_finished: list[Path] = []  # run folders this process has finished writing (for the Ctrl-C line)


def run_main(main, argv=None) -> int:
    """Run a script's main(): a UserError, a failed write or Ctrl-C becomes one line."""
    try:
        main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    except OSError as e:  # a full disk, a folder removed under the run: the system's words
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or e}{where}; the output folder was left as it was",
              file=sys.stderr)
        raise SystemExit(2)
    except KeyboardInterrupt:
        if _finished:
            print(f"interrupted; the run's files were already saved in {_finished[-1]}",
                  file=sys.stderr)
        else:
            print("interrupted; nothing was saved (a run moves its files into --out only "
                  "when it has finished)", file=sys.stderr)
        raise SystemExit(130)
    return 0


# %% 3. Data
@dataclasses.dataclass
class Data:
    """Images as float32 tensors (N, 1, 28, 28) in [0, 1] and int64 labels.

    `train` is what models learn from; `held` (held out) is never trained on:
    likelihoods and the judge's floor are measured on it.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_held: torch.Tensor
    y_held: torch.Tensor


# The judge trains on four fifths of a data set and measures on the rest, so a
# set needs enough of both: 100 images give 80 to train on and 20 held out.
MIN_IMAGES = 100
BUNDLED_NAME = "mnist_5k.npz"


def bundled_data_path() -> Path:
    """data/mnist_5k.npz beside common.py, or in the current folder's data/."""
    for folder in (HERE / "data", Path.cwd() / "data", Path.cwd()):
        if (folder / BUNDLED_NAME).is_file():
            return folder / BUNDLED_NAME
    raise UserError(
        f"the bundled digits data/{BUNDLED_NAME} are not beside {HERE / 'common.py'}: copy the "
        f"course's data/{BUNDLED_NAME} into a data/ folder there, or pass --data mnist "
        "(downloads MNIST once) or --data PATH.npz")


def check_arrays(x, y, where: str, minimum: int = MIN_IMAGES) -> None:
    """Validate a digit set: x uint8 (N, 28, 28), y integer labels 0-9 of length N >= minimum."""
    if not isinstance(x, np.ndarray) or x.ndim != 3 or tuple(x.shape[1:]) != (SIDE, SIDE):
        raise UserError(f"{where}: 'x' must have shape (N, 28, 28), "
                        f"got {getattr(x, 'shape', None)}")
    if x.dtype != np.uint8:
        raise UserError(f"{where}: 'x' must be uint8 (0-255), got {x.dtype}")
    if len(x) < minimum:
        raise UserError(f"{where}: need at least {minimum} images, got {len(x)}")
    if not isinstance(y, np.ndarray) or y.ndim != 1 or len(y) != len(x):
        raise UserError(f"{where}: 'y' must have shape ({len(x)},), "
                        f"got {getattr(y, 'shape', None)}")
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


def split_indices(y: np.ndarray, held_fraction: float = 0.2,
                  seed: int = 1234) -> tuple[np.ndarray, np.ndarray]:
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
    return Data(name, _to_tensor(x[tr]), torch.from_numpy(y[tr]),
                _to_tensor(x[he]), torch.from_numpy(y[he]))


# Full MNIST: the four IDX files with the sha256 of each, and mirrors tried in order.
MNIST_FILES = {  # file name: sha256
    "train-images-idx3-ubyte.gz":
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz":
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz":
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz":
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
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


def download_file(name: str, sha256: str, folder: Path, mirrors: list[str],
                  timeout: float = 30.0) -> Path:
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
        print(f"downloading {name} from {mirror} (giving up on a mirror silent for "
              f"{timeout:.0f} s)", flush=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, \
                    urllib.request.urlopen(mirror + name, timeout=timeout) as resp:
                expected = resp.headers.get("Content-Length")
                copied = 0
                for block in iter(lambda: resp.read(1 << 16), b""):
                    out.write(block)
                    copied += len(block)
            if expected is not None and copied != int(expected):
                raise OSError(f"transfer cut short ({copied} of {expected} bytes)")
            got = sha256_of(Path(tmp))
            if got != sha256:
                raise OSError(f"checksum mismatch (sha256 {got[:12]}..., "
                              f"expected {sha256[:12]}...)")
            os.replace(tmp, target)
            return target
        except (OSError, http.client.HTTPException, ValueError) as e:  # URLError is an OSError
            problems.append(f"{mirror}: {getattr(e, 'reason', e)}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise UserError(
        f"could not download {name} (offline, or every mirror failed: {'; '.join(problems)}); "
        "use --data mnist5k, the bundled set, which works offline")


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
    """Full MNIST, downloaded once into CACHE_DIR/mnist. Held out: the 10,000 test digits."""
    folder = Path(folder) if folder is not None else CACHE_DIR / "mnist"
    files = files if files is not None else MNIST_FILES
    mirrors = mirrors if mirrors is not None else MNIST_MIRRORS
    paths = {n: download_file(n, s, folder, mirrors) for n, s in files.items()}
    arrays = {n: read_idx(p) for n, p in paths.items()}
    xs = [arrays[n] for n in files if "images" in n]
    ys = [arrays[n].astype(np.int64) for n in files if "labels" in n]
    for x, y, minimum in zip(xs, ys, (MIN_IMAGES * 4 // 5, MIN_IMAGES // 5)):
        check_arrays(x, y, str(folder), minimum)  # the training part, then the held-out part
    (x_tr, x_te), (y_tr, y_te) = xs, ys
    return Data("mnist", _to_tensor(x_tr), torch.from_numpy(y_tr),
                _to_tensor(x_te), torch.from_numpy(y_te))


def load_data(name: str = "mnist5k") -> Data:
    """`mnist5k` (bundled, default), `mnist` (full, downloaded once), or a path to an .npz."""
    if name == "mnist5k":
        x, y = load_npz(bundled_data_path())
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
    if batch_size > n:
        raise UserError(f"--batch-size {batch_size} is larger than the {n} training images")
    while True:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n - batch_size + 1, batch_size):
            idx = order[i:i + batch_size]
            yield x[idx], y[idx]


# %% 4. Flags: a Config dataclass becomes the command line
def flag(default, help: str, **limits):
    """A Config field: its default, its --help text, and optional `min`, `max`,
    `choices` and `multiple_of`, all checked by parse_config."""
    return dataclasses.field(default=default, metadata={"help": help, **limits})


@dataclasses.dataclass
class BaseConfig:
    """The flags every script shares. Scripts subclass this and add their own."""

    steps: int = flag(1000, "training steps (optimizer updates)", min=1)
    batch_size: int = flag(64, "images per training step", min=1)
    samples: int = flag(64, "how many samples to generate and evaluate", min=2)
    seed: int = flag(0, "same seed, same numbers on the CPU", min=0, max=2**32 - 1)
    device: str = flag("auto", "auto|cpu|cuda|mps", choices=["auto", "cpu", "cuda", "mps"])
    data: str = flag("mnist5k", "mnist5k (bundled), mnist (full, downloaded once) or a .npz path")
    out: str = flag("", "output folder (default runs/<script name>/)")
    load: str = flag("", "skip training: load this checkpoint, sample and evaluate")


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        # argparse prints usage plus the message; we keep it to one line like every other error.
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def parse_config(cls, argv=None, description: str = ""):
    """Build an argparse parser from a Config dataclass, parse argv, validate, return a Config.

    Each field `foo_bar` becomes `--foo-bar`; bools become `--x/--no-x`.
    """
    parser = _OneLineParser(description=description,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    kinds = {"int": int, "float": float, "str": str, "bool": bool}
    for f in dataclasses.fields(cls):
        flag_name = "--" + f.name.replace("_", "-")
        kind = f.type if isinstance(f.type, type) else kinds[f.type]
        kw = {"default": f.default, "help": f.metadata.get("help", " ")}
        if kind is bool:
            parser.add_argument(flag_name, action=argparse.BooleanOptionalAction, **kw)
        else:
            parser.add_argument(flag_name, type=kind, choices=f.metadata.get("choices"), **kw)
    cfg = cls(**vars(parser.parse_args(argv)))
    for f in dataclasses.fields(cls):
        value, meta = getattr(cfg, f.name), f.metadata
        name = "--" + f.name.replace("_", "-")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{name} must be a finite number, got {value}")
        if "min" in meta and value < meta["min"]:
            raise UserError(f"{name} must be at least {meta['min']}, got {value}")
        if "max" in meta and value > meta["max"]:
            raise UserError(f"{name} must be at most {meta['max']}, got {value}")
        if "multiple_of" in meta and value % meta["multiple_of"]:
            raise UserError(f"{name} must be a multiple of {meta['multiple_of']}, got {value} "
                            f"({meta['help']})")
    return cfg


def parse_list(text: str, kind=int, flag_name: str = "list") -> list:
    """'1,4,16' -> [1, 4, 16], with one clear line for anything else."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--{flag_name} must be a comma-separated list of {kind.__name__}s, "
                        f"got '{text}'") from None
    if not values:
        raise UserError(f"--{flag_name} must not be empty")
    return values


# %% 5. The run folder: complete files, or none at all
# A run writes everything into a hidden folder inside --out and moves the
# files in only when it has finished, each with one atomic rename. A run that
# fails, diverges or is interrupted leaves --out exactly as it was; files an
# earlier run wrote and this one did not remake are removed, so the folder
# always holds one run. A lock file refuses a second run on the same folder.
@contextlib.contextmanager
def run_folder(cfg, script_file: str):
    """with run_folder(cfg, __file__) as out: ... write files into out ..."""
    final = Path(cfg.out) if cfg.out else Path("runs") / Path(script_file).stem
    if final.exists() and not final.is_dir():
        raise UserError(f"--out {final} is a file; pass a folder")
    try:
        final.mkdir(parents=True, exist_ok=True)
        lock = _take_lock(final)
    except OSError as e:
        raise UserError(f"cannot write to --out {final} ({e.strerror or e})") from None
    staging = Path(tempfile.mkdtemp(prefix=".unfinished-", dir=final))
    try:
        yield staging
        _move_in(staging, final)
        _finished.append(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        lock.unlink(missing_ok=True)


def _take_lock(folder: Path) -> Path:
    lock = folder / ".lock"
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                raise UserError(f"another run (process {pid}) is writing to {folder}; "
                                "let it finish or pass another --out") from None
            lock.unlink(missing_ok=True)  # left behind by a run that was killed
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    for stale in folder.glob(".unfinished-*"):  # a killed run's half-written files
        shutil.rmtree(stale, ignore_errors=True)
    return lock


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _move_in(staging: Path, final: Path) -> None:
    manifest = final / ".files"  # the names the last run wrote
    old = set(manifest.read_text().split()) if manifest.exists() else set()
    new = sorted(p.name for p in staging.iterdir())
    for name in new:
        os.replace(staging / name, final / name)
    for name in old - set(new):
        (final / name).unlink(missing_ok=True)
    (staging / ".files").write_text("\n".join(new) + "\n")
    os.replace(staging / ".files", manifest)


def save_samples(out: Path, x, y=None) -> Path:
    """samples.npz: x float32 (N, 28, 28) in [0, 1]; y int64 labels where samples were asked for."""
    arrays = {"x": as_images(x)}
    if y is not None:
        arrays["y"] = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y, dtype=np.int64)
    path = Path(out) / "samples.npz"
    np.savez_compressed(path, **arrays)
    return path


def _plain(value):
    """metrics.json holds strict JSON: numpy and torch numbers become floats, NaN becomes null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
        return _plain(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_metrics(out: Path, metrics: dict) -> Path:
    path = Path(out) / "metrics.json"
    path.write_text(json.dumps(_plain(metrics), indent=2, allow_nan=False) + "\n")
    return path


def read_metrics(path: str, keys, run_first: str) -> dict:
    """Another run's metrics.json (for --compare), checked: a JSON object with a number at
    every one of `keys`; `run_first` names the script that writes it, for the error line."""
    try:
        other = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"--compare: {path} not found (run {run_first} first)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"--compare: {path} is not a readable metrics.json "
                        f"({type(e).__name__})") from None
    if not isinstance(other, dict):
        raise UserError(f"--compare: {path} holds no JSON object")
    missing = [k for k in keys if not isinstance(other.get(k), (int, float))]
    if missing:
        raise UserError(f"--compare: {path} lacks {', '.join(missing)}")
    return other


def print_summary(metrics: dict, keys: list[str]) -> None:
    """The run's last lines: times and quality figures, as in metrics.json."""
    print("--- summary ---")
    for k in keys:
        v = metrics.get(k)
        print(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}")


def save_checkpoint(path, script: str, config, state: dict, extra: dict | None = None) -> Path:
    torch.save({"script": script, "config": dataclasses.asdict(config), "state": state,
                "extra": extra or {}}, path)
    return Path(path)


def copy_checkpoint(src, out: Path) -> None:
    """A --load run keeps its folder complete with a byte-for-byte copy of what it loaded."""
    shutil.copyfile(src, Path(out) / "model.pt")


def load_checkpoint(path, script: str) -> dict:
    """Load a checkpoint written by `script`; missing, corrupt or foreign files are one error."""
    path = Path(path)
    if not path.is_file():
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


# %% 6. Training and pictures
# A loss far beyond anything these models start from has diverged as surely as
# a NaN: every loss in the course begins below a few thousand.
DIVERGED = 1e6


class Progress:
    """One line every few seconds (step, losses, steps/s, time left); stops a diverged run."""

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
        self.last = now
        rate = step / max(now - self.start, 1e-9)
        eta = (self.total - step) / max(rate, 1e-9)
        shown = " ".join(f"{k} {v:.4g}" for k, v in values.items())
        print(f"{self.label} {step}/{self.total} {shown} {rate:.1f} steps/s "
              f"ETA {format_seconds(eta)}", flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def format_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def as_images(x) -> np.ndarray:
    """(N, [1,] H, W) tensor or array -> float32 (N, H, W) clipped to [0, 1].

    NaN or infinite values mean the model diverged: refused, never saved or judged.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise UserError("the samples hold NaN or infinite values: the model diverged "
                        "(try a smaller --lr); nothing was saved")
    return np.clip(x[:, 0] if x.ndim == 4 else x, 0.0, 1.0)


def tile(x, ncol: int, gap: int = 2) -> np.ndarray:
    """Images (N, H, W) -> one (rows*(H+gap)-gap, ncol*(W+gap)-gap) picture, thin grey gaps."""
    imgs = as_images(x)
    n, h, w = imgs.shape
    rows = max(1, math.ceil(n / ncol))
    canvas = np.full((rows * (h + gap) - gap, ncol * (w + gap) - gap), 0.15, dtype=np.float32)
    for i, img in enumerate(imgs):
        r, c = divmod(i, ncol)
        canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = img
    return canvas


def pyplot():
    """matplotlib's pyplot on the Agg backend: files only, no window needed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_grid(path, x, nrow: int | None = None, title: str | None = None) -> Path:
    """Images (N, [1,] H, W) in [0, 1] as one PNG, ink dark on white like ink on paper."""
    n = len(x)
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    return save_rows(path, [("", x[i:i + nrow]) for i in range(0, n, nrow)], title=title)


def save_rows(path, rows: list, col_titles: list[str] | None = None,
              title: str | None = None) -> Path:
    """One labelled row of images per (label, images (n, [1,] H, W)) pair, as one PNG."""
    plt = pyplot()
    ncol = max(len(imgs) for _, imgs in rows)
    longest = max(max(len(part) for part in label.split("\n")) for label, _ in rows)
    fig, axes = plt.subplots(len(rows), 1, squeeze=False,
                             figsize=(ncol * 0.6 + 0.2 + 0.07 * longest,
                                      len(rows) * 0.62 + (0.35 if title or col_titles else 0.1)))
    for r, (ax, (label, imgs)) in enumerate(zip(axes[:, 0], rows)):
        canvas = tile(imgs, ncol)
        ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
        if r == 0 and col_titles:
            for c, text in enumerate(col_titles):
                ax.text(c * (canvas.shape[1] + 2) / ncol + 14, -3, text, ha="center",
                        va="bottom", fontsize=6)
    if title:  # above the top row, and above its column titles when there are some
        axes[0, 0].set_title(title, fontsize=8, pad=12 if col_titles else 4)
    fig.tight_layout(pad=0.3)
    # "tight" grows the picture to hold every label, so none is cut at the edge.
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    return Path(path)


def save_curves(path, series: list, xlabel: str, ylabel: str, floor: float | None = None,
                floor_label: str = "real digits (the floor)") -> Path:
    """Log-log lines, one per (label, xs, ys); a dashed line at the real-data floor."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, xs, ys in series:
        ax.plot(xs, ys, "o-", label=label)
    if floor is not None:
        ax.axhline(floor, color="gray", ls="--", lw=1, label=floor_label)
    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def save_animation(path, frames: list, captions: list[str], ncol: int,
                   row_labels: list[str] | None = None, fps: float = 8,
                   hold_s: float = 1.5) -> Path:
    """An animated GIF of generation in progress: each frame a grid of images (N, H, W).

    Frames play at `fps`; the last one is held for `hold_s` seconds so the
    finished digits can be seen before the loop starts again. matplotlib's
    Pillow writer makes the file, so nothing beyond matplotlib is needed.
    """
    from matplotlib.animation import PillowWriter

    plt = pyplot()
    canvases = [tile(f, ncol) for f in frames]
    h, w = canvases[0].shape
    # inches for the row labels on the left: about 0.06 per character at this font size
    margin = 0.1 + 0.06 * max((len(label) for label in row_labels or []), default=0)
    fig = plt.figure(figsize=(w / 50 + margin, h / 50 + 0.3), dpi=100)  # 2 pixels per pixel
    ax = fig.add_axes((margin / (w / 50 + margin), 0, 1 - margin / (w / 50 + margin),
                       (h / 50) / (h / 50 + 0.3)))
    shown = ax.imshow(canvases[0], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    rows = (h + 2) // (frames[0].shape[-2] + 2)
    for r, label in enumerate(row_labels or []):
        ax.text(-3, (r + 0.5) * h / rows, label, ha="right", va="center", fontsize=6)
    caption = fig.text(0.5, 0.99, captions[0], ha="center", va="top", fontsize=7)
    writer = PillowWriter(fps=fps)
    with writer.saving(fig, str(path), dpi=100):
        for i in list(range(len(canvases))) + [len(canvases) - 1] * int(hold_s * fps):
            shown.set_data(canvases[i])
            caption.set_text(captions[i])
            writer.grab_frame()
    plt.close(fig)
    return Path(path)


# %% 7. The judge: a small digit classifier, and the scores built on it
class JudgeNet(nn.Module):
    """Two conv blocks and a 128-wide feature layer: >= 98% on held-out digits,
    yet trained in well under a minute on two CPU cores."""

    FEATURES = 128

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # -> (B,32,14,14)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # -> (B,64,7,7)
            nn.Flatten(), nn.Dropout(0.3),
            nn.Linear(64 * 7 * 7, self.FEATURES), nn.ReLU(),              # -> (B,128): features
        )
        self.head = nn.Linear(self.FEATURES, 10)

    def forward(self, x):
        return self.head(self.body(x))


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    # Random translation by up to 2 pixels: cheap augmentation that makes a
    # 4,000-image classifier generalise like one trained on far more digits.
    pad = F.pad(x, (max_shift,) * 4)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,), generator=gen).tolist()
    return pad[:, :, dy:dy + SIDE, dx:dx + SIDE]


JUDGE_VERSION = 2
JUDGE_STEPS = 1240  # 20 passes over the bundled set's 4,000 training digits, 64 at a time


def train_judge(data: Data, steps: int = JUDGE_STEPS, seed: int = 0,
                verbose: bool = True) -> tuple[JudgeNet, float]:
    """Deterministic training on the CPU; returns the net and its held-out accuracy."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = JudgeNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    per_pass = max(1, len(data.x_train) // 64)
    start, done = time.perf_counter(), 0
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
    net.eval()
    acc = (judge_logits(net, data.x_held).argmax(1) == data.y_held).float().mean().item()
    if verbose:
        print(f"judge: trained in {time.perf_counter() - start:.1f}s, "
              f"held-out accuracy {acc:.4f}", flush=True)
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
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))  # one feature gives a 0-d cov


def frechet_distance(feats1, feats2) -> float:
    return fd_from_stats(*feature_stats(feats1), *feature_stats(feats2))


def classifier_score(probs) -> float:
    """The Inception Score idea, exp(E_x KL(p(y|x) || p(y))): 1 = all alike or all unsure,
    10 = confident and balanced."""
    p = np.asarray(probs, dtype=np.float64)
    marginal = p.mean(0, keepdims=True)
    kl = (p * (np.log(p + 1e-12) - np.log(marginal + 1e-12))).sum(1)
    return float(np.clip(np.exp(kl.mean()), 1.0, p.shape[1]))


def nearest_distances(x, ref, batch: int = 1000) -> np.ndarray:
    """Euclidean pixel distance from each image in x to its nearest image in ref."""
    # float32 is plenty for a nearest-neighbour test and keeps full MNIST (60,000 images) fast.
    a = torch.as_tensor(as_images(x)).flatten(1)
    b = torch.as_tensor(as_images(ref)).flatten(1)
    bb = (b * b).sum(1)
    out = []
    for i in range(0, len(a), batch):
        ai = a[i:i + batch]
        d2 = (ai * ai).sum(1, keepdim=True) - 2 * ai @ b.T + bb
        out.append(d2.clamp_min(0).min(1).values.sqrt())
    return torch.cat(out).numpy()


def fingerprint(data: Data) -> str:
    """A short hash of the training images and labels: which data a judge was trained on."""
    h = hashlib.sha256(data.x_train.numpy().tobytes())
    h.update(data.y_train.numpy().tobytes())
    return h.hexdigest()[:12]


class Judge:
    """The course's evaluator. Build with `Judge.load(data)`; call `evaluate(samples)`.

    The classifier is trained on the run's own training images, once per data
    set, and cached. FD and memorisation are measured against those training
    images; the floor uses the held-out ones.
    """

    MEMO_QUANTILE = 0.05  # see evaluate(): real held-out digits score this by construction
    _loaded: dict[str, "Judge"] = {}  # one judge per data set and cache, kept for the process

    def __init__(self, net: JudgeNet, data: Data, accuracy: float):
        self.net, self.data, self.accuracy = net.eval(), data, accuracy
        self.ref_stats = feature_stats(judge_features(net, data.x_train))
        self.held_feats = judge_features(net, data.x_held).numpy()
        held_nn = nearest_distances(data.x_held, data.x_train)
        self.memo_threshold = float(np.quantile(held_nn, self.MEMO_QUANTILE))
        self._floors: dict[int, float] = {}

    @classmethod
    def load(cls, data: Data, cache_dir: Path | None = None, verbose: bool = True) -> "Judge":
        """The cached judge for this data, trained once (about half a minute) if absent."""
        cache_dir = Path(cache_dir) if cache_dir is not None else CACHE_DIR
        path = cache_dir / f"judge-v{JUDGE_VERSION}-{fingerprint(data)}.pt"
        if str(path) in cls._loaded:
            return cls._loaded[str(path)]
        net, acc = JudgeNet(), None
        if path.exists():
            try:
                saved = torch.load(path, map_location="cpu", weights_only=True)
                net.load_state_dict(saved["state"])
                acc = float(saved["accuracy"])
            except Exception:  # a damaged cache file is simply trained again
                print(f"judge: the cached classifier {path} is damaged; training it again")
        if acc is None:
            if verbose:
                print("judge: first use with this data, training the digit classifier once "
                      "(cached afterwards)...", flush=True)
            with torch.random.fork_rng():
                net, acc = train_judge(data, JUDGE_STEPS, verbose=verbose)
            _save_judge(net, acc, path)
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
        """All of the judge's figures for a set of samples (N, [1,] 28, 28) in [0, 1].

        - fd: Frechet distance of judge features against the training digits, at this N.
        - fd_floor, fd_floor_n: the same for held-out real digits; fd_ratio = fd / floor.
        - score: classifier score in [1, 10]; confidence: mean top probability;
          coverage: classes the judge gives at least 1% of samples (and at least one).
        - label_accuracy: share matching `labels`, when samples were asked for a class.
        - memorised: share of samples closer to their nearest training image than
          95% of real held-out digits are to theirs (real digits score 0.05).
        """
        imgs = torch.as_tensor(as_images(x)).unsqueeze(1)
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
            "n": n, "fd": fd, "fd_floor": floor, "fd_floor_n": floor_n,
            "fd_ratio": fd / max(floor, 1e-12),
            "score": classifier_score(probs),
            "confidence": float(probs.max(1).mean()),
            "coverage": int((counts >= max(1, 0.01 * n)).sum()),
            "class_counts": counts.tolist(),
            "memorised": float((nearest_distances(imgs, self.data.x_train)
                                < self.memo_threshold).mean()),
        }
        if labels is not None:
            labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
            result["label_accuracy"] = float((pred == labels).mean())
        return result


def _save_judge(net: JudgeNet, acc: float, path: Path) -> None:
    """Cache the judge; an unwritable cache costs only the training time of the next run."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        os.close(fd)
        torch.save({"state": net.state_dict(), "accuracy": acc}, tmp)
        os.replace(tmp, path)
    except OSError as e:
        print(f"judge: cannot write the cache in {path.parent} ({e.strerror or e}); going on "
              "without it (set GENCOURSE_CACHE to a writable folder to keep the judge)")
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def describe(metrics: dict, prefix: str = "") -> str:
    """One human line for a judge result, FD always with its N and floor."""
    m = metrics
    line = (f"{prefix}FD {m['fd']:.2f} at N={m['n']} (floor {m['fd_floor']:.2f} at "
            f"N={m['fd_floor_n']}, {m['fd_ratio']:.1f}x) | score {m['score']:.2f} | "
            f"confidence {m['confidence']:.3f} | coverage {m['coverage']}/10 | "
            f"memorised {m['memorised']:.3f}")
    if "label_accuracy" in m:
        line += f" | label accuracy {m['label_accuracy']:.3f}"
    return line
