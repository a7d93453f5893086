"""Tests for 04_cfg.py: guidance at s = 0 and 1, label dropout, the null token, the contract."""
import importlib
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import check_gif, check_outputs, one_line_error

cfg_mod = importlib.import_module("04_cfg")
FAST = settings(max_examples=15, deadline=None)


class Recorder(torch.nn.Module):
    """Wraps a model and remembers the labels of every call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x, t, labels):
        self.calls.append(labels.clone())
        return self.model(x, t, labels)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = cfg_mod.UNet(8).eval()
    # a non-zero output layer, so conditional and unconditional predictions differ
    with torch.no_grad():
        for p in m.out.parameters():
            p.normal_(0, 0.1)
        m.label_emb.weight.normal_(0, 1)
    return m


SCHED = cfg_mod.make_schedule("cosine", 1000)


@FAST
@given(seed=st.integers(0, 10_000), t=st.integers(1, 1000), digit=st.integers(0, 9))
def test_guidance_one_is_conditional_and_zero_is_unconditional(model, seed, t, digit):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 1, 28, 28, generator=gen)
    tt = torch.full((3,), t)
    labels = torch.full((3,), digit)

    def eps_at(s):  # the guided noise estimate, unclipped
        return cfg_mod.denoise(model, x, t, labels, s, SCHED, "eps", clip=False)[0]
    with torch.no_grad():
        eps_c = model(x, tt, labels)
        eps_u = model(x, tt, torch.full_like(labels, cfg_mod.NULL))
    s = 0.5 + seed % 7  # some other scale, through the doubled batch
    assert torch.allclose(eps_at(1.0), eps_c)
    assert torch.allclose(eps_at(0.0), eps_u)
    assert torch.allclose(eps_at(s), eps_u + s * (eps_c - eps_u), atol=1e-5)
    w = s - 1  # (1 + w) eps_c - w eps_u is the same thing with s = 1 + w
    assert torch.allclose(eps_at(s), (1 + w) * eps_c - w * eps_u, atol=1e-5)
    assert not torch.allclose(eps_c, eps_u), "the label must change the prediction"


def test_guided_prediction_is_one_call_on_a_doubled_batch(model):
    rec = Recorder(model)
    labels = torch.tensor([3, 7])
    cfg_mod.denoise(rec, torch.randn(2, 1, 28, 28), 5, labels, 3.0, SCHED, "eps")
    assert len(rec.calls) == 1
    assert rec.calls[0].tolist() == [3, 7, cfg_mod.NULL, cfg_mod.NULL]


def test_null_token_used_exactly_where_labels_were_dropped():
    labels = torch.arange(1000) % 10
    dropped = cfg_mod.drop_labels(labels, 0.3, torch.Generator().manual_seed(0))
    kept = dropped != cfg_mod.NULL
    assert torch.equal(dropped[kept], labels[kept]), "kept labels are unchanged"
    assert set(dropped[~kept].tolist()) == {cfg_mod.NULL}
    # and the training loss feeds exactly these labels to the network
    rec = Recorder(cfg_mod.UNet(8))
    gen_a, gen_b = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    x0 = torch.zeros(16, 1, 28, 28)
    y = torch.arange(16) % 10
    cfg_mod.diffusion_loss(rec, x0, y, cfg_mod.make_schedule("cosine", 100), "eps", "plain", 0.5,
                           gen_a)
    torch.randint(1, 101, (16,), generator=gen_b)         # the loss draws t first,
    torch.randn(x0.shape, generator=gen_b)                # then the noise,
    expected = cfg_mod.drop_labels(y, 0.5, gen_b)         # then the drop
    assert torch.equal(rec.calls[0], expected)


@FAST
@given(p=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_drop_rate_matches_p_uncond(p, seed):
    n = 20_000
    dropped = cfg_mod.drop_labels(
        torch.zeros(n, dtype=torch.long), p, torch.Generator().manual_seed(seed)
    )
    rate = (dropped == cfg_mod.NULL).float().mean().item()
    assert abs(rate - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-9


def test_training_hands_the_null_label_to_the_model_at_the_dropout_rate(data, monkeypatch):
    seen = []
    real = cfg_mod.UNet.forward

    def spy(self, x, t, label):
        seen.append(label.clone())
        return real(self, x, t, label)
    monkeypatch.setattr(cfg_mod.UNet, "forward", spy)
    cfg_mod.train(cfg_mod.Config(steps=4, batch_size=100, channels=8, p_uncond=0.3), data,
                  torch.device("cpu"), cfg_mod.make_schedule("cosine", 100))
    rate = (torch.cat(seen) == cfg_mod.NULL).float().mean().item()
    assert abs(rate - 0.3) < 5 * math.sqrt(0.3 * 0.7 / 400)


def test_null_token_is_a_learned_embedding_row():
    m = cfg_mod.UNet(8)
    assert m.label_emb.num_embeddings == 11 and m.label_emb.weight.requires_grad
    assert m.label_emb.weight[cfg_mod.NULL].abs().sum() > 0, "not a zero vector"


def test_diversity_is_zero_for_copies_and_positive_otherwise():
    x = torch.rand(6, 28, 28)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert cfg_mod.within_class_diversity(x[[0, 0, 0, 3, 3, 3]], labels) == 0
    assert cfg_mod.within_class_diversity(x, labels) > 0


def test_the_grid_shares_its_starting_noise_across_scales(model):
    # A model that ignores the label predicts the same noise with and without it, so guidance
    # changes nothing; with the same starting noise every scale's column is then identical.
    deaf = cfg_mod.UNet(8).eval()
    deaf.load_state_dict(model.state_dict())
    with torch.no_grad():
        deaf.label_emb.weight.copy_(model.label_emb.weight[:1].expand(11, -1))
    cfg = cfg_mod.Config(sample_steps=2, default_guidance=3.0)
    grids = cfg_mod.guidance_grid(deaf, cfg, SCHED, torch.device("cpu"))
    assert sorted(grids) == [0, 1, 2, 3, 4]
    for g in grids.values():
        assert g.shape == (30, 1, 28, 28) and torch.allclose(g, grids[0], atol=1e-5)
    # with the label heard, the scales differ
    heard = cfg_mod.guidance_grid(model, cfg, SCHED, torch.device("cpu"), scales=(0, 4))
    assert not torch.allclose(heard[0], heard[4], atol=1e-3)


def test_balanced_labels():
    assert np.bincount(cfg_mod.balanced_labels(100).numpy()).tolist() == [10] * 10
    assert set(cfg_mod.balanced_labels(7, 4).tolist()) == {4}


UNGUIDED = ["--steps", "2", "--batch-size", "8", "--samples", "40", "--channels", "8",
            "--sample-steps", "2"]
TINY = UNGUIDED + ["--guidance", "0,1", "--default-guidance", "3"]


def test_main_writes_the_contract_and_loads_back(tmp_path):
    out = tmp_path / "run"
    cfg_mod.main(TINY + ["--out", str(out)])
    m = check_outputs(out, 40, labelled=True)
    assert [r["guidance"] for r in m["sweep"]] == [0.0, 1.0, 3.0]
    assert "label_accuracy" in m and (out / "guidance_grid.png").exists()
    assert check_gif(out / "generation.gif") >= 2
    with np.load(out / "samples.npz") as f:
        assert np.bincount(f["y"], minlength=10).tolist() == [4] * 10
    again = tmp_path / "again"
    cfg_mod.main(
        [
            "--load",
            str(out / "model.pt"),
            "--samples",
            "10",
            "--sample-steps",
            "2",
            "--guidance",
            "2",
            "--default-guidance",
            "2",
            "--digit",
            "7",
            "--out",
            str(again),
        ]
    )
    check_outputs(again, 10, labelled=True)
    with np.load(again / "samples.npz") as f:
        assert set(f["y"].tolist()) == {7}
    plain = tmp_path / "plain"  # without --guidance only the default scale is measured
    cfg_mod.main(UNGUIDED + ["--load", str(out / "model.pt"), "--no-gif", "--out", str(plain)])
    m = check_outputs(plain, 40, labelled=True)
    assert [r["guidance"] for r in m["sweep"]] == [m["guidance"]]
    assert (plain / "guidance_grid.png").exists()


@pytest.mark.parametrize("argv, says", [
    (["--digit", "10"], "--digit"),
    (["--digit", "-2"], "--digit"),
    (["--p-uncond", "1.5"], "--p-uncond"),
    (["--guidance", "1,x"], "guidance"),
    (["--guidance", "-1"], "guidance"),
    (["--steps", "0"], "--steps"),
])
def test_bad_inputs_are_one_line(argv, says, capsys, tmp_path):
    one_line_error(cfg_mod.main, argv + ["--out", str(tmp_path)], capsys, says)


def test_bad_data_and_checkpoint(capsys, tmp_path):
    np.savez(tmp_path / "labels.npz", x=np.zeros((120, 28, 28), np.uint8), y=np.full(120, 12))
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    for flag, name, says in [("--data", "labels.npz", "0-9"), ("--load", "bad.pt", "checkpoint")]:
        one_line_error(cfg_mod.main, [flag, str(tmp_path / name), "--out", str(tmp_path)],
                       capsys, says)
