"""Tests for 01_autoregressive_pixels.py: the auto-regressive property, the input encoding,
generation and its temperature, the exact likelihood and one pixel given the rest, the
contract, and the chapter's three experiments (experiments/01_*.py)."""
import contextlib
import importlib
import io
import itertools
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import check_gif, check_outputs, one_line_error, strict_json, write_checkpoint

mod = importlib.import_module("01_autoregressive_pixels")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
blur_exp = importlib.import_module("01_blur")
pixel_exp = importlib.import_module("01_one_pixel")
argmax_exp = importlib.import_module("01_argmax")
CPU = torch.device("cpu")

# What a student copies (tests/test_repository.py takes it out alone, without common).
LESSON = ["SIDE", "quantize", "dequantize", "causal_window", "NextPixelNet", "train_step",
          "generate", "nll_per_image", "pixel_given_rest"]
DRIVER = ["SCRIPT", "Config", "train", "held_out_likelihood", "save_animation", "data_side",
          "load_or_train", "main"]


def travel(m):
    """One training step and a sample of two, on 16x16 grey images and on MNIST's 28x28."""
    for side in (16, m.SIDE):
        torch.manual_seed(0)
        model = m.NextPixelNet(side, levels=2, hidden=16)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        tokens = m.quantize(torch.rand(4, 1, side, side), 2)                # (4, side*side)
        before = model.head.weight.clone()
        loss = m.train_step(model, opt, tokens, 2, torch.Generator().manual_seed(0))
        assert math.isfinite(loss) and not torch.equal(before, model.head.weight)
        x = m.dequantize(m.generate(model.eval(), 2, "cpu", seed=1), 2)
        assert x.shape == (2, side, side) and set(x.unique().tolist()) <= {0.0, 1.0}
        nll = m.nll_per_image(model, tokens[:2], "cpu")
        assert nll.shape == (2,) and torch.isfinite(nll).all() and (nll > 0).all()


def test_the_lesson_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="levels >= 2"):
        mod.NextPixelNet(8, levels=1)
    with pytest.raises(ValueError, match="temperature > 0"):
        mod.generate(small_net(), 2, CPU, temperature=0)


def test_one_training_step_lowers_the_loss_on_its_batch():
    net = small_net(4, 3, hidden=32)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    tokens = torch.randint(3, (8, 16), generator=torch.Generator().manual_seed(0))
    first = mod.nll_per_image(net, tokens, CPU).mean()
    for _ in range(10):
        mod.train_step(net, opt, tokens, 16, torch.Generator().manual_seed(1))
    assert mod.nll_per_image(net, tokens, CPU).mean() < first


def small_net(side=4, levels=3, hidden=16, seed=0):
    """A small untrained network; its biases are randomised so that no output is trivially flat."""
    torch.manual_seed(seed)
    net = mod.NextPixelNet(side, levels, hidden)
    with torch.no_grad():
        net.head.bias.normal_()
    return net.eval()


# --- the auto-regressive property ---------------------------------------------------------------
@pytest.mark.parametrize("side,levels", [(4, 2), (5, 3)])
def test_output_for_pixel_i_has_no_gradient_from_pixels_at_or_after_i(side, levels):
    # MADE's self-test: backpropagate from each output and look at which inputs receive gradient.
    net = small_net(side, levels, hidden=24)
    n = side * side
    for i in range(n):
        values = torch.rand(1, n, requires_grad=True)
        logits = net(values, torch.tensor([i]))
        for k in range(levels):
            (grad,) = torch.autograd.grad(logits[0, k], values, retain_graph=True)
            assert torch.all(grad[0, i:] == 0), f"output {k} at i={i} depends on pixels >= i"
            if i > 0:  # it does use the earlier pixels: a network that sees nothing fails here
                assert torch.any(grad[0, :i] != 0), f"output {k} at i={i} ignores earlier pixels"


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 6), st.data())
def test_changing_pixels_at_or_after_i_leaves_the_prediction_unchanged(side, data):
    n = side * side
    i = data.draw(st.integers(0, n - 1))
    seed = data.draw(st.integers(0, 10_000))
    net = small_net(side, 3, seed=seed % 7)
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(3, (1, n), generator=g).float() / 2
    b = a.clone()
    b[0, i:] = torch.randint(3, (n - i,), generator=g).float() / 2
    pos = torch.tensor([i])
    with torch.no_grad():
        assert torch.equal(net(a, pos), net(b, pos))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 8), st.integers(0, 3), st.integers(0, 3))
def test_close_up_lists_only_earlier_pixels(side, rows, cols):
    table = mod.causal_window(side, rows, cols)
    n = side * side
    assert table.shape == (n, rows * (2 * cols + 1) + cols)
    for i in range(n):
        inside = table[i][table[i] != n]
        assert torch.all(inside < i)
        assert len(set(inside.tolist())) == len(inside)  # no pixel shown twice


@pytest.mark.parametrize("side,levels", [(2, 2), (5, 3), (28, 2)])
def test_a_known_paper_pixel_is_not_a_pixel_not_yet_drawn(side, levels):
    # Paper is level 0, value 0. With the position and the close-up silenced, only the whole
    # partial image tells the network anything: an all-paper canvas seen at the last step
    # (every other pixel known paper) must not look like the empty canvas of step 0.
    net = small_net(side, levels)
    with torch.no_grad():
        net.position.weight.zero_()
        net.close.weight.zero_()
        paper = torch.zeros(2, side * side)
        out = net(paper, torch.tensor([0, side * side - 1]))
    assert not torch.allclose(out[0], out[1]), "known paper is fed like a removed pixel"


# --- generation ---------------------------------------------------------------------------------
def known_logits_net(logits: torch.Tensor, side: int = 2) -> mod.NextPixelNet:
    """The real network with every weight 0 and the head's bias `logits`: at every position
    and for any canvas, its output is exactly `logits`."""
    net = mod.NextPixelNet(side, len(logits), hidden=8)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.head.bias.copy_(logits)
    return net.eval()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_sampling_draws_levels_from_softmax_of_logits_over_temperature(temperature):
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0])
    net = known_logits_net(logits)
    p = torch.softmax(logits / temperature, 0)
    n = 20_000
    x = mod.generate(net, n, CPU, "sample", temperature, seed=1)          # (n, 4): 4 pixels
    sigma = (p * (1 - p) / n).sqrt()
    for pixel in range(4):
        freq = torch.bincount(x[:, pixel], minlength=4).float() / n
        assert torch.all((freq - p).abs() < 5 * sigma + 1e-4), (temperature, pixel, freq, p)


def test_argmax_generation_is_deterministic_and_gives_one_image():
    net = small_net(4, 3)
    a = mod.generate(net, 5, CPU, "argmax")
    b = mod.generate(net, 5, CPU, "argmax", seed=123)  # the seed plays no part
    assert torch.equal(a, b)
    assert all(torch.equal(a[0], row) for row in a)  # every "sample" is the same image


def test_seeded_sampling_is_reproducible_and_seeds_differ():
    net = small_net(4, 3)
    a, b, c = (mod.generate(net, 6, CPU, "sample", seed=s) for s in (7, 7, 8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert argmax_exp.distinct(a) > 1  # sampling gives variety
    assert a.min() >= 0 and a.max() <= 2


def test_the_trace_follows_the_first_images_without_changing_them():
    net = small_net(5, 2)                                 # 25 pixels: traced at 0, 16 and 25
    x = mod.generate(net, 20, CPU, "sample", seed=3)
    trace = []
    y = mod.generate(net, 20, CPU, "sample", seed=3, trace=trace)
    assert torch.equal(x, y), "tracing must not change the samples"
    assert [s for s, _ in trace] == [0, 16, 25] and all(c.shape == (16, 25) for _, c in trace)
    assert torch.all(trace[0][1] == 0)
    assert torch.equal(trace[1][1][:, :16], x[:16, :16]) and torch.all(trace[1][1][:, 16:] == 0)
    assert torch.equal(trace[2][1], x[:16])


def test_generation_completes_a_given_start_without_changing_it():
    net = small_net(4, 3)
    start = torch.randint(3, (3, 6), generator=torch.Generator().manual_seed(2))
    x = mod.generate(net, 3, CPU, "sample", seed=5, given=start)
    assert torch.equal(x[:, :6], start)
    y = mod.generate(net, 3, CPU, "argmax", given=start[:1].expand(3, -1))
    assert all(torch.equal(y[0], row) for row in y)  # one start, one argmax completion


# --- the exact likelihood, and one pixel given the rest ------------------------------------------
def test_exact_nll_is_the_sum_of_per_step_cross_entropies():
    net = small_net(4, 3)
    tokens = torch.randint(3, (5, 16), generator=torch.Generator().manual_seed(0))
    nll = mod.nll_per_image(net, tokens, CPU, batch=2)
    tail = mod.nll_per_image(net, tokens, CPU, batch=3, first=9)
    values = tokens.float() / 2
    for b in range(len(tokens)):
        steps = [F.cross_entropy(net(values[b:b + 1], torch.tensor([i])), tokens[b, i:i + 1]).item()
                 for i in range(16)]
        assert math.isclose(nll[b].item(), sum(steps), rel_tol=1e-5)
        assert math.isclose(tail[b].item(), sum(steps[9:]), rel_tol=1e-5)


def every_image(side=2, levels=3):
    return torch.tensor(list(itertools.product(range(levels), repeat=side * side)))


def test_probabilities_of_all_images_sum_to_one():
    # With 2x2 pixels and 3 levels there are 81 images: enumerate them. An exact likelihood
    # model assigns them probabilities that sum to 1; a leak of future pixels would break this.
    nll = mod.nll_per_image(small_net(2, 3), every_image(), CPU)
    assert math.isclose(torch.exp(-nll).sum().item(), 1.0, rel_tol=1e-6)


@pytest.mark.parametrize("i", range(4))
def test_pixel_given_the_rest_matches_enumerating_every_image(i):
    # p(x_i = k | rest) by brute force: the joint probability of every image, normalised over
    # the images that agree with x everywhere except at pixel i.
    net = small_net(2, 3, seed=i)
    every = every_image()
    joint = torch.exp(-mod.nll_per_image(net, every, CPU))
    x = every[[5, 40, 77]]
    got = mod.pixel_given_rest(net, x, i, CPU)
    for row, probs in zip(x, got):
        rest = torch.cat([every[:, :i], every[:, i + 1:]], 1) == torch.cat([row[:i], row[i + 1:]])
        mask = rest.all(1)
        want = joint[mask] / joint[mask].sum()                 # ordered by the level at pixel i
        assert torch.equal(every[mask, i], torch.arange(3))
        assert torch.allclose(probs.double(), want, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 16), st.integers(0, 1000))
def test_quantize_round_trip_is_within_half_a_level(levels, seed):
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    q = mod.quantize(x, levels)
    assert q.shape == (3, 16) and q.dtype == torch.long and q.min() >= 0 and q.max() < levels
    back = mod.dequantize(q, levels)
    assert back.shape == (3, 4, 4)
    assert torch.all((back - x[:, 0]).abs() <= 0.5 / (levels - 1) + 1e-6)
    assert torch.equal(mod.quantize(back, levels), q)


def test_held_out_likelihood_scores_n_digits_in_bits_per_pixel(data):
    net = small_net(28, 2, hidden=8)
    got = mod.held_out_likelihood(net, data, 3, CPU)
    nats = mod.nll_per_image(net, mod.quantize(data.x_held[:3], 2), CPU).mean().item()
    assert got["nll_images"] == 3 and got["nats_per_image"] == pytest.approx(nats)
    assert got["bits_per_pixel"] == pytest.approx(nats / 784 / math.log(2))


# --- the experiments' ideas ---------------------------------------------------------------------
@settings(max_examples=3, deadline=None)
@given(st.integers(0, 1000))
def test_whole_image_predictor_converges_to_the_mean(seed):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(6, 9, generator=g) > 0.5).float()  # six made-up 3x3 black-and-white digits
    torch.manual_seed(seed)
    model = blur_exp.train_whole_image(images, steps=600, batch_size=6, gen=g)
    with torch.no_grad():
        out = model(torch.zeros(1, 9))[0]
    mean = images.mean(0)
    assert blur_exp.rms(out, mean) < 0.05
    # ... and it is none of the images it was shown (unless they were all the same)
    if not torch.all(images == images[0]):
        assert min(blur_exp.rms(out, im) for im in images) > blur_exp.rms(out, mean)


def test_one_pixel_check_compares_the_truth_with_both_averages(data):
    net = small_net(28, 2, hidden=8)
    got = pixel_exp.one_pixel_check(net, data, 6, CPU)
    truth = mod.quantize(data.x_held[:6], 2)[:, pixel_exp.CENTRE].float()
    assert got["index"] == pixel_exp.CENTRE == 406 and got["images"] == 6
    assert got["truth"] == truth.tolist()
    assert got["dataset_mean"] == pytest.approx(
        float((data.x_train[:, 0, 14, 14] >= 0.5).float().mean()), abs=1e-6)
    probs = mod.pixel_given_rest(net, mod.quantize(data.x_held[:6], 2), pixel_exp.CENTRE, CPU)
    assert got["given_rest"] == pytest.approx(probs[:, 1].tolist(), abs=1e-6)  # K=2: p(ink)
    assert got["rms_given_rest"] == pytest.approx(
        math.sqrt(np.mean((np.array(got["given_rest"]) - truth.numpy()) ** 2)), abs=1e-6)


# --- the contract -------------------------------------------------------------------------------
TINY = ["--steps", "3", "--batch-size", "8", "--positions", "2", "--hidden", "16",
        "--samples", "4", "--device", "cpu"]


def quietly(fn, *args):
    """fn(*args) and what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        fn(*args)
    return printed.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny run, trained, then loaded back into the same folder: shared by the tests of
    the contract and of the experiments."""
    out = tmp_path_factory.mktemp("01") / "run"
    printed = quietly(mod.main, TINY + ["--out", str(out)])
    m = check_outputs(out, 4)
    frames = check_gif(out / "generation.gif")
    model_bytes = (out / "model.pt").read_bytes()
    with np.load(out / "samples.npz") as f:
        samples = f["x"]
    # --levels 4 is overruled: the network's shape comes from the checkpoint
    mod.main(["--load", str(out / "model.pt"), "--samples", "4", "--levels", "4",
              "--out", str(out), "--no-gif", "--device", "cpu"])
    return SimpleNamespace(out=out, trained=m, printed=printed, frames=frames,
                           model_bytes=model_bytes, samples=samples)


def test_a_tiny_run_writes_the_contract(run):
    m = run.trained
    assert run.frames <= 784 // 16 + 2 + 12  # frames, then the hold
    for key in ("bits_per_pixel", "nats_per_image", "targets_per_second", "final_bits_per_pixel"):
        assert key in m
    assert m["evaluations_per_image"] == 784 and m["levels"] == 2 and m["nll_images"] == 4
    assert m["config"]["hidden"] == 16
    assert math.isclose(m["bits_per_pixel"], m["nats_per_image"] / 784 / math.log(2),
                        rel_tol=1e-9)
    assert "held-out bits per pixel" in run.printed


def test_load_into_the_same_folder_samples_what_was_trained(run):
    out, m = run.out, run.trained
    assert (out / "model.pt").read_bytes() == run.model_bytes, "--load rewrote what it loaded"
    assert not (out / "generation.gif").exists()
    again = check_outputs(out, 4)
    with np.load(out / "samples.npz") as f:
        assert np.array_equal(f["x"], run.samples), \
            "the loaded model samples what the trained one did"
    assert again["train_seconds"] == m["train_seconds"]  # the checkpoint's time survives
    assert again["targets_per_second"] == m["targets_per_second"]
    assert again["config"]["hidden"] == 16 and again["levels"] == 2
    assert math.isclose(again["bits_per_pixel"], m["bits_per_pixel"], rel_tol=1e-6)


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    run = mod.main
    one_line_error(run, ["--levels", "1"], capsys, "--levels")
    one_line_error(run, ["--levels", "257"], capsys, "--levels")
    one_line_error(run, ["--temperature", "0"], capsys, "--temperature")
    one_line_error(run, ["--samples", "1"], capsys, "--samples")
    one_line_error(run, ["--device", "tpu"], capsys, "device")
    out = ["--out", str(tmp_path)]
    one_line_error(run, ["--load", str(tmp_path / "missing.pt")] + out, capsys, "not found")
    one_line_error(run, TINY + ["--data", str(tmp_path / "none.npz")] + out, capsys, "not found")
    foreign = write_checkpoint(tmp_path / "foreign.pt", "03_ddpm", {})
    one_line_error(run, ["--load", str(foreign)] + out, capsys, "written by")
    broken = write_checkpoint(tmp_path / "broken.pt", mod.SCRIPT, {"nothing": torch.zeros(1)})
    one_line_error(run, TINY + ["--load", str(broken)] + out, capsys, "does not match")
    assert not (tmp_path / "model.pt").exists()  # nothing reached --out


# --- the experiments, end to end ----------------------------------------------------------------
def test_experiment_blur_writes_its_figures(tmp_path):
    blur_exp.main(["--steps", "3", "--samples", "4", "--device", "cpu",
                   "--out", str(tmp_path)])
    m = json_of(tmp_path)
    assert 0 <= m["blur_rms_to_mean"] <= 1 and 0 < m["digit_rms_to_mean"] < 1
    assert m["blur_n"] == 4 and {"blur_fd", "blur_fd_ratio", "blur_confidence",
                                 "blur_coverage"} <= set(m)
    assert (tmp_path / "blur.png").read_bytes()[:4] == b"\x89PNG"


def test_experiments_one_pixel_trains_and_argmax_loads_a_01_model(run, tmp_path):
    tiny = ["--steps", "2", "--batch-size", "8", "--positions", "2", "--hidden", "16",
            "--device", "cpu"]
    pixel_exp.main(tiny + ["--images", "3", "--out", str(tmp_path / "p")])
    m = json_of(tmp_path / "p")
    assert m["index"] == 406 and m["images"] == 3 and len(m["truth"]) == 3
    assert 0 <= m["rms_given_rest"] <= 1 and 0 <= m["rms_dataset_mean"] <= 1
    argmax_exp.main(["--load", str(run.out / "model.pt"), "--samples", "4",
                     "--device", "cpu", "--out", str(tmp_path / "a")])
    m = json_of(tmp_path / "a")
    assert m["argmax_identical"] is True and m["argmax_distinct"] == 1
    assert m["completions_argmax_distinct"] == 1 and m["sampled_n"] == 4
    assert 1 <= m["completions_sampled_distinct"] <= 5 and "sampled_fd_ratio" in m
    assert m["config"]["hidden"] == 16  # the checkpoint's width, not the flag's default
    assert (tmp_path / "a" / "argmax_vs_sampling.png").is_file()


def test_experiments_offer_only_the_flags_they_read(tmp_path, capsys):
    out = ["--out", str(tmp_path)]
    one_line_error(blur_exp.main, ["--load", "missing.pt"] + out, capsys, "unrecognized")
    one_line_error(blur_exp.main, ["--no-gif"] + out, capsys, "unrecognized")
    one_line_error(pixel_exp.main, ["--temperature", "2"] + out, capsys, "unrecognized")
    one_line_error(argmax_exp.main, ["--no-gif"] + out, capsys, "unrecognized")


def json_of(folder: Path) -> dict:
    return strict_json(folder / "metrics.json")


def test_on_images_that_are_not_digits_the_judge_says_it_means_little(run, tmp_path,
                                                                       quick_judge):
    # 150 noise images, 28x28 grey with labels 0-9: the judge is trained on them and fails,
    # and the summary says so, as every chapter's does.
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise.npz"
    np.savez(noise, x=rng.integers(0, 256, (150, 28, 28), dtype=np.uint8), y=np.arange(150) % 10)
    printed = quietly(mod.main, ["--load", str(run.out / "model.pt"), "--samples", "4",
                                 "--data", str(noise), "--out", str(tmp_path / "r"),
                                 "--no-gif", "--device", "cpu"])
    m = json_of(tmp_path / "r")
    assert m["judge_accuracy"] < 0.5 and "warning: the judge recognises" in printed, printed
