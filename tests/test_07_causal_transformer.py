"""Tests for 07_causal_transformer.py: causality, the loss, the key/value cache, the one-position
network, the animation, the contract, and smoke runs of its four experiments."""
import ast
import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import common
from helpers import check_gif, check_outputs, one_line_error

ROOT = Path(__file__).resolve().parent.parent
mod = importlib.import_module("07_causal_transformer")
sys.path.insert(0, str(ROOT / "experiments"))

# What a student copies (tests/test_repository.py takes it out alone, without common).
LESSON = ["SIDE", "quantize", "dequantize", "shift_right", "NEIGHBOURS", "neighbour_pixels",
          "causal_mask", "attention", "CausalSelfAttention", "Block", "GPT", "sequence_loss",
          "one_position_loss", "random_position_loss", "KVCache", "draw", "generate",
          "learning_rate", "train_step"]
DRIVER = ["SCRIPT", "SHAPE_KEYS", "EVAL_IMAGES", "SAMPLE_BATCH", "Config", "build",
          "bits_per_token", "generate_batched", "train", "digit_batches", "GIF_IMAGES",
          "GIF_EVERY", "save_animation", "main"]


def travel(m):
    """One training step and a sample of two, on 16x16 grey images and on MNIST's 28x28."""
    for side in (16, m.SIDE):
        torch.manual_seed(0)
        model = m.GPT(2, side * side, d_model=16, layers=1, heads=2, width=side, hint=True)
        opt = torch.optim.AdamW(model.parameters(), lr=m.learning_rate(0.5, 1e-2))
        tokens = m.quantize(torch.rand(4, 1, side, side), 2)                # (4, side*side)
        before = model.head.weight.clone()
        loss = m.train_step(model, opt, tokens)
        assert math.isfinite(loss) and not torch.equal(before, model.head.weight)
        x = m.dequantize(m.generate(model, 2, 1.0, torch.Generator().manual_seed(1)), 2)
        assert x.shape == (2, side, side) and set(x.unique().tolist()) <= {0.0, 1.0}


def test_the_lesson_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="must divide"):
        mod.GPT(3, 16, d_model=16, heads=3)
    with pytest.raises(ValueError, match="needs a width"):
        mod.GPT(3, 16, d_model=16, heads=2, hint=True)
    with pytest.raises(ValueError, match="temperature"):
        mod.draw(torch.zeros(2, 3), 0.0, torch.rand(2))


LENGTH = 12  # positions of the tiny models below
HINTED = 2 * 28 + 5  # positions of the tiny hinted models: two rows and a few pixels of the third


def tiny(vocab: int = 3, length: int = LENGTH, fused: bool = True, seed: int = 0,
         hinted: bool = False, causal: bool = True):
    """A tiny GPT; hinted: digit-shaped (rows of 28, HINTED positions) with the hint."""
    torch.manual_seed(seed)
    if hinted:
        return mod.GPT(vocab, HINTED, d_model=16, layers=2, heads=2, fused=fused, width=28,
                       hint=True, causal=causal).eval()
    return mod.GPT(vocab, length, d_model=16, layers=2, heads=2, fused=fused,
                   causal=causal).eval()


def outputs(out, n: int) -> dict:
    """helpers.check_outputs, less its check that no .lock file is left: common.run_folder
    now leaves its lock file (released, harmless) in --out on purpose."""
    (Path(out) / ".lock").unlink(missing_ok=True)
    return check_outputs(out, n)


def random_tokens(vocab, n, length, seed):
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(seed))


# --- pixels as tokens ---
def test_quantize_and_dequantize_are_01s_word_for_word():
    def sources(path):
        text = path.read_text()
        return {n.name: ast.get_source_segment(text, n) for n in ast.parse(text).body
                if isinstance(n, ast.FunctionDef) and n.name in ("quantize", "dequantize")}
    assert sources(ROOT / "07_causal_transformer.py") == \
        sources(ROOT / "01_autoregressive_pixels.py")


@settings(max_examples=20, deadline=None)
@given(levels=st.integers(2, 32), seed=st.integers(0, 1000))
def test_quantize_range_and_round_trip(levels, seed):
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    x[0, 0, 0, :2] = torch.tensor([0.0, 1.0])  # the ends of the range
    t = mod.quantize(x, levels)
    assert t.shape == (3, 784) and t.min() >= 0 and t.max() <= levels - 1
    img = mod.dequantize(t, levels)
    assert img.shape == (3, 28, 28) and img.min() >= 0 and img.max() <= 1
    assert torch.equal(mod.quantize(img, levels), t)  # a generated digit re-reads as itself
    # raster order: token i is row i // 28, column i % 28
    assert torch.equal(t.view(3, 28, 28), mod.quantize(x[:, 0], levels).view(3, 28, 28))


def test_shift_right_puts_bos_first():
    t = torch.tensor([[5, 6, 7]])
    assert mod.shift_right(t, 9).tolist() == [[9, 5, 6]]


@settings(max_examples=40, deadline=None)
@given(i=st.integers(0, 783), seed=st.integers(0, 1000))
def test_neighbour_pixels_are_the_pixels_at_their_offsets_on_the_grid(i, seed):
    t = random_tokens(5, 2, 784, seed)
    grid = t.view(2, 28, 28)
    r, c = divmod(i, 28)
    hint = mod.neighbour_pixels(t, pad=5)[:, i]                      # (2, 11)
    part = mod.neighbour_pixels(t, pad=5, start=i, stop=i + 1)[:, 0]  # what generation asks for
    for k, (dr, dc) in enumerate(mod.NEIGHBOURS):
        assert (dr, dc) < (0, 0)  # every neighbour comes before pixel i in raster order
        on_grid = r + dr >= 0 and 0 <= c + dc < 28
        want = grid[:, r + dr, c + dc] if on_grid else torch.full((2,), 5)
        assert torch.equal(hint[:, k], want) and torch.equal(part[:, k], want)


# --- attention and the mask ---
@settings(max_examples=20, deadline=None)
@given(tq=st.integers(1, 8), extra=st.integers(0, 8))
def test_causal_mask(tq, extra):
    tk = tq + extra
    m = mod.causal_mask(tq, tk)
    for i in range(tq):
        for j in range(tk):
            # the query at absolute position extra + i sees keys up to and including itself
            assert bool(m[i, j]) == (j <= extra + i)


@pytest.mark.parametrize("causal", [True, False])
def test_explicit_attention_matches_fused_model(causal):
    fused, explicit = tiny(fused=True, causal=causal), tiny(fused=False, causal=causal)
    explicit.load_state_dict(fused.state_dict())
    idx = random_tokens(4, 3, LENGTH, 1)
    assert torch.allclose(fused(idx), explicit(idx), atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
@settings(max_examples=15, deadline=None)
@given(i=st.integers(0, LENGTH - 1), seed=st.integers(0, 10_000))
def test_causal_by_perturbation(fused, i, seed):
    """Changing inputs at or after i leaves every output before i unchanged, and changes i."""
    model = tiny(fused=fused)
    idx = random_tokens(4, 2, LENGTH, seed)
    changed = idx.clone()
    changed[:, i:] = (idx[:, i:] + 1 + torch.randint(0, 3, idx[:, i:].shape)) % 4  # all differ
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert torch.allclose(a[:, :i], b[:, :i], atol=1e-6)
    assert not torch.allclose(a[:, i], b[:, i], atol=1e-4)


@pytest.mark.parametrize("hinted", [False, True])
@settings(max_examples=15, deadline=None)
@given(frac=st.floats(0, 1), seed=st.integers(0, 10_000))
def test_causal_by_perturbation_of_pixels(hinted, frac, seed):
    """The prediction of target i (pixel i) depends on targets 0..i-1 only: shift_right,
    and the neighbourhood hint, read nothing at or after i."""
    model = tiny(hinted=hinted)
    i = min(int(frac * model.length), model.length - 1)
    t = random_tokens(3, 2, model.length, seed)
    changed = t.clone()
    changed[:, i:] = (t[:, i:] + 1) % 3
    with torch.no_grad():
        a, b = model(model.inputs(t)), model(model.inputs(changed))
    assert torch.allclose(a[:, :i + 1], b[:, :i + 1], atol=1e-6)


def test_the_hint_reaches_the_pixel_below():
    """With the hint, the prediction at i changes when pixel i - 28 does, even with every
    attention layer's output cut off: the hint, not attention, carries it."""
    model = tiny(hinted=True)
    for block in model.blocks:
        torch.nn.init.zeros_(block.attn.proj.weight)  # attention contributes nothing
        torch.nn.init.zeros_(block.attn.proj.bias)
    t = random_tokens(3, 1, HINTED, 0)
    i = 28 + 10
    changed = t.clone()
    changed[0, i - 28] = (t[0, i - 28] + 1) % 3
    with torch.no_grad():
        a, b = model(model.inputs(t)), model(model.inputs(changed))
    assert not torch.allclose(a[:, i], b[:, i], atol=1e-4)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("fused", [True, False])
@settings(max_examples=12, deadline=None)
@given(i=st.integers(0, LENGTH - 2))
def test_causal_by_gradients(fused, causal, i):
    """Causal: d output_i / d input_j is zero for every j > i, not zero for j <= i.
    Without the mask (07_mask_cost's comparison) output i reads every input."""
    model = tiny(fused=fused, causal=causal)
    h = model.embed(random_tokens(4, 2, LENGTH, i)).detach().requires_grad_(True)
    model.trunk(h)[:, i].sum().backward()
    per_pos = h.grad.abs().sum(dim=(0, 2))  # (T,)
    assert torch.all(per_pos[:i + 1] > 0)
    if causal:
        assert torch.all(per_pos[i + 1:] == 0)
    else:
        assert torch.all(per_pos[i + 1:] > 0)


# --- the loss, all positions and one position ---
@pytest.mark.parametrize("hinted", [False, True])
def test_one_pass_is_every_one_position_evaluation(hinted):
    """The claim of the chapter: one causal pass computes exactly the losses of T separate
    evaluations of the same network, each on its own prefix."""
    model = tiny(hinted=hinted)
    t = random_tokens(3, 3, model.length, 7)
    with torch.no_grad():
        one_pass = mod.sequence_loss(model, t)
        per_pos = [mod.one_position_loss(model, t, i) for i in range(model.length)]
    assert torch.allclose(one_pass, torch.stack(per_pos).mean(), atol=1e-6)


@pytest.mark.parametrize("hinted", [False, True])
@settings(max_examples=10, deadline=None)
@given(frac=st.floats(0, 1), seed=st.integers(0, 10_000))
def test_full_attention_inside_the_prefix_still_never_sees_pixel_i(hinted, frac, seed):
    """Without the mask, the prediction of pixel i from the prefix 0..i still reads no pixel
    at or after i (and does read pixel i - 1, so the check can fail)."""
    model = tiny(hinted=hinted, causal=False)
    i = max(1, min(int(frac * model.length), model.length - 1))
    t = random_tokens(3, 2, model.length, seed)
    changed = t.clone()
    changed[:, i:] = (t[:, i:] + 1) % 3
    with torch.no_grad():
        a = model(model.inputs(t, 0, i + 1))[:, -1]
        b = model(model.inputs(changed, 0, i + 1))[:, -1]
        earlier = t.clone()
        earlier[:, i - 1] = (t[:, i - 1] + 1) % 3
        c = model(model.inputs(earlier, 0, i + 1))[:, -1]
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, c, atol=1e-5)


def test_with_one_block_the_mask_does_not_change_the_last_position():
    # 07_mask_cost: the last query sees the whole prefix either way; only what earlier
    # positions hand up to a next block differs.
    one = [mod.GPT(3, HINTED, 16, 1, 2, width=28, hint=True, causal=c) for c in (True, False)]
    two = [mod.GPT(3, HINTED, 16, 2, 2, width=28, hint=True, causal=c) for c in (True, False)]
    torch.manual_seed(0)
    for causal, full in (one, two):
        for p in causal.parameters():  # weights large enough for attention to be far from even
            torch.nn.init.normal_(p, std=0.3)
        full.load_state_dict(causal.state_dict())
    t = random_tokens(3, 2, HINTED, 0)
    with torch.no_grad():
        last = [[m(m.inputs(t, 0, 40))[:, -1] for m in pair] for pair in (one, two)]
    assert torch.allclose(*last[0], atol=1e-6)
    assert not torch.allclose(*last[1], atol=1e-4)


def test_one_position_bits_of_a_causal_model_are_its_one_pass_bits():
    mask_cost = importlib.import_module("07_mask_cost")
    model = tiny(hinted=True)
    t = random_tokens(3, 4, HINTED, 5)
    positions = [0, 3, 28, 30, HINTED - 1]
    bits = mask_cost.one_position_bits(model, t, positions, torch.device("cpu"))
    with torch.no_grad():
        logits = model(model.inputs(t))
    nats = F.cross_entropy(logits.transpose(1, 2), t, reduction="none")  # (4, T)
    assert bits.shape == (4, len(positions))
    assert torch.allclose(bits, nats[:, positions] / math.log(2), atol=1e-5)


def test_bits_per_token_is_loss_in_bits():
    model = tiny()
    t = random_tokens(3, 5, LENGTH, 3)
    bits = mod.bits_per_token(model, t, torch.device("cpu"), batch=2)  # batches of 2, 2 and 1
    with torch.no_grad():
        nats = mod.sequence_loss(model, t).item()
    assert math.isclose(bits, nats / math.log(2), rel_tol=1e-5)


def test_random_position_loss_draws_every_position(monkeypatch):
    seen = []
    monkeypatch.setattr(mod, "one_position_loss", lambda model, tokens, i: seen.append(i))
    loss = mod.random_position_loss(torch.Generator().manual_seed(0), 5)
    for _ in range(200):
        loss(None, None)
    assert set(seen) == set(range(5))


def test_training_counts_targets_and_moves_the_weights():
    """sequence_loss learns every position of a batch, the one-position loss one a sequence."""
    batches = iter([random_tokens(3, 4, LENGTH, s) for s in range(6)])
    cfg = mod.Config(steps=3, lr=1e-2)
    for loss_fn, per_step in ((mod.sequence_loss, 4 * LENGTH),
                              (mod.random_position_loss(torch.Generator(), LENGTH), 4)):
        model = tiny()
        before = [p.clone() for p in model.parameters()]
        r = mod.train(model, lambda: next(batches), cfg, torch.device("cpu"), loss_fn=loss_fn)
        assert r["steps"] == 3 and math.isfinite(r["final_loss_bits"])
        assert math.isclose(r["targets_per_second"] * r["train_seconds"], 3 * per_step)
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


# --- generation ---
@pytest.mark.parametrize("hinted", [False, True])
def test_cached_and_uncached_generation_identical(hinted):
    model = tiny(vocab=4, hinted=hinted)
    a = mod.generate(model, 5, 1.0, torch.Generator().manual_seed(3), use_cache=True)
    b = mod.generate(model, 5, 1.0, torch.Generator().manual_seed(3), use_cache=False)
    assert a.shape == (5, model.length) and a.min() >= 0 and a.max() < 4
    assert torch.equal(a, b)
    c = mod.generate(model, 5, 1.0, torch.Generator().manual_seed(4), use_cache=True)
    assert not torch.equal(a, c)  # the seed matters, so the equality above says something


def test_batched_generation_is_one_random_stream():
    model = tiny(vocab=4)
    whole = mod.generate(model, 5, 1.0, torch.Generator().manual_seed(3))
    parts = mod.generate_batched(model, 5, 2, 1.0, torch.Generator().manual_seed(3))
    assert parts.shape == whole.shape and not torch.equal(parts, whole)  # drawn in batches
    again = mod.generate_batched(model, 5, 2, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(parts, again)


@settings(max_examples=10, deadline=None)
@given(split=st.integers(1, LENGTH - 1))
def test_cache_in_chunks_matches_one_pass(split):
    """Feeding a sequence through the cache in two chunks gives the one-pass logits."""
    model = tiny()
    idx = random_tokens(4, 2, LENGTH, split)
    cache = mod.KVCache(len(model.blocks), LENGTH)
    with torch.no_grad():
        full = model(idx)
        parts = torch.cat([model(idx[:, :split], cache), model(idx[:, split:], cache)], dim=1)
    assert cache.length == LENGTH
    assert torch.allclose(full, parts, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), temperature=st.floats(0.3, 3.0))
def test_draw_follows_the_tempered_distribution(seed, temperature):
    """With evenly spread u, each token's share equals softmax(logits / T) to within 1/N."""
    logits = torch.randn(5, generator=torch.Generator().manual_seed(seed)) * 2
    n = 2000
    u = (torch.arange(n) + 0.5) / n
    tokens = mod.draw(logits.expand(n, 5), temperature, u)
    share = torch.bincount(tokens, minlength=5).float() / n
    assert torch.allclose(share, F.softmax(logits / temperature, -1), atol=2 / n)


def test_low_temperature_is_greedy():
    logits = torch.tensor([[0.0, 1.0, 0.5], [2.0, 0.0, 1.9]])
    assert mod.draw(logits, 0.01, torch.tensor([0.999, 0.999])).tolist() == [1, 0]


def test_learning_rate_schedule():
    peak = 1e-3
    lrs = [mod.learning_rate(p / 100, peak) for p in range(101)]
    assert lrs[0] == 0 and max(lrs) <= peak and math.isclose(max(lrs), peak)
    top = lrs.index(max(lrs))
    assert all(a >= b for a, b in zip(lrs[top:], lrs[top + 1:]))
    assert lrs[-1] < 1e-12


def test_animation_frames_are_the_samples_drawn_so_far(tmp_path, monkeypatch):
    got = {}
    monkeypatch.setattr(common, "save_images",
                        lambda path, frames, ncol, titles: got.update(f=frames, c=titles))
    tokens = random_tokens(2, 20, 784, 0)
    mod.save_animation(tmp_path / "g.gif", tokens, 2)
    frames, captions = got["f"], got["c"]
    assert len(frames) == len(captions) <= 80 and captions[-1] == "pixel 784 of 784"
    final = tokens[:mod.GIF_IMAGES].float()
    assert torch.equal(frames[-1].flatten(1), final)
    for frame, caption in zip(frames, captions):
        p = int(caption.split()[1])
        flat = frame.flatten(1)
        assert flat.shape == (mod.GIF_IMAGES, 784)
        assert torch.equal(flat[:, :p], final[:, :p]) and torch.all(flat[:, p:] == 0.25)


# --- the contract ---
SMALL = ["--d-model", "16", "--layers", "2", "--heads", "2", "--batch-size", "4"]
TINY = ["--steps", "2", "--samples", "10"] + SMALL


@pytest.fixture
def few_held(monkeypatch):
    monkeypatch.setattr(mod, "EVAL_IMAGES", 20)


def test_main_writes_the_contract_and_loads_back(tmp_path, few_held):
    out = tmp_path / "run"
    m = mod.main(TINY + ["--out", str(out)])
    metrics = outputs(out, 10)
    assert check_gif(out / "generation.gif") >= 50
    assert metrics["config"]["d_model"] == 16 and metrics["steps"] == 2
    assert math.isclose(metrics["perplexity"], 2 ** metrics["bits_per_pixel"], rel_tol=1e-9)
    assert 0 < metrics["bits_per_pixel"] <= 2  # near uniform (1 bit for K = 2), but finite
    model_bytes = (out / "model.pt").read_bytes()
    with np.load(out / "samples.npz") as f:
        samples = f["x"]
    assert set(np.unique(samples)) <= {0.0, 1.0}  # K = 2: paper or ink
    m2 = mod.main(["--load", str(out / "model.pt"), "--samples", "10", "--out", str(out),
                   "--no-gif"])
    assert (out / "model.pt").read_bytes() == model_bytes, "--load rewrote what it loaded"
    assert not (out / "generation.gif").exists()
    outputs(out, 10)
    with np.load(out / "samples.npz") as f:
        assert np.array_equal(f["x"], samples), "the loaded model samples what the trained one did"
    assert math.isclose(m2["bits_per_pixel"], m["bits_per_pixel"], rel_tol=1e-5)
    assert m2["train_seconds"] == m["train_seconds"]
    assert m2["config"]["d_model"] == 16  # the checkpoint's settings, not the flags' defaults


def test_bad_inputs(tmp_path, capsys):
    out = ["--out", str(tmp_path / "out")]
    one_line_error(mod.main, ["--heads", "3"] + out, capsys, "must divide")
    one_line_error(mod.main, ["--temperature", "0"] + out, capsys, "--temperature")
    one_line_error(mod.main, ["--levels", "1"] + out, capsys, "--levels")
    one_line_error(mod.main, ["--attention", "sparse"] + out, capsys, "invalid choice")
    one_line_error(mod.main, ["--load", str(tmp_path / "nothing.pt")] + out, capsys,
                   "not found")
    torch.save({"script": "07_text", "config": {}, "state": {}, "extra": {}}, tmp_path / "t.pt")
    one_line_error(mod.main, ["--load", str(tmp_path / "t.pt")] + out, capsys, "07_text")
    assert not (tmp_path / "out").exists() or \
        not [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")]


# --- the experiments, tiny ---
def test_one_pass_experiment(tmp_path, few_held, monkeypatch):
    one_pass = importlib.import_module("07_one_pass")
    monkeypatch.setattr(one_pass, "CACHE_ROWS", 1)
    m = one_pass.main(SMALL + ["--steps", "2", "--out", str(tmp_path / "e")])
    fast, slow = m["causal_targets_per_second"], m["one_position_targets_per_second"]
    assert fast > 0 and slow > 0 and math.isclose(m["causal_speedup"], fast / slow)
    assert m["cache_identical"] is True and m["cache_check_pixels"] == 28
    assert m["causal_bits_per_pixel"] > 0 and m["one_position_bits_per_pixel"] > 0
    assert "causal_speedup" in json.loads((tmp_path / "e" / "metrics.json").read_text())


def test_mask_cost_experiment(tmp_path, monkeypatch):
    mask_cost = importlib.import_module("07_mask_cost")
    monkeypatch.setattr(mask_cost, "EVAL_IMAGES", 6)
    monkeypatch.setattr(mask_cost, "EVAL_POSITIONS", 10)
    m = mask_cost.main(SMALL + ["--steps", "3", "--out", str(tmp_path / "e")])
    assert m["steps"] == 3 and m["targets"] == 3 * 4  # 4 (image, position) pairs a step
    assert m["eval_images"] == 6 and m["eval_positions"] == 10
    c, f = m["causal_bits_per_pixel"], m["full_bits_per_pixel"]
    assert c > 0 and f > 0 and c != f  # same start, same batches: only the mask differs
    assert math.isclose(m["mask_cost_bits"], c - f, rel_tol=1e-4, abs_tol=1e-6)
    assert m["mask_cost_se"] >= 0


def fake_01_metrics(path, **changes):
    m = {"bits_per_pixel": 0.5, "train_seconds": 0.3, "fd": 50.0, "n": 10, "levels": 2}
    m.update(changes)
    path.write_text(json.dumps(m))
    return path


def test_versus_01_experiment(tmp_path, few_held, monkeypatch, capsys):
    versus = importlib.import_module("07_versus_01")
    monkeypatch.setattr(versus, "PILOT_STEPS", 3)
    other = fake_01_metrics(tmp_path / "m01.json")
    table = versus.main(SMALL + ["--samples", "10", "--metrics-01", str(other),
                                 "--out", str(tmp_path / "e")])
    assert table["01"]["bits_per_pixel"] == 0.5 and table["01"]["fd"] == 50.0
    row = table["07"]
    assert row["steps"] >= 1 and row["bits_per_pixel"] > 0 and row["fd"] > 0 and row["n"] == 10
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert math.isclose(saved["bpp_gain_vs_01"], 0.5 - row["bits_per_pixel"])
    assert saved["config"]["steps"] == row["steps"]
    out = ["--out", str(tmp_path / "bad")]
    one_line_error(versus.main, ["--metrics-01", str(tmp_path / "none.json")] + out, capsys,
                   "not found")
    one_line_error(versus.main, ["--metrics-01", str(fake_01_metrics(
        tmp_path / "k4.json", levels=4))] + out, capsys, "levels")
    lacking = tmp_path / "lacking.json"
    lacking.write_text(json.dumps({"bits_per_pixel": 0.5}))
    one_line_error(versus.main, ["--metrics-01", str(lacking)] + out, capsys, "lacks")


def test_text_experiment(tmp_path, capsys):
    text_exp = importlib.import_module("07_text")
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    out = tmp_path / "text"
    m = text_exp.main(["--text", str(text), "--context", "16", "--steps", "3", "--batch-size",
                       "4", "--d-model", "16", "--layers", "1", "--heads", "2", "--out", str(out)])
    sample = (out / "samples.txt").read_text(encoding="utf-8").rstrip("\n")
    assert len(sample) == 16 and set(sample) <= set(text.read_text())
    assert m["vocabulary"] == len(set(text.read_text()))
    assert math.isclose(m["perplexity"], 2 ** m["bits_per_char"], rel_tol=1e-9)
    model_bytes = (out / "model.pt").read_bytes()
    again = text_exp.main(["--text", str(text), "--load", str(out / "model.pt"), "--out", str(out)])
    assert (out / "model.pt").read_bytes() == model_bytes
    assert (out / "samples.txt").read_text(encoding="utf-8").rstrip("\n") == sample
    assert math.isclose(again["bits_per_char"], m["bits_per_char"], rel_tol=1e-5)
    assert again["steps"] == 3 and again["config"]["context"] == 16
    assert text_exp.resolve_text(text_exp.DEFAULT_TEXT).is_file()  # ships with Python
    empty, short = tmp_path / "empty.txt", tmp_path / "short.txt"
    empty.write_text("")
    short.write_text("abc")
    bad = ["--out", str(tmp_path / "bad")]
    one_line_error(text_exp.main, ["--text", str(empty)] + bad, capsys, "is empty")
    one_line_error(text_exp.main, ["--text", str(tmp_path / "missing.txt")] + bad, capsys,
                   "cannot read")
    one_line_error(text_exp.main, ["--text", str(short)] + bad, capsys, "need at least")
    other = tmp_path / "other.txt"
    other.write_text("ABCDEFGHIJKLMNOPQRSTUVWXYZ! " * 60)  # as many characters, other ones
    one_line_error(text_exp.main, ["--text", str(other), "--load", str(out / "model.pt")] + bad,
                   capsys, "other characters")


def test_the_hint_follows_the_row_length():
    t = torch.arange(25).view(1, 25)                                 # a 5x5 grid, token = index
    hint = mod.neighbour_pixels(t, pad=99, width=5)[0, 12]           # pixel (2, 2)
    assert hint.tolist() == [(2 + dr) * 5 + 2 + dc for dr, dc in mod.NEIGHBOURS]
    assert mod.neighbour_pixels(t, pad=99, width=5)[0, 5, 2].item() == 99  # off the grid


def test_experiments_offer_only_the_flags_they_read(tmp_path, capsys):
    out = ["--out", str(tmp_path / "x")]
    for name, flag in (("07_one_pass", "--samples"), ("07_mask_cost", "--temperature"),
                       ("07_versus_01", "--load"), ("07_text", "--data")):
        one_line_error(importlib.import_module(name).main, [flag, "2"] + out, capsys,
                       "unrecognized")
