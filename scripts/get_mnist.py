"""Download the full MNIST (70,000 digits) once, for `--data mnist`.

    python scripts/get_mnist.py

Fetches the four IDX files from the first mirror that serves them, checks each
one's sha256, and writes them as one .npz (x uint8 (70000, 28, 28), y int64: the
60,000 training digits, then the 10,000 test digits, which every run holds out)
into the course's cache folder (~/.cache/gencourse, or $GENCOURSE_CACHE). A cut
or corrupted transfer leaves nothing a later run would trust.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # common.py
import common  # noqa: E402

FILES = {  # file name: sha256
    "train-images-idx3-ubyte.gz":
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz":
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz":
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz":
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MIRRORS = ["https://ossci-datasets.s3.amazonaws.com/mnist/",
           "https://storage.googleapis.com/cvdf-datasets/mnist/",
           "http://yann.lecun.com/exdb/mnist/"]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(name: str, sha256: str, folder: Path, mirrors: list[str],
             timeout: float = 30.0) -> Path:
    """`name` from the first mirror whose bytes have the right checksum. The bytes arrive in
    a temporary file, renamed into place only once checked."""
    target = folder / name
    if target.exists() and sha256_of(target) == sha256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    problems = []
    for mirror in mirrors:
        print(f"downloading {name} from {mirror}", flush=True)
        tmp = folder / f".{name}.{os.getpid()}.part"
        try:
            with urllib.request.urlopen(mirror + name, timeout=timeout) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f)
            if sha256_of(tmp) != sha256:
                raise OSError("checksum mismatch")
            os.replace(tmp, target)
            return target
        except (OSError, http.client.HTTPException, ValueError) as e:  # URLError is an OSError
            problems.append(f"{mirror}: {getattr(e, 'reason', None) or e}")
        finally:
            tmp.unlink(missing_ok=True)
    raise common.UserError(f"could not download {name} (offline, or every mirror failed: "
                           f"{'; '.join(problems)}); --data mnist5k works offline")


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file (MNIST's format): two zero bytes, type 0x08, ndim, sizes, bytes."""
    with gzip.open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:3] != b"\x00\x00\x08":
            raise common.UserError(f"{path}: not an IDX file of unsigned bytes")
        shape = np.frombuffer(f.read(4 * head[3]), dtype=">u4").astype(int)
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if len(shape) != head[3] or data.size != int(np.prod(shape)):
        raise common.UserError(f"{path}: truncated IDX file")
    return data.reshape(shape)


def fetch(folder: Path | None = None, mirrors: list[str] | None = None,
          files: dict[str, str] | None = None) -> Path:
    """Download (once) and convert: returns the path of mnist.npz in `folder`."""
    folder, files = Path(folder or common.CACHE_DIR), files or FILES
    x_tr, y_tr, x_te, y_te = (read_idx(download(n, s, folder / "mnist", mirrors or MIRRORS))
                              for n, s in files.items())
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise common.UserError(f"{folder / 'mnist'}: the images and labels do not match")
    out = folder / "mnist.npz"
    tmp = folder / f".mnist.{os.getpid()}.npz"
    np.savez_compressed(tmp, x=np.concatenate([x_tr, x_te]),
                        y=np.concatenate([y_tr, y_te]).astype(np.int64))
    os.replace(tmp, out)
    return out


def main(argv=None):
    print(f"full MNIST is in {fetch()}; use it with --data mnist")


if __name__ == "__main__":
    common.run_main(main)
