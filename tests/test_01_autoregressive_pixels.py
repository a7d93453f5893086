"""Tests for 01_autoregressive_pixels.py: the auto-regressive property, generation, the exact
likelihood, the blurry whole-image predictor, and the command-line contract."""
import importlib
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import common
from helpers import check_outputs, one_line_error

mod = importlib.import_module("01_autoregressive_pixels")


def small_net(side=4, levels=3, hidden=16, seed=0):
    """A small untrained network; its biases are randomised so that no output is trivially flat."""
    torch.manual_seed(seed)
    net = mod.NextPixelNet(side, levels, hidden)
    with torch.no_grad():
        net.head.bias.normal_()
    return net.eval()


# --- the auto-regressive property --------------------------------------------------------------
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
            if i > 0:  # and it does use the pixels before i: the test would catch a network that sees nothing
                assert torch.any(grad[0, :i] != 0), f"output {k} at i={i} ignores every earlier pixel"


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


# --- generation ----------------------------------------------------------------------------------
def test_argmax_generation_is_deterministic_and_gives_one_image():
    net = small_net(4, 3)
    a, _ = mod.generate(net, 5, torch.device("cpu"), "argmax")
    b, _ = mod.generate(net, 5, torch.device("cpu"), "argmax", seed=123)  # the seed plays no part
    assert torch.equal(a, b)
    assert all(torch.equal(a[0], row) for row in a)  # every "sample" is the same image


def test_seeded_sampling_is_reproducible_and_seeds_differ():
    net = small_net(4, 3)
    a, _ = mod.generate(net, 6, torch.device("cpu"), "sample", seed=7)
    b, _ = mod.generate(net, 6, torch.device("cpu"), "sample", seed=7)
    c, _ = mod.generate(net, 6, torch.device("cpu"), "sample", seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len({tuple(r.tolist()) for r in a}) > 1  # sampling gives variety
    assert a.min() >= 0 and a.max() <= 2


def test_sampling_draws_levels_with_the_predicted_probabilities():
    # A one-pixel image: the only step is position 0, so sample frequencies must match softmax(logits).
    net = small_net(1, 4)
    with torch.no_grad():
        p = torch.softmax(net(torch.zeros(1, 1), torch.tensor([0])), 1)[0]
    n = 20_000
    x, _ = mod.generate(net, n, torch.device("cpu"), "sample", seed=1)
    freq = torch.bincount(x[:, 0], minlength=4).float() / n
    sigma = (p * (1 - p) / n).sqrt()
    assert torch.all((freq - p).abs() < 5 * sigma + 1e-4), (freq, p)


def test_generation_keeps_snapshots_of_the_canvas():
    net = small_net(3, 2)
    x, snaps = mod.generate(net, 2, torch.device("cpu"), "sample", snapshots=(0, 4, 9))
    assert torch.all(snaps[0] == 0)
    assert torch.equal(snaps[4][:, :4], x[:, :4]) and torch.all(snaps[4][:, 4:] == 0)
    assert torch.equal(snaps[9], x)


# --- the exact likelihood --------------------------------------------------------------------------
def test_exact_nll_is_the_sum_of_per_step_cross_entropies():
    net = small_net(4, 3)
    levels = torch.randint(3, (5, 16), generator=torch.Generator().manual_seed(0))
    nll = mod.nll_per_image(net, levels, torch.device("cpu"), batch=2)
    values = levels.float() / 2
    for b in range(len(levels)):
        steps = [F.cross_entropy(net(values[b:b + 1], torch.tensor([i])), levels[b, i:i + 1]).item() for i in range(16)]
        assert math.isclose(nll[b].item(), sum(steps), rel_tol=1e-5)


def test_probabilities_of_all_images_sum_to_one():
    # With 2x2 pixels and 3 levels there are 81 images: enumerate them. An exact likelihood
    # model assigns them probabilities that sum to 1; a leak of future pixels would break this.
    net = small_net(2, 3)
    every = torch.tensor(list(itertools.product(range(3), repeat=4)))
    nll = mod.nll_per_image(net, every, torch.device("cpu"))
    assert math.isclose(torch.exp(-nll).sum().item(), 1.0, rel_tol=1e-6)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 16), st.integers(0, 1000))
def test_quantize_round_trip_is_within_half_a_level(levels, seed):
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    q = mod.quantize(x, levels)
    assert q.dtype == torch.long and q.min() >= 0 and q.max() <= levels - 1
    back = mod.to_images(q, levels)
    assert back.shape == (3, 4, 4)
    assert torch.all((back - x[:, 0]).abs() <= 0.5 / (levels - 1) + 1e-6)


# --- the blurry mess ------------------------------------------------------------------------------
@settings(max_examples=4, deadline=None)
@given(st.integers(0, 1000))
def test_whole_image_predictor_converges_to_the_mean(seed):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(6, 9, generator=g) > 0.5).float()  # six made-up 3x3 black-and-white "digits"
    torch.manual_seed(seed)
    model = mod.train_whole_image(images, steps=600, batch_size=6, gen=g)
    with torch.no_grad():
        out = model(torch.zeros(1, 9))[0]
    mean = images.mean(0)
    assert mod.rms(out, mean) < 0.05
    # ... and it is none of the images it was shown (unless they were all the same)
    if not torch.all(images == images[0]):
        assert min(mod.rms(out, im) for im in images) > mod.rms(out, mean)


# --- the contract ---------------------------------------------------------------------------------
TINY = ["--steps", "3", "--batch-size", "8", "--positions", "2", "--hidden", "16", "--samples", "4",
        "--eval-images", "3", "--blur-steps", "3"]


def test_smoke_train_then_load(tmp_path, judge, capsys):
    first = tmp_path / "train"
    mod.main(TINY + ["--out", str(first)])
    metrics = check_outputs(first, 4)
    for name in ("blur.png", "argmax_vs_sampling.png", "generation.png"):
        assert (first / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for key in ("bits_per_pixel", "nats_per_image", "targets_per_second", "sample_seconds_per_image",
                "evaluations_per_image", "blur_fd"):
        assert key in metrics
    assert metrics["evaluations_per_image"] == 784
    assert metrics["argmax_identical"] is True
    assert math.isclose(metrics["bits_per_pixel"], metrics["nats_per_image"] / 784 / math.log(2), rel_tol=1e-9)
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1].startswith("memorised:")

    second = tmp_path / "load"
    # --hidden is not repeated: the network's shape comes from the checkpoint
    mod.main(["--load", str(first / "model.pt"), "--samples", "3", "--eval-images", "3", "--blur-steps", "3",
              "--out", str(second)])
    reloaded = check_outputs(second, 3)
    assert reloaded["train_seconds"] == 0.0
    assert math.isclose(reloaded["bits_per_pixel"], metrics["bits_per_pixel"], rel_tol=1e-6)  # same weights, same NLL


def test_bad_inputs_are_one_line_errors(tmp_path, judge, capsys):
    run = mod.main
    one_line_error(run, ["--levels", "1"], capsys, "--levels")
    one_line_error(run, ["--temperature", "0"], capsys, "--temperature")
    one_line_error(run, ["--samples", "1"], capsys, "--samples")
    one_line_error(run, ["--device", "tpu"], capsys, "device")
    one_line_error(run, ["--load", str(tmp_path / "missing.pt")], capsys, "not found")
    one_line_error(run, TINY + ["--data", str(tmp_path / "none.npz"), "--out", str(tmp_path)], capsys, "not found")
    foreign = tmp_path / "foreign.pt"
    common.save_checkpoint(foreign, "03_ddpm", mod.Config(), {})
    one_line_error(run, ["--load", str(foreign), "--out", str(tmp_path)], capsys, "written by")
    broken = tmp_path / "broken.pt"
    common.save_checkpoint(broken, mod.SCRIPT, mod.Config(), {"nothing": torch.zeros(1)})
    one_line_error(run, TINY + ["--load", str(broken), "--out", str(tmp_path)], capsys, "does not match")
    one_line_error(run, TINY + ["--batch-size", "100000", "--out", str(tmp_path)], capsys, "larger than")


def test_generation_completes_a_given_start_without_changing_it():
    net = small_net(4, 3)
    given = torch.randint(3, (3, 6), generator=torch.Generator().manual_seed(2))
    x, _ = mod.generate(net, 3, torch.device("cpu"), "sample", seed=5, given=given)
    assert torch.equal(x[:, :6], given)
    y, _ = mod.generate(net, 3, torch.device("cpu"), "argmax", given=given[:1].expand(3, -1))
    assert all(torch.equal(y[0], row) for row in y)  # one start, one argmax completion
