"""Tests for 01_autoregressive_pixels.py: the auto-regressive property, generation, the exact
likelihood and one pixel given the rest, the blurry whole-image predictor, and the contract."""
import importlib
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import common
from helpers import check_gif, check_outputs, one_line_error

mod = importlib.import_module("01_autoregressive_pixels")
CPU = torch.device("cpu")


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


# --- generation ---------------------------------------------------------------------------------
def test_argmax_generation_is_deterministic_and_gives_one_image():
    net = small_net(4, 3)
    a, _ = mod.generate(net, 5, CPU, "argmax")
    b, _ = mod.generate(net, 5, CPU, "argmax", seed=123)  # the seed plays no part
    assert torch.equal(a, b)
    assert all(torch.equal(a[0], row) for row in a)  # every "sample" is the same image


def test_seeded_sampling_is_reproducible_and_seeds_differ():
    net = small_net(4, 3)
    a, _ = mod.generate(net, 6, CPU, "sample", seed=7)
    b, _ = mod.generate(net, 6, CPU, "sample", seed=7)
    c, _ = mod.generate(net, 6, CPU, "sample", seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert mod.distinct(a) > 1  # sampling gives variety
    assert a.min() >= 0 and a.max() <= 2


def test_sampling_draws_levels_with_the_predicted_probabilities():
    # A one-pixel image: the only step is position 0, so frequencies must match softmax(logits).
    net = small_net(1, 4)
    with torch.no_grad():
        p = torch.softmax(net(torch.zeros(1, 1), torch.tensor([0])), 1)[0]
    n = 20_000
    x, _ = mod.generate(net, n, CPU, "sample", seed=1)
    freq = torch.bincount(x[:, 0], minlength=4).float() / n
    sigma = (p * (1 - p) / n).sqrt()
    assert torch.all((freq - p).abs() < 5 * sigma + 1e-4), (freq, p)


def test_generation_keeps_snapshots_of_the_first_images():
    net = small_net(3, 2)
    x, snaps = mod.generate(net, 3, CPU, "sample", snapshots=(0, 4, 9))
    assert torch.all(snaps[0] == 0)
    assert torch.equal(snaps[4][:, :4], x[:, :4]) and torch.all(snaps[4][:, 4:] == 0)
    assert torch.equal(snaps[9], x)
    y, kept = mod.generate(net, 3, CPU, "sample", snapshots=(0, 4, 9), keep=2)
    assert torch.equal(x, y), "keeping snapshots must not change the samples"
    assert all(torch.equal(kept[s], snaps[s][:2]) for s in snaps)


def test_generation_completes_a_given_start_without_changing_it():
    net = small_net(4, 3)
    start = torch.randint(3, (3, 6), generator=torch.Generator().manual_seed(2))
    x, _ = mod.generate(net, 3, CPU, "sample", seed=5, given=start)
    assert torch.equal(x[:, :6], start)
    y, _ = mod.generate(net, 3, CPU, "argmax", given=start[:1].expand(3, -1))
    assert all(torch.equal(y[0], row) for row in y)  # one start, one argmax completion


# --- the exact likelihood, and one pixel given the rest ------------------------------------------
def test_exact_nll_is_the_sum_of_per_step_cross_entropies():
    net = small_net(4, 3)
    levels = torch.randint(3, (5, 16), generator=torch.Generator().manual_seed(0))
    nll = mod.nll_per_image(net, levels, CPU, batch=2)
    tail = mod.nll_per_image(net, levels, CPU, batch=3, first=9)
    values = levels.float() / 2
    for b in range(len(levels)):
        steps = [F.cross_entropy(net(values[b:b + 1], torch.tensor([i])), levels[b, i:i + 1]).item()
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


def test_one_pixel_check_compares_the_truth_with_both_averages(data):
    net = small_net(28, 2, hidden=8)
    got = mod.one_pixel_check(net, data, 6, CPU)
    truth = mod.quantize(data.x_held[:6], 2)[:, mod.CENTRE].float()
    assert got["index"] == mod.CENTRE == 406 and got["images"] == 6
    assert got["truth"] == truth.tolist()
    assert got["dataset_mean"] == pytest.approx(
        float((data.x_train[:, 0, 14, 14] >= 0.5).float().mean()), abs=1e-6)
    probs = mod.pixel_given_rest(net, mod.quantize(data.x_held[:6], 2), mod.CENTRE, CPU)
    assert got["given_rest"] == pytest.approx(probs[:, 1].tolist(), abs=1e-6)  # K=2: p(ink)
    assert got["rms_given_rest"] == pytest.approx(
        math.sqrt(np.mean((np.array(got["given_rest"]) - truth.numpy()) ** 2)), abs=1e-6)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 16), st.integers(0, 1000))
def test_quantize_round_trip_is_within_half_a_level(levels, seed):
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    q = mod.quantize(x, levels)
    assert q.dtype == torch.long and q.min() >= 0 and q.max() <= levels - 1
    back = mod.to_images(q, levels)
    assert back.shape == (3, 4, 4)
    assert torch.all((back - x[:, 0]).abs() <= 0.5 / (levels - 1) + 1e-6)


# --- the blurry mess ----------------------------------------------------------------------------
@settings(max_examples=4, deadline=None)
@given(st.integers(0, 1000))
def test_whole_image_predictor_converges_to_the_mean(seed):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(6, 9, generator=g) > 0.5).float()  # six made-up 3x3 black-and-white digits
    torch.manual_seed(seed)
    model = mod.train_whole_image(images, steps=600, batch_size=6, gen=g)
    with torch.no_grad():
        out = model(torch.zeros(1, 9))[0]
    mean = images.mean(0)
    assert mod.rms(out, mean) < 0.05
    # ... and it is none of the images it was shown (unless they were all the same)
    if not torch.all(images == images[0]):
        assert min(mod.rms(out, im) for im in images) > mod.rms(out, mean)


# --- the contract -------------------------------------------------------------------------------
TINY = ["--steps", "3", "--batch-size", "8", "--positions", "2", "--hidden", "16",
        "--samples", "4", "--eval-images", "3", "--blur-steps", "3"]


def test_smoke_train_then_load_into_the_same_folder(tmp_path, judge, capsys):
    out = tmp_path / "run"
    mod.main(TINY + ["--out", str(out)])
    m = check_outputs(out, 4)
    for name in ("blur.png", "argmax_vs_sampling.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert check_gif(out / "generation.gif") <= len(mod.GIF_STEPS) + 12  # frames, then the hold
    for key in ("bits_per_pixel", "nats_per_image", "targets_per_second", "levels",
                "sample_seconds_per_image", "blur_fd", "argmax_inked_pixels", "total_seconds"):
        assert key in m
    assert m["evaluations_per_image"] == 784 and m["levels"] == 2
    assert m["argmax_identical"] is True and m["argmax_distinct"] == 1
    assert m["one_pixel"]["images"] == 3 and m["config"]["hidden"] == 16
    assert math.isclose(m["bits_per_pixel"], m["nats_per_image"] / 784 / math.log(2),
                        rel_tol=1e-9)
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("memorised:")

    model_bytes = (out / "model.pt").read_bytes()
    with np.load(out / "samples.npz") as f:
        samples = f["x"]
    # --hidden is not repeated: the network's shape comes from the checkpoint
    mod.main(["--load", str(out / "model.pt"), "--samples", "4", "--eval-images", "3",
              "--blur-steps", "3", "--out", str(out), "--no-gif"])
    assert (out / "model.pt").read_bytes() == model_bytes, "--load rewrote what it loaded"
    assert not (out / "generation.gif").exists()
    again = check_outputs(out, 4)
    with np.load(out / "samples.npz") as f:
        assert np.array_equal(f["x"], samples), "the loaded model samples what the trained one did"
    assert again["train_seconds"] == m["train_seconds"]  # the checkpoint's time survives
    assert again["targets_per_second"] == m["targets_per_second"]
    assert again["config"]["hidden"] == 16
    assert math.isclose(again["bits_per_pixel"], m["bits_per_pixel"], rel_tol=1e-6)


def test_bad_inputs_are_one_line_errors(tmp_path, judge, capsys):
    run = mod.main
    one_line_error(run, ["--levels", "1"], capsys, "--levels")
    one_line_error(run, ["--levels", "257"], capsys, "--levels")
    one_line_error(run, ["--temperature", "0"], capsys, "--temperature")
    one_line_error(run, ["--samples", "1"], capsys, "--samples")
    one_line_error(run, ["--device", "tpu"], capsys, "device")
    out = ["--out", str(tmp_path)]
    one_line_error(run, ["--load", str(tmp_path / "missing.pt")] + out, capsys, "not found")
    one_line_error(run, TINY + ["--data", str(tmp_path / "none.npz")] + out, capsys, "not found")
    foreign = tmp_path / "foreign.pt"
    common.save_checkpoint(foreign, "03_ddpm", mod.Config(), {})
    one_line_error(run, ["--load", str(foreign)] + out, capsys, "written by")
    broken = tmp_path / "broken.pt"
    common.save_checkpoint(broken, mod.SCRIPT, mod.Config(), {"nothing": torch.zeros(1)})
    one_line_error(run, TINY + ["--load", str(broken)] + out, capsys, "does not match")
    one_line_error(run, TINY + ["--batch-size", "100000"] + out, capsys, "larger than")
    assert not (tmp_path / "model.pt").exists()  # nothing reached --out
