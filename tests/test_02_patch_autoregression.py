"""Tests for 02_patch_autoregression.py: the orders, the loss, the network's view of a
partial image, generation, the dependence measure, the contract, and experiments/02_sweep.py."""
import ast
import importlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import check_gif, check_outputs, one_line_error, strict_json, write_checkpoint

ROOT = Path(__file__).resolve().parent.parent
mod = importlib.import_module("02_patch_autoregression")
sys.path.insert(0, str(ROOT / "experiments"))
sweep = importlib.import_module("02_sweep")

DIVISORS = [k for k in range(1, 785) if 784 % k == 0]
orders = st.sampled_from(mod.ORDERS)
divisors = st.sampled_from(DIVISORS)
FAST = settings(max_examples=25, deadline=None)
CPU = torch.device("cpu")

# What a student copies (tests/test_repository.py takes it out alone, without common).
LESSON = ["SIDE", "ORDERS", "quantize", "dequantize", "square_ks", "check_k", "block_shape",
          "contiguous_groups", "scattered_groups", "groups", "MaskedPixelNet", "training_masks",
          "masked_loss", "train_step", "UNKNOWN", "generate"]
DRIVER = ["SCRIPT", "PIXELS", "Config", "train", "train_both", "data_side", "load_or_train",
          "save_animation", "main"]


def travel(m):
    """One training step and a sample of two, on 16x16 grey images and on MNIST's 28x28."""
    for side in (16, m.SIDE):
        torch.manual_seed(0)
        net = m.MaskedPixelNet(2, 16, side)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        tokens = m.quantize(torch.rand(4, 1, side, side), 2)                # (4, side*side)
        before = net.net[0].weight.clone()
        for order in m.ORDERS:
            loss = m.train_step(net, opt, tokens, order, m.square_ks(side),
                                torch.Generator().manual_seed(0))
            assert math.isfinite(loss) and not torch.equal(before, net.net[0].weight)
            x = m.generate(net.eval(), order, 16, 2, 2, torch.Generator().manual_seed(1), "cpu")
            assert x.shape == (2, side * side) and m.dequantize(x, 2).shape == (2, side, side)
            assert set(x.unique().tolist()) <= {0, 1}


def test_the_lesson_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="does not divide the 256 pixels"):
        mod.groups("scattered", 3, 1, torch.Generator(), side=16)
    with pytest.raises(ValueError, match="unknown order"):
        mod.groups("spiral", 4, 1, torch.Generator())
    with pytest.raises(ValueError, match="levels >= 2"):
        mod.MaskedPixelNet(1, 16)
    assert mod.square_ks(16) == [1, 4, 16, 64, 256]


class RandomNet(torch.nn.Module):
    """A fixed random function of (values, known), low rank to be cheap: enough to
    exercise generation."""

    def __init__(self, levels=4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.levels, self.side = levels, 28
        self.a = torch.randn(2 * 784, 8, generator=g) * 0.05
        self.b = torch.randn(8, levels * 784, generator=g) * 0.5

    def forward(self, values, known):
        k = known.float()
        h = torch.cat([values * k, k], 1) @ self.a                 # (B, 8)
        return (h @ self.b).view(len(values), self.levels, 784)


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
    assert [mod.block_shape(k) for k in (1, 4, 16, 49, 196, 784)] == [
        (1, 1), (2, 2), (4, 4), (7, 7), (14, 14), (28, 28)]


def test_scattered_orders_differ_between_images():
    g = mod.groups("scattered", 16, 2, torch.Generator().manual_seed(0))
    assert not torch.equal(g[0], g[1])


# %% Training masks and the loss
@FAST
@given(order=orders, seed=st.integers(0, 10_000),
       ks=st.lists(divisors, min_size=1, max_size=4, unique=True))
def test_training_masks_are_the_known_pixels_of_one_generation_step(order, seed, ks):
    known = mod.training_masks(order, ks, 16, torch.Generator().manual_seed(seed))
    for row in known:
        n = int(row.sum())
        if order == "contiguous":   # the first s patches in raster order, for one of the ks
            assert any(n % k == 0 and torch.equal(row, mod.contiguous_groups(k) < n // k)
                       for k in ks)
        else:                       # a whole number of steps, and at least one step left
            assert any(n % k == 0 and n <= 784 - k for k in ks)


def test_training_draws_k_in_proportion_to_its_steps():
    # ks 1 and 784: k=784 has one step (nothing known), k=1 has 784 (one with nothing known),
    # so about 2 examples in 785 know nothing; drawing k uniformly would make it half.
    known = mod.training_masks("contiguous", [1, 784], 4000, torch.Generator().manual_seed(0))
    assert (known.sum(1) == 0).float().mean() < 0.02


@FAST
@given(order=orders, seed=st.integers(0, 10_000))
def test_loss_covers_every_missing_pixel_and_no_revealed_one(order, seed):
    gen = torch.Generator().manual_seed(seed)
    known = mod.training_masks(order, [1, 4, 16, 49, 196, 784], 8, gen)
    logits = torch.randn(8, 4, 784, generator=gen, requires_grad=True)
    classes = torch.randint(4, (8, 784), generator=gen)
    loss = mod.masked_loss(logits, classes, (~known).float())
    loss.backward()
    grad_per_pixel = logits.grad.abs().sum(1)               # (8, 784)
    assert (grad_per_pixel[known] == 0).all() and (grad_per_pixel[~known] > 0).all()
    # changing what the network says about revealed pixels changes nothing
    shaken = logits.detach() + 100 * known.unsqueeze(1) * torch.randn(8, 4, 784, generator=gen)
    assert torch.allclose(mod.masked_loss(shaken, classes, (~known).float()), loss.detach())


@pytest.mark.parametrize("order", mod.ORDERS)
def test_both_orders_train_on_every_missing_pixel(order, monkeypatch, data):
    """Section 4: the same objective for both orders (not the next patch for contiguous)."""
    seen = {}
    masks, loss = mod.training_masks, mod.masked_loss

    def spy_masks(*args):
        seen["known"] = masks(*args)
        return seen["known"]

    def spy_loss(logits, classes, weights):
        seen["weights"] = weights
        return loss(logits, classes, weights)

    monkeypatch.setattr(mod, "training_masks", spy_masks)
    monkeypatch.setattr(mod, "masked_loss", spy_loss)
    cfg = mod.Config(steps=1, batch_size=8, hidden=16)
    mod.train(mod.MaskedPixelNet(2, 16), order, mod.quantize(data.x_train[:8], 2), cfg, [16],
              torch.Generator().manual_seed(0), CPU)
    assert torch.equal(seen["weights"], (~seen["known"]).float())


@FAST
@given(k=st.sampled_from([1, 2, 4, 7, 8, 14]), seed=st.integers(0, 10_000))
def test_scattered_loss_is_the_average_next_group_loss(k, seed):
    """Splitting the M missing pixels into equal random groups of k: the mean of the
    groups' losses equals the loss on all missing pixels (section 4's identity)."""
    gen = torch.Generator().manual_seed(seed)
    missing = 56  # divisible by every k above
    known = torch.ones(1, 784, dtype=torch.bool)
    known[0, torch.randperm(784, generator=gen)[:missing]] = False
    logits = torch.randn(1, 4, 784, generator=gen)
    classes = torch.randint(4, (1, 784), generator=gen)
    everything = mod.masked_loss(logits, classes, (~known).float())
    order = (~known[0]).nonzero().flatten()[torch.randperm(missing, generator=gen)]
    per_group = []
    for i in range(0, missing, k):
        t = torch.zeros(1, 784)
        t[0, order[i:i + k]] = 1
        per_group.append(mod.masked_loss(logits, classes, t))
    assert torch.allclose(torch.stack(per_group).mean(), everything, atol=1e-5)


# %% The network sees only the known pixels (the real MaskedPixelNet, not a stand-in)
@pytest.fixture(scope="module")
def real_net():
    torch.manual_seed(0)
    return mod.MaskedPixelNet(3, 64).eval()


@FAST
@given(seed=st.integers(0, 10_000), known_share=st.floats(0, 1))
def test_the_network_ignores_the_values_of_unknown_pixels(real_net, seed, known_share):
    gen = torch.Generator().manual_seed(seed)
    known = torch.rand(4, 784, generator=gen) < known_share            # a random mask per image
    a = torch.randint(3, (4, 784), generator=gen) / 2                 # values in {0, 0.5, 1}
    b = torch.where(known, a, torch.randint(3, (4, 784), generator=gen) / 2)  # unknown redrawn
    with torch.no_grad():
        assert torch.equal(real_net(a, known), real_net(b, known))
        if known.any():  # ... while the known pixels' values do count
            c = torch.where(known, 1 - a, a)
            assert not torch.allclose(real_net(a, known), real_net(c, known))


def test_the_network_tells_a_known_black_pixel_from_an_unknown_one(real_net):
    zeros = torch.zeros(1, 784)
    with torch.no_grad():
        assert not torch.allclose(real_net(zeros, zeros.bool()), real_net(zeros, ~zeros.bool()))


# %% Generation
@settings(max_examples=12, deadline=None)
@given(order=orders, k=st.sampled_from([4, 16, 49, 196, 784]), seed=st.integers(0, 10_000))
def test_revealed_pixels_never_change(order, k, seed):
    trace = []
    x = mod.generate(RandomNet(seed=seed), order, k, 3, 4, torch.Generator().manual_seed(seed),
                     torch.device("cpu"), batch=2, trace=trace)
    assert len(trace) == 784 // k and trace[0].shape == (2, 784)   # the first batch, each step
    assert torch.equal(trace[-1], mod.dequantize(x[:2], 4).flatten(1))
    for s, now in enumerate(trace):
        drawn = now != mod.UNKNOWN
        assert (drawn.sum(1) == (s + 1) * k).all()                  # k more pixels per step
        assert torch.equal(now[drawn], trace[-1][drawn])            # fixed once drawn


def test_k1_raster_is_next_pixel_autoregression():
    """Contiguous k=1 is chapter 01: pixel i drawn from p(x_i | x_<i), in raster order."""
    assert torch.equal(mod.contiguous_groups(1), torch.arange(784))
    net = RandomNet(seed=3)
    got = mod.generate(net, "contiguous", 1, 2, 4, torch.Generator().manual_seed(7),
                       torch.device("cpu"))
    # chapter 01's loop, written out: show pixels < i, draw pixel i, move on
    gen = torch.Generator().manual_seed(7)
    x = torch.zeros(2, 784, dtype=torch.long)
    for i in range(784):
        known = torch.arange(784).expand(2, 784) < i
        probs = F.softmax(net(mod.dequantize(x, 4).flatten(1), known)[:, :, i], -1)
        x[:, i] = torch.multinomial(probs, 1, generator=gen).flatten()
    assert torch.equal(got, x)


def test_generation_is_deterministic_per_seed():
    net = RandomNet(seed=1)
    a, b, c = (mod.generate(net, "scattered", 16, 3, 4, torch.Generator().manual_seed(s),
                            torch.device("cpu")) for s in (5, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_quantize_and_dequantize_are_01s_word_for_word():
    def source(name):
        text = (ROOT / f"{name}.py").read_text()
        return {n.name: ast.get_source_segment(text, n) for n in ast.parse(text).body
                if isinstance(n, ast.FunctionDef) and n.name in ("quantize", "dequantize")}
    assert source("02_patch_autoregression") == source("01_autoregressive_pixels")
    tokens = torch.arange(4).repeat(196).view(1, 784)
    assert torch.equal(mod.quantize(mod.dequantize(tokens, 4), 4), tokens)


# %% The dependence measure (section 6)
def test_independent_pixels_have_no_dependence():
    cov = np.diag([0.5, 1.0, 2.0, 0.1])
    assert sweep.mean_pair_correlation(cov[None]) == 0
    assert sweep.mean_pair_correlation(sweep.step_covariances(cov, np.array([[0, 1], [2, 3]]))) \
        == pytest.approx(0, abs=1e-12)


@FAST
@given(a=st.floats(0.1, 10), b=st.floats(0.1, 10), sign=st.sampled_from([-1, 1]))
def test_perfectly_correlated_pairs_score_one_and_constant_pixels_zero(a, b, sign):
    pair = np.array([[a * a, sign * a * b], [sign * a * b, b * b]])
    assert sweep.mean_pair_correlation(pair[None]) == pytest.approx(1)
    with_constant = np.zeros((3, 3))
    with_constant[:2, :2] = pair          # pixel 2 never changes: its two pairs count 0
    assert sweep.mean_pair_correlation(with_constant[None]) == pytest.approx(1 / 3)
    assert sweep.mean_pair_correlation(pair[None, :1, :1]) == 0   # one pixel, no pairs


def test_conditioning_on_a_common_cause_removes_the_correlation():
    # x1 = z + e1, x2 = z + e2 are correlated 1/2, and independent given z. Step 0 reveals
    # z and an unrelated pixel w, step 1 the pair (x1, x2).
    cov = np.array([[1.0, 0, 1, 1], [0, 1, 0, 0], [1, 0, 2, 1], [1, 0, 1, 2]])
    steps = np.array([[0, 1], [2, 3]])
    assert sweep.mean_pair_correlation(cov[None, 2:, 2:]) == pytest.approx(0.5)
    given = sweep.step_covariances(cov, steps)
    assert np.allclose(given[0], cov[:2, :2])                          # step 0: given nothing
    assert sweep.mean_pair_correlation(given[1:]) == pytest.approx(0, abs=2 * sweep.RIDGE)


@FAST
@given(seed=st.integers(0, 10_000), k=st.sampled_from([1, 2, 3, 6]))
def test_step_covariances_are_the_schur_complements(seed, k):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(12, 30))
    cov = np.cov(a)                                                   # 12 x 12, full rank
    steps = rng.permutation(12).reshape(-1, k)
    got = sweep.step_covariances(cov, steps)
    for s, group in enumerate(steps):
        known = steps[:s].ravel()
        want = cov[np.ix_(group, group)]
        if len(known):
            s_kk = cov[np.ix_(known, known)] + sweep.RIDGE * np.eye(len(known))
            want = want - cov[np.ix_(group, known)] @ np.linalg.solve(s_kk,
                                                                      cov[np.ix_(known, group)])
        assert np.allclose(got[s], want, atol=1e-9)


def test_neighbours_depend_on_each_other_more_than_scattered_pixels(data):
    cov = sweep.pixel_covariance(data.x_held, 2)
    gen = torch.Generator().manual_seed(0)
    for k in (4, 16, 49):
        near, far = (sweep.dependence(cov, o, k, gen) for o in ("contiguous", "scattered"))
        assert near[0] > far[0] and near[1] > far[1], (k, near, far)
    assert sweep.dependence(cov, "contiguous", 1, gen) == (0.0, 0.0)   # nothing drawn together
    whole = [sweep.dependence(cov, o, 784, gen) for o in mod.ORDERS]   # one group: the image
    assert whole[0] == pytest.approx(whole[1]) and whole[0][0] == pytest.approx(whole[0][1])



def test_dependence_is_finite_on_a_small_held_out_set(data):
    # 20 held-out digits (the smallest set common accepts holds out 20): many pixels never
    # change there, and the ridge keeps every figure finite.
    cov = sweep.pixel_covariance(data.x_held[:20], 2)
    gen = torch.Generator().manual_seed(0)
    for order in mod.ORDERS:
        for k in (1, 16, 784):
            assert np.isfinite(sweep.dependence(cov, order, k, gen)).all()


# %% The contract
TINY = ["--steps", "3", "--samples", "12", "--k", "196", "--hidden", "32", "--device", "cpu"]



def test_main_writes_the_contract_and_loads_back(tmp_path):
    out = tmp_path / "run"
    mod.main(TINY + ["--out", str(out)])
    saved = check_outputs(out, 12)
    assert saved["k"] == 196 and saved["evaluations_per_image"] == 4
    assert saved["order"] == "scattered" and saved["fd"] == saved["fd_scattered"]
    assert saved["fd_contiguous_over_scattered"] == pytest.approx(
        saved["fd_contiguous"] / saved["fd_scattered"])
    assert saved["train_ks"] == mod.square_ks(28) and saved["config"]["levels"] == 2
    assert check_gif(out / "generation.gif") >= 4         # one frame per step of k=196
    model_bytes = (out / "model.pt").read_bytes()
    x = np.load(out / "samples.npz")["x"]
    mod.main(TINY + ["--load", str(out / "model.pt"), "--levels", "4", "--out", str(out),
                     "--no-gif"])
    assert (out / "model.pt").read_bytes() == model_bytes, "--load rewrote what it loaded"
    loaded = check_outputs(out, 12)
    assert np.array_equal(np.load(out / "samples.npz")["x"], x), "samples do not reproduce"
    assert loaded["train_seconds"] == saved["train_seconds"] and loaded["config"]["levels"] == 2
    assert not (out / "generation.gif").exists()
    mod.main(TINY + ["--load", str(out / "model.pt"), "--order", "contiguous", "--out", str(out),
                     "--no-gif"])
    other = check_outputs(out, 12)
    assert other["fd"] == pytest.approx(saved["fd_contiguous"])  # the same draw, the other order


def test_on_images_that_are_not_digits_the_judge_says_it_means_little(tmp_path, capsys,
                                                                       quick_judge):
    # 150 noise images, 28x28 grey with labels 0-9: the judge is trained on them and fails,
    # and the summary says so, as every chapter's does.
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise.npz"
    np.savez(noise, x=rng.integers(0, 256, (150, 28, 28), dtype=np.uint8), y=np.arange(150) % 10)
    mod.main(TINY + ["--data", str(noise), "--out", str(tmp_path / "r"), "--no-gif"])
    m = strict_json(tmp_path / "r" / "metrics.json")
    printed = capsys.readouterr().out
    assert m["judge_accuracy"] < 0.5 and "warning: the judge recognises" in printed, printed


@pytest.mark.parametrize("argv,contains", [
    (["--k", "3"], "does not divide"),
    (["--samples", "1"], "min 2"),
    (["--levels", "1"], "min 2"),
    (["--order", "spiral"], "invalid choice"),
    (["--load", "/nonexistent/model.pt"], "not found"),
])
def test_bad_inputs_are_one_line(argv, contains, capsys, tmp_path):
    one_line_error(mod.main, argv + ["--out", str(tmp_path)], capsys, contains)


def test_foreign_or_incomplete_checkpoints_are_refused(tmp_path, capsys):
    path = write_checkpoint(tmp_path / "other.pt", "01_autoregressive_pixels", {})
    one_line_error(mod.main, ["--load", str(path), "--out", str(tmp_path)], capsys,
                   "not 02_patch_autoregression")
    one_net = {f"scattered.{k}": v for k, v in mod.MaskedPixelNet(2, 32).state_dict().items()}
    write_checkpoint(path, mod.SCRIPT, one_net, {"levels": 2, "hidden": 32})
    one_line_error(mod.main, ["--load", str(path), "--out", str(tmp_path)], capsys,
                   "does not match")


# %% experiments/02_sweep.py
def test_sweep_measures_both_orders_and_the_control(tmp_path):
    out = tmp_path / "sweep"
    sweep.main(["--steps", "2", "--hidden", "32", "--samples", "4", "--ks", "784,1",
                "--seeds", "2", "--device", "cpu", "--out", str(out)])
    m = strict_json(out / "metrics.json")
    assert m["ks"] == [1, 784] and m["seeds"] == [1, 2] and m["n"] == 4
    assert {(r["order"], r["k"], r["seed"]) for r in m["sweep"]} == {
        (o, k, s) for o in mod.ORDERS for k in (1, 784) for s in (1, 2)}
    for k in ("1", "784"):
        ratio = m["fd_contiguous_over_scattered"][k]
        want = [m["fd"]["contiguous"][k]["per_seed"][j] / m["fd"]["scattered"][k]["per_seed"][j]
                for j in range(2)]
        assert ratio["per_seed"] == pytest.approx(want)
        assert ratio["min"] <= ratio["mean"] <= ratio["max"] and ratio["std"] >= 0
        assert m["ratio_over_control"][k]["per_seed"] == pytest.approx(
            [a / b for a, b in zip(want, m["control_ratio_k1"]["per_seed"])])
    assert m["ratio_over_control"]["1"]["per_seed"] == pytest.approx([1, 1])
    assert m["dependence"]["contiguous"]["1"] == {"given_nothing": 0.0, "given_half": 0.0}
    assert (out / "fd_vs_evaluations.png").is_file() and (out / "sweep_samples.png").is_file()


def test_sweep_needs_the_control(tmp_path, capsys):
    one_line_error(sweep.main, ["--ks", "4,16", "--out", str(tmp_path)], capsys, "must include 1")
    one_line_error(sweep.main, ["--ks", "5", "--out", str(tmp_path)], capsys, "does not divide")
    one_line_error(sweep.main, ["--order", "contiguous", "--out", str(tmp_path)], capsys,
                   "unrecognized")
