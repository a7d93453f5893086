"""Tests for 05_gan.py: shapes, the losses' formulas, each player's step (no gradient leaks, the
non-saturating loss), determinism, the critic filter, the contract and the GIF."""
import copy
import importlib
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import common
from helpers import check_gif, check_outputs, one_line_error

gan = importlib.import_module("05_gan")
CPU = torch.device("cpu")
logit_lists = st.lists(st.floats(-12, 12), min_size=1, max_size=16)


def pair(arch="dcgan", seed=0, z_dim=8, width=4):
    torch.manual_seed(seed)
    return gan.build(arch, z_dim, width)


@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
def test_shapes_and_ranges(arch):
    G, D = pair(arch)
    z = torch.randn(5, 8)
    x = G(z)
    assert x.shape == (5, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (5,)
    imgs = gan.generate(G, torch.randn(7, 8), CPU, chunk=3)
    assert imgs.shape == (7, 1, 28, 28) and imgs.min() >= 0 and imgs.max() <= 1
    assert G.training  # generate() restores the mode it found


@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
def test_batchnorm_is_not_the_copied_bug(arch):
    # BatchNorm(c, 0.8) would set eps = 0.8; every norm layer keeps the defaults.
    G, _ = pair(arch)
    norms = [m for m in G.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.eps == 1e-5 and m.momentum == 0.1 for m in norms)


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


@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
def test_critic_step_updates_only_the_critic_through_the_critic_loss(arch):
    G, D = pair(arch)
    # Plain SGD here, so the new weights differ exactly by lr x the gradient:
    # Adam divides by the gradient's running size, which turns float rounding
    # in near-zero gradients into full-size steps.
    opt_d = torch.optim.SGD(D.parameters(), lr=0.1)
    real, z = torch.rand(6, 1, 28, 28) * 2 - 1, torch.randn(6, 8)
    G_before = params(G)
    D_before = params(D)
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


@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
def test_generator_step_updates_only_the_generator(arch):
    G, D = pair(arch)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    D_before, G_before = params(D), params(G)
    gan.generator_step(D, opt_g, G(torch.randn(6, 8)))
    assert same(params(D), D_before) and all(p.grad is None for p in D.parameters())
    assert not same(params(G), G_before)
    assert all(p.requires_grad for p in D.parameters())  # the freeze is undone


@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
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
    stats = gan.train_step(G, D, opt_g, opt_d, torch.rand(6, 1, 28, 28) * 2 - 1, 8, CPU)
    assert not same(params(G), G0) and not same(params(D), D0)
    assert 0 <= stats["acc_real"] <= 1 and 0 <= stats["acc_fake"] <= 1
    assert math.isfinite(stats["d_loss"]) and math.isfinite(stats["g_loss"])


def test_training_is_seeded_and_deterministic(data):
    def run(seed):
        torch.manual_seed(seed)
        G, D = gan.build("dcgan", 8, 4)
        opt_g = torch.optim.Adam(G.parameters(), lr=1e-3)
        opt_d = torch.optim.Adam(D.parameters(), lr=1e-3)
        for i in range(3):
            gan.train_step(G, D, opt_g, opt_d, data.x_train[i * 8:(i + 1) * 8] * 2 - 1, 8, CPU)
        return torch.cat([p.flatten() for p in list(G.parameters()) + list(D.parameters())])

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_slerp_ends_and_keeps_the_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, generator=g), torch.randn(64, generator=g)
    b = b - (b @ a) / (a @ a) * a
    b = b * a.norm() / b.norm()                        # orthogonal, same norm
    path = gan.slerp(a, b, torch.linspace(0, 1, 5).unsqueeze(1))
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    assert torch.allclose(path.norm(dim=1), a.norm().expand(5), rtol=1e-4)


class Brightness(torch.nn.Module):
    """Stand-ins with a known order: the 'generator' paints every pixel tanh(z[0]),
    the 'critic' scores an image by its mean brightness."""

    def forward(self, t):
        if t.dim() == 4:
            return t.flatten(1).mean(1)
        return torch.tanh(t[:, :1, None, None]).expand(-1, 1, 28, 28)


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 40), data=st.data())
def test_critic_filter_keeps_the_best_scored_in_z_order(m, data):
    n = data.draw(st.integers(1, m))
    z = torch.randn(m, 3, generator=torch.Generator().manual_seed(m))
    stub = Brightness()
    drawn = gan.generate(stub, z, CPU)
    kept = gan.critic_filter(stub, drawn, n, CPU, chunk=7)
    x = drawn[kept]
    assert x.shape == (n, 1, 28, 28)
    brightest = z[:, 0].argsort(descending=True)[:n]
    assert kept.tolist() == sorted(brightest.tolist())  # the n brightest, in z order
    assert torch.allclose(x, gan.generate(stub, z[kept], CPU))


def test_critic_filter_keeping_everything_keeps_every_digit_in_order():
    G, D = pair()
    G.eval()
    z = torch.randn(9, 8)
    x = gan.generate(G, z, CPU)
    kept = gan.critic_filter(D, x, 9, CPU)
    assert kept.tolist() == list(range(9)) and torch.equal(x[kept], gan.generate(G, z, CPU))


def test_running_mean():
    assert np.allclose(gan.running_mean([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])


# The MLP pair goes through the same main(); its shapes and steps are tested above,
# so one end-to-end run (the default arch) keeps the file fast.
def test_main_writes_the_contract_and_loads_back(tmp_path):
    out = tmp_path / "run"
    gan.main(["--steps", "4", "--monitor-every", "2", "--monitor-n", "20", "--samples", "16",
              "--width", "4", "--z-dim", "8", "--batch-size", "8", "--out", str(out)])
    m = check_outputs(out, 16)
    assert m["monitor_steps"] == [2, 4] and all(sum(c) == 20 for c in m["monitor_counts"])
    for key in ("d_acc_real_final", "d_acc_fake_final", "d_acc_real_first", "d_acc_fake_first"):
        assert 0 <= m[key] <= 1
    # The default keeps a quarter of the drawn digits and reports the unfiltered ones too.
    assert m["drawn"] == 64 and "unfiltered_fd" in m and 0 <= m["unfiltered_confidence"] <= 1
    assert m["config"]["keep"] == 0.25 and m["arch"] == "dcgan"
    for fig in ("training.png", "modes.png", "interpolation.png"):
        assert (out / fig).read_bytes()[:4] == b"\x89PNG"
    assert check_gif(out / "generation.gif") >= 2  # one frame per monitor check
    ckpt = torch.load(out / "model.pt", weights_only=True)
    snaps = ckpt["extra"]["history"]["snapshots"]
    assert len(snaps) == 2 and snaps[0].shape == (gan.GIF_IMAGES, 28, 28)
    # --load into the same folder: the checkpoint stays byte-identical, and the samples, the
    # training time, the figures and the GIF come back from it.
    model_bytes, gif_bytes = (out / "model.pt").read_bytes(), (out / "generation.gif").read_bytes()
    x = np.load(out / "samples.npz")["x"]
    gan.main(["--load", str(out / "model.pt"), "--samples", "16", "--width", "8", "--out",
              str(out)])
    assert (out / "model.pt").read_bytes() == model_bytes, "--load rewrote what it loaded"
    m2 = check_outputs(out, 16)
    assert np.array_equal(np.load(out / "samples.npz")["x"], x)
    assert m2["train_seconds"] == m["train_seconds"] and m2["config"]["width"] == 4
    assert (out / "training.png").exists() and m2["monitor_counts"] == m["monitor_counts"]
    assert (out / "generation.gif").read_bytes() == gif_bytes
    # A checkpoint without snapshots (written before the GIF existed) skips only the GIF;
    # --keep 1 shows every drawn digit and reports no unfiltered figures.
    del ckpt["extra"]["history"]["snapshots"]
    torch.save(ckpt, tmp_path / "old.pt")
    whole = tmp_path / "keep_all"
    gan.main(["--load", str(tmp_path / "old.pt"), "--samples", "16", "--keep", "1", "--out",
              str(whole)])
    m3 = check_outputs(whole, 16)
    assert m3["drawn"] == 16 and "unfiltered_fd" not in m3
    assert (whole / "training.png").exists() and not (whole / "generation.gif").exists()


def test_bad_inputs(tmp_path, capsys, judge):
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
    one_line_error(gan.main, ["--batch-size", "5000", "--steps", "1"] + out, capsys, "batch-size")
    G, D = pair()
    state = {"generator": G.state_dict(), "critic": D.state_dict()}
    for name, script, cfg, says in [
            ("foreign", "06_vae", gan.Config(), "06_vae"),
            ("resized", "05_gan", gan.Config(z_dim=8, width=8), "does not match"),
            ("sizeless", "05_gan", {"steps": 4}, "lacks the model's sizes")]:
        path = tmp_path / f"{name}.pt"
        if isinstance(cfg, dict):  # a config without the sizes that build the model
            torch.save({"script": script, "config": cfg, "state": state, "extra": {}}, path)
        else:
            common.save_checkpoint(path, script, cfg, state)
        one_line_error(gan.main, ["--load", str(path)] + out, capsys, says)
