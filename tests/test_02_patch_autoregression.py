"""Tests for 02_patch_autoregression.py: the orders, the loss, generation, the contract."""
import importlib
import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import common
from helpers import check_outputs, one_line_error

mod = importlib.import_module("02_patch_autoregression")

DIVISORS = [k for k in range(1, 785) if 784 % k == 0]
orders = st.sampled_from(mod.ORDERS)
divisors = st.sampled_from(DIVISORS)


class RandomNet(torch.nn.Module):
    """A fixed random function of (values, known): enough to exercise generation."""

    def __init__(self, levels=4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.levels = levels
        self.w = torch.randn(2 * 784, levels * 784, generator=g) * 0.05

    def forward(self, values, known):
        k = known.float()
        return (torch.cat([values * k, k], 1) @ self.w).view(len(values), self.levels, 784)


# %% The orders partition the image
@settings(max_examples=40, deadline=None)
@given(order=orders, k=divisors, seed=st.integers(0, 10_000))
def test_groups_partition_the_pixels(order, k, seed):
    g = mod.groups(order, k, 3, torch.Generator().manual_seed(seed))
    assert g.shape == (3, 784)
    # every step reveals exactly k pixels, every pixel belongs to exactly one step
    for row in g:
        assert row.min() == 0 and row.max() == 784 // k - 1
        assert torch.equal(torch.bincount(row, minlength=784 // k), torch.full((784 // k,), k))


@settings(max_examples=30, deadline=None)
@given(k=divisors)
def test_contiguous_groups_are_patches_in_raster_order(k):
    h, w = mod.block_shape(k)
    assert h * w == k and 28 % h == 0 and 28 % w == 0
    g = mod.contiguous_groups(k).view(28, 28)
    for s in range(784 // k):
        rows, cols = (g == s).nonzero(as_tuple=True)
        assert rows.max() - rows.min() + 1 == h and cols.max() - cols.min() + 1 == w
        # raster order of patches: step s sits at patch row s // (28/w), patch column s % (28/w)
        assert rows.min() == (s // (28 // w)) * h and cols.min() == (s % (28 // w)) * w


def test_named_patch_shapes():
    assert [mod.block_shape(k) for k in (1, 4, 16, 49, 196, 784)] == [(1, 1), (2, 2), (4, 4), (7, 7), (14, 14), (28, 28)]


def test_scattered_orders_differ_between_images():
    g = mod.groups("scattered", 16, 2, torch.Generator().manual_seed(0))
    assert not torch.equal(g[0], g[1])


# %% Training masks and the loss
@settings(max_examples=25, deadline=None)
@given(order=orders, seed=st.integers(0, 10_000), ks=st.lists(divisors, min_size=1, max_size=4, unique=True))
def test_training_masks_match_one_generation_step(order, seed, ks):
    known, target = mod.training_masks(order, ks, 16, torch.Generator().manual_seed(seed))
    assert not (known & target).any()                       # nothing is both seen and predicted
    sizes = target.sum(1)
    assert all(int(n) in ks for n in sizes)                 # the target is one group of one of the ks
    assert ((known.sum(1) % sizes) == 0).all()              # after a whole number of steps
    w = mod.loss_weights(order, known, target)
    assert (w[known] == 0).all() and (w[target] == 1).all()
    if order == "contiguous":
        assert torch.equal(w.bool(), target)


@settings(max_examples=25, deadline=None)
@given(order=orders, seed=st.integers(0, 10_000))
def test_loss_ignores_revealed_pixels(order, seed):
    gen = torch.Generator().manual_seed(seed)
    known, target = mod.training_masks(order, [1, 4, 16, 49, 196, 784], 8, gen)
    logits = torch.randn(8, 4, 784, generator=gen, requires_grad=True)
    classes = torch.randint(4, (8, 784), generator=gen)
    loss = mod.masked_loss(logits, classes, mod.loss_weights(order, known, target))
    loss.backward()
    grad_per_pixel = logits.grad.abs().sum(1)               # (8, 784)
    assert (grad_per_pixel[known] == 0).all()
    assert (grad_per_pixel[target] > 0).all()
    # changing what the network says about revealed pixels changes nothing
    shaken = logits.detach() + 100 * known.unsqueeze(1) * torch.randn(8, 4, 784, generator=gen)
    again = mod.masked_loss(shaken, classes, mod.loss_weights(order, known, target))
    assert torch.allclose(again, loss.detach())


@settings(max_examples=25, deadline=None)
@given(k=st.sampled_from([1, 2, 4, 7, 8, 14]), seed=st.integers(0, 10_000))
def test_scattered_loss_is_the_average_next_group_loss(k, seed):
    """Splitting the M missing pixels into equal random groups of k: the mean of the
    groups' losses equals the loss on all missing pixels (section 4's identity)."""
    gen = torch.Generator().manual_seed(seed)
    missing = 56  # divisible by every k above
    known = torch.ones(1, 784, dtype=torch.bool)
    known[0, torch.randperm(784, generator=gen)[:missing]] = False
    logits, classes = torch.randn(1, 4, 784, generator=gen), torch.randint(4, (1, 784), generator=gen)
    everything = mod.masked_loss(logits, classes, mod.loss_weights("scattered", known, known))
    order = (~known[0]).nonzero().flatten()[torch.randperm(missing, generator=gen)]
    per_group = []
    for i in range(0, missing, k):
        t = torch.zeros(1, 784)
        t[0, order[i:i + k]] = 1
        per_group.append(mod.masked_loss(logits, classes, t))
    assert torch.allclose(torch.stack(per_group).mean(), everything, atol=1e-5)


# %% Generation
@settings(max_examples=12, deadline=None)
@given(order=orders, k=st.sampled_from([4, 16, 49, 196, 784]), seed=st.integers(0, 10_000))
def test_revealed_pixels_never_change(order, k, seed):
    net = RandomNet(seed=seed)
    x, steps, g = mod.generate(net, order, k, 3, 4, torch.Generator().manual_seed(seed), torch.device("cpu"),
                               batch=2, return_steps=True)
    assert steps.shape == (784 // k, 3, 784) and torch.equal(steps[-1], x)
    for s in range(784 // k):
        revealed = g <= s
        assert torch.equal(steps[s][revealed], x[revealed])          # fixed from the step they are drawn
        assert (steps[s][~revealed] == 0).all()                      # later groups untouched so far


def test_k1_raster_is_next_pixel_autoregression():
    """Contiguous k=1 is chapter 01: pixel i drawn from p(x_i | x_<i), in raster order."""
    assert torch.equal(mod.contiguous_groups(1), torch.arange(784))
    net = RandomNet(seed=3)
    got = mod.generate(net, "contiguous", 1, 2, 4, torch.Generator().manual_seed(7), torch.device("cpu"))
    # chapter 01's loop, written out: show pixels < i, draw pixel i, move on
    gen = torch.Generator().manual_seed(7)
    x = torch.zeros(2, 784, dtype=torch.long)
    for i in range(784):
        known = torch.arange(784).expand(2, 784) < i
        probs = F.softmax(net(mod.to_values(x, 4), known)[:, :, i], -1)
        x[:, i] = torch.multinomial(probs, 1, generator=gen).flatten()
    assert torch.equal(got, x)


def test_generation_is_deterministic_per_seed():
    net = RandomNet(seed=1)
    a, b, c = (mod.generate(net, "scattered", 16, 3, 4, torch.Generator().manual_seed(s), torch.device("cpu"))
               for s in (5, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_levels_round_trip():
    c = torch.arange(4)
    assert torch.equal(mod.to_classes(mod.to_values(c, 4), 4), c)


# %% The contract
def test_main_writes_the_contract_and_loads(tmp_path, capsys):
    argv = ["--steps", "3", "--samples", "6", "--ks", "16,784", "--hidden", "32", "--device", "cpu"]
    metrics = mod.main(argv + ["--out", str(tmp_path / "a")])
    check_outputs(tmp_path / "a", 6)
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert {(r["order"], r["k"]) for r in saved["sweep"]} == {(o, k) for o in mod.ORDERS for k in (16, 784)}
    for r in saved["sweep"]:
        assert r["evaluations"] == 784 // r["k"] and {"fd", "confidence"} <= set(r)
    head = next(r for r in saved["sweep"] if r["order"] == "scattered" and r["k"] == 16)
    assert head["fd"] == pytest.approx(saved["fd"])                 # samples.npz is the scattered k=16 point
    assert (tmp_path / "a" / "fd_vs_evaluations.png").is_file()
    assert (tmp_path / "a" / "sweep_samples.png").is_file()
    assert metrics["conclusions"]
    # --load: no training, same files
    mod.main(argv + ["--load", str(tmp_path / "a" / "model.pt"), "--out", str(tmp_path / "b")])
    loaded = check_outputs(tmp_path / "b", 6)
    assert loaded["train_seconds"] == 0


@pytest.mark.parametrize("argv,contains", [
    (["--ks", "1,5,16"], "does not divide"),
    (["--k", "3"], "does not divide"),
    (["--train-k", "100"], "does not divide"),
    (["--ks", "a,b"], "comma-separated"),
    (["--samples", "1"], "at least 2"),
    (["--load", "/nonexistent/model.pt"], "not found"),
])
def test_bad_inputs_are_one_line(argv, contains, capsys, tmp_path):
    one_line_error(mod.main, argv + ["--out", str(tmp_path)], capsys, contains)


def test_foreign_checkpoint_is_refused(tmp_path, capsys):
    path = tmp_path / "other.pt"
    common.save_checkpoint(path, "01_autoregressive_pixels", common.BaseConfig(), {})
    one_line_error(mod.main, ["--load", str(path), "--out", str(tmp_path)], capsys, "not 02_patch_autoregression")
