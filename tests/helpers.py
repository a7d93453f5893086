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


def lesson_module(script: str, lesson: list, driver: list, folder):
    """The chapter's lesson alone, as a student copies it into a file of their own: its
    imports but common, then the constants, functions and classes named in `lesson`, in
    file order, written into `folder` and imported where `common` cannot be imported.
    Every top-level name of the chapter is listed once, in `lesson` or in `driver`."""
    import ast
    import importlib.util
    import sys

    root = Path(__file__).resolve().parent.parent
    text = (root / f"{script}.py").read_text()
    lines, nodes, imports = text.splitlines(), {}, []
    for node in ast.parse(text).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = {a.name.split(".")[0] for a in node.names} | {getattr(node, "module", None)}
            if "common" not in names:
                imports.append(ast.get_source_segment(text, node))
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            nodes[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        nodes[name.id] = node
    assert not set(lesson) & set(driver), f"listed as both: {set(lesson) & set(driver)}"
    unlisted, undefined = set(nodes) - set(lesson) - set(driver), set(lesson + driver) - set(nodes)
    assert not unlisted and not undefined, \
        f"{script}: not listed as lesson or driver {sorted(unlisted)}; not defined {undefined}"
    chosen = sorted({id(nodes[n]): nodes[n] for n in lesson}.values(), key=lambda n: n.lineno)
    parts = []
    for node in chosen:
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        assert "common" not in used, f"{script}: the lesson's {getattr(node, 'name', '')} " \
                                     "uses common"
        first = (node.decorator_list[0].lineno if getattr(node, "decorator_list", None)
                 else node.lineno)
        parts.append("\n".join(lines[first - 1:node.end_lineno]))
    path = Path(folder) / f"lesson_{script[:2]}.py"
    path.write_text("\n".join(imports) + "\n\n\n" + "\n\n\n".join(parts) + "\n")
    saved = sys.modules.get("common")
    sys.modules["common"] = None  # import common now fails, as in a student's project
    try:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["common"]
        else:
            sys.modules["common"] = saved
    return module
