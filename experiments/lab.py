"""lab.py: what the experiments share. Each experiment measures one claim of README's
claims table by importing the chapter it is about and reusing its functions:

    import lab
    ddpm = lab.chapter("03_ddpm")      # the module 03_ddpm.py, as a chapter's own code

Every experiment takes the shared flags of common.BaseConfig (and its own), writes
metrics.json and its pictures into runs/<experiment>/ through common.run_folder, and
ends with a few lines of what it found. scripts/reproduce.sh runs them all.
"""
from __future__ import annotations

import importlib
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the chapters, common.py and judge.py

import common  # noqa: E402


def chapter(name: str):
    """A numbered chapter as a module: lab.chapter("03_ddpm")."""
    return importlib.import_module(name)


def judge(data):
    """The judge for `data`, or one line: what an experiment measures, the judge scores, and it
    scores only 28x28 grey digits (common.load_judge has just said why there is none)."""
    found = common.load_judge(data)
    if found is None:
        raise common.UserError("this experiment measures with the judge: it needs judge.py and "
                               "28x28 grey digits")
    return found


def parse_list(text: str, kind=int, flag_name: str = "list") -> list:
    """'1,4,16' -> [1, 4, 16], with one clear line for anything else."""
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise common.UserError(f"--{flag_name} must be a comma-separated list of "
                               f"{kind.__name__}s, got '{text}'") from None
    if not values or not all(math.isfinite(v) for v in values if isinstance(v, float)):
        raise common.UserError(f"--{flag_name} must be a comma-separated list of finite "
                               f"{kind.__name__}s, got '{text}'")
    return values


def read_metrics(path: str, keys, run_first: str) -> dict:
    """Another run's metrics.json, checked: a JSON object with a number at every one of
    `keys`; `run_first` names the command that writes it, for the error line."""
    try:
        other = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise common.UserError(f"{path} not found (run {run_first} first)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise common.UserError(f"{path} is not a readable metrics.json "
                               f"({type(e).__name__})") from None
    if not isinstance(other, dict):
        raise common.UserError(f"{path} holds no JSON object")
    missing = [k for k in keys if not isinstance(other.get(k), (int, float))]
    if missing:
        raise common.UserError(f"{path} lacks {', '.join(missing)}")
    return other


def timed(fn, *args, **kwargs):
    """(fn's result, its wall seconds)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def save_curves(path, series: list, xlabel: str, ylabel: str, floor: float | None = None,
                floor_label: str = "real digits (the floor)", log: bool = True) -> Path:
    """Lines, one per (label, xs, ys), log-log by default; a dashed line at the floor."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for label, xs, ys in series:
        ax.plot(xs, ys, "o-", label=label)
    if floor is not None:
        ax.axhline(floor, color="gray", ls="--", lw=1, label=floor_label)
    if log:
        ax.set(xscale="log", yscale="log")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return common.show(path)
