"""Tests for 09_text_to_image.py: the caption rules, the words and their encoder, guidance at
s = 0 and 1, whole captions dropped, the sketch, the contract, and the two experiments."""
import copy
import importlib
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import check_gif, check_outputs, one_line_error, strict_json

ch = importlib.import_module("09_text_to_image")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
prompt_following = importlib.import_module("09_prompt_following")
sketching = importlib.import_module("09_sketch")
FAST = settings(max_examples=15, deadline=None)
SCHED = ch.make_schedule(ch.T)
COMBOS = [[t, s] for t in ("", "thin", "thick") for s in ("", "left", "right")]
ALL_CAPTIONS = [ch.caption(d, [w for w in combo if w]) for d in range(10) for combo in COMBOS]
MANY = ch.tokenize(ALL_CAPTIONS * 45)  # 4,050 captions' tokens

# What a student copies (tests/test_repository.py takes it out alone, where common cannot be
# imported, and runs travel on it), and the rest: the driver.
LESSON = ["IMAGE_SHAPE", "TARGETS", "T", "EMA", "P_UNCOND", "DIGITS", "THICKNESS", "SIDES",
          "VOCAB", "NULL", "THIN", "THICK", "SLANT", "stroke_width", "slant", "attributes",
          "caption", "describe", "parse", "tokenize", "make_schedule", "at", "q_sample",
          "TextEncoder", "timestep_embedding", "ResBlock", "UNet", "predictions",
          "training_target", "timestep_weights", "drop_labels", "diffusion_loss", "ema_update",
          "learning_rate", "to_model_space", "train_step", "guided_output", "denoise",
          "ddim_timesteps", "ddim_sample", "COMBOS", "default_prompts", "following"]
DRIVER = ["SCRIPT", "Config", "train", "generate", "save_animation", "main"]


def travel(m):
    """One training step and a guided sample of two, captioned and sketched, on 3x32x32 colour
    images and on MNIST's 1x28x28; captions written for digits."""
    sched, gen = m.make_schedule(50), torch.Generator().manual_seed(0)
    tokens = m.tokenize(["a thick seven, slanted right", "a thin two", "", "a one"])
    for shape in [(3, 32, 32), m.IMAGE_SHAPE]:
        x0 = m.to_model_space(torch.rand(4, *shape))
        for sketched, cond in [(False, tokens), (True, torch.nn.functional.avg_pool2d(x0, 4))]:
            torch.manual_seed(0)
            model = m.UNet(8, shape, sketch=sketched)
            ema = copy.deepcopy(model).requires_grad_(False)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            loss = m.train_step(model, ema, opt, x0, cond, sched, "eps", "minsnr", 0.5, gen)
            assert math.isfinite(loss) and not torch.equal(ema.inp.weight, model.inp.weight)
            x = m.ddim_sample(ema, cond[:2], 2.5, sched, "eps", 3, "cpu", gen, eta=1.0)
            assert x.shape == (2, *shape) and torch.isfinite(x).all()
    digits = torch.rand(3, 1, 28, 28)
    assert [m.parse(c)[0] for c in m.describe(digits, torch.tensor([0, 7, 9]))] == [0, 7, 9]
    assert m.following(digits, m.default_prompts(3)).keys() <= {"follow_thin", "follow_thick",
                                                                 "follow_left", "follow_right"}


def bar(width: int, length: int = 16, shear: float = 0.0) -> torch.Tensor:
    """A vertical stroke `width` pixels wide, its top moved right by `shear` per pixel up."""
    x = torch.zeros(28, 28)
    top = (28 - length) // 2
    for row in range(top, top + length):
        left = 14 - width // 2 + round(shear * ((top + length - 1) - row - (length - 1) / 2))
        x[row, left:left + width] = 1.0
    return x


# %% The caption rules
@FAST
@given(w=st.integers(1, 5))
def test_a_wider_stroke_reads_wider_and_the_extremes_are_named(w):
    assert ch.stroke_width(bar(w + 1)) > ch.stroke_width(bar(w))
    assert ch.attributes(bar(1)[None]) == [["thin"]]
    assert ch.attributes(bar(5)[None]) == [["thick"]]


@FAST
@given(shear=st.floats(0.25, 0.6), w=st.integers(2, 3))
def test_a_sheared_stroke_reads_slanted_that_way_and_its_mirror_the_other(shear, w):
    right = bar(w, shear=shear)
    assert ch.slant(right) == pytest.approx(shear, abs=0.08)
    assert "right" in ch.attributes(right[None])[0]
    assert "left" in ch.attributes(right.flip(-1)[None])[0]
    assert ch.attributes(bar(w)[None])[0] in ([], ["thin"], ["thick"]), "upright: no side"


@FAST
@given(i=st.integers(0, 3999))
def test_width_ignores_mirror_and_transpose_and_slant_flips_with_the_mirror(data, i):
    x = data.x_train[i, 0]
    assert ch.stroke_width(x.T) == pytest.approx(ch.stroke_width(x).item(), rel=1e-5)
    assert ch.stroke_width(x.flip(0)) == pytest.approx(ch.stroke_width(x).item(), rel=1e-5)
    assert ch.slant(x.flip(-1)) == pytest.approx(-ch.slant(x).item(), abs=1e-5)


def test_thin_and_thick_cut_the_bundled_digits_into_thirds(data):
    named = ch.attributes(data.x_train)
    for word in ("thin", "thick"):
        assert abs(np.mean([word in a for a in named]) - 1 / 3) < 0.05, word
    assert 0 < np.mean(["left" in a for a in named]) < np.mean(["right" in a for a in named])


@pytest.mark.parametrize("text", ALL_CAPTIONS)
def test_every_caption_parses_back_to_its_properties(text):
    digit, words, _ = ch.parse(text)
    assert ch.caption(digit, words) == text


def test_the_vocabulary_is_every_word_the_captions_use_and_tokens_round_trip():
    used = {w for text in ALL_CAPTIONS for w in ch.parse(text)[2]}
    assert used == set(ch.VOCAB) - {ch.VOCAB[ch.NULL]}
    tokens = ch.tokenize(ALL_CAPTIONS)
    assert tokens.shape == (len(ALL_CAPTIONS), max(len(t.replace(",", "").split())
                                                   for t in ALL_CAPTIONS))
    for text, row in zip(ALL_CAPTIONS, tokens):
        words = [ch.VOCAB[i] for i in row.tolist() if i != ch.NULL]
        assert " ".join(words) == text.replace(",", "")
    assert ch.tokenize([""]).tolist() == [[ch.NULL]], "the empty caption is all NULL"


def test_describe_writes_the_data_sets_alt_text(data):
    texts = ch.describe(data.x_train[:50], data.y_train[:50])
    for text, x, y in zip(texts, data.x_train[:50], data.y_train[:50]):
        assert ch.parse(text)[:2] == (y.item(), ch.attributes(x)[0])


def test_an_unknown_word_is_one_error_naming_the_known_ones():
    with pytest.raises(ValueError) as e:
        ch.parse("a purple seven")
    assert "purple" in str(e.value) and all(w in str(e.value) for w in ch.VOCAB[1:])


# %% The text encoder and the network
@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = ch.UNet(8).eval()
    with torch.no_grad():  # a non-zero output layer, so the caption changes the prediction
        for p in m.out.parameters():
            p.normal_(0, 0.1)
    return m


def test_the_text_encoder_pools_words_and_the_empty_caption_is_its_own_vector(model):
    enc = model.text
    tokens = ch.tokenize(ALL_CAPTIONS + [""])
    with torch.no_grad():
        vectors = enc(tokens)
        padded = enc(torch.cat([tokens, torch.zeros(len(tokens), 3, dtype=torch.long)], 1))
        shuffled = enc(tokens[:, torch.randperm(tokens.shape[1])])
    assert vectors.shape == (len(tokens), 4 * 8)
    assert torch.allclose(vectors, padded, atol=1e-6), "padding is not a word"
    assert torch.allclose(vectors, shuffled, atol=1e-6), "a sum of words: order is lost"
    null = vectors[-1]
    assert (vectors[:-1] - null).abs().amax(1).min() > 1e-4, "the null is no caption's vector"
    assert enc.words.weight[ch.NULL].requires_grad


def test_the_empty_caption_reads_its_learned_row_and_trains_it():
    # Guidance pushes away from the empty caption: it must be a vector the network learns (row
    # NULL through the MLP), not a fixed zero input no gradient can move.
    torch.manual_seed(0)
    enc = ch.TextEncoder(16)
    empty = enc(ch.tokenize(["", ""]))
    assert torch.allclose(empty, enc.mlp(enc.words.weight[ch.NULL]).expand(2, -1), atol=1e-6)
    empty.sum().backward()
    assert enc.words.weight.grad[ch.NULL].abs().sum() > 0, "the empty caption's row learns"


class Spy(torch.nn.Module):
    """A one-weight denoiser that remembers the conditions training shows it."""

    def __init__(self):
        super().__init__()
        self.w, self.seen = torch.nn.Parameter(torch.zeros(())), []

    def forward(self, xt, t, cond):
        self.seen.append(cond.clone())
        return xt * self.w


def test_a_training_step_shows_the_empty_caption_in_place_of_whole_captions_at_p_uncond():
    # Without it guidance has no unconditional model to push away from (s = 0 would be noise).
    spy, n, p = Spy(), 4000, ch.P_UNCOND
    tokens = MANY[:n]
    ch.train_step(spy, copy.deepcopy(spy), torch.optim.SGD(spy.parameters(), lr=0.1),
                  torch.zeros(n, 1, 1, 1), tokens, SCHED, "eps", "plain", 0.5,
                  torch.Generator().manual_seed(0))
    shown = spy.seen[0]
    empty, kept = (shown == ch.NULL).all(1), (shown == tokens).all(1)
    assert bool((empty | kept).all()), "a caption is shown whole or not at all"
    assert abs(empty.float().mean().item() - p) <= 5 * math.sqrt(p * (1 - p) / n)


@FAST
@given(seed=st.integers(0, 10_000), t=st.integers(1, 1000), i=st.integers(0, 89))
def test_guidance_one_is_conditional_and_zero_is_unconditional(model, seed, t, i):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 1, 28, 28, generator=gen)
    tt = torch.full((3,), t)
    tokens = ch.tokenize([ALL_CAPTIONS[i]] * 3)

    def eps_at(s):  # the guided noise estimate, unclipped
        return ch.denoise(model, x, t, tokens, s, SCHED, "eps", clip=False)[0]
    with torch.no_grad():
        eps_c = model(x, tt, tokens)
        eps_u = model(x, tt, ch.tokenize([""] * 3))
    s = 0.5 + seed % 7
    assert torch.allclose(eps_at(1.0), eps_c, atol=1e-6)
    assert torch.allclose(eps_at(0.0), eps_u, atol=1e-6)
    assert torch.allclose(eps_at(s), eps_u + s * (eps_c - eps_u), atol=1e-5)
    assert not torch.allclose(eps_c, eps_u), "the caption must change the prediction"


@FAST
@given(p=st.floats(0.05, 0.95), seed=st.integers(0, 1000), sketch=st.booleans())
def test_dropout_hides_whole_captions_or_sketches_at_the_rate_asked(p, seed, sketch):
    n = 4000
    cond = torch.rand(n, 1, 7, 7) + 0.1 if sketch else MANY[:n]
    dropped = ch.drop_labels(cond, ch.NULL, p, torch.Generator().manual_seed(seed))
    gone = (dropped == ch.NULL).flatten(1).all(1)
    kept = (dropped == cond).flatten(1).all(1)
    assert bool((gone | kept).all()), "a row is dropped whole or kept whole"
    assert abs(gone.float().mean().item() - p) <= 5 * math.sqrt(p * (1 - p) / n)


def test_the_sketch_is_the_digit_shrunk_and_the_blank_sketch_is_the_null(data):
    x = data.x_train[:8]
    s = sketching.sketch(x)
    assert s.shape == (8, 1, 7, 7) and s.min() >= 0 and s.max() <= 1
    assert torch.allclose(s.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-6)
    assert torch.allclose(s[0, 0, 3, 2], x[0, 0, 12:16, 8:12].mean())
    torch.manual_seed(1)
    net = ch.UNet(8, sketch=True).eval()
    assert net.text is None and net.inp.in_channels == 2
    with torch.no_grad():
        for p in net.out.parameters():
            p.normal_(0, 0.1)
        xt, t = torch.randn(8, 1, 28, 28), torch.full((8,), 500)
        guided0 = ch.guided_output(net, xt, t, s, torch.zeros_like(s), 0.0)
        assert torch.allclose(guided0, net(xt, t, torch.zeros_like(s)))
        assert not torch.allclose(net(xt, t, s), guided0)


# %% The lesson's run, --prompt, and the experiments
TINY = ["--steps", "2", "--batch-size", "8", "--channels", "8", "--sample-steps", "2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("09") / "run"
    ch.main(TINY + ["--samples", "50", "--out", str(out)])
    return out


def test_main_writes_the_contract_and_measures_every_word(trained):
    m = check_outputs(trained, 50, labelled=True)
    assert check_gif(trained / "generation.gif") >= 2
    with np.load(trained / "samples.npz") as f:
        assert f["y"].tolist() == [i % 10 for i in range(50)]
    for word in ("thin", "thick", "left", "right"):
        assert 0 <= m[f"follow_{word}"] <= 1 and 0 < m[f"share_{word}"] < 1
    assert "label_accuracy" in m and m["prompt"] == ""


def test_a_prompt_draws_only_that_prompt_and_measures_only_its_words(trained, tmp_path):
    out = tmp_path / "seven"
    ch.main(["--load", str(trained / "model.pt"), "--samples", "10", "--sample-steps", "2",
             "--no-gif", "--prompt", "a thick seven, slanted right", "--out", str(out)])
    m = check_outputs(out, 10, labelled=True)
    with np.load(out / "samples.npz") as f:
        assert set(f["y"].tolist()) == {7}
    assert {"follow_thick", "follow_right"} <= set(m) and "follow_thin" not in m
    out = tmp_path / "thick"  # no digit named: nothing to score the label against
    ch.main(["--load", str(trained / "model.pt"), "--samples", "4", "--sample-steps", "1",
             "--no-gif", "--prompt", "thick", "--out", str(out)])
    m = check_outputs(out, 4)
    with np.load(out / "samples.npz") as f:
        assert "y" not in f
    assert "label_accuracy" not in m and "follow_thick" in m


def test_an_unknown_word_in_the_prompt_is_one_line_and_writes_nothing(capsys, tmp_path):
    err = one_line_error(ch.main, ["--prompt", "a purple seven", "--out", str(tmp_path / "x")],
                         capsys, "purple")
    assert "seven" in err and "slanted" in err and not (tmp_path / "x").exists()


def test_the_prompt_following_experiment_runs_tiny(trained, tmp_path):
    out = tmp_path / "pf"
    prompt_following.main(["--load", str(trained / "model.pt"), "--samples", "20",
                           "--sample-steps", "1", "--scales", "0,2", "--out", str(out)])
    m = strict_json(out / "metrics.json")
    assert [r["guidance"] for r in m["sweep"]] == [0.0, 2.0]
    assert all(0 <= r["follow_mean"] <= 1 and "label_accuracy" in r for r in m["sweep"])
    assert m["real"]["follow_thin"] == 1.0 and (out / "prompt_following.png").exists()


def test_the_sketch_experiment_runs_tiny(tmp_path):
    out = tmp_path / "sk"
    sketching.main(TINY[:-1] + ["1", "--samples", "12", "--scales", "0,2", "--out", str(out)])
    m = strict_json(out / "metrics.json")
    assert [r["guidance"] for r in m["sweep"]] == [0.0, 2.0]
    assert all(r["sketch_error"] >= 0 for r in m["sweep"]) and m["other_digit_error"] > 0
    assert (out / "sketches.png").exists() and (out / "model.pt").exists()


def test_sketch_error_is_zero_for_the_digit_itself(data):
    x = data.x_held[:16]
    assert sketching.sketch_error(x, sketching.sketch(x)) == 0
    assert sketching.sketch_error(x.roll(1, 0), sketching.sketch(x)) > 0


def test_combinations_of_the_default_prompts_cover_every_word():
    prompts = ch.default_prompts(90)
    assert len(set(prompts)) == 90
    assert {ch.parse(p)[0] for p in prompts} == set(range(10))
    words = set(itertools.chain.from_iterable(ch.parse(p)[1] for p in prompts))
    assert words == {"thin", "thick", "left", "right"}
