"""Checks every script's tests share: the output contract and one-line errors."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import common

JUDGE_KEYS = ("n", "fd", "fd_floor", "fd_floor_n", "fd_ratio", "score", "confidence", "coverage",
              "memorised", "judge_accuracy")


def strict_json(path: Path) -> dict:
    """metrics.json parsed as strict JSON: a bare NaN or Infinity fails the test."""
    def refuse(constant):
        raise AssertionError(f"{path} holds a bare {constant}")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


def check_outputs(out: Path, n_samples: int, labelled: bool = False) -> dict:
    """samples.png, samples.npz, metrics.json and model.pt are written, complete and alone."""
    out = Path(out)
    for name in ("samples.png", "samples.npz", "metrics.json", "model.pt"):
        assert (out / name).is_file(), f"{name} missing from {out}"
    assert not list(out.glob(".unfinished-*")) and not list(out.glob(".finished-*"))
    assert (out / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(out / "samples.npz") as f:
        x = f["x"]
        assert x.dtype == np.float32 and x.shape == (n_samples, 28, 28)
        assert x.min() >= 0.0 and x.max() <= 1.0
        if labelled:
            y = f["y"]
            assert y.dtype == np.int64 and y.shape == (n_samples,)
            assert y.min() >= 0 and y.max() <= 9
    metrics = strict_json(out / "metrics.json")
    for key in JUDGE_KEYS + ("train_seconds", "sample_seconds"):
        assert key in metrics, f"metrics.json lacks {key}"
    assert metrics["n"] == n_samples
    return metrics


def check_gif(path: Path) -> int:
    """An animated GIF that Pillow can open, with more than one frame; returns the count."""
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "GIF"
        assert im.n_frames > 1, f"{path} has a single frame"
        return im.n_frames


def one_line_error(main, argv, capsys, contains: str = "") -> str:
    """Running main through common.run_main exits 2 with exactly one line on stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        common.run_main(main, argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err, err
    assert contains.lower() in err.lower(), err
    return err


def write_checkpoint(path, script: str, state: dict, config: dict | None = None) -> Path:
    """A checkpoint in the course's format, for tests of what --load does with odd ones."""
    torch.save({"script": script, "config": config or {}, "state": state, "extra": {}}, path)
    return Path(path)
