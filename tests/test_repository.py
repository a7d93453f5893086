"""Tests of the repository as a whole: the budgets that keep it small, what every script
shares (bad input, divergence, Ctrl-C, SIGTERM, a full disk), running in a notebook, the
siblings that must not drift, short lines, a chapter copied out on its own, and README's
numbers coming from the results file."""
import ast
import codeop
import importlib
import importlib.util
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import common
from helpers import check_outputs, lesson_module, one_line_error

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.stem for p in ROOT.glob("[0-9][0-9]_*.py"))
# Each chapter at its smallest: a step or two of its default network, a few samples.
TINY = {
    "01_autoregressive_pixels": ["--steps", "1", "--hidden", "16", "--positions", "2"],
    "02_patch_autoregression": ["--steps", "1", "--hidden", "32", "--k", "196"],
    "03_ddpm": ["--steps", "1", "--channels", "8", "--sample-steps", "2"],
    "04_cfg": ["--steps", "1", "--channels", "8", "--sample-steps", "2"],
    "05_gan": ["--steps", "2", "--width", "4", "--z-dim", "8", "--monitor-every", "1",
               "--monitor-n", "10"],
    "06_vae": ["--steps", "1", "--hidden", "16"],
    "07_causal_transformer": ["--steps", "1", "--d-model", "8", "--layers", "1", "--heads", "1"],
    "08_latent_diffusion": ["--steps", "1", "--vae-steps", "1", "--channels", "16",
                            "--sample-steps", "2"],
    "09_text_to_image": ["--steps", "1", "--channels", "8", "--sample-steps", "2"],
}


def tiny(script, samples=4):
    return TINY[script] + ["--samples", str(samples), "--batch-size", "8", "--device", "cpu"]


def test_every_chapter_has_its_tiny_settings():
    assert sorted(TINY) == SCRIPTS


# %% The budgets: one idea per file, a small shared module
def test_every_file_keeps_to_its_budget():
    over = []
    for script in SCRIPTS:
        text = (ROOT / f"{script}.py").read_text()
        lines, flags = len(_without_exercises(text).splitlines()), text.count("common.flag(")
        exercises = len(text.splitlines()) - lines  # the Exercises cell and the blank line above
        limit = 480 if script[:2] in ("07", "08", "09") else 400
        if lines > limit or flags > 10 or exercises > 25:
            over.append(f"{script}: {lines} lines (at most {limit}) and {exercises} of exercises "
                        f"(at most 25), {flags} flags (at most 10)")
    for name, limit in (("common.py", 480), ("judge.py", 250)):
        lines = (ROOT / name).read_text().splitlines()
        if len(lines) > limit:
            over.append(f"{name}: {len(lines)} lines (at most {limit})")
        # counted at PEP 8's spacing: two blank lines before each top-level definition
        for i, line in enumerate(lines):
            if re.match(r"def |class |@", line) and not lines[i - 1].startswith("@"):
                above = i - 1
                while lines[above].startswith("#"):
                    above -= 1
                if lines[above - 1:above + 1] != ["", ""]:
                    over.append(f"{name}:{i + 1}: not two blank lines above, as PEP 8 has it")
    assert not over, over


def test_chapters_share_only_common_and_optionally_judge():
    for script in SCRIPTS:
        tree = ast.parse((ROOT / f"{script}.py").read_text())
        imported = {a.name.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, (ast.Import, ast.ImportFrom))
                    for a in getattr(node, "names", [])}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        local = {p.stem for p in ROOT.glob("*.py")}
        assert imported & local <= {"common"}, (script, imported & local)


# %% The lesson travels: copied out alone, it works on other image shapes
@pytest.mark.parametrize("script", SCRIPTS)
def test_the_lesson_copied_out_alone_trains_and_samples_on_other_shapes(script, tmp_path):
    """Each chapter's test file lists its top-level names as LESSON or DRIVER and gives
    travel(m): on the lesson alone (module m, no common), one training loss with its
    backward pass and one sample of two images, on 3x32x32 colour images (the
    auto-regressive chapters: 16x16 grey ones) and on MNIST's 1x28x28."""
    own = importlib.import_module(f"test_{script}")
    own.travel(lesson_module(script, own.LESSON, own.DRIVER, tmp_path))


# %% What every script shares
@pytest.mark.parametrize("script", SCRIPTS)
def test_out_that_is_a_file_is_one_line_and_left_alone(script, tmp_path, capsys):
    (tmp_path / "taken").write_text("mine")
    main = importlib.import_module(script).main
    one_line_error(main, ["--out", str(tmp_path / "taken")], capsys, "is a file")
    one_line_error(main, ["--out", str(tmp_path / "taken" / "below")], capsys, "cannot write")
    one_line_error(main, ["--seed", str(2**32), "--out", str(tmp_path)], capsys, "--seed")
    assert (tmp_path / "taken").read_text() == "mine"


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
                         tiny(script) + ["--steps", "3", "--out", str(out)], capsys, "diverged")
    assert "--lr" in err
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == ["model.pt"]
    assert (out / "model.pt").read_text() == "an earlier run's model"


def _signal(argv, sig, after, wait_for=None, cwd=ROOT):
    # Ctrl-C as a terminal delivers it, even where the suite runs in the background (which
    # ignores SIGINT, and its children inherit that)
    proc = subprocess.Popen([sys.executable] + argv, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if wait_for:  # wait for a line of output, then signal
        for line in proc.stdout:
            if wait_for in line:
                break
    time.sleep(after)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, err.strip()


@pytest.mark.parametrize("moment, sig", [("start-up", signal.SIGINT), ("training", signal.SIGINT),
                                         ("training", signal.SIGTERM)])
def test_ctrl_c_or_sigterm_at_any_moment_is_one_line_and_saves_nothing(moment, sig, tmp_path):
    out = tmp_path / "run"
    argv = ["03_ddpm.py", "--steps", "100000", "--batch-size", "8", "--channels", "8",
            "--out", str(out)]
    code, err = _signal(argv, sig, 0.3, None if moment == "start-up" else "train ")
    assert code != 0 and "interrupted" in err and "\n" not in err, err
    assert not out.exists() or not [p for p in out.iterdir() if p.name != ".lock"]


def test_a_full_disk_is_one_line_and_leaves_the_folder_as_it_was(tmp_path):
    out = tmp_path / "run"
    argv = ["03_ddpm.py"] + tiny("03_ddpm") + ["--out", str(out)]
    assert common.run_main(importlib.import_module("03_ddpm").main, argv[1:]) == 0  # the first
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def small_files():  # at most 200 kB a file: the checkpoint (about 1 MB) cannot be written
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    done = subprocess.run([sys.executable] + argv + ["--seed", "1"], cwd=ROOT,
                          capture_output=True, text=True, preexec_fn=small_files)
    err = done.stderr.strip()
    assert done.returncode == 2 and "\n" not in err and err.startswith("error:"), err
    assert "left as it was" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# %% In a notebook: the kernel's arguments, no __file__, settings in the last cell
def _cells(script: str) -> list[str]:
    return re.split(r"\n(?=# %%)", (ROOT / f"{script}.py").read_text())


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_chapter_runs_cell_by_cell_as_a_notebook_kernel_runs_it(script, tmp_path, monkeypatch):
    cells = _cells(script)  # up to the Run-it cell: the Exercises cell after it holds comments
    cells = cells[:next(i for i, c in enumerate(cells) if c.startswith("# %% Run it")) + 1]
    assert "common.run_main(main)" in cells[-1]
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "/tmp/kernel-9.json"])
    monkeypatch.setitem(sys.modules, "ipykernel", type(sys)("ipykernel"))
    monkeypatch.chdir(tmp_path)
    space = {"__name__": "__main__"}  # as a kernel runs a notebook: no __file__
    run = codeop.Compile()  # compiles cell by cell, keeping __future__ imports, as IPython does
    for cell in cells[:-1]:
        exec(run(cell, f"<{script} cell>", "exec"), space)
    assert space["common"].parse_config(space["Config"], None) == space["Config"]()
    # The last cell with the settings a student would type there, as README says.
    edited = cells[-1].replace("common.run_main(main)", f"common.run_main(main, {tiny(script)!r})")
    exec(run(edited, f"<{script} last cell>", "exec"), space)
    check_outputs(tmp_path / "runs" / script, 4, labelled=script[:2] in ("04", "08", "09"))
    code = space["common"].run_main(space["main"], ["--steps", "0"])
    assert code == 2  # a mistake is one line and a code, and the kernel goes on


NOTEBOOK_EXTRAS = "pip install -r requirements-notebook.txt"


@pytest.mark.notebook
def test_a_chapter_executes_as_a_real_notebook_with_pictures_inline(tmp_path):
    """README's way: jupytext makes the notebook, a real kernel runs its cells."""
    for extra in ("nbclient", "nbformat", "ipykernel", "jupytext"):
        pytest.importorskip(extra, reason=NOTEBOOK_EXTRAS)
    import jupytext
    import nbclient
    import nbformat

    notebook = jupytext.read(ROOT / "03_ddpm.py")
    last = next(c for c in notebook.cells if "common.run_main(main)" in c.source)
    run = tiny("03_ddpm", 16) + ["--out", str(tmp_path / "run")]
    last.source = last.source.replace("common.run_main(main)", f"common.run_main(main, {run!r})")
    path = str(ROOT).replace("\\", "/")
    notebook.cells.insert(0, nbformat.v4.new_code_cell(f"import sys; sys.path.insert(0, {path!r})"))
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    pictures = [o for o in outputs if o["output_type"] == "display_data"]
    assert len(pictures) == 2 and all("image/png" in o["data"] or "image/gif" in o["data"]
                                      for o in pictures)  # samples.png and generation.gif
    text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert "summary" in text and "lower is better" in text
    check_outputs(tmp_path / "run", 16)


# %% Siblings stay diffable: what a chapter takes from another is the same text
def _definitions(path: Path) -> dict:
    """Each top-level function or class: (its source, the comment lines right above it)."""
    text = path.read_text()
    lines = text.splitlines()
    found = {}
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            first = (node.decorator_list[0] if node.decorator_list else node).lineno - 1
            above = first
            while above > 0 and lines[above - 1].startswith("#"):
                above -= 1
            found[node.name] = ("\n".join(lines[first:node.end_lineno]),
                                "\n".join(lines[above:first]))
    return found


SIBLINGS = [("03_ddpm", "04_cfg"), ("04_cfg", "08_latent_diffusion"),
            ("06_vae", "08_latent_diffusion"), ("04_cfg", "09_text_to_image")]


@pytest.mark.parametrize("source, copy", SIBLINGS)
def test_shared_pieces_are_word_for_word_unless_marked(source, copy):
    mark = f"new in {copy[:2]}"
    ours, theirs = _definitions(ROOT / f"{copy}.py"), _definitions(ROOT / f"{source}.py")
    shared = sorted(set(ours) & set(theirs))
    assert len(shared) >= 3, shared
    # Marked in its text, in the comment lines right above it, or in a comment naming it.
    comments = [line for line in (ROOT / f"{copy}.py").read_text().splitlines()
                if line.startswith("#") and mark in line]
    drifted = [name for name in shared if ours[name][0] != theirs[name][0]
               and mark not in ours[name][0] + ours[name][1]
               and not any(re.search(rf"\b{name}\b", line) for line in comments)]
    assert not drifted, f"{copy} changed {drifted} from {source} without '# {mark}'"


def test_what_a_chapter_says_it_takes_from_another_is_that_text():
    """A '# from NN' line above a definition (or '# from NN: a, b and c' above several)
    promises that text, word for word, unless marked 'new in' the chapter."""
    checked = 0
    for script in SCRIPTS:
        ours = _definitions(ROOT / f"{script}.py")
        text = (ROOT / f"{script}.py").read_text()
        for number, names in re.findall(r"^# from (\d\d)(?:: (.*))?$", text, re.M):
            source = next(s for s in SCRIPTS if s.startswith(number))
            theirs = _definitions(ROOT / f"{source}.py")
            listed = re.split(r", | and ", names) if names else \
                [n for n, (_, above) in ours.items() if f"# from {number}" in above]
            for name in listed:
                assert name in theirs, f"{script} says it takes {name} from {source}"
                if f"new in {script[:2]}" not in ours[name][0]:
                    assert ours[name][0] == theirs[name][0], f"{script}'s {name} drifted"
                checked += 1
    assert checked >= 10


def test_08_speaks_of_what_it_takes_not_of_04s_changes():
    assert "new in 04" not in (ROOT / "08_latent_diffusion.py").read_text()


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


@pytest.mark.notebook
def test_the_notebook_commands_readme_names_are_installed_with_the_extras():
    section = (ROOT / "README.md").read_text().split("## In a notebook or Colab")[1]
    commands = set(re.findall(r"^(jupytext|jupyter \w+)", section.split("\n## ")[0], re.M))
    assert commands >= {"jupytext", "jupyter nbconvert"}, commands
    for command in commands:
        if not shutil.which(command.replace(" ", "-")):
            pytest.skip(f"{command} is not installed: {NOTEBOOK_EXTRAS}")


# %% Your own images: colour and other sizes through --data
GREY_ONLY = ("01", "02", "07")  # pixels as grey levels: colour is one line
DIGITS_ONLY = ("09",)  # captions that describe digits: other images are one line


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """The shapes data set (32x32 colour, 4 classes) and a grey 16x16 version of it."""
    sys.path.insert(0, str(ROOT / "scripts"))
    make_shapes = importlib.import_module("make_shapes")
    folder = tmp_path_factory.mktemp("own")
    x, y = make_shapes.make_shapes(120)
    np.savez(folder / "colour.npz", x=x, y=y)
    np.savez(folder / "grey.npz", x=x.mean(-1)[:, ::2, ::2].astype(np.uint8), y=y)
    np.savez(folder / "odd.npz", x=x[:, :30, :30], y=y)  # 30: not divisible by 4
    return folder


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("kind, shape", [("colour", (32, 32, 3)), ("grey", (16, 16))])
def test_own_images_train_sample_and_save_unscored_or_are_refused_in_one_line(
        script, kind, shape, own_data, tmp_path, capsys):
    main = importlib.import_module(script).main
    argv = tiny(script) + ["--data", str(own_data / f"{kind}.npz"), "--out", str(tmp_path)]
    argv += ["--k", "16"] if script[:2] == "02" else []  # tiny's 196 does not divide 16x16
    if script[:2] in DIGITS_ONLY or (kind == "colour" and script[:2] in GREY_ONLY):
        one_line_error(main, argv, capsys)
        assert not list(tmp_path.iterdir())
        return
    capsys.readouterr()
    common.run_main(main, argv)
    said = capsys.readouterr().out
    assert "not scored" in said and "FD" not in said, said
    with np.load(tmp_path / "samples.npz") as f:
        assert f["x"].shape == (4, *shape) and f["x"].dtype == np.float32
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "fd" not in metrics and metrics["train_seconds"] > 0
    if kind == "colour":  # the pictures keep the colour
        from PIL import Image
        for name in ("samples.png", "generation.gif"):
            with Image.open(tmp_path / name) as im:
                rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
            assert (rgb.max(-1) > rgb.min(-1)).any(), name  # a grey picture has equal channels


def test_an_experiment_measuring_with_the_judge_refuses_other_images_in_one_line(capsys):
    sys.path.insert(0, str(ROOT / "experiments"))
    lab = importlib.import_module("lab")
    x, y = torch.zeros(8, 3, 32, 32), torch.zeros(8, dtype=torch.int64)
    one_line_error(lambda argv: lab.judge(common.Data("mine", x, y, x, y, 1)), [], capsys,
                   "28x28 grey digits")


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s[:2] in ("03", "04", "05", "08")])
def test_a_size_the_network_cannot_take_is_one_line_before_training(script, own_data, capsys):
    argv = tiny(script) + ["--data", str(own_data / "odd.npz"), "--out", str(own_data / "x")]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        common.run_main(importlib.import_module(script).main, argv)
    said = capsys.readouterr()
    assert "divisible by 4" in said.err and len(said.err.strip().splitlines()) == 1, said.err
    assert "train " not in said.out  # refused before any training step


def test_readmes_example_for_your_own_project_runs(tmp_path, monkeypatch):
    """README's example, at two training steps and two sampling steps instead of its own."""
    section = (ROOT / "README.md").read_text().split("## Use it in your own project")[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.splitlines()) <= 30
    small = code.replace("STEPS, BATCH, SAMPLE_STEPS = 1500, 64, 25",
                         "STEPS, BATCH, SAMPLE_STEPS = 2, 8, 2")
    assert small != code, "README's settings line changed: change this test with it"
    monkeypatch.chdir(tmp_path)
    exec(compile(small, "README's example", "exec"), {"__name__": "__main__"})
    from PIL import Image
    with Image.open(tmp_path / "my_samples.png") as im:
        assert im.size == (128, 128) and im.mode in ("RGB", "RGBA")


# %% A chapter copied out with common.py
def test_a_chapter_copied_out_runs_with_common_and_data_and_is_judged_with_judge(tmp_path):
    for name in ("03_ddpm.py", "common.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    env = dict(os.environ, GENCOURSE_CACHE=str(tmp_path / "cache"))
    argv = [sys.executable, "03_ddpm.py"] + tiny("03_ddpm") + ["--no-gif"]
    missing = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "data/mnist_5k.npz" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "data" / "mnist_5k.npz", tmp_path / "data")
    alone = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert alone.returncode == 0, alone.stderr
    assert "scoring skipped" in alone.stdout and "FD" not in alone.stdout
    assert (tmp_path / "runs" / "03_ddpm" / "samples.npz").is_file()
    shutil.copy(ROOT / "judge.py", tmp_path / "judge.py")
    env["GENCOURSE_CACHE"] = os.environ["GENCOURSE_CACHE"]  # the judge this test run trained
    judged = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert judged.returncode == 0, judged.stderr
    assert "FD" in judged.stdout and "fd" in json.loads(
        (tmp_path / "runs" / "03_ddpm" / "metrics.json").read_text())


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


# %% The verdicts in README's claims table follow their rules
def _blocks():
    sys.path.insert(0, str(ROOT / "scripts"))
    return importlib.import_module("readme_blocks")


def _spread(*per_seed):
    return {"mean": sum(per_seed) / len(per_seed), "min": min(per_seed), "max": max(per_seed)}


def test_the_order_verdict_rests_on_the_gap_beyond_the_k1_control():
    order_at_k = _blocks().order_at_k
    assert order_at_k(_spread(1.2, 1.4, 1.1), 0.2, 0.03) == "yes"
    assert order_at_k(_spread(1.2, 1.4, 0.9), 0.2, 0.03) == "partly"
    assert order_at_k(_spread(1.2, 1.4, 1.1), 0.03, 0.2) == "partly"
    assert order_at_k(_spread(0.8, 1.1, 0.9), 0.2, 0.03) == "no"  # within the control
    assert order_at_k(_spread(0.8, 0.9, 0.7), 0.2, 0.03) == "reversed"  # every seed below


def _sweep(over_control: dict):
    """02_sweep's metrics with the given ratio over the control per k (one seed each)."""
    ks = [1, *over_control, 784]
    fd = {o: {str(k): {"mean": v} for k, v in zip(ks, vals)} for o, vals in (
        ("scattered", (90, 100, 120, 450, 780)), ("contiguous", (180, 280, 470, 680, 780)))}
    ratio = {str(k): _spread(fd["contiguous"][str(k)]["mean"] / fd["scattered"][str(k)]["mean"])
             for k in ks}
    dep = {o: {str(k): {"given_nothing": d} for k, d in zip(ks, vals)} for o, vals in (
        ("contiguous", (0, .37, .21, .052, .036)), ("scattered", (0, .035, .035, .036, .036)))}
    return {"ks": ks, "seeds": [1], "fd": fd, "fd_contiguous_over_scattered": ratio,
            "dependence": dep, "ratio_over_control": {
                str(k): _spread(v) for k, v in ((1, 1.0), *over_control.items(), (784, 0.5))}}


def test_the_order_verdict_covers_every_k_of_its_row():
    b = _blocks()
    m = _sweep({4: 1.4, 16: 2.1, 196: 0.81})
    verdict = b.spread_out({"steps": {"02_sweep": {"metrics": m}}})[-1]
    assert verdict.startswith("yes at k = 4 and 16; **reversed at k = 196**: ")
    assert "not measured" in verdict
    assert b.order_verdict(_sweep({4: 1.4, 16: 2.1, 196: 1.2}), [4, 16, 196]) == \
        "yes at k = 4 to 196"


def test_the_07_against_01_verdict_says_both_bits_and_samples():
    versus = _blocks().versus_verdict
    assert versus(0.120, 0.123, 80.0, 50.0) == "yes, in held-out bits (0.120 against 0.123, " \
        "one run each: no seeds were run); **but its samples score a worse FD**"
    assert versus(0.100, 0.123, 40.0, 50.0) == "yes, in held-out bits"
    assert versus(0.125, 0.123, 40.0, 50.0) == "**no** (0.125 against 0.123, one run each: " \
                                               "no seeds were run)"


def test_the_targets_verdict_says_every_comparison_of_its_row():
    verdict = _blocks().targets_verdict
    fd = {"xprev": 886, "x0": 69.6, "eps": 267, "eps+minsnr": 69.2}
    assert verdict(fd, 28.5, 1015) == (
        "**partly**: x0 beat xprev; x0 beat plain eps; eps with min-SNR (03's default) matched "
        "x0 (69.2 against 69.6, one run each: no seeds were run); unclipped, 03's default "
        "model fails: FD 1,015 against 28.5")
    fd["eps+minsnr"] = 50.0
    assert verdict(fd, 28.5, 1015).startswith("yes: x0 beat xprev; x0 beat plain eps; eps "
                                              "with min-SNR (03's default) beat x0;")
    fd.update(xprev=60.0, eps=300.0, **{"eps+minsnr": 300.0})
    assert verdict(fd, 28.5, 30.0) == (
        "**no**: xprev beat x0; x0 beat plain eps; x0 beat eps with min-SNR (03's default); "
        "unclipped, 03's default model scores about the same (30)")


def test_the_whole_row_counts_in_the_sweep_steps_and_noising_verdicts():
    b = _blocks()
    sweep = {"ks": [1, 4, 784], "n": 500, "seeds": [1], "fd": {
        "scattered": {"1": {"mean": 90}, "4": {"mean": 85}, "784": {"mean": 780}},
        "contiguous": {"1": {"mean": 180}, "4": {"mean": 280}, "784": {"mean": 780}}}}
    res = {"steps": {"02_sweep": {"metrics": sweep}}}
    assert b.several_pixels(res)[-1] == "**partly: FD does not rise scattered from k = 1 to 4**"
    res["steps"]["03_sampling_steps"] = {"metrics": {"sweep": [
        {"evaluations": e, "fd": f, "n": 500} for e, f in ((5, 200), (25, 34), (50, 70))]}}
    res["derived"] = {"01_at_02s_n": {"fd": 57.0, "n": 500}}
    assert b.few_steps(res)[-1] == "**no**"  # passes at 25, but not at 50
    row = {"t": 1000, "plain_std": 4.5, "scaled_std": 0.995, "scaled_corr_with_x0": 0.006}
    res["steps"]["03_scale_down"] = {"metrics": {"rows": [row]}}
    assert b.scale_down(res)[-1] == "yes"
    row["scaled_corr_with_x0"] = 0.2  # the right spread, but the image still shows through
    assert b.scale_down(res)[-1] == "**no**"


def test_rows_comparing_different_networks_say_so():
    b = _blocks()
    res = {"steps": {
        "02_sweep": {"metrics": {"ks": [1, 16, 784], "n": 500, "seeds": [1, 2], "fd": {
            "scattered": {str(k): {"mean": v} for k, v in ((1, 90), (16, 130), (784, 780))},
            "contiguous": {str(k): {"mean": v} for k, v in ((1, 130), (16, 500), (784, 780))}}}},
        "03_sampling_steps": {"metrics": {"sweep": [
            {"evaluations": e, "fd": f, "n": 500} for e, f in ((5, 200), (25, 34), (50, 31))]}}},
        "derived": {"01_at_02s_n": {"fd": 57.0, "n": 500}}}
    assert b.noise(res)[-1].startswith("yes, at these settings; the networks differ")
    assert b.few_steps(res)[-1].endswith("03 passes 01 at 25 evaluations")
    res["derived"]["01_at_02s_n"]["fd"] = 10.0
    assert b.few_steps(res)[-1] == "**no**"


def test_the_prompt_verdict_needs_the_digit_and_every_word_at_every_scale():
    verdict = _blocks().prompt_verdict

    def row(s, acc, thin, thick):
        return {"guidance": s, "label_accuracy": acc, "follow_thin": thin, "follow_thick": thick}
    rows = [row(0, 0.1, 0.2, 0.3), row(1, 0.95, 0.8, 0.9), row(2.5, 0.97, 0.9, 0.95)]
    assert verdict(rows, ["thin", "thick"], 0.99) == "yes at s = 1 and 2.5"
    rows[1] = row(1, 0.85, 0.8, 0.4)  # the digit under 0.9 of real digits', and one word
    assert verdict(rows, ["thin", "thick"], 0.99) == \
        "**no at s = 1** (short of the rule: label accuracy 0.85, 'thick' followed 0.4); " \
        "yes at s = 2.5"
    rows[1] = row(1, 0.85, 0.8, 0.9)
    assert verdict(rows, ["thin", "thick"], 0.99).startswith("**partly at s = 1**")


def test_the_argmax_and_sketch_verdicts_follow_their_rules():
    b = _blocks()
    argmax = {"argmax_identical": True, "argmax_distinct": 1, "argmax_inked_pixels": 0,
              "sampled_n": 1000, "sampled_distinct": 1000, "sampled_fd_ratio": 10.8}
    assert b.argmax({"steps": {"01_argmax": {"metrics": argmax}}})[-1] == "yes"
    argmax["sampled_distinct"] = 999  # two samples alike: sampling did not vary every time
    assert b.argmax({"steps": {"01_argmax": {"metrics": argmax}}})[-1] == "**no**"
    argmax.update(sampled_distinct=1000, sampled_fd_ratio=100.0)  # all different, not digits
    assert b.argmax({"steps": {"01_argmax": {"metrics": argmax}}})[-1] == "**no**"
    rows = [{"guidance": s, "sketch_error": e, "label_accuracy": 0.9} for s, e in ((0, .13),
                                                                                  (2.5, .05))]
    sketch = {"sweep": rows, "other_digit_error": 0.128, "config": {"guidance": 2.5}}
    yes = "yes, for the one condition measured: a 7x7 sketch"
    assert b.sketch({"steps": {"09_sketch": {"metrics": sketch}}})[-1] == yes
    rows[1]["sketch_error"] = 0.1
    assert b.sketch({"steps": {"09_sketch": {"metrics": sketch}}})[-1] == "**no**"
    verdict = b.sketch_verdict
    guided = {"guidance": 2.5, "sketch_error": 0.005}
    assert verdict([{"sketch_error": 0.13}, guided], 0.128, 0.97) == yes
    assert verdict([{"sketch_error": 0.13}, guided], 0.128, 0.5) == "**no**"  # not its digit
    assert verdict([{"sketch_error": 0.01}, guided], 0.128, 0.97) == "**no**"  # no control
    assert verdict([{"sketch_error": 0.13}, {"sketch_error": 0.1}, guided], 0.128, 0.97) == \
        "**no**"  # one guided scale off its sketch


def test_the_blur_gan_vae_guidance_and_latent_verdicts_read_their_whole_row():
    b = _blocks()
    blur = {"blur_rms_to_mean": 0.0025, "digit_rms_to_mean": 0.26, "blur_fd_ratio": 249.0,
            "blur_confidence": 0.26, "blur_coverage": 1}
    assert b.blur({"steps": {"01_blur": {"metrics": blur}}})[-1] == "yes"
    blur["blur_confidence"] = 0.9  # near the average, yet the judge sees a digit
    assert b.blur({"steps": {"01_blur": {"metrics": blur}}})[-1] == "**no**"
    gan = b.gan_verdict
    assert gan(0.85, 0.70, 64.0, 46.0) == "yes; keeping the digits it rates most real still " \
                                          "improves FD: it still tells them apart"
    assert gan(0.848, 0.799, 64.0, 63.0) == "**no**: it fell 0.049, under the rule's 0.05; " \
        "keeping the digits it rates most real does not improve FD"
    vae = {"fd": 113.0, "fd_ratio": 22.3, "confidence": 0.86, "ae_fd": 1080.0,
           "ae_confidence": 0.4}
    assert b.vae({"steps": {"06": {"metrics": vae}}})[-1] == "yes"
    vae["ae_confidence"] = 0.9  # far in FD, yet as clearly digits
    assert b.vae({"steps": {"06": {"metrics": vae}}})[-1] == "**no**"
    sweep = [{"guidance": s, "label_accuracy": a, "diversity": d}
             for s, a, d in ((0, 0.09, 9.8), (1, 0.93, 8.5), (2, 0.99, 7.9))]
    guidance = {"sweep": sweep, "real_diversity": 9.0}
    assert b.guidance({"steps": {"04_guidance": {"metrics": guidance}}})[-1] == "yes"
    guidance["real_diversity"] = 10.0  # the unguided model less varied than real digits
    assert b.guidance({"steps": {"04_guidance": {"metrics": guidance}}})[-1] == "**no**"
    one = {"steps_per_second": 10.0, "batch_size": 64, "values_per_image": 784,
           "train_seconds": 212.0, "sample_seconds_per_image": 0.03, "fd": 22.5,
           "label_accuracy": 0.997}
    other = dict(one, steps_per_second=26.0, values_per_image=196, autoencoder_seconds=234.0,
                 sample_seconds_per_image=0.009, fd=25.7)
    latent = {"compare": {"04": one, "08": other}, "recon_fd": 6.5}
    assert b.latent({"steps": {"08_versus_04": {"metrics": latent}}})[-1] == "yes"
    other["label_accuracy"] = 0.9  # FD within bounds, but the labels followed less
    assert b.latent({"steps": {"08_versus_04": {"metrics": latent}}})[-1] == "**partly**"


# %% Exercises: what they ask runs, their patches apply, their answers come from the results
def _exercises():
    sys.path.insert(0, str(ROOT / "scripts"))
    return importlib.import_module("exercises")


def _without_exercises(text: str) -> str:
    """A chapter's text up to its Exercises cell, without the blank lines above it."""
    return text.split("\n# %% Exercises")[0].rstrip("\n") + "\n"


KINDS = ["Predict, then run", "Predict", "Change the code", "Explain"]  # rising difficulty


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_chapter_ends_with_three_to_five_exercises_in_rising_difficulty(script):
    found = _exercises().exercises(ROOT / f"{script}.py")
    assert 3 <= len(found) <= 5 and [e["number"] for e in found] == list(range(1, len(found) + 1))
    kinds = [e["kind"] for e in found]
    assert None not in kinds and "Change the code" in kinds and kinds[-1] == "Explain", kinds
    assert kinds == sorted(kinds, key=KINDS.index), kinds
    last = _cells(script)[-1]
    assert last.startswith("# %% Exercises") and all(
        line.startswith("#") for line in last.rstrip("\n").splitlines()), "comments only"
    assert all(e["patches"] for e in found if e["kind"] == "Change the code")


def test_the_course_holds_27_to_45_exercises_each_with_its_answer():
    ex = _exercises()
    assert 27 <= sum(len(ex.exercises(p)) for p in ex.chapters()) <= 45
    assert sorted(ex.ANSWERS) == sorted(p.name[:2] for p in ex.chapters())


def _script_module(script: str):
    """A chapter (01_x.py) or an experiment (experiments/01_x.py) as a module."""
    path = ROOT / script
    assert path.is_file(), f"{script} does not exist"
    if path.parent == ROOT:
        return importlib.import_module(path.stem)
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # for its `import lab`
    spec = importlib.util.spec_from_file_location(f"experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_command_in_an_exercise_names_flags_that_exist_with_valid_values():
    ex = _exercises()
    commands = [argv for p in ex.chapters() for e in ex.exercises(p) for argv in e["commands"]]
    assert commands
    for argv in commands:
        module = _script_module(argv[0])
        try:
            common.parse_config(module.Config, argv[1:])
        except common.UserError as e:
            pytest.fail(f"python {' '.join(argv)}: {e}")


SOLUTIONS = sorted((ROOT / "docs" / "solutions").glob("*.patch"))


def test_every_reference_patch_is_named_by_an_exercise_and_every_one_named_exists():
    ex = _exercises()
    named = {p for c in ex.chapters() for e in ex.exercises(c) for p in e["patches"]}
    assert named == {f"docs/solutions/{p.name}" for p in SOLUTIONS}


@pytest.mark.parametrize("patch", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_a_reference_patch_applies_to_its_chapter_and_the_patched_chapter_runs(patch, tmp_path):
    chapter = re.search(r"^\+\+\+ b/(\S+)", patch.read_text(), re.M).group(1)
    assert chapter.startswith(patch.name[:2]) and (ROOT / chapter).is_file()
    shutil.copy(ROOT / chapter, tmp_path / chapter)
    applied = subprocess.run(["git", "apply", str(patch)], cwd=tmp_path, capture_output=True,
                             text=True)
    assert applied.returncode == 0, applied.stderr
    assert (tmp_path / chapter).read_text() != (ROOT / chapter).read_text()
    name = f"solution_{patch.stem}"
    spec = importlib.util.spec_from_file_location(name, tmp_path / chapter)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import would: dataclasses look the module up
    try:
        spec.loader.exec_module(module)
        if hasattr(module, "EVAL_IMAGES"):
            module.EVAL_IMAGES = 16  # 07 scores 1,000 held-out digits; a few show it runs
        module.main(tiny(chapter[:-3], 2) + ["--no-gif", "--out", str(tmp_path / "run")])
    finally:
        del sys.modules[name]
    check_outputs(tmp_path / "run", 2, labelled=chapter[:2] in ("04", "08", "09"))


def _results():
    if not (ROOT / "docs" / "results.json").exists():
        pytest.skip("no docs/results.json yet: bash scripts/reproduce.sh writes it")
    return json.loads((ROOT / "docs" / "results.json").read_text())


def test_the_exercises_page_is_what_the_chapters_and_the_results_file_give():
    assert (ROOT / "docs" / "exercises.md").read_text() == _exercises().page(_results()), \
        "docs/exercises.md differs: run python scripts/results.py render"


def test_an_answer_shows_its_figures_once_reproduce_measures_them():
    ex, res = _exercises(), _results()
    for step, lesson, answer in (("01_temperature", "01", ex.a01_temperature),
                                 ("03_eta0", "03", ex.a03_eta),
                                 ("08_guidance4", "08", ex.a08_guidance)):
        measured = json.loads(json.dumps(res))
        measured["steps"].pop(step, None)
        assert f"reproduce.sh {step}" in answer(measured) and "12,345" not in answer(measured)
        measured["steps"][step] = {"metrics": {**res["steps"][lesson]["metrics"], "fd": 12345.0}}
        assert "12,345" in answer(measured) and "reproduce.sh" not in answer(measured)
