"""Tests for 05_gan.py: shapes, the losses' formulas, each player's step (no gradient leaks, the
non-saturating loss, the critic's accuracy), generation image by image, determinism, the critic
filter, the history the figures are drawn from, the contract and the GIF (one tiny run shared);
the lesson copied out alone on other shapes; and experiments/05_walks.py."""
import copy
import importlib
import io
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import check_gif, check_outputs, one_line_error, strict_json, write_checkpoint

gan = importlib.import_module("05_gan")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
walks = importlib.import_module("05_walks")
CPU = torch.device("cpu")
ARCHS = ["dcgan", "mlp"]
logit_lists = st.lists(st.floats(-12, 12), min_size=1, max_size=16)
# What a student copies (tests/test_repository.py runs travel on it alone), and the rest.
LESSON = ["IMAGE_SHAPE", "Critic", "conv_pair", "mlp_pair", "build", "critic_loss",
          "generator_loss", "generator_loss_minimax", "critic_step", "generator_step",
          "train_step", "generate", "learning_rate", "critic_filter"]
DRIVER = ["SCRIPT", "SMOOTH", "GIF_IMAGES", "Config", "train", "watch", "sample", "judge_samples",
          "game_metrics", "running_mean", "save_game_figures", "LINES", "main"]


def travel(m):
    """The lesson alone: a round of the game with Adam and two generated images (kept by the
    critic's choice of one), for both pairs on colour 3x32x32 and on MNIST's 1x28x28."""
    for arch in ARCHS:
        for shape in [(3, 32, 32), (1, 28, 28)]:
            torch.manual_seed(0)
            model = m.build(arch, 8, 4, shape)
            G, D = model["generator"], model["critic"]
            opt_g, opt_d = (torch.optim.Adam(p.parameters(), lr=1e-3, betas=(0.5, 0.999))
                            for p in (G, D))
            stats = m.train_step(G, D, opt_g, opt_d, torch.rand(4, *shape) * 2 - 1, 8)
            assert all(math.isfinite(v) for v in stats.values()) and len(stats) == 4
            x = m.generate(G, torch.randn(2, 8))
            assert x.shape == (2, *shape) and torch.isfinite(x).all()
            assert x[m.critic_filter(D, x, 1)].shape == (1, *shape)


def pair(arch="dcgan", seed=0, z_dim=8, width=4):
    torch.manual_seed(seed)
    model = gan.build(arch, z_dim, width)
    return model["generator"], model["critic"]


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_ranges(arch):
    G, D = pair(arch)
    x = G(torch.randn(5, 8))
    assert x.shape == (5, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (5,)
    imgs = gan.generate(G, torch.randn(7, 8), chunk=3)
    assert imgs.shape == (7, 1, 28, 28) and imgs.min() >= 0 and imgs.max() <= 1
    assert G.training  # generate() restores the mode it found


@pytest.mark.parametrize("arch", ARCHS)
def test_the_pair_takes_the_image_shape_its_architecture_allows(arch):
    for shape in [(3, 32, 32), (1, 16, 12), (2, 8, 20)]:
        model = gan.build(arch, 8, 4, shape)
        x = model["generator"](torch.randn(3, 8))
        assert x.shape == (3, *shape) and model["critic"](x).shape == (3,)
        assert model.image_shape == shape
    if arch == "dcgan":  # two halvings: a side that is not a multiple of 4 is refused at once
        for shape in [(1, 30, 28), (3, 32, 18)]:
            with pytest.raises(ValueError, match="divisible by 4"):
                gan.build(arch, 8, 4, shape)
    else:
        assert gan.build(arch, 8, 4, (1, 30, 7))["generator"](torch.randn(2, 8)).shape[2:] == \
            (30, 7)
    with pytest.raises(ValueError, match="dcgan"):
        gan.build("gan", 8, 4)


@pytest.mark.parametrize("arch", ARCHS)
@settings(max_examples=8, deadline=None)
@given(n=st.integers(2, 12), seed=st.integers(0, 10_000), data=st.data())
def test_each_generated_image_depends_on_its_own_z_alone(arch, n, seed, data):
    # Sampling with BatchNorm left in training mode normalises each image by its
    # batch's statistics, so changing the other z's of a batch changes every image. The
    # generator is handed over in training mode (as training leaves it) and with running
    # statistics of its own, so that eval mode is not just the identity.
    G, _ = pair(arch, seed % 5)
    with torch.no_grad():
        G(torch.randn(32, 8) * 3 + 1)  # a training-mode pass moves the running statistics
    G.train()
    i = data.draw(st.integers(0, n - 1))
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 8, generator=gen)
    others = torch.randn(n, 8, generator=gen) * 2 + 1
    others[i] = z[i]
    assert torch.allclose(gan.generate(G, z)[i], gan.generate(G, others)[i], atol=1e-5)
    assert torch.allclose(gan.generate(G, z)[i], gan.generate(G, z[i:i + 1])[0],
                          atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_batchnorm_is_not_the_copied_bug(arch):
    # BatchNorm(c, 0.8) would set eps = 0.8; every norm layer keeps the defaults.
    G, D = pair(arch)
    norms = [m for m in G.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.eps == 1e-5 and m.momentum == 0.1 for m in norms)
    assert not [m for m in D.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@settings(max_examples=30, deadline=None)
@given(real=logit_lists, fake=logit_lists)
def test_losses_match_their_formulas(real, fake):
    r, f = torch.tensor(real, dtype=torch.float64), torch.tensor(fake, dtype=torch.float64)
    d_real, d_fake = torch.sigmoid(r), torch.sigmoid(f)
    # critic: -E log D(x) - E log(1 - D(G(z)))
    close = dict(rel=1e-9, abs=1e-9)
    want = -(d_real.log().mean() + (1 - d_fake).log().mean()).item()
    assert gan.critic_loss(r, f).item() == pytest.approx(want, **close)
    # generator, non-saturating: -E log D(G(z)); minimax term: E log(1 - D(G(z)))
    assert gan.generator_loss(f).item() == pytest.approx(-d_fake.log().mean().item(), **close)
    want = (1 - d_fake).log().mean().item()
    assert gan.generator_loss_minimax(f).item() == pytest.approx(want, **close)


def test_non_saturating_loss_keeps_its_gradient_where_the_minimax_one_vanishes():
    # A critic that rejects the samples confidently: D(G(z)) = sigmoid(-10) ~ 5e-5.
    f = torch.full((4,), -10.0, dtype=torch.float64, requires_grad=True)
    (g_ns,) = torch.autograd.grad(gan.generator_loss(f), f)
    (g_mm,) = torch.autograd.grad(gan.generator_loss_minimax(f), f)
    assert g_ns.abs().min() > 1000 * g_mm.abs().max()
    # Same direction: both push the logit of generated images up.
    assert (g_ns < 0).all() and (g_mm < 0).all()


@settings(max_examples=30, deadline=None)
@given(steps=st.integers(2, 5000), peak=st.floats(1e-6, 1.0))
def test_learning_rate_holds_for_half_then_falls_to_zero(steps, peak):
    lrs = [gan.learning_rate(s, steps, peak) for s in range(1, steps + 1)]
    assert all(lr == peak for lr in lrs[:steps // 2])
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # never rises
    assert lrs[steps // 2] < peak  # the first step past halfway has begun the decay
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)


def params(m):
    return [p.detach().clone() for p in m.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("arch", ARCHS)
def test_critic_step_updates_only_the_critic_through_the_critic_loss(arch):
    G, D = pair(arch)
    # Plain SGD here, so the new weights differ exactly by lr x the gradient:
    # Adam divides by the gradient's running size, which turns float rounding
    # in near-zero gradients into full-size steps.
    opt_d = torch.optim.SGD(D.parameters(), lr=0.1)
    real, z = torch.rand(6, 1, 28, 28) * 2 - 1, torch.randn(6, 8)
    G_before, D_before = params(G), params(D)
    D_replay = copy.deepcopy(D)
    opt_replay = torch.optim.SGD(D_replay.parameters(), lr=0.1)
    fake = G(z)  # carries its graph back to G: the step must not follow it
    gan.critic_step(D, opt_d, real, fake)
    assert same(params(G), G_before) and all(p.grad is None for p in G.parameters())
    # Replay the update by hand from the critic loss alone, scoring the two
    # batches in separate passes: the same new weights.
    loss = gan.critic_loss(D_replay(real), D_replay(fake.detach()))
    opt_replay.zero_grad()
    loss.backward()
    opt_replay.step()
    assert not same(params(D), D_before)
    for a, b in zip(D.parameters(), D_replay.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_generator_step_updates_only_the_generator(arch):
    G, D = pair(arch)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    D_before, G_before = params(D), params(G)
    gan.generator_step(D, opt_g, G(torch.randn(6, 8)))
    assert same(params(D), D_before) and all(p.grad is None for p in D.parameters())
    assert not same(params(G), G_before)
    assert all(p.requires_grad for p in D.parameters())  # the freeze is undone


@pytest.mark.parametrize("arch", ARCHS)
def test_generator_step_is_one_sgd_step_on_the_non_saturating_loss(arch):
    # With a fixed critic and batch, generator_step with plain SGD must move G exactly as one
    # SGD step on -E log D(G(z)) computed here from sigmoid. The critic is made to reject
    # confidently (D(G(z)) ~ 0.05, as early in training): there the saturating loss
    # E log(1 - D(G(z))) has a gradient ~20x smaller, so using it instead fails this test.
    G, D = pair(arch)
    with torch.no_grad():
        [m for m in D.modules() if isinstance(m, torch.nn.Linear)][-1].bias.fill_(-3.0)
    z = torch.randn(6, 8)
    G_hand, G_before = copy.deepcopy(G), params(G)
    gan.generator_step(D, torch.optim.SGD(G.parameters(), lr=0.1), G(z))
    d_fake = torch.sigmoid(D(G_hand(z)))
    assert d_fake.max() < 0.2
    opt = torch.optim.SGD(G_hand.parameters(), lr=0.1)
    opt.zero_grad()
    (-d_fake.log().mean()).backward()
    opt.step()
    moved = [a - b for a, b in zip(params(G), G_before)]
    wanted = [a.detach() - b for a, b in zip(G_hand.parameters(), G_before)]
    assert max(m.abs().max().item() for m in wanted) > 1e-4  # the step is not negligible
    for m, w in zip(moved, wanted):
        assert torch.allclose(m, w, rtol=1e-3, atol=1e-7)


def test_train_step_changes_both_and_reports_accuracies():
    G, D = pair()
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3)
    G0, D0 = params(G), params(D)
    stats = gan.train_step(G, D, opt_g, opt_d, torch.rand(6, 1, 28, 28) * 2 - 1, 8)
    assert not same(params(G), G0) and not same(params(D), D0)
    assert 0 <= stats["acc_real"] <= 1 and 0 <= stats["acc_fake"] <= 1
    assert math.isfinite(stats["d_loss"]) and math.isfinite(stats["g_loss"])


class Brightness(torch.nn.Module):
    """Stand-ins with a known order: the 'generator' paints every pixel tanh(z[0]),
    the 'critic' scores an image by its mean brightness (times a weight of 1)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, t):
        if t.dim() == 4:
            return t.flatten(1).mean(1) * self.weight
        return torch.tanh(t[:, :1, None, None]).expand(-1, 1, 28, 28) * self.weight


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 12), data=st.data())
def test_the_critics_accuracy_counts_its_right_calls_on_each_batch(b, data):
    # A planted bug, acc_fake counting the generated images the critic calls *real* drew the game
    # backwards in training.png. The critic here calls an image real when it is bright; the
    # real batch has `right` bright images, the generated one `fooled` bright ones.
    right, fooled = data.draw(st.integers(0, b)), data.draw(st.integers(0, b))
    real, fake = -torch.ones(b, 1, 28, 28), -torch.ones(b, 1, 28, 28)
    real[:right], fake[:fooled] = 1.0, 1.0
    D = Brightness()
    stats = gan.critic_step(D, torch.optim.SGD(D.parameters(), lr=0.0), real, fake)
    assert stats["acc_real"] == pytest.approx(right / b)
    assert stats["acc_fake"] == pytest.approx((b - fooled) / b)


@pytest.mark.parametrize("calls_real", [False, True])
def test_a_critic_that_calls_everything_one_way_is_right_on_one_batch_only(calls_real):
    # Through a whole round of the game: a critic that calls everything fake is right on
    # every generated image and on no real one, and the reverse.
    G, D = pair()
    with torch.no_grad():
        last = [m for m in D.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.zero_()
        last.bias.fill_(20.0 if calls_real else -20.0)
    opts = [torch.optim.SGD(m.parameters(), lr=0.0) for m in (G, D)]
    stats = gan.train_step(G, D, *opts, torch.rand(6, 1, 28, 28) * 2 - 1, 8)
    assert (stats["acc_real"], stats["acc_fake"]) == ((1.0, 0.0) if calls_real else (0.0, 1.0))


SMALL = dict(steps=3, batch_size=8, z_dim=8, width=4, monitor_every=2, monitor_n=12)


def test_training_is_seeded_and_keeps_the_fixed_batch_as_bytes(data):
    def run(seed):
        torch.manual_seed(seed)
        model = gan.build("dcgan", 8, 4)
        extra = gan.train(model, gan.Config(seed=seed, **SMALL), data, CPU)
        return model, extra["history"]

    (m0, h0), (m0b, h0b), (m1, _) = run(0), run(0), run(1)
    flat = [torch.cat([p.flatten() for p in m.parameters()]) for m in (m0, m0b, m1)]
    assert torch.equal(flat[0], flat[1]) and not torch.equal(flat[0], flat[2])
    assert h0["monitor_steps"] == [2, 3] and len(h0["acc_real"]) == 3
    assert all(s.dtype == torch.uint8 and s.shape == (12, 1, 28, 28) for s in h0["snapshots"])
    assert all(torch.equal(a, b) for a, b in zip(h0["snapshots"], h0b["snapshots"]))
    # the last snapshot is the trained generator's images of the fixed z, rounded to bytes
    z = torch.randn(12, 8, generator=torch.Generator().manual_seed(1))
    x = gan.generate(m0["generator"], z)
    assert (h0["snapshots"][-1].float() / 255 - x).abs().max() <= 0.5 / 255 + 1e-6


class CountingJudge:
    """A stand-in judge: calls a digit dark (0) or bright (1) by its mean intensity."""

    def evaluate(self, x):
        labels = (x.flatten(1).mean(1) > 0.5).long()
        return {"class_counts": np.bincount(labels.numpy(), minlength=10).tolist()}


def test_watch_sorts_each_snapshot_then_keeps_a_small_clone():
    snaps = [torch.full((20, 28, 28), v, dtype=torch.uint8) for v in (0, 255)]
    snaps[0][:3] = 255  # three bright digits among 20 dark ones at the first check
    extra = gan.watch({"history": {"monitor_steps": [1, 2], "snapshots": snaps}},
                      CountingJudge())
    h = extra["history"]
    assert h["monitor_counts"] == [[17, 3] + [0] * 8, [0, 20] + [0] * 8]
    assert all(s.shape == (gan.GIF_IMAGES, 28, 28) for s in h["snapshots"])
    # a slice would carry the whole snapshot's storage into the checkpoint
    assert all(s.untyped_storage().nbytes() == s.numel() for s in h["snapshots"])
    assert "monitor_counts" not in gan.watch({"history": {"monitor_steps": [1], "snapshots": [
        snaps[0]]}}, None)["history"]


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 40), data=st.data())
def test_critic_filter_keeps_the_best_scored_in_z_order(m, data):
    n = data.draw(st.integers(1, m))
    z = torch.randn(m, 3, generator=torch.Generator().manual_seed(m))
    stub = Brightness()
    drawn = gan.generate(stub, z)
    kept = gan.critic_filter(stub, drawn, n, chunk=7)
    assert drawn[kept].shape == (n, 1, 28, 28)
    brightest = z[:, 0].argsort(descending=True)[:n]
    assert kept.tolist() == sorted(brightest.tolist())  # the n brightest, in z order
    assert torch.allclose(drawn[kept], gan.generate(stub, z[kept]))


def test_critic_filter_keeping_everything_keeps_every_digit_in_order():
    G, D = pair()
    z = torch.randn(9, 8)
    x = gan.generate(G, z)
    kept = gan.critic_filter(D, x, 9)
    assert kept.tolist() == list(range(9)) and torch.equal(x[kept], gan.generate(G, z))


def test_running_mean():
    assert np.allclose(gan.running_mean([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])


# The MLP pair goes through the same main(); its shapes and steps are tested above,
# so one end-to-end run (the default arch) keeps the file fast.
TINY = ["--steps", "4", "--monitor-every", "2", "--monitor-n", "20", "--samples", "16",
        "--width", "4", "--z-dim", "8", "--batch-size", "8"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny trained run, shared by the checks of what it wrote and what --load does: its
    folder, its metrics, and the bytes of its checkpoint, GIF and samples as first written."""
    out = tmp_path_factory.mktemp("gan") / "run"
    gan.main(TINY + ["--out", str(out)])
    return out, check_outputs(out, 16), {name: (out / name).read_bytes() for name in (
        "model.pt", "generation.gif", "samples.npz")}


def test_main_writes_the_contract(tiny_run):
    out, m, _ = tiny_run
    assert m["monitor_steps"] == [2, 4] and all(sum(c) == 20 for c in m["monitor_counts"])
    for key in ("d_acc_real_final", "d_acc_fake_final", "d_acc_real_first", "d_acc_fake_first"):
        assert 0 <= m[key] <= 1
    # The default keeps a quarter of the drawn digits and reports the unfiltered ones too.
    assert m["drawn"] == 64 and "unfiltered_fd" in m and 0 <= m["unfiltered_confidence"] <= 1
    assert m["config"]["keep"] == 0.25 and m["arch"] == "dcgan"
    for fig in ("training.png", "modes.png"):
        assert (out / fig).read_bytes()[:4] == b"\x89PNG"
    assert not (out / "interpolation.png").exists()  # experiments/05_walks.py draws walks
    assert check_gif(out / "generation.gif") >= 2  # one frame per check
    snaps = torch.load(out / "model.pt", weights_only=True)["extra"]["history"]["snapshots"]
    assert len(snaps) == 2 and snaps[0].shape == (gan.GIF_IMAGES, 1, 28, 28)


def test_load_into_the_same_folder_brings_everything_back(tiny_run):
    # The checkpoint stays byte-identical, and the samples, the training time, the figures
    # and the GIF come back from it; the checkpoint's sizes win over the flags'.
    out, m, first = tiny_run
    gan.main(["--load", str(out / "model.pt"), "--samples", "16", "--width", "8", "--out",
              str(out)])
    assert (out / "model.pt").read_bytes() == first["model.pt"], "--load rewrote what it loaded"
    m2 = check_outputs(out, 16)
    assert np.array_equal(np.load(out / "samples.npz")["x"],
                          np.load(io.BytesIO(first["samples.npz"]))["x"])
    assert m2["train_seconds"] == m["train_seconds"] and m2["config"]["width"] == 4
    assert (out / "modes.png").exists() and m2["monitor_counts"] == m["monitor_counts"]
    assert (out / "generation.gif").read_bytes() == first["generation.gif"]


def test_keep_1_shows_every_drawn_digit_unfiltered(tiny_run, tmp_path):
    whole = tmp_path / "keep_all"
    gan.main(["--load", str(tiny_run[0] / "model.pt"), "--samples", "16", "--keep", "1",
              "--no-gif", "--out", str(whole)])
    m3 = check_outputs(whole, 16)
    assert m3["drawn"] == 16 and "unfiltered_fd" not in m3
    assert not (whole / "generation.gif").exists()


def test_walks_experiment(tiny_run, tmp_path, capsys):
    out = tmp_path / "walks"
    walks.main(["--load", str(tiny_run[0] / "model.pt"), "--samples", "16", "--out", str(out)])
    m = strict_json(out / "metrics.json")
    for where in ("ends", "line", "circle"):
        for key in ("norm", "fd", "confidence", "n"):
            assert isinstance(m[f"{where}_{key}"], (int, float)), f"{where}_{key}"
    assert m["line_norm"] < m["circle_norm"]  # the straight line's middle is nearer the origin
    assert (out / "walks.png").read_bytes()[:4] == b"\x89PNG"
    # It offers only the flags it reads: it keeps no share and writes no GIF.
    for flag in ("--keep", "--no-gif"):
        one_line_error(walks.main, [flag, "1"] if flag == "--keep" else [flag], capsys,
                       "unrecognized")


def test_slerp_ends_and_keeps_the_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, generator=g), torch.randn(64, generator=g)
    b = b - (b @ a) / (a @ a) * a
    b = b * a.norm() / b.norm()                        # orthogonal, same norm
    path = walks.slerp(a, b, torch.linspace(0, 1, 5).unsqueeze(1))
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    assert torch.allclose(path.norm(dim=1), a.norm().expand(5), rtol=1e-4)
    # a batch of pairs, one t: each pair's own great circle
    pairs = walks.slerp(torch.stack([a, b]), torch.stack([b, a]), 0.5)
    assert torch.allclose(pairs[0], pairs[1], atol=1e-5)
    assert torch.allclose(pairs.norm(dim=1), a.norm().expand(2), rtol=1e-4)


def test_bad_inputs(tmp_path, capsys):
    one_line_error(gan.main, ["--arch", "vae"], capsys, "invalid choice")
    one_line_error(gan.main, ["--z-dim", "0"], capsys, "--z-dim")
    one_line_error(gan.main, ["--batch-size", "1"], capsys, "--batch-size")
    one_line_error(gan.main, ["--lr", "inf"], capsys, "--lr")
    one_line_error(gan.main, ["--keep", "0"], capsys, "--keep")
    one_line_error(gan.main, ["--keep", "1.5"], capsys, "--keep")
    one_line_error(gan.main, ["--monitor-n", "5"], capsys, "--monitor-n")
    one_line_error(gan.main, ["--samples", "1"], capsys, "--samples")
    out = ["--out", str(tmp_path)]
    one_line_error(gan.main, ["--load", str(tmp_path / "missing.pt")] + out, capsys, "not found")
    torch.manual_seed(0)
    state = gan.build("dcgan", 8, 4).state_dict()
    for name, script, config, says in [
            ("foreign", "06_vae", {"arch": "dcgan", "z_dim": 8, "width": 4}, "06_vae"),
            ("resized", "05_gan", {"arch": "dcgan", "z_dim": 8, "width": 8}, "does not match"),
            ("sizeless", "05_gan", {"steps": 4}, "does not match")]:
        path = tmp_path / f"{name}.pt"
        write_checkpoint(path, script, state, config)
        one_line_error(gan.main, ["--load", str(path)] + out, capsys, says)
