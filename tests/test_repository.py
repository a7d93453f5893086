"""Tests of the repository as a whole: what every script shares (its behaviour on bad input,
divergence and Ctrl-C), the siblings that must not drift, short lines, a chapter copied out
on its own, and README's numbers coming from the results file."""
import ast
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import common
from helpers import one_line_error

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.stem for p in ROOT.glob("[0-9][0-9]_*.py"))


# %% What every script shares
@pytest.mark.parametrize("script", SCRIPTS)
def test_out_that_is_a_file_is_one_line_and_left_alone(script, tmp_path, capsys):
    (tmp_path / "taken").write_text("mine")
    main = importlib.import_module(script).main
    one_line_error(main, ["--out", str(tmp_path / "taken")], capsys, "is a file")
    one_line_error(main, ["--out", str(tmp_path / "taken" / "below")], capsys, "cannot write")
    assert (tmp_path / "taken").read_text() == "mine"


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_seed_beyond_32_bits_is_one_line(script, tmp_path, capsys):
    main = importlib.import_module(script).main
    one_line_error(main, ["--seed", str(2**32), "--out", str(tmp_path)], capsys, "--seed")


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_diverged_run_stops_with_one_line_and_leaves_out_alone(script, tmp_path, capsys,
                                                                 monkeypatch):
    # Every script trains with Adam or AdamW; poisoning their update makes any loss diverge.
    for opt in (torch.optim.Adam, torch.optim.AdamW):
        real = opt.step

        def poisoned(self, *a, _real=real, **k):
            result = _real(self, *a, **k)
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.fill_(float("nan"))
            return result
        monkeypatch.setattr(opt, "step", poisoned)
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.pt").write_text("an earlier run's model")
    err = one_line_error(importlib.import_module(script).main,
                         ["--steps", "3", "--batch-size", "8", "--out", str(out)], capsys,
                         "diverged")
    assert "--lr" in err
    assert sorted(p.name for p in out.iterdir()) == ["model.pt"]
    assert (out / "model.pt").read_text() == "an earlier run's model"


def test_a_huge_learning_rate_names_the_step_and_saves_nothing(tmp_path, capsys):
    ddpm = importlib.import_module("03_ddpm")
    out = tmp_path / "run"
    err = one_line_error(ddpm.main, ["--lr", "1e9", "--steps", "30", "--batch-size", "8",
                                     "--channels", "8", "--samples", "4", "--out", str(out)],
                         capsys, "diverged")
    assert "step" in err and not [p for p in out.iterdir() if not p.name.startswith(".")]


def _interrupt(argv, after, wait_for=None, cwd=ROOT):
    proc = subprocess.Popen([sys.executable] + argv, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if wait_for:  # wait for a line of output, then interrupt
        for line in proc.stdout:
            if wait_for in line:
                break
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, err.strip()


@pytest.mark.parametrize("moment", ["start-up", "training"])
def test_ctrl_c_at_any_moment_is_one_line_and_saves_nothing(moment, tmp_path):
    out = tmp_path / "run"
    argv = ["03_ddpm.py", "--steps", "100000", "--batch-size", "8", "--channels", "8",
            "--out", str(out)]
    code, err = _interrupt(argv, 0.3, None if moment == "start-up" else "train ")
    assert code != 0 and "interrupted" in err and "\n" not in err, err
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")]


# %% Siblings stay diffable: what 04 shares with 03 is the same text
def _definitions(path: Path) -> dict:
    text = path.read_text()
    tree = ast.parse(text)
    return {node.name: ast.get_source_segment(text, node) for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


SIBLINGS = [("03_ddpm", "04_cfg", "new in 04"), ("04_cfg", "08_latent_diffusion", "new in 08"),
            ("06_vae", "08_latent_diffusion", "new in 08")]


@pytest.mark.parametrize("source, copy, mark", SIBLINGS)
def test_shared_pieces_are_word_for_word_unless_marked(source, copy, mark):
    ours, theirs = _definitions(ROOT / f"{copy}.py"), _definitions(ROOT / f"{source}.py")
    shared = sorted(set(ours) & set(theirs))
    assert len(shared) >= 3, shared
    drifted = [name for name in shared if ours[name] != theirs[name] and mark not in ours[name]]
    assert not drifted, f"{copy} changed {drifted} from {source} without '# {mark}'"


# %% Short lines, everywhere
def test_no_line_is_longer_than_100_characters():
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    long = []
    for name in files:
        if not (ROOT / name).is_file():  # deleted in the working tree, not yet committed
            continue
        if Path(name).suffix in (".py", ".sh", ".ini", ".txt", ".cfg") or name == ".ci/run":
            for i, line in enumerate((ROOT / name).read_text().splitlines(), 1):
                if len(line) > 100:
                    long.append(f"{name}:{i} ({len(line)})")
    assert not long, long


# %% A chapter copied out with common.py
def test_a_chapter_copied_out_with_common_runs(tmp_path):
    for name in ("03_ddpm.py", "common.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    env = dict(os.environ, GENCOURSE_CACHE=str(tmp_path / "cache"))
    tiny = ["03_ddpm.py", "--steps", "1", "--batch-size", "8", "--samples", "4", "--channels",
            "8", "--sample-steps", "1", "--no-gif"]
    missing = subprocess.run([sys.executable] + tiny, cwd=tmp_path, env=env, capture_output=True,
                             text=True)
    assert missing.returncode == 2 and "data/mnist_5k.npz" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "data" / "mnist_5k.npz", tmp_path / "data")
    env["GENCOURSE_CACHE"] = os.environ["GENCOURSE_CACHE"]  # the judge this test run trained
    done = subprocess.run([sys.executable] + tiny, cwd=tmp_path, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "runs" / "03_ddpm" / "samples.npz").is_file()


# %% README's numbers come from the results file
def test_readme_and_results_page_are_what_the_results_file_gives():
    sys.path.insert(0, str(ROOT / "scripts"))
    results = importlib.import_module("results")
    if not (ROOT / "docs" / "results.json").exists():
        pytest.skip("no docs/results.json yet: bash scripts/reproduce.sh writes it")
    res = json.loads((ROOT / "docs" / "results.json").read_text())
    readme = (ROOT / "README.md").read_text()
    assert results.replace_blocks(readme, results.blocks(res)) == readme, \
        "README's generated blocks differ: run python scripts/results.py render"
    assert (ROOT / "docs" / "results.md").read_text() == results.results_md(res)
