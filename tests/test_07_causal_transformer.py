"""Tests for 07_causal_transformer.py: causality, the loss, the key/value cache, the contract."""
import importlib
import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import check_outputs, one_line_error

mod = importlib.import_module("07_causal_transformer")

LENGTH = 12  # positions of the tiny models below


HINTED = 2 * 28 + 5  # positions of the tiny hinted models: two full rows and a few pixels of the third


def tiny(vocab: int = 3, length: int = LENGTH, fused: bool = True, seed: int = 0, hinted: bool = False):
    """A tiny GPT; hinted: digit-shaped instead (rows of 28, HINTED positions) with the neighbourhood hint."""
    torch.manual_seed(seed)
    if hinted:
        return mod.GPT(vocab, HINTED, d_model=16, layers=2, heads=2, fused=fused, width=28, hint=True).eval()
    return mod.GPT(vocab, length, d_model=16, layers=2, heads=2, fused=fused).eval()


def random_tokens(vocab, n, length, seed):
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(seed))


# --- pixels as tokens ---
@settings(max_examples=20, deadline=None)
@given(levels=st.integers(2, 32), seed=st.integers(0, 1000))
def test_quantize_range_and_round_trip(levels, seed):
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    x[0, 0, 0, :2] = torch.tensor([0.0, 1.0])  # the ends of the range
    t = mod.quantize(x, levels)
    assert t.shape == (3, 784) and t.min() >= 0 and t.max() <= levels - 1
    img = mod.dequantize(t, levels)
    assert img.shape == (3, 1, 28, 28) and img.min() >= 0 and img.max() <= 1
    assert torch.equal(mod.quantize(img, levels), t)  # a generated digit re-reads as its own tokens
    # raster order: token i is row i // 28, column i % 28
    assert torch.equal(t.view(3, 28, 28), mod.quantize(x, levels).view(3, 1, 28, 28)[:, 0])


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
    part = mod.neighbour_pixels(t, pad=5, start=i, stop=i + 1)[:, 0]  # the slice generation asks for
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


def test_explicit_attention_matches_fused_model():
    fused, explicit = tiny(fused=True), tiny(fused=False)
    explicit.load_state_dict(fused.state_dict())
    idx = random_tokens(4, 3, LENGTH, 1)
    assert torch.allclose(fused(idx), explicit(idx), atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
@settings(max_examples=15, deadline=None)
@given(i=st.integers(0, LENGTH - 1), seed=st.integers(0, 10_000))
def test_causal_by_perturbation(fused, i, seed):
    """Changing inputs at or after i leaves every output before i unchanged, and does change output i."""
    model = tiny(fused=fused)
    idx = random_tokens(4, 2, LENGTH, seed)
    changed = idx.clone()
    changed[:, i:] = (idx[:, i:] + 1 + torch.randint(0, 3, idx[:, i:].shape)) % 4  # every one differs
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


@pytest.mark.parametrize("fused", [True, False])
@settings(max_examples=12, deadline=None)
@given(i=st.integers(0, LENGTH - 1))
def test_causal_by_gradients(fused, i):
    """d output_i / d input_j is zero for every j > i, and not zero for j <= i."""
    model = tiny(fused=fused)
    h = model.embed(random_tokens(4, 2, LENGTH, i)).detach().requires_grad_(True)
    model.trunk(h)[:, i].sum().backward()
    per_pos = h.grad.abs().sum(dim=(0, 2))  # (T,)
    assert torch.all(per_pos[i + 1:] == 0)
    assert torch.all(per_pos[:i + 1] > 0)


# --- the loss ---
@pytest.mark.parametrize("hinted", [False, True])
def test_loss_is_mean_of_per_position_cross_entropies(hinted):
    """One pass over the sequence equals T separate passes, each seeing only its prefix."""
    model = tiny(hinted=hinted)
    t = random_tokens(3, 3, model.length, 7)
    inputs = model.inputs(t)
    with torch.no_grad():
        one_pass = mod.sequence_loss(model, t)
        per_pos = [F.cross_entropy(model(inputs[:, :i + 1])[:, -1], t[:, i]) for i in range(model.length)]
    assert torch.allclose(one_pass, torch.stack(per_pos).mean(), atol=1e-6)


def test_bits_per_token_is_loss_in_bits():
    model = tiny()
    t = random_tokens(3, 5, LENGTH, 3)
    bits, per_pos = mod.bits_per_token(model, t, torch.device("cpu"), batch=2)
    with torch.no_grad():
        nats = mod.sequence_loss(model, t).item()
    assert per_pos.shape == (LENGTH,)
    assert math.isclose(bits, nats / math.log(2), rel_tol=1e-5)


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


@settings(max_examples=10, deadline=None)
@given(split=st.integers(1, LENGTH - 1))
def test_cache_in_chunks_matches_one_pass(split):
    """Feeding a sequence through the cache in two chunks gives the one-pass logits (the shifted mask)."""
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
    """With evenly spread u, the share of each token equals softmax(logits / T) to within 1/N."""
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


# --- the contract ---
TINY = ["--steps", "2", "--batch-size", "4", "--samples", "10", "--eval-images", "20", "--d-model", "16",
        "--layers", "1", "--heads", "2", "--sample-batch", "4"]


def test_main_smoke_and_load(tmp_path, data, judge):
    out = tmp_path / "run"
    m = mod.main(TINY + ["--out", str(out)])
    metrics = check_outputs(out, 10)
    assert (out / "bits_map.png").is_file()
    assert metrics["cache_identical"] is True and metrics["steps"] == 2
    assert math.isclose(metrics["perplexity"], 2 ** metrics["bits_per_pixel"], rel_tol=1e-9)
    assert 0 < metrics["bits_per_pixel"] <= math.log2(4) + 1  # near uniform after 2 steps, but finite
    loaded = tmp_path / "loaded"
    m2 = mod.main(["--load", str(out / "model.pt"), "--samples", "10", "--eval-images", "20", "--out", str(loaded)])
    check_outputs(loaded, 10)
    assert m2["steps"] == 0 and math.isclose(m2["bits_per_pixel"], m["bits_per_pixel"], rel_tol=1e-5)


def fake_01_metrics(path, **changes):
    m = {"bits_per_pixel": 0.5, "train_seconds": 1.0, "targets_per_second": 1000.0, "fd": 50.0, "confidence": 0.8, "levels": 2}
    m.update(changes)
    path.write_text(json.dumps(m))
    return path


def test_compare_mode_trains_for_01s_time_and_prints_table(tmp_path, data, judge, capsys):
    other = fake_01_metrics(tmp_path / "m01.json", train_seconds=1.5)
    m = mod.main(TINY + ["--out", str(tmp_path / "cmp"), "--compare", str(other)])
    printed = capsys.readouterr().out
    assert "targets learned per second" in printed and "held-out bits per pixel" in printed
    assert 1.5 <= m["train_seconds"] < 1.5 + 5  # stops at the first step after 01's time
    assert math.isclose(m["bpp_gain_vs_01"], 0.5 - m["bits_per_pixel"])


def test_text_mode(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    out = tmp_path / "text"
    m = mod.main(["--text", str(text), "--context", "16", "--steps", "3", "--batch-size", "4", "--d-model", "16",
                  "--layers", "1", "--heads", "2", "--out", str(out)])
    sample = (out / "samples.txt").read_text(encoding="utf-8").rstrip("\n")
    assert len(sample) == 16 and set(sample) <= set(text.read_text())
    assert m["vocabulary"] == len(set(text.read_text()))
    assert math.isclose(m["perplexity"], 2 ** m["bits_per_char"], rel_tol=1e-9)
    again = mod.main(["--text", str(text), "--load", str(out / "model.pt"), "--out", str(tmp_path / "again")])
    assert math.isclose(again["bits_per_char"], m["bits_per_char"], rel_tol=1e-5)


def test_default_text_ships_with_python():
    path = mod.resolve_text(mod.DEFAULT_TEXT)
    assert path.is_file()
    assert len(mod.read_text(mod.DEFAULT_TEXT, 256)) > 100_000


# --- bad inputs: one clear line each ---
def test_bad_inputs(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    short = tmp_path / "short.txt"
    short.write_text("abc")
    one_line_error(mod.main, ["--text", str(empty)], capsys, "is empty")
    one_line_error(mod.main, ["--text", str(tmp_path / "missing.txt")], capsys, "cannot read")
    one_line_error(mod.main, ["--text", str(tmp_path)], capsys, "cannot read")  # a folder
    one_line_error(mod.main, ["--text", str(short)], capsys, "need at least")
    one_line_error(mod.main, ["--heads", "3"], capsys, "must divide")
    one_line_error(mod.main, ["--temperature", "0"], capsys, "--temperature")
    one_line_error(mod.main, ["--levels", "1"], capsys, "--levels")
    one_line_error(mod.main, ["--compare", str(tmp_path / "none.json")], capsys, "not found")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    one_line_error(mod.main, ["--compare", str(bad_json)], capsys, "not a readable")
    one_line_error(mod.main, ["--compare", str(fake_01_metrics(tmp_path / "k4.json", levels=4))], capsys, "levels")
    lacking = tmp_path / "lacking.json"
    lacking.write_text(json.dumps({"bits_per_pixel": 0.5}))
    one_line_error(mod.main, ["--compare", str(lacking)], capsys, "lacks")
    one_line_error(mod.main, ["--load", str(tmp_path / "nothing.pt")], capsys, "not found")


def test_loading_the_wrong_kind_of_model(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("abcdefgh " * 300)
    mod.main(["--text", str(text), "--context", "8", "--steps", "1", "--batch-size", "2", "--d-model", "8",
              "--layers", "1", "--heads", "1", "--out", str(tmp_path / "t")])
    one_line_error(mod.main, ["--load", str(tmp_path / "t" / "model.pt"), "--samples", "4"], capsys, "text model")
