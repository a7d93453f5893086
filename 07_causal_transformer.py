"""07_causal_transformer.py: train on every generation step of a digit in one evaluation.

Chapter 01 drew a digit pixel by pixel in raster order with a network told
which position to predict: one evaluation, one pixel learned. A *causal*
network reads the whole image and predicts, at each of the 784 positions, that
pixel from the pixels before it only: one evaluation trains all 784 generation
steps. Section 7 measures that claim on this file's own network, every run:
the same transformer trained all positions per evaluation and one position per
evaluation. The network is a small GPT written out in full. It samples with a
key/value cache: token passes through the network become linear in the length
(784 instead of about 784^2/2), while the attention work stays quadratic (not cubic).

The neighbourhood hint (section 1): besides the previous pixel, each position
is also handed the already-drawn pixels around it (the two rows above it and
the pixel two to its left). It reads nothing at or after the pixel to predict,
but the comparison with chapter 01 (--compare) depends on it: the plain GPT
(--no-hint) did not beat 01 (README, claims table).

Before: 01_autoregressive_pixels.py. After: 08_latent_diffusion.py. This is the
architecture of large language models, trained as they are; the same model
learns the characters of a text (--text).

Run:  python 07_causal_transformer.py          (train, sample 1,000 digits, judge them)
      python 07_causal_transformer.py --compare runs/01_autoregressive_pixels/metrics.json
      python 07_causal_transformer.py --load runs/07_causal_transformer/model.pt \\
             --mask-cost 1000 --batch-size 16  (what the causal mask costs, section 7)
      python 07_causal_transformer.py --text help-topics   (Python's help text, offline)

Writes samples.png, samples.npz, metrics.json, model.pt, generation.gif (16 samples
filling in pixel by pixel) and bits_map.png into runs/07_causal_transformer/.
"""
from __future__ import annotations

import common  # first: from here on Ctrl-C prints one line, even while torch loads

import copy
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SCRIPT = "07_causal_transformer"
SIDE = 28
N_PIXELS = SIDE * SIDE  # 784 generation steps per digit
# The stand-in for "the text shipped with Python": pydoc's help topics (about 750 kB of
# English about Python), inside the standard library, so text mode works offline anywhere.
DEFAULT_TEXT = "help-topics"


# %% 0. Settings
@dataclasses.dataclass
class Config(common.BaseConfig):
    steps: int = common.flag(4000, "training steps (optimizer updates)", min=1)
    batch_size: int = common.flag(4, "images (or text windows) per training step", min=1)
    samples: int = common.flag(1000, "how many samples to generate and evaluate", min=2)
    levels: int = common.flag(2, "K, intensity levels per pixel (2 = black/white)", min=2,
                              max=256)
    d_model: int = common.flag(64, "width of every token's vector", min=8)
    layers: int = common.flag(2, "transformer blocks", min=1)
    heads: int = common.flag(2, "attention heads (must divide --d-model)", min=1)
    lr: float = common.flag(4e-3, "peak AdamW learning rate (warm-up, cosine to 0)", min=0.0)
    temperature: float = common.flag(1.0, "sampling temperature (1 = as learned)", min=0.01)
    hint: bool = common.flag(True, "digits: hand each position the drawn pixels around it "
                             "(section 1); --no-hint is the plain GPT")
    positions: str = common.flag("rowcol", "rowcol: a row plus a column vector; flat: one "
                                 "vector per position", choices=["rowcol", "flat"])
    attention: str = common.flag("fused", "fused: torch's kernel; explicit: section 2's "
                                 "(same numbers, slower)", choices=["fused", "explicit"])
    eval_images: int = common.flag(1000, "held-out images for bits per pixel (0 = skip)", min=0)
    sample_batch: int = common.flag(250, "images generated together (caps the cache)", min=1)
    train_seconds: float = common.flag(0.0, "train this many seconds, not --steps (0 = steps)",
                                       min=0.0)
    speed_seconds: float = common.flag(10.0, "seconds to time each way of training (section 7)",
                                       min=0.01)
    mask_cost: int = common.flag(0, "steps of section 7's mask-cost measurement (0 = skip)",
                                 min=0)
    compare: str = common.flag("", "chapter 01's metrics.json: train for its time, compare")
    text: str = common.flag("", "train on this text file's characters ('help-topics' = "
                            "Python's help text)")
    context: int = common.flag(256, "text mode: characters per window and sample", min=2)
    gif: bool = common.flag(True, "write generation.gif (--no-gif skips it)")


# %% 1. Pixels as tokens
# A language model reads a sequence of tokens from a small vocabulary. A digit
# becomes one: quantize each pixel to one of K levels and read the 28 x 28 grid
# row by row (raster order), as chapter 01 does. Position i is then predicted
# from positions 0..i-1: the pixels above it and to its left.
def quantize(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Images (B, 1, 28, 28) in [0, 1] -> tokens (B, 784) in 0..K-1, raster order.

    Each pixel goes to the nearest of the K evenly spaced intensities 0, 1/(K-1), ..., 1,
    exactly as chapter 01 does, so that the two chapters' bits per pixel are comparable.
    """
    return torch.round(x.flatten(1).clamp(0, 1) * (levels - 1)).long()


def dequantize(tokens: torch.Tensor, levels: int) -> torch.Tensor:
    """Tokens (B, 784) -> images (B, 1, 28, 28) in [0, 1]: level 0 is paper, K-1 full ink."""
    return (tokens.float() / (levels - 1)).view(-1, 1, SIDE, SIDE)


def shift_right(tokens: torch.Tensor, bos: int) -> torch.Tensor:
    """The network's input: (B, T) targets -> (B, T) inputs [BOS, t_0, ..., t_{T-2}].

    Output i must predict token i having seen tokens 0..i-1 only. Shifting the
    sequence one place right and putting a begin-of-sequence token (BOS) first
    makes input position i hold token i-1; the causal mask below then lets
    output i see input positions 0..i, which are exactly BOS, t_0 .. t_{i-1}.
    """
    start = torch.full_like(tokens[:, :1], bos)
    return torch.cat([start, tokens[:, :-1]], dim=1)


# The neighbourhood hint. Read as a sequence, a digit loses its grid: the pixel
# right above pixel i sits 28 tokens back, and the network has to discover that
# through its position vectors and attention before it can use the most telling
# clues there are (strokes continue downwards and sideways). So, beside the
# previous token, position i is also handed the pixels near pixel i that raster
# order has already drawn: the two rows above, two columns either side, and the
# pixel two to the left, like the first, masked 5x5 layer of a PixelCNN (the
# pixel one to the left is the previous token itself). All of them come before
# i, so nothing is leaked (the tests check it); the hint only saves the network
# learning time. Off the grid (top rows, left and right edges) it holds PAD.
NEIGHBOURS = [(dr, dc) for dr in (-2, -1) for dc in (-2, -1, 0, 1, 2)] + [(0, -2)]  # (rows, cols)


def neighbour_pixels(tokens: torch.Tensor, pad: int, start: int = 0,
                     stop: int | None = None) -> torch.Tensor:
    """Targets (B, T) -> (B, stop - start, len(NEIGHBOURS)): for each position i in
    start..stop-1 the token at each offset of NEIGHBOURS from pixel i, or pad off the grid."""
    stop = tokens.shape[1] if stop is None else stop
    pos = torch.arange(start, stop, device=tokens.device)[:, None]         # (T', 1)
    dr, dc = torch.tensor(NEIGHBOURS, device=tokens.device).T              # (11,) each
    row, col = pos // SIDE + dr, pos % SIDE + dc                            # (T', 11)
    on_grid = (row >= 0) & (col >= 0) & (col < SIDE)
    src = (row * SIDE + col).clamp(min=0)     # raster index of each neighbour, < i
    got = tokens[:, src]                      # (B, T', 11): used only where on_grid
    return torch.where(on_grid, got, torch.full_like(got, pad))


# %% 2. Causal self-attention: the mask is the whole trick
# Self-attention lets every position gather information from other positions:
# position i forms a query q_i, every position j offers a key k_j and a value
# v_j, and i's output is the average of the values weighted by softmax(q_i . k_j).
# Left alone, position i would read the pixel it must predict (and every pixel
# after it) and learn to copy. The causal mask forbids it: the score of every
# pair with j > i is set to -inf before the softmax, so its weight is exactly 0.
# Output i is then a function of inputs 0..i only, for every i at once, and one
# pass over a whole image computes the 784 predictions that generation makes
# one at a time. That is why a causal model trains on all positions per pass.
def causal_mask(t_query: int, t_key: int | None = None, device=None) -> torch.Tensor:
    """Bool (Tq, Tk): True where query i may look at key j, i.e. j <= i + (Tk - Tq).

    With Tq == Tk this is the lower triangle. With a cache (section 5) the Tq new
    queries sit at the end of Tk keys, so the triangle is shifted right.
    """
    t_key = t_query if t_key is None else t_key
    ones = torch.ones(t_query, t_key, dtype=torch.bool, device=device)
    return ones.tril(diagonal=t_key - t_query)


def attention(q, k, v, mask=None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_head) + mask) v, written out.

    q (B, H, Tq, dh), k and v (B, H, Tk, dh) -> (B, H, Tq, dh). Dividing by
    sqrt(d_head) keeps the scores' spread near 1 whatever the head width, so
    the softmax starts neither flat nor saturated.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0: no weight on the future
    return scores.softmax(dim=-1) @ v


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention. Heads attend independently (one may track the
    stroke above, another the pixel to the left), then their outputs are mixed.
    causal=False lifts the mask: only for section 7's measurement of what it costs."""

    def __init__(self, d_model: int, heads: int, fused: bool = True, causal: bool = True):
        super().__init__()
        self.heads, self.fused, self.causal = heads, fused, causal
        self.qkv = nn.Linear(d_model, 3 * d_model)  # queries, keys and values in one product
        self.proj = nn.Linear(d_model, d_model)     # mixes the heads back into the residual stream

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0):
        b, t, d = x.shape
        # (B, T, 3D) -> 3 x (B, H, T, D/H): split into heads
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            # Keys and values of earlier positions were computed once and kept (section 5).
            k, v = cache.append(layer, k, v)  # -> (B, H, T_past + T, D/H)
        if self.fused:
            # torch's fused kernel computes the same softmax(q k^T / sqrt(dh)) v without
            # storing the T x T score matrix and skips the masked half: much faster.
            if k.shape[2] == t:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
            else:
                # Cached decoding: the new queries come last. One new query may see every key.
                mask = None if t == 1 else causal_mask(t, k.shape[2], x.device)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y = attention(q, k, v, causal_mask(t, k.shape[2], x.device) if self.causal else None)
        # (B, H, T, D/H) -> (B, T, D): heads side by side again
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


# %% 3. The block and the model: MLP, residuals, layer norm, embeddings
# Attention moves information between positions; the MLP then computes on each
# position alone (4x wider inside, as in GPT). Each adds its result to a running
# "residual stream" x = x + f(x), so a block starts near the identity and gradients
# reach the first layer undiminished. Layer norm before each sub-layer (pre-norm,
# as in GPT-2) keeps the inputs of every f at unit scale however deep the stack.
class Block(nn.Module):
    def __init__(self, d_model: int, heads: int, fused: bool = True, causal: bool = True):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, heads, fused, causal)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x, cache=None, layer=0):
        x = x + self.attn(self.ln1(x), cache, layer)  # (B, T, D) -> (B, T, D)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """A causal transformer over a vocabulary of `vocab` symbols plus a BOS token.

    Attention is blind to order (a permutation of the inputs permutes the
    outputs), so each position adds a learned position vector to its token's
    vector: that is how the model knows a pixel sits at row 3, column 17.
    """

    def __init__(self, vocab: int, length: int, d_model: int = 64, layers: int = 3,
                 heads: int = 4, fused: bool = True, width: int = 0, hint: bool = False,
                 causal: bool = True):
        super().__init__()
        if d_model % heads:
            raise common.UserError(f"--heads {heads} must divide --d-model {d_model}")
        self.vocab, self.length, self.bos, self.width = vocab, length, vocab, width
        self.tok_emb = nn.Embedding(vocab + 1, d_model)          # + 1: the BOS token
        self.hint = hint
        if hint:  # one table per neighbour of the hint (section 1); row `vocab` = PAD
            self.hint_emb = nn.ModuleList(nn.Embedding(vocab + 1, d_model) for _ in NEIGHBOURS)
        if width:
            self.row_emb = nn.Parameter(torch.zeros(-(-length // width), d_model))
            self.col_emb = nn.Parameter(torch.zeros(width, d_model))
        else:
            self.pos_emb = nn.Parameter(torch.zeros(length, d_model))
        self.blocks = nn.ModuleList(Block(d_model, heads, fused, causal) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)                    # logits over the next token
        # GPT-2's initialisation: small normal weights, so every block starts as nearly the
        # identity on the residual stream and the first loss is close to log(vocab).
        for p_name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)
            elif p_name.endswith("bias"):
                nn.init.zeros_(p)

    def inputs(self, tokens: torch.Tensor, start: int = 0, stop: int | None = None):
        """Targets (B, T) -> the network's inputs at positions start..stop-1: the previous
        token (B, T') or, with the hint, the previous token and its neighbours (B, T', 1 + 11).
        Input i reads targets before i only. Only positions start..stop-1 are built, so
        generation's one new position per step costs the same at every step."""
        stop = tokens.shape[1] if stop is None else stop
        # Input i holds token i - 1 (shift_right); position 0 holds BOS.
        if start == 0:
            prev = shift_right(tokens[:, :stop], self.bos)
        else:
            prev = tokens[:, start - 1:stop - 1]
        if not self.hint:
            return prev
        hint = neighbour_pixels(tokens, self.vocab, start, stop)
        return torch.cat([prev.unsqueeze(-1), hint], dim=-1)

    def embed(self, idx: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Inputs (B, T) or (B, T, 12) at positions start..start+T-1 -> vectors (B, T, D)."""
        t = idx.shape[1]
        if start + t > self.length:
            raise common.UserError(f"sequence of {start + t} tokens is longer than the model's "
                                   f"{self.length} positions")
        pos = torch.arange(start, start + t, device=idx.device)
        if self.hint:  # the sum of the embeddings of the previous token and of each neighbour
            h = self.tok_emb(idx[..., 0]) + sum(e(idx[..., 1 + k])
                                                for k, e in enumerate(self.hint_emb))
        else:
            h = self.tok_emb(idx)
        if self.width:
            return h + self.row_emb[pos // self.width] + self.col_emb[pos % self.width]
        return h + self.pos_emb[pos]

    def trunk(self, h: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Vectors (B, T, D) -> logits (B, T, vocab)."""
        for i, block in enumerate(self.blocks):
            h = block(h, cache, i)
        return self.head(self.ln_f(h))

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Inputs (B, T[, 12]) -> logits (B, T, vocab); output i reads inputs 0..i only
        (every input, with causal=False)."""
        start = cache.length if cache is not None else 0
        logits = self.trunk(self.embed(idx, start), cache)
        if cache is not None:
            cache.length += idx.shape[1]
        return logits


def build_model(arch: dict, attention: str = "fused", causal: bool = True) -> GPT:
    return GPT(arch["vocab"], arch["length"], arch["d_model"], arch["layers"], arch["heads"],
               fused=attention == "fused", width=arch.get("width", 0),
               hint=arch.get("hint", False), causal=causal)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# %% 4. The loss: all positions, one pass
# The log-likelihood of a sequence is the sum of its next-token log-probabilities
# (the chain rule of probability), so the loss is the cross-entropy at every
# position, averaged: mean_i -log p(t_i | t_<i). In bits (divide the nats by
# ln 2) this is the bits per pixel: the length of the best code for a digit,
# per pixel, under the model. Perplexity = 2^(bits per token): the number of
# equally likely levels the model is as unsure as (1 = certain, K = clueless).
def sequence_loss(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in nats over every position of every sequence in tokens (B, T)."""
    logits = model(model.inputs(tokens))  # (B, T, vocab): T predictions in one pass
    return F.cross_entropy(logits.reshape(-1, model.vocab).float(), tokens.reshape(-1))


def one_position_loss(model: GPT, tokens: torch.Tensor, i: int) -> torch.Tensor:
    """The same network evaluated once per generation step: run it on the prefix 0..i and
    take the cross-entropy at position i alone. Tokens (B, T) -> inputs (B, i + 1[, 12])
    -> logits (B, i + 1, vocab), of which only the last row is used."""
    logits = model(model.inputs(tokens, 0, i + 1))[:, -1]   # (B, vocab)
    return F.cross_entropy(logits.float(), tokens[:, i])


@torch.no_grad()
def bits_per_token(model: GPT, tokens: torch.Tensor, device,
                   batch: int = 50) -> tuple[float, torch.Tensor]:
    """Held-out bits per token, and its mean per position (T,): where the model is unsure."""
    model.eval()
    per_pos = torch.zeros(tokens.shape[1])
    for i in range(0, len(tokens), batch):
        chunk = tokens[i:i + batch].to(device)
        with common.autocast(device):
            logits = model(model.inputs(chunk))
        nats = F.cross_entropy(logits.float().transpose(1, 2), chunk, reduction="none")  # (B, T)
        per_pos += nats.sum(0).cpu()
    per_pos = per_pos / len(tokens) / math.log(2)
    return float(per_pos.mean()), per_pos


# %% 5. Generation: one token at a time, with and without a key/value cache
# Generating is the loop the training pass unrolled: predict token 0 from BOS,
# draw it, feed it back, predict token 1, and so on. Without a cache, step t
# runs the network over all t tokens so far, recomputing keys and values that
# the causal mask guarantees have not changed (position j never sees anything
# after j). Over T steps that is 1 + 2 + ... + T ~ T^2/2 token-passes through
# every layer: quadratic in the length (and the attention inside, cubic).
# With a cache, each layer keeps every position's key and value; step t runs
# only the one new token through the network and lets its query attend to the
# stored keys: T token-passes in all, linear in the length (attention becomes
# 1 + 2 + ... + T dot products: quadratic, no longer cubic). Same numbers, far
# less work: for a digit, 784 token-passes instead of about 307,000.
class KVCache:
    """Per layer, keys and values (B, H, T_max, dh) of every position processed so far."""

    def __init__(self, layers: int, t_max: int):
        self.t_max = t_max
        self.k: list[torch.Tensor | None] = [None] * layers
        self.v: list[torch.Tensor | None] = [None] * layers
        self.length = 0  # positions stored (the same in every layer)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store new keys/values (B, H, T, dh) after the old ones; return all of them."""
        if self.k[layer] is None:
            # Allocated once, at the full length to generate, and filled in place: growing
            # a tensor by concatenation every step would copy the whole cache each time.
            b, h, _, dh = k.shape
            self.k[layer] = k.new_empty(b, h, self.t_max, dh)
            self.v[layer] = v.new_empty(b, h, self.t_max, dh)
        end = self.length + k.shape[2]
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


def draw(logits: torch.Tensor, temperature: float, u: torch.Tensor) -> torch.Tensor:
    """Sample one token per row from softmax(logits / temperature), using uniforms u (B,).

    Inverse-CDF sampling: the token is the first whose cumulative probability
    exceeds u. Passing u in (rather than calling torch.multinomial) lets the
    cached and uncached paths consume the same random numbers, so they must
    agree token for token. Temperature < 1 sharpens the distribution (fewer
    stray pixels, less variety); > 1 flattens it.
    """
    probs = F.softmax(logits.float() / temperature, dim=-1)                # (B, vocab)
    token = (probs.cumsum(-1) < u.unsqueeze(-1).to(probs.device)).sum(-1)  # (B,)
    return token.clamp_(max=logits.shape[-1] - 1)  # guards u above a total that rounded below 1


@torch.no_grad()
def generate(model: GPT, n: int, temperature: float = 1.0, gen: torch.Generator | None = None,
             use_cache: bool = True, length: int | None = None) -> torch.Tensor:
    """Draw n sequences (n, length) token by token; the random numbers come from `gen` (CPU)."""
    model.eval()
    length = length or model.length
    device = next(model.parameters()).device
    out = torch.zeros(n, length, dtype=torch.long, device=device)  # filled in left to right
    cache = KVCache(len(model.blocks), length) if use_cache else None
    for t in range(length):
        # Input t reads the tokens drawn before t only: the unfilled rest of `out` is never seen.
        with common.autocast(device):
            if use_cache:  # one new position -> (n, vocab)
                logits = model(model.inputs(out, t, t + 1), cache)[:, -1]
            else:          # all t + 1 positions, recomputed -> (n, vocab)
                logits = model(model.inputs(out, 0, t + 1))[:, -1]
        out[:, t] = draw(logits, temperature, torch.rand(n, generator=gen))
    return out


def generate_batched(model: GPT, n: int, batch: int, temperature: float,
                     gen: torch.Generator) -> torch.Tensor:
    """generate() in groups of `batch` images: the cache holds layers x 2 x B x 784 x D floats."""
    return torch.cat([generate(model, min(batch, n - i), temperature, gen)
                      for i in range(0, n, batch)])


CACHE_CHECK_ROWS = 7  # a quarter of a digit: enough to time, and the uncached way is slow


def cache_check(model: GPT, seed: int, n: int = 4) -> dict:
    """Generate the first rows of n digits both ways: the tokens must agree; time both."""
    length = CACHE_CHECK_ROWS * SIDE
    times, outs = {}, {}
    for use_cache in (True, False):
        t0 = time.perf_counter()
        outs[use_cache] = generate(model, n, 1.0, torch.Generator().manual_seed(seed), use_cache,
                                   length)
        times[use_cache] = time.perf_counter() - t0
    return {"cache_identical": bool(torch.equal(outs[True], outs[False])),
            "cache_seconds": times[True], "nocache_seconds": times[False],
            "cache_check_pixels": length}


# %% 6. Training: a warm-up, then a cosine decay, by steps or by the clock
# Transformers dislike a large learning rate at the start (the attention
# softmax saturates before the embeddings mean anything), hence the short
# warm-up; the cosine decay to 0 then settles the weights for the final model.
# The schedule reads "how far through training are we" as a fraction, so the
# same code trains for N steps or for S seconds (the fair comparison with 01).
def learning_rate(progress: float, peak: float, warmup: float = 0.05) -> float:
    """progress in [0, 1] -> lr: linear warm-up over the first 5%, then half a cosine to 0."""
    if progress < warmup:
        return peak * progress / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def train(model: GPT, next_batch, cfg: Config, device, label: str = "train",
          loss_fn=sequence_loss) -> tuple[int, float, float]:
    """Train until cfg.steps (or cfg.train_seconds) with loss_fn(model, tokens);
    returns (steps, seconds, mean loss in nats of the last 50 steps)."""
    # AdamW: Adam with decoupled weight decay, the usual transformer optimizer; beta2 = 0.95
    # (GPT's choice) lets the step size react faster when the loss landscape changes.
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.01)
    timed = cfg.train_seconds > 0
    progress, losses = common.Progress(cfg.steps, label), []
    start, step = time.perf_counter(), 0
    model.train()
    while True:
        elapsed = time.perf_counter() - start
        frac = elapsed / cfg.train_seconds if timed else step / cfg.steps
        if frac >= 1.0:
            break
        for group in opt.param_groups:
            group["lr"] = learning_rate(frac, cfg.lr)
        tokens = next_batch().to(device)
        with common.autocast(device):
            loss = loss_fn(model, tokens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # one bad batch cannot throw it far
        opt.step()
        step += 1
        losses.append(loss.item())
        if timed:  # the step count a run of this length will reach, for the progress line's ETA
            progress.total = max(step, int(step / max(frac, 1e-9)))
        progress.update(step, loss_bits=float(np.mean(losses[-50:])) / math.log(2))
    return step, time.perf_counter() - start, float(np.mean(losses[-50:]))


def digit_batches(data: common.Data, cfg: Config, gen: torch.Generator):
    """A function returning the next training batch as tokens (B, 784)."""
    stream = common.batches(data.x_train, data.y_train, cfg.batch_size, gen)
    return lambda: quantize(next(stream)[0], cfg.levels)


def load_or_train(cfg: Config, data: common.Data, device, gen, out: Path):
    """The model, from --load (copied byte for byte into out) or trained and saved; returns
    (model, steps, training seconds). A loaded model's settings overwrite the flags'."""
    if cfg.load:
        ckpt = common.load_checkpoint(cfg.load, SCRIPT)
        arch = ckpt["extra"].get("arch", {})
        if arch.get("mode") != "digits":
            raise common.UserError(f"{cfg.load}: a text model; load it with --text")
        cfg.levels, cfg.d_model, cfg.layers, cfg.heads = (arch[k] for k in (
            "vocab", "d_model", "layers", "heads"))
        cfg.hint, cfg.positions = arch["hint"], "rowcol" if arch["width"] else "flat"
        model = build_model(arch, cfg.attention).to(device)
        common.load_state(model, ckpt["state"], cfg.load)
        common.copy_checkpoint(cfg.load, out)
        return model, ckpt["extra"].get("steps", 0), ckpt["extra"].get("train_seconds", 0.0)
    arch = dict(mode="digits", vocab=cfg.levels, length=N_PIXELS, d_model=cfg.d_model,
                layers=cfg.layers, heads=cfg.heads,
                width=SIDE if cfg.positions == "rowcol" else 0, hint=cfg.hint)
    model = build_model(arch, cfg.attention).to(device)
    steps, seconds, _ = train(model, digit_batches(data, cfg, gen), cfg, device)
    common.save_checkpoint(out / "model.pt", SCRIPT, cfg, model.state_dict(),
                           {"arch": arch, "steps": steps, "train_seconds": seconds})
    return model, steps, seconds


# %% 7. The same network, one position per evaluation: what the causal pass buys and costs
# The talk's claim, measured on this file's own network. Without the causal
# trick, training the same network means evaluating it once per generation
# step: take an image and a position i, run the network on the prefix 0..i,
# and learn from position i's prediction alone (one_position_loss; the images
# of a batch share i, so no prefix is padded). Every run times both ways for
# --speed-seconds each, on copies of the run's model (the model it keeps is not
# touched), and counts targets learned per second.
# Why the ratio is not 784: each target of the causal pass pays attention over
# up to 784 earlier positions, and the one-position pass runs on a prefix, i + 1
# positions, 392 on average, so it costs about half a full pass, not 1/784 of
# one. Costs that do not grow with the length (the optimizer step, Python's own
# overhead) are paid once per evaluation and weigh the other way.
def random_position_loss(gen: torch.Generator, length: int):
    """one_position_loss at a position drawn uniformly from 0..length-1 for each batch."""
    def loss(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
        return one_position_loss(model, tokens, int(torch.randint(length, (1,), generator=gen)))
    return loss


def time_both_ways(model: GPT, data: common.Data, cfg: Config, device) -> dict:
    """Targets learned per second by copies of `model` trained cfg.speed_seconds each way."""
    burst = dataclasses.replace(cfg, train_seconds=cfg.speed_seconds)
    rates = {}
    for way, per_step in (("causal", cfg.batch_size * model.length),
                          ("one_position", cfg.batch_size)):
        loss_fn = sequence_loss if way == "causal" else random_position_loss(
            torch.Generator().manual_seed(cfg.seed), model.length)
        batches = digit_batches(data, cfg, torch.Generator().manual_seed(cfg.seed))
        net, label = copy.deepcopy(model), f"timing ({way.replace('_', ' ')})"
        # Two untimed steps first: a process's first steps also pay one-time set-up costs.
        train(net, batches, dataclasses.replace(cfg, steps=2, train_seconds=0.0), device,
              label, loss_fn)
        steps, seconds, _ = train(net, batches, burst, device, label, loss_fn)
        rates[way] = steps * per_step / seconds
    return {"causal_targets_per_second": rates["causal"],
            "one_position_targets_per_second": rates["one_position"],
            "causal_speedup": rates["causal"] / rates["one_position"]}


# What the mask costs. Inside the prefix 0..i the mask is no longer needed for
# honesty: input j holds pixels before j only, so no input of the prefix holds
# pixel i or a later one, and full (two-way) attention inside it still predicts
# pixel i from pixels before i. It gives every position more context, which is
# why the talk says causal networks predict slightly worse. But such a network
# must be evaluated once per target, in training and in generation alike (a new
# pixel changes every earlier position's keys and values, so there is no cache).
# (With a single block the two are the same: the last position attends to the
# whole prefix either way; the mask changes only what the earlier positions hand
# up to the next block.) --mask-cost N trains two fresh, identically initialised
# copies N one-position steps each on the same batches and positions, with and
# without the mask, and measures both on the same held-out pixels, each from its
# own prefix pass. Measured here at a short budget, lifting the mask made the
# predictions worse, not better (README, claims table).
MASK_EVAL_IMAGES, MASK_EVAL_POSITIONS = 100, 98  # 98 random positions of 100 held-out digits


@torch.no_grad()
def one_position_bits(model: GPT, tokens: torch.Tensor, positions: list[int],
                      device) -> torch.Tensor:
    """Bits of each of `positions` in each sequence, each from its own pass over the prefix
    up to it: tokens (N, T) -> (N, len(positions))."""
    model.eval()
    tokens, cols = tokens.to(device), []
    for i in positions:
        with common.autocast(device):
            logits = model(model.inputs(tokens, 0, i + 1))[:, -1]   # (N, vocab)
        nats = F.cross_entropy(logits.float(), tokens[:, i], reduction="none")
        cols.append(nats.cpu() / math.log(2))
    return torch.stack(cols, dim=1)


def mask_cost(model: GPT, data: common.Data, cfg: Config, device) -> dict:
    """Held-out bits per pixel of the one-position network with and without the mask."""
    arch = dict(mode="digits", vocab=model.vocab, length=model.length, d_model=cfg.d_model,
                layers=cfg.layers, heads=cfg.heads, width=model.width, hint=model.hint)
    run = dataclasses.replace(cfg, steps=cfg.mask_cost, train_seconds=0.0)
    held = quantize(data.x_held[:MASK_EVAL_IMAGES], model.vocab)
    pick = torch.Generator().manual_seed(0)
    positions = sorted(torch.randperm(model.length, generator=pick)[:MASK_EVAL_POSITIONS].tolist())
    bits, result = {}, {"steps": cfg.mask_cost, "targets": cfg.mask_cost * cfg.batch_size,
                        "eval_images": len(held), "eval_positions": len(positions)}
    for name, causal in (("causal", True), ("full", False)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # the same starting weights both times
            net = build_model(arch, cfg.attention, causal).to(device)
        _, seconds, _ = train(net, digit_batches(data, cfg, torch.Generator().manual_seed(
            cfg.seed)), run, device, f"mask cost ({name} attention)", random_position_loss(
            torch.Generator().manual_seed(cfg.seed + 1), model.length))
        bits[name] = one_position_bits(net, held, positions, device)  # (N, P)
        result[f"{name}_bits_per_pixel"] = float(bits[name].mean())
        result[f"{name}_train_seconds"] = seconds
    per_image = (bits["causal"] - bits["full"]).mean(1)  # paired: same digits, same pixels
    result["mask_cost_bits"] = float(per_image.mean())
    result["mask_cost_se"] = float(per_image.std() / math.sqrt(len(per_image)))
    return result


# %% 8. Text mode: the same model, on characters
# Nothing above knows it is modelling digits: a digit is 784 tokens from a
# vocabulary of K. A text is a long run of tokens from a vocabulary of its
# distinct characters. Train on random windows of --context characters, measure
# bits per character on the last 10% of the file (never trained on), and sample.
def resolve_text(name: str) -> Path:
    """`help-topics` -> pydoc's help text inside the standard library; else a path."""
    if name == DEFAULT_TEXT and not Path(name).exists():
        import pydoc_data  # standard library: the text of Python's help()

        return Path(pydoc_data.__file__).parent / "topics.py"
    return Path(name)


def read_text(name: str, context: int) -> str:
    path = resolve_text(name)
    try:
        raw = path.read_bytes()
    except OSError as e:  # missing, a folder, no permission
        raise common.UserError(f"--text: cannot read {path} "
                               f"({e.strerror or type(e).__name__})") from None
    text = raw.decode("utf-8", errors="replace")  # any bytes become text: binary files train too
    if not text:
        raise common.UserError(f"--text: {path} is empty")
    # Train and held-out parts must each hold at least one window of context + 1 characters.
    need = 10 * (context + 1)
    if len(text) < need:
        raise common.UserError(f"--text: {path} has {len(text)} characters; need at least "
                               f"{need} for --context {context} (or lower --context)")
    return text


def encode_text(text: str) -> tuple[torch.Tensor, str]:
    """Characters -> token ids (N,), and the vocabulary (its distinct characters, sorted)."""
    chars = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(chars)}
    return torch.tensor([index[c] for c in text], dtype=torch.long), chars


def random_windows(ids: torch.Tensor, n: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """n windows (n, length) cut from ids at random starts."""
    starts = torch.randint(0, len(ids) - length + 1, (n,), generator=gen)
    return torch.stack([ids[s:s + length] for s in starts.tolist()])


def run_text(cfg: Config, device, gen: torch.Generator, out: Path) -> dict:
    """Text mode from start to end: load or train, held-out bits per character, one sample."""
    steps, seconds = 0, 0.0
    if cfg.load:
        ckpt = common.load_checkpoint(cfg.load, SCRIPT)
        arch = ckpt["extra"].get("arch", {})
        if arch.get("mode") != "text":
            raise common.UserError(f"{cfg.load}: a digit model; load it without --text")
        chars, cfg.context = ckpt["extra"]["chars"], arch["length"]
        model = build_model(arch, cfg.attention).to(device)
        common.load_state(model, ckpt["state"], cfg.load)
        common.copy_checkpoint(cfg.load, out)
        steps, seconds = ckpt["extra"].get("steps", 0), ckpt["extra"].get("train_seconds", 0.0)
        text = read_text(cfg.text, arch["length"])
        ids = torch.tensor([chars.index(c) if c in chars else 0 for c in text], dtype=torch.long)
    else:
        text = read_text(cfg.text, cfg.context)
        ids, chars = encode_text(text)
        arch = dict(mode="text", vocab=len(chars), length=cfg.context, d_model=cfg.d_model,
                    layers=cfg.layers, heads=cfg.heads)
        model = build_model(arch, cfg.attention).to(device)
    split = int(0.9 * len(ids))
    train_ids, held_ids = ids[:split], ids[split:]
    print(f"text: {resolve_text(cfg.text)}, {len(text):,} characters, vocabulary {len(chars)}, "
          f"context {arch['length']}, {count_params(model):,} parameters", flush=True)
    if not cfg.load:
        steps, seconds, _ = train(model, lambda: random_windows(
            train_ids, cfg.batch_size, arch["length"], gen), cfg, device)
        common.save_checkpoint(out / "model.pt", SCRIPT, cfg, model.state_dict(),
                               {"arch": arch, "chars": chars, "steps": steps,
                                "train_seconds": seconds})
    # Held out: consecutive windows of the last 10%, at most 64 of them (two decimals' worth).
    n_win = min(64, len(held_ids) // arch["length"])
    bpc, _ = bits_per_token(model, held_ids[:n_win * arch["length"]].view(n_win, -1), device)
    t0 = time.perf_counter()
    sample_ids = generate(model, 1, cfg.temperature, torch.Generator().manual_seed(cfg.seed))[0]
    sample_seconds = time.perf_counter() - t0
    sample = "".join(chars[i] for i in sample_ids.tolist())
    (out / "samples.txt").write_text(sample + "\n", encoding="utf-8")
    print(f"--- sample ({arch['length']} characters, temperature {cfg.temperature}) ---\n"
          f"{sample}\n---", flush=True)
    return {"mode": "text", "text": str(resolve_text(cfg.text)), "characters": len(text),
            "vocabulary": len(chars), "train_seconds": seconds, "sample_seconds": sample_seconds,
            "steps": steps, "bits_per_char": bpc, "perplexity": 2 ** bpc,
            "uniform_bits": math.log2(len(chars)), "params": count_params(model),
            "temperature": cfg.temperature, "config": dataclasses.asdict(cfg)}


# %% 9. Reporting: chapter 01 side by side, the bits map, the animation
# Chapter 01's network is told a position and predicts that one pixel; here a
# pass yields 784 predictions. --compare trains this model for 01's wall-clock
# training time and sets the two runs' figures side by side.
COMPARE_KEYS = ("bits_per_pixel", "train_seconds", "targets_per_second", "fd", "confidence")


def read_other_metrics(path: str, levels: int) -> dict:
    """Chapter 01's metrics.json, checked: the keys the table needs, and the same K."""
    other = common.read_metrics(path, COMPARE_KEYS, "01_autoregressive_pixels.py")
    if other.get("levels", levels) != levels:  # bits per pixel depend on K
        raise common.UserError(f"--compare: {path} used K={other['levels']} levels; pass "
                               f"--levels {other['levels']}")
    return other


def comparison_table(other: dict, mine: dict) -> str:
    """One row per figure, 01's column then 07's."""
    rows = [("training seconds", "train_seconds", "{:.0f}"),
            ("targets learned per second", "targets_per_second", "{:,.0f}"),
            ("held-out bits per pixel", "bits_per_pixel", "{:.4f}"),
            ("FD (lower is better)", "fd", "{:.2f}"), ("judge confidence", "confidence", "{:.3f}")]
    lines = [f"{'':28s} {'01 (position as input)':>24s} {'07 (causal transformer)':>24s}"]
    for name, key, fmt in rows:
        lines.append(f"{name:28s} {fmt.format(other[key]):>24s} {fmt.format(mine[key]):>24s}")
    return "\n".join(lines)


def held_out_bits(model: GPT, cfg: Config, data: common.Data, device, out: Path) -> float:
    """Held-out bits per pixel (NaN with --eval-images 0), printed and drawn per position."""
    if not cfg.eval_images:
        return float("nan")
    bpp, per_pos = bits_per_token(model, quantize(data.x_held[:cfg.eval_images], cfg.levels),
                                  device)
    print(f"held-out: {bpp:.4f} bits per pixel, perplexity 2^bpp = {2 ** bpp:.3f} of "
          f"K = {cfg.levels} levels", flush=True)
    plt = common.pyplot()  # where a digit is hard to predict: stroke edges, not the paper
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    im = ax.imshow(per_pos.view(SIDE, SIDE).numpy(), cmap="magma")
    ax.set_title(f"held-out bits per pixel (mean {bpp:.3f})", fontsize=8)
    ax.axis("off")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(out / "bits_map.png", dpi=100)
    plt.close(fig)
    return bpp


GIF_IMAGES, GIF_EVERY = 16, 16  # 16 samples, a frame every 16 pixels: 50 frames


def save_generation_gif(out: Path, tokens: torch.Tensor, levels: int) -> None:
    """generation.gif from finished samples: generation runs in raster order and never
    changes a drawn pixel, so after p steps exactly pixels 0..p-1 are as they end up.
    Pixels not yet drawn are shown light grey."""
    images = tokens[:GIF_IMAGES].float() / (levels - 1)                   # (n, 784)
    steps = list(range(0, N_PIXELS, GIF_EVERY)) + [N_PIXELS]
    frames = [torch.where(torch.arange(N_PIXELS) < p, images, 0.25).view(-1, SIDE, SIDE)
              for p in steps]
    common.save_animation(out / "generation.gif", frames,
                          [f"pixel {p} of {N_PIXELS}" for p in steps], ncol=8)


def save_digits(out: Path, cfg: Config, tokens: torch.Tensor) -> None:
    images = dequantize(tokens, cfg.levels)
    common.save_grid(out / "samples.png", images[:100], nrow=10,
                     title=f"07 causal transformer, K={cfg.levels}, T={cfg.temperature}")
    common.save_samples(out, images)
    if cfg.gif:
        save_generation_gif(out, tokens, cfg.levels)


def report(metrics: dict, other: dict | None) -> None:
    m = metrics
    print(f"key/value cache: first {m['cache_check_pixels']} pixels of 4 digits in "
          f"{m['cache_seconds']:.2f}s with the cache, {m['nocache_seconds']:.2f}s without; "
          f"identical tokens: {m['cache_identical']}")
    print(f"the same network, targets learned per second: {m['causal_targets_per_second']:,.0f} "
          f"all positions per evaluation, {m['one_position_targets_per_second']:,.1f} one "
          f"position per evaluation: {m['causal_speedup']:.0f}x")
    if "mask_cost" in m:
        c = m["mask_cost"]
        print(f"mask cost after {c['targets']:,} one-position targets: held-out "
              f"{c['causal_bits_per_pixel']:.4f} bits per pixel with the causal mask, "
              f"{c['full_bits_per_pixel']:.4f} with full attention inside the prefix "
              f"(difference {c['mask_cost_bits']:+.4f} +- {c['mask_cost_se']:.4f})")
    print(common.describe(m))
    if other is not None:
        print(comparison_table(other, m))


# %% 10. Putting it together
SUMMARY = ["train_seconds", "sample_seconds", "bits_per_pixel", "perplexity",
           "targets_per_second", "causal_speedup", "fd", "fd_ratio", "confidence", "coverage",
           "score"]
TEXT_SUMMARY = ["train_seconds", "sample_seconds", "bits_per_char", "perplexity", "uniform_bits"]


def check_flags(cfg: Config) -> dict | None:
    """Refuse impossible combinations before anything runs; return 01's metrics for --compare."""
    if cfg.d_model % cfg.heads:
        raise common.UserError(f"--heads {cfg.heads} must divide --d-model {cfg.d_model}")
    if cfg.text and (cfg.compare or cfg.mask_cost):
        raise common.UserError("--compare and --mask-cost are about digit models; drop --text")
    other = read_other_metrics(cfg.compare, cfg.levels) if cfg.compare else None
    if other is not None and cfg.train_seconds == 0:
        cfg.train_seconds = float(other["train_seconds"])  # equal training wall-clock
    return other


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__)
    other = check_flags(cfg)
    with common.run_folder(cfg, __file__) as out:
        gen = common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        if cfg.text:
            metrics = run_text(cfg, device, gen, out)
        else:
            data = common.load_data(cfg.data)
            judge = common.Judge.load(data)
            model, steps, train_seconds = load_or_train(cfg, data, device, gen, out)
            bpp = held_out_bits(model, cfg, data, device, out)
            check = cache_check(model, cfg.seed)
            t0 = time.perf_counter()
            tokens = generate_batched(model, cfg.samples, cfg.sample_batch, cfg.temperature,
                                      torch.Generator().manual_seed(cfg.seed)).cpu()
            sample_seconds = time.perf_counter() - t0
            images = dequantize(tokens, cfg.levels)
            metrics = {"train_seconds": train_seconds, "sample_seconds": sample_seconds,
                       **judge.evaluate(images), "bits_per_pixel": bpp, "perplexity": 2 ** bpp,
                       "levels": cfg.levels, "steps": steps, "batch_size": cfg.batch_size,
                       "targets_per_second": steps * cfg.batch_size * N_PIXELS
                       / max(train_seconds, 1e-9), "params": count_params(model),
                       "temperature": cfg.temperature, **check, "config": dataclasses.asdict(cfg),
                       **time_both_ways(model, data, cfg, device)}
            if cfg.mask_cost:
                metrics["mask_cost"] = mask_cost(model, data, cfg, device)
            if other is not None:
                metrics["compare"] = {k: other[k] for k in COMPARE_KEYS}
                metrics["bpp_gain_vs_01"] = other["bits_per_pixel"] - bpp
            report(metrics, other)
            save_digits(out, cfg, tokens)
        common.save_metrics(out, metrics)
    common.print_summary(metrics, TEXT_SUMMARY if cfg.text else SUMMARY + (
        ["bpp_gain_vs_01"] if other is not None else []))
    return metrics


if __name__ == "__main__":
    common.run_main(main)
