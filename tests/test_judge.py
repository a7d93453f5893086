"""Tests for judge.py: the Frechet distance and the classifier score as mathematics, the
judge's accuracy and figures on real digits, noise and copies, its cache, and what it says
to a beginner when its figures mean little."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import common
import judge as jm
from helpers import one_line_error

FAST = settings(max_examples=25, deadline=None)


def fd(f, g):
    return jm.fd_from_stats(*jm.feature_stats(f), *jm.feature_stats(g))


def _feats(seed, n, d, scale=1.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d))  # correlated features, like a network's
    return rng.normal(size=(n, d)) @ mix * scale


@FAST
@given(st.integers(0, 10**6), st.integers(2, 60), st.integers(2, 24), st.floats(1e-3, 1e3))
def test_fd_of_a_set_against_itself_is_zero(seed, n, d, scale):
    f = _feats(seed, n, d, scale)
    assert 0.0 <= fd(f, f) <= 1e-6 * (2 * np.trace(np.atleast_2d(np.cov(f, rowvar=False))) + 1e-12)


@FAST
@given(st.integers(0, 10**6), st.integers(2, 60), st.integers(2, 60), st.integers(2, 24))
def test_fd_never_negative_and_symmetric(seed, n1, n2, d):
    f, g = _feats(seed, n1, d), _feats(seed + 1, n2, d) + 0.3
    ab, ba = fd(f, g), fd(g, f)
    assert ab >= 0.0 and ba >= 0.0 and abs(ab - ba) <= 1e-6 * max(1.0, ab)


@FAST
@given(st.integers(0, 10**6), st.integers(2, 60), st.integers(2, 24),
       st.lists(st.integers(0, 1000), min_size=2, max_size=5, unique=True))
def test_fd_of_a_shift_is_the_squared_shift(seed, n, d, tenths):
    f = _feats(seed, n, d)
    direction = np.random.default_rng(seed + 7).normal(size=d)
    direction /= np.linalg.norm(direction)
    trace = np.trace(np.atleast_2d(np.cov(f, rowvar=False)))
    for s in sorted(t / 10 for t in tenths):  # a shift leaves the covariance alone
        assert abs(fd(f, f + s * direction) - s * s) <= 1e-6 * (trace + 1) + 1e-9 * s * s
    assert fd(np.arange(10.0)[:, None], np.arange(10.0)[:, None] + 2) == pytest.approx(4.0)


@FAST
@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(0.01, 10), st.floats(0.01, 10)),
                min_size=1, max_size=8))
def test_fd_matches_the_closed_form_for_independent_gaussians(dims):
    # For diagonal covariances FD = sum (m1 - m2)^2 + (s1 - s2)^2 over dimensions.
    dm, v1, v2 = (np.array(c) for c in zip(*dims))
    got = jm.fd_from_stats(dm, np.diag(v1), np.zeros_like(dm), np.diag(v2))
    expected = float((dm ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum())
    assert abs(got - expected) <= 1e-9 * max(1.0, expected) + 1e-9 * (v1.sum() + v2.sum())


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@FAST
@given(st.integers(0, 10**6), st.integers(1, 200), st.floats(0.0, 30.0))
def test_classifier_score_lies_in_1_to_10(seed, n, temperature):
    logits = np.random.default_rng(seed).normal(size=(n, 10)) * temperature
    assert 1.0 <= jm.classifier_score(_softmax(logits)) <= 10.0


@FAST
@given(st.integers(1, 30))
def test_classifier_score_rewards_confident_balanced_predictions_only(per_class):
    labels = np.repeat(np.arange(10), per_class)
    sharp = [jm.classifier_score(_softmax(np.eye(10)[labels] * t)) for t in (2., 5., 10., 30.)]
    assert sharp[-1] > 9.99 and all(b > a for a, b in zip(sharp, sharp[1:]))
    # Confident but all one class is not a good generator: score 1.
    assert jm.classifier_score(np.eye(10)[np.zeros(10 * per_class, int)]) == pytest.approx(1.0)


# %% The judge on real digits, noise and copies
def test_judge_is_accurate_on_held_out_digits(judge, data):
    acc = (jm.logits(judge.net, data.x_held).argmax(1) == data.y_held).float().mean().item()
    assert acc >= 0.98 and acc == pytest.approx(judge.accuracy, abs=1e-6)


def test_judge_on_held_out_real_digits(judge, data):
    x, y = data.x_held[500:], data.y_held[500:]  # the floor uses the first 500
    r = judge.evaluate(x)
    assert r["n"] == 500 and r["fd_floor_n"] == 500
    assert 1 / 1.5 <= r["fd_ratio"] <= 1.5, r
    assert abs(r["memorised"] - judge.MEMO_QUANTILE) <= 0.04, r
    assert r["coverage"] == 10 and sum(r["class_counts"]) == 500
    assert r["score"] > 8 and r["confidence"] > 0.9 and "label_accuracy" not in r
    assert r["judge_accuracy"] == judge.accuracy
    assert abs(r["confidence"] - r["real_confidence"]) < 0.02  # real digits, as real as it gets
    labelled = judge.evaluate(x, labels=y)
    assert labelled["label_accuracy"] >= 0.95
    assert "label accuracy" in jm.describe(labelled) and "label accuracy" not in jm.describe(r)
    assert "N=500" in jm.describe(r) and "floor" in jm.describe(r)


def test_judge_flags_training_digits_as_memorised(judge, data):
    assert judge.evaluate(data.x_train[:300, 0].numpy())["memorised"] == 1.0


def test_judge_separates_noise_and_collapse_from_digits(judge, data):
    noise = judge.evaluate(torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    real = judge.evaluate(data.x_held[:200])
    assert noise["fd"] > 5 * real["fd"] and noise["memorised"] == 0.0
    collapsed = judge.evaluate(data.x_held[:1].repeat(64, 1, 1, 1))
    assert np.isfinite(collapsed["fd"]) and collapsed["fd"] > real["fd"]
    assert collapsed["score"] == pytest.approx(1.0, abs=1e-6) and collapsed["coverage"] == 1
    with pytest.raises(common.UserError):
        judge.evaluate(data.x_held[:1])
    bad = data.x_held[:4].clone()
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(common.UserError, match="NaN"):
        judge.evaluate(bad)


# %% What the judge tells a beginner
def test_explain_says_what_each_figure_means_and_which_way_is_better(judge, data):
    lines = jm.explain(judge.evaluate(data.x_held[:500], data.y_held[:500]))
    text = "\n".join(lines)
    for figure in ("FD", "confidence", "coverage", "score", "memorised", "label accuracy"):
        assert any(line.startswith(figure) for line in lines), figure
    assert "lower is better" in text and "floor" in text and "real digits" in text
    assert "note:" not in text and "warning:" not in text
    assert lines[-1].startswith("judge recognises ") and "held-out digits" in lines[-1]


def test_a_few_samples_come_with_a_note_that_fd_and_confidence_say_little(judge, data):
    few = jm.explain(judge.evaluate(torch.rand(16, 1, 28, 28)))
    assert any(line.startswith("note: at N=16") and "--samples" in line for line in few)


def test_a_weak_judge_says_its_figures_mean_little(judge, data):
    weak = dict(judge.evaluate(data.x_held[:500]), judge_accuracy=0.067)
    text = "\n".join(jm.explain(weak))
    assert "warning:" in text and "7%" in text and "mean little" in text


# %% The cache: trained once per data set, on the run's own data
def _digits(n=150, noise=False):
    x, y = common.load_npz(common.HERE / "data" / "mnist_5k.npz")
    pick = np.random.default_rng(0).choice(len(x), n, replace=False)
    x = np.random.default_rng(1).integers(0, 256, (n, 28, 28), dtype=np.uint8) if noise else x[pick]
    return x, y[pick]


@pytest.fixture
def quick_data(monkeypatch, tmp_path):
    """A user's 150 digits and a judge trained for a few steps only, in a cache of its own."""
    monkeypatch.setattr(jm, "JUDGE_STEPS", 3)
    monkeypatch.setattr(jm.train_judge, "__defaults__", (3, 0))
    monkeypatch.setattr(jm.Judge, "_loaded", {})
    x, y = _digits()
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    return common.load_data(str(tmp_path / "mine.npz"))


def test_judge_loads_from_cache_without_training(judge, data, capsys, monkeypatch):
    monkeypatch.setattr(jm.Judge, "_loaded", {})  # forget the judge this process holds
    again = jm.Judge.load(data)
    assert "training" not in capsys.readouterr().out
    for a, b in zip(judge.net.state_dict().values(), again.net.state_dict().values()):
        assert torch.equal(a, b)


def test_the_judge_is_trained_on_the_runs_own_data_with_progress(quick_data, data, tmp_path,
                                                                 capsys):
    cache = tmp_path / "cache"
    j = jm.Judge.load(quick_data, cache_dir=cache)
    out = capsys.readouterr().out
    assert "trained once" in out and "training the judge 3/3" in out
    assert [p.name for p in cache.iterdir()] == [f"judge-v{jm.JUDGE_VERSION}-"
                                                 f"{jm.fingerprint(quick_data)}.pt"]
    assert jm.fingerprint(quick_data) != jm.fingerprint(data)
    assert j.floor(1000)[1] == len(quick_data.x_held)  # the floor uses the user's held-out set


def test_a_damaged_cache_is_trained_again(quick_data, tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    path = cache / f"judge-v{jm.JUDGE_VERSION}-{jm.fingerprint(quick_data)}.pt"
    path.write_bytes(b"half a file")
    jm.Judge.load(quick_data, cache_dir=cache)
    assert "damaged" in capsys.readouterr().out
    assert torch.load(path, weights_only=True)["state"]


def test_an_unwritable_cache_costs_only_the_caching(quick_data, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    j = jm.Judge.load(quick_data, cache_dir=tmp_path / "file" / "cache")
    assert "going on without it" in capsys.readouterr().out
    assert j.evaluate(quick_data.x_held)["n"] == len(quick_data.x_held)


def test_a_judge_of_noise_knows_it_is_no_judge(monkeypatch, tmp_path):
    monkeypatch.setattr(jm.Judge, "_loaded", {})
    x, y = _digits(150, noise=True)
    np.savez(tmp_path / "noise.npz", x=x, y=y)
    noise = common.load_data(str(tmp_path / "noise.npz"))
    monkeypatch.setattr(jm.train_judge, "__defaults__", (60, 0))  # enough to fit, not to learn
    j = jm.Judge.load(noise, cache_dir=tmp_path / "cache")
    r = j.evaluate(noise.x_held)
    assert r["judge_accuracy"] < jm.TRUSTED and any("warning:" in s for s in jm.explain(r))


def test_a_chapter_without_judge_py_runs_unscored(monkeypatch, capsys, data):
    import sys
    monkeypatch.setitem(sys.modules, "judge", None)  # as if judge.py were not beside common.py
    assert common.load_judge(data) is None
    assert "scoring skipped" in capsys.readouterr().out
    one_line_error(lambda argv: common.load_npz("absent.npz"), [], capsys, "not found")


def test_the_classifier_score_is_exp_of_the_mean_kl_over_a_varied_set():
    """exp(E[KL(p(y|x) || p(y))]): a set whose images differ in how sure the judge is (here
    peaked and flat rows), where the mean of exp(KL) would differ."""
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(60, 10, generator=gen) * torch.linspace(0, 6, 60)[:, None],
                          1).numpy()
    marginal = probs.mean(0)
    kl = (probs * (np.log(probs) - np.log(marginal))).sum(1)
    assert np.isclose(jm.classifier_score(probs), np.exp(kl.mean()), rtol=1e-4)
    assert not np.isclose(np.exp(kl.mean()), np.exp(kl).mean(), rtol=0.05)  # the set can tell
