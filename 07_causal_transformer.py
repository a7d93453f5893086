"""07_causal_transformer.py: train on every generation step of a digit in one pass.

The idea. Chapter 01 generated a digit one pixel at a time in raster order,
each pixel one of K intensity levels, with one network that is told which
position it must predict. To train it, each image gave a few (position,
next pixel) pairs per step: one forward pass, a few targets. A *causal*
network does better: it reads the whole image at once and, at every one of
the 784 positions, predicts the next pixel from the pixels before it only.
One forward pass then yields all 784 targets of an image, and because no
output ever sees its own answer, the 784 predictions are exactly the 784
steps generation will take. This file builds the standard causal network,
a small GPT-style transformer, written out in full: token and position
embeddings, self-attention with a causal mask, an MLP, residual connections
and layer norm. It solves chapter 01's task on the same data and measures
the difference (targets learned per second, held-out bits per pixel at equal
training time, sample quality), then samples with a key/value cache, which
makes generation linear in the length instead of quadratic. The same model,
unchanged, learns the characters of a text file (`--text`).

Before: 01_autoregressive_pixels.py (one network told the position; a few
positions per image per step). This file is the course's closing point: the
architecture large language models use, trained the way they are trained.

Run:  python 07_causal_transformer.py                (train, sample 1,000 digits, judge them)
      python 01_autoregressive_pixels.py && python 07_causal_transformer.py \\
             --compare runs/01_autoregressive_pixels/metrics.json
                                                     (train for 01's wall-clock time; print the table)
      python 07_causal_transformer.py --text help-topics     (Python's own help text, offline)
      python 07_causal_transformer.py --text any_file.txt --steps 2000
      python 07_causal_transformer.py --load runs/07_causal_transformer/model.pt --temperature 0.9

Default run on the project's 2-core CPU on 2026-11-25 (K=2, 4,000 steps of 4
digits, 2 blocks of width 64 with 2 heads, 106k parameters), two runs: 4m56s
and 4m58s in all; training 251 s and 250 s, sampling 1,000 digits 29 s and
33 s with the key/value cache. Held-out 0.1195 and 0.1200 bits per pixel
(perplexity 1.086-1.087); FD 91.4 and 94.2 at N=1000 (floor 4.79: 19.1x and
19.7x), judge confidence 0.871 and 0.861, all ten classes. (The runs differ a
little: CPU kernels need not sum in the same order from run to run.)

Measured against chapter 01 on the same machine the same day (--compare:
this model trained for exactly 01's 285 s of training, 4,783 steps):

                                01 (position as input)   07 (this file)
    targets learned per second           35,949              52,649
    held-out bits per pixel              0.1232              0.1194
    perplexity (2^bpp)                   1.089               1.086
    FD at N=1000 (floor 4.79)            53.1                87.1
    judge confidence                     0.886               0.876

A second --compare run later that day (README's regeneration run; 01 trained
for 271 s): 0.1189 against 0.1232 bits per pixel, 52,506 against 37,729
targets per second, FD 92.7 against 53.1, confidence 0.873 against 0.886.
A third, in the second regeneration run (01 trained for 253 s): 0.1199
against 0.1232, 54,025 against 40,482 targets per second, FD 102.7 against
53.1, confidence 0.863 against 0.886.

The transformer learns 1.3-1.5x the targets per second (not 784x: each target
pays for attention over up to 784 earlier pixels) and reaches a lower held-out
loss in the same time. Its samples score worse on FD, though: a lower average
loss per pixel does not guarantee better-looking digits (a few early pixels
drawn wrong derail a whole digit). The plain GPT (--no-hint) did not win: at
01's time it reached 0.131 bits per pixel against 01's 0.123 (measured
2026-11-23); handing each position the pixels already drawn around it (section
1) is what tipped the balance, with 2 heads instead of 4 (the same loss, 25%
more steps per second).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import common

SCRIPT = "07_causal_transformer"
SIDE = 28
N_PIXELS = SIDE * SIDE  # 784 generation steps per digit
# The stand-in for "the text shipped with Python": pydoc's help topics (about 750 kB of English
# about Python), found inside the standard library, so text mode works offline anywhere.
DEFAULT_TEXT = "help-topics"


# %% 0. Settings
@dataclasses.dataclass
class Config(common.BaseConfig):
    steps: int = dataclasses.field(default=4000, metadata={"help": "training steps (optimizer updates)", "min": 1})
    batch_size: int = dataclasses.field(default=4, metadata={"help": "images (or text windows) per training step", "min": 1})
    samples: int = dataclasses.field(default=1000, metadata={"help": "how many samples to generate and evaluate", "min": 2})
    levels: int = dataclasses.field(default=2, metadata={"help": "K, intensity levels per pixel (2 = black/white, chapter 01's default)", "min": 2, "max": 256})
    d_model: int = dataclasses.field(default=64, metadata={"help": "width of every token's vector", "min": 8})
    layers: int = dataclasses.field(default=2, metadata={"help": "transformer blocks", "min": 1})
    heads: int = dataclasses.field(default=2, metadata={"help": "attention heads (must divide --d-model)", "min": 1})
    lr: float = dataclasses.field(default=4e-3, metadata={"help": "peak AdamW learning rate (warm-up, then cosine to 0)", "min": 0.0})
    temperature: float = dataclasses.field(default=1.0, metadata={"help": "sampling temperature (1 = the learned distribution)", "min": 0.01})
    hint: bool = dataclasses.field(default=True, metadata={"help": "digits: also give each position the already-drawn pixels near it (section 1); --no-hint is the plain GPT"})
    positions: str = dataclasses.field(default="rowcol", metadata={"help": "digits: rowcol = a row vector plus a column vector; flat = one learned vector per position", "choices": ["rowcol", "flat"]})
    attention: str = dataclasses.field(default="fused", metadata={"help": "fused: torch's kernel; explicit: section 2's function (same numbers, slower)", "choices": ["fused", "explicit"]})
    eval_images: int = dataclasses.field(default=1000, metadata={"help": "held-out images for bits per pixel (0 = skip)", "min": 0})
    sample_batch: int = dataclasses.field(default=250, metadata={"help": "images generated together (caps the cache's memory)", "min": 1})
    train_seconds: float = dataclasses.field(default=0.0, metadata={"help": "train for this many seconds instead of --steps (0 = use --steps)", "min": 0.0})
    compare: str = dataclasses.field(default="", metadata={"help": "chapter 01's metrics.json: train for its wall-clock time and print the side-by-side table"})
    text: str = dataclasses.field(default="", metadata={"help": "train on the characters of this text file instead of digits ('help-topics' = Python's own help text)"})
    context: int = dataclasses.field(default=256, metadata={"help": "text mode: characters per training window (and per sample)", "min": 2})


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
    """Tokens (B, 784) -> images (B, 1, 28, 28) in [0, 1]: level 0 is paper (0), level K-1 is full ink (1)."""
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


# A 2-D hint. Read as a sequence, a digit loses its grid: the pixel right above
# pixel i sits 28 tokens back, and the network has to discover that through its
# position vectors and attention before it can use the most telling clues there
# are (strokes continue downwards and sideways). So, beside the previous token,
# position i is also handed the pixels near pixel i that raster order has
# already drawn: the two rows above, two columns either side, and the pixel two
# to the left, like the first, masked 5x5 layer of a PixelCNN (the pixel one to
# the left is the previous token itself). All of them come before i, so nothing
# is leaked: the hint is causal (the tests check it); it only saves the network
# learning time. Off the grid (top rows, left and right edges) it holds PAD.
NEIGHBOURS = [(dr, dc) for dr in (-2, -1) for dc in (-2, -1, 0, 1, 2)] + [(0, -2)]  # (rows, columns) from pixel i


def neighbour_pixels(tokens: torch.Tensor, pad: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Targets (B, T) -> (B, stop - start, len(NEIGHBOURS)): for each position i in
    start..stop-1 the token at each offset of NEIGHBOURS from pixel i, or pad off the grid."""
    stop = tokens.shape[1] if stop is None else stop
    pos = torch.arange(start, stop, device=tokens.device)
    row, col = pos // SIDE, pos % SIDE
    hints = []
    for dr, dc in NEIGHBOURS:
        on_grid = (row + dr >= 0) & (col + dc >= 0) & (col + dc < SIDE)
        src = (pos + dr * SIDE + dc).clamp(min=0)              # raster index of the neighbour, < i
        got = tokens[:, src]                                   # (B, T'): used only where on_grid
        hints.append(torch.where(on_grid, got, torch.full_like(got, pad)))
    return torch.stack(hints, dim=-1)


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

    With Tq == Tk this is the lower triangle. With a cache (section 4) the Tq new
    queries sit at the end of Tk keys, so the triangle is shifted right.
    """
    t_key = t_query if t_key is None else t_key
    return torch.ones(t_query, t_key, dtype=torch.bool, device=device).tril(diagonal=t_key - t_query)


def attention(q, k, v, mask=None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_head) + mask) v, written out.

    q (B, H, Tq, dh), k and v (B, H, Tk, dh) -> (B, H, Tq, dh). Dividing by
    sqrt(d_head) keeps the scores' spread near 1 whatever the head width, so
    the softmax starts neither flat nor saturated.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0: the future gets no weight
    return scores.softmax(dim=-1) @ v


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention. Heads attend independently (one may track the
    stroke above, another the pixel to the left), then their outputs are mixed."""

    def __init__(self, d_model: int, heads: int, fused: bool = True):
        super().__init__()
        self.heads, self.fused = heads, fused
        self.qkv = nn.Linear(d_model, 3 * d_model)  # queries, keys and values in one matrix product
        self.proj = nn.Linear(d_model, d_model)     # mixes the heads back into the residual stream

    def forward(self, x: torch.Tensor, cache: "KVCache | None" = None, layer: int = 0) -> torch.Tensor:
        b, t, d = x.shape
        # (B, T, 3D) -> 3 x (B, H, T, D/H): split into heads
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            # Keys and values of earlier positions were computed once and kept (section 4).
            k, v = cache.append(layer, k, v)  # -> (B, H, T_past + T, D/H)
        if self.fused:
            # torch's fused kernel computes the same softmax(q k^T / sqrt(dh)) v without
            # storing the T x T score matrix and skips the masked half: about 5x faster here.
            if k.shape[2] == t:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                # Cached decoding: the new queries come last. One new query may see every key.
                mask = None if t == 1 else causal_mask(t, k.shape[2], x.device)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y = attention(q, k, v, causal_mask(t, k.shape[2], x.device))
        # (B, H, T, D/H) -> (B, T, D): heads side by side again
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


# %% 3. The block and the model: MLP, residuals, layer norm, embeddings
# Attention moves information between positions; the MLP then computes on each
# position alone (4x wider inside, as in GPT). Each adds its result to a running
# "residual stream" x = x + f(x), so a block starts near the identity and gradients
# reach the first layer undiminished. Layer norm before each sub-layer (pre-norm,
# as in GPT-2) keeps the inputs of every f at unit scale however deep the stack.
class Block(nn.Module):
    def __init__(self, d_model: int, heads: int, fused: bool = True):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, heads, fused)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x, cache=None, layer=0):
        x = x + self.attn(self.ln1(x), cache, layer)  # (B, T, D) -> (B, T, D)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """A causal transformer over a vocabulary of `vocab` symbols plus a BOS token.

    Attention is blind to order (a permutation of the inputs permutes the
    outputs), so each position adds a learned position vector to its token's
    vector: that is how the model knows a pixel sits at row 3, column 17.
    """

    def __init__(self, vocab: int, length: int, d_model: int = 64, layers: int = 3, heads: int = 4,
                 fused: bool = True, width: int = 0, hint: bool = False):
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
        self.blocks = nn.ModuleList(Block(d_model, heads, fused) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)                    # logits over the next token
        # GPT-2's initialisation: small normal weights, so every block starts as nearly the
        # identity on the residual stream and the first loss is close to log(vocab).
        for p_name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)
            elif p_name.endswith("bias"):
                nn.init.zeros_(p)

    def inputs(self, tokens: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Targets (B, T) -> the network's inputs at positions start..stop-1: the previous
        token (B, T') or, with the hint, the previous token and its neighbours (B, T', 1 + 11).
        Input i reads targets before i only. Only positions start..stop-1 are built, so
        generation's one new position per step costs the same at every step."""
        stop = tokens.shape[1] if stop is None else stop
        # Input i holds token i - 1 (shift_right); position 0 holds BOS.
        prev = shift_right(tokens[:, :stop], self.bos) if start == 0 else tokens[:, start - 1:stop - 1]
        if not self.hint:
            return prev
        return torch.cat([prev.unsqueeze(-1), neighbour_pixels(tokens, self.vocab, start, stop)], dim=-1)

    def embed(self, idx: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Inputs (B, T) or (B, T, 12) at positions start..start+T-1 -> vectors (B, T, D)."""
        t = idx.shape[1]
        if start + t > self.length:
            raise common.UserError(f"sequence of {start + t} tokens is longer than the model's {self.length} positions")
        pos = torch.arange(start, start + t, device=idx.device)
        if self.hint:  # the sum of the embeddings of the previous token and of each neighbour
            h = self.tok_emb(idx[..., 0]) + sum(e(idx[..., 1 + k]) for k, e in enumerate(self.hint_emb))
        else:
            h = self.tok_emb(idx)
        if self.width:
            return h + self.row_emb[pos // self.width] + self.col_emb[pos % self.width]
        return h + self.pos_emb[pos]

    def trunk(self, h: torch.Tensor, cache: "KVCache | None" = None) -> torch.Tensor:
        """Vectors (B, T, D) -> logits (B, T, vocab)."""
        for i, block in enumerate(self.blocks):
            h = block(h, cache, i)
        return self.head(self.ln_f(h))

    def forward(self, idx: torch.Tensor, cache: "KVCache | None" = None) -> torch.Tensor:
        """Inputs (B, T[, 12]) -> logits (B, T, vocab); output i depends on inputs 0..i only."""
        start = cache.length if cache is not None else 0
        logits = self.trunk(self.embed(idx, start), cache)
        if cache is not None:
            cache.length += idx.shape[1]
        return logits


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


@torch.no_grad()
def bits_per_token(model: GPT, tokens: torch.Tensor, device, batch: int = 50) -> tuple[float, torch.Tensor]:
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
    """Draw n sequences (n, length) token by token; the random numbers come from `gen` on the CPU."""
    model.eval()
    length = length or model.length
    device = next(model.parameters()).device
    out = torch.zeros(n, length, dtype=torch.long, device=device)  # filled in left to right
    cache = KVCache(len(model.blocks), length) if use_cache else None
    for t in range(length):
        # Input t reads the tokens drawn before t only, so the unfilled rest of `out` is never seen.
        with common.autocast(device):
            if use_cache:
                logits = model(model.inputs(out, t, t + 1), cache)[:, -1]   # one new position -> (n, vocab)
            else:
                logits = model(model.inputs(out, 0, t + 1))[:, -1]          # all t + 1 positions -> (n, vocab)
        out[:, t] = draw(logits, temperature, torch.rand(n, generator=gen))
    return out


def generate_batched(model: GPT, n: int, batch: int, temperature: float, gen: torch.Generator) -> torch.Tensor:
    """generate() in groups of `batch` images: the cache holds layers x 2 x B x 784 x D floats."""
    return torch.cat([generate(model, min(batch, n - i), temperature, gen) for i in range(0, n, batch)])


# %% 6. Training: a warm-up, then a cosine decay, by steps or by the clock
# Transformers dislike a large learning rate at the start (the attention
# softmax saturates before the embeddings mean anything), hence the short
# warm-up; the cosine decay to 0 then settles the weights for the final model.
# The schedule reads "how far through training are we" as a fraction, so the
# same code trains for N steps or for S seconds (the fair comparison with 01).
def learning_rate(progress: float, peak: float, warmup: float = 0.05) -> float:
    """progress in [0, 1] -> lr: linear warm-up over the first 5%, then half a cosine down to 0."""
    if progress < warmup:
        return peak * progress / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def train(model: GPT, next_batch, cfg: Config, device, label: str = "train") -> tuple[int, float, float]:
    """Train until --steps (or --train-seconds); returns (steps, seconds, last loss in nats)."""
    # AdamW: Adam with decoupled weight decay, the usual transformer optimizer; beta2 = 0.95
    # (GPT's choice) lets the step size react faster when the loss landscape changes.
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.01)
    timed = cfg.train_seconds > 0
    progress = common.Progress(cfg.steps, label)
    start, step, loss_avg = time.perf_counter(), 0, float("nan")
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
            loss = sequence_loss(model, tokens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # one bad batch cannot throw the weights far
        opt.step()
        step += 1
        loss_avg = loss.item() if step == 1 else 0.95 * loss_avg + 0.05 * loss.item()
        if timed:  # the step count a run of this length will reach, for the progress line's ETA
            progress.total = max(step, int(step / max(frac, 1e-9)))
        progress.update(step, loss_bits=loss_avg / math.log(2), lr=opt.param_groups[0]["lr"])
    return step, time.perf_counter() - start, loss_avg


# %% 7. Side by side with chapter 01
# Chapter 01's network is told a position and predicts that one pixel: a forward
# pass over an image yields as many targets as positions it is asked about. Here a
# forward pass yields 784. "Targets learned per second" counts (pixel, prediction)
# pairs the loss is computed on per second of training; bits per pixel on held-out
# digits says what that buys at equal wall-clock time.
# Measured on the 2-core CPU (the table in the module docstring): at 01's
# 285 s of training, 52,649 targets/s here against 35,949, and 0.1194 bits per
# pixel against 01's 0.1232. What it took, each at about 01's training time:
# the plain GPT, 0.131 (4 heads; 2026-11-23, when 01 trained in 226 s); with
# the three pixels above as a hint, 0.1248; with the 11-pixel neighbourhood of
# section 1 and 2 heads, 0.1197 (4,000 steps). Small batches and a high
# learning rate mattered most in earlier tuning (60 s runs: batch 16 -> 4 took
# held-out bits from 0.411 to 0.341; lr 2e-3 -> 4e-3 with 2 blocks from 0.307
# to 0.265, K=4).
COMPARE_KEYS = ("bits_per_pixel", "train_seconds", "targets_per_second", "fd", "confidence")


def read_other_metrics(path: str, levels: int) -> dict:
    """Chapter 01's metrics.json, checked: the keys the table needs, and the same K."""
    p = Path(path)
    try:
        other = json.loads(p.read_text())
    except FileNotFoundError:
        raise common.UserError(f"--compare: {p} not found (run 01_autoregressive_pixels.py first)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise common.UserError(f"--compare: {p} is not a readable metrics.json ({type(e).__name__})") from None
    if not isinstance(other, dict):
        raise common.UserError(f"--compare: {p} does not hold a JSON object")
    missing = [k for k in COMPARE_KEYS if not isinstance(other.get(k), (int, float))]
    if missing:
        raise common.UserError(f"--compare: {p} lacks {', '.join(missing)}")
    if other.get("levels", levels) != levels:
        raise common.UserError(f"--compare: {p} used K={other['levels']} levels, this run K={levels}; "
                               f"pass --levels {other['levels']} (bits per pixel depend on K)")
    return other


def comparison_table(other: dict, mine: dict) -> str:
    """A small table, one row per figure, 01's column then 07's."""
    rows = [
        ("training seconds", "train_seconds", "{:.0f}"),
        ("targets learned per second", "targets_per_second", "{:,.0f}"),
        ("held-out bits per pixel", "bits_per_pixel", "{:.4f}"),
        ("perplexity (2^bpp)", None, "{:.3f}"),
        ("FD (lower is better)", "fd", "{:.2f}"),
        ("judge confidence", "confidence", "{:.3f}"),
    ]
    lines = [f"{'':28s} {'01 (position as input)':>24s} {'07 (causal transformer)':>24s}"]
    for name, key, fmt in rows:
        cells = [fmt.format(2 ** m["bits_per_pixel"] if key is None else m[key]) for m in (other, mine)]
        lines.append(f"{name:28s} {cells[0]:>24s} {cells[1]:>24s}")
    return "\n".join(lines)


# %% 8. Text mode: the same model, on characters
# Nothing above knows it is modelling digits: a digit is 784 tokens from a
# vocabulary of K. A text is a long run of tokens from a vocabulary of its
# distinct characters. Train on random windows of --context characters, measure
# bits per character on the last 10% of the file (never trained on), and sample.
def resolve_text(name: str) -> Path:
    """`help-topics` -> pydoc's help text inside the standard library; anything else is a path."""
    if name == DEFAULT_TEXT and not Path(name).exists():
        import pydoc_data  # standard library: the text of Python's help()

        return Path(pydoc_data.__file__).parent / "topics.py"
    return Path(name)


def read_text(name: str, context: int) -> str:
    path = resolve_text(name)
    try:
        raw = path.read_bytes()
    except OSError as e:  # missing, a folder, no permission
        raise common.UserError(f"--text: cannot read {path} ({e.strerror or type(e).__name__})") from None
    text = raw.decode("utf-8", errors="replace")  # any bytes become some text: binary files still train
    if not text:
        raise common.UserError(f"--text: {path} is empty")
    # Train and held-out parts must each hold at least one window of context + 1 characters.
    need = 10 * (context + 1)
    if len(text) < need:
        raise common.UserError(f"--text: {path} has {len(text)} characters; need at least {need} "
                               f"for --context {context} (or lower --context)")
    return text


def encode_text(text: str) -> tuple[torch.Tensor, str]:
    """Characters -> token ids (N,), and the vocabulary (a string of the distinct characters, sorted)."""
    chars = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(chars)}
    return torch.tensor([index[c] for c in text], dtype=torch.long), chars


def random_windows(ids: torch.Tensor, n: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """n windows (n, length) cut from ids at random starts."""
    starts = torch.randint(0, len(ids) - length + 1, (n,), generator=gen)
    return torch.stack([ids[s:s + length] for s in starts.tolist()])


def run_text(cfg: Config, device, gen: torch.Generator, out: Path) -> dict:
    if cfg.load:
        ckpt = common.load_checkpoint(cfg.load, SCRIPT)
        arch = ckpt["extra"].get("arch", {})
        if arch.get("mode") != "text":
            raise common.UserError(f"{cfg.load}: a digit model; load it without --text")
        chars = ckpt["extra"]["chars"]
        model = build_model(arch, cfg.attention).to(device)
        common.load_state(model, ckpt["state"], cfg.load)
        common.save_checkpoint(out / "model.pt", SCRIPT, cfg, model.state_dict(), {"arch": arch, "chars": chars})
        text = read_text(cfg.text, arch["length"])
        ids = torch.tensor([chars.index(c) if c in chars else 0 for c in text], dtype=torch.long)
    else:
        text = read_text(cfg.text, cfg.context)
        ids, chars = encode_text(text)
        arch = dict(mode="text", vocab=len(chars), length=cfg.context, d_model=cfg.d_model, layers=cfg.layers, heads=cfg.heads)
        model = build_model(arch, cfg.attention).to(device)
    split = int(0.9 * len(ids))
    train_ids, held_ids = ids[:split], ids[split:]
    print(f"text: {resolve_text(cfg.text)}, {len(text):,} characters, vocabulary {len(chars)}, "
          f"context {arch['length']}, {count_params(model):,} parameters", flush=True)

    steps, seconds = 0, 0.0
    if not cfg.load:
        steps, seconds, _ = train(model, lambda: random_windows(train_ids, cfg.batch_size, arch["length"], gen), cfg, device)
        common.save_checkpoint(out / "model.pt", SCRIPT, cfg, model.state_dict(), {"arch": arch, "chars": chars})
    # Held out: consecutive windows of the last 10%, at most 64 of them (enough for two decimals).
    n_win = min(64, len(held_ids) // arch["length"])
    held = held_ids[:n_win * arch["length"]].view(n_win, arch["length"])
    bpc, _ = bits_per_token(model, held, device)
    t0 = time.perf_counter()
    sample_ids = generate(model, 1, cfg.temperature, torch.Generator().manual_seed(cfg.seed))[0]
    sample_seconds = time.perf_counter() - t0
    sample = "".join(chars[i] for i in sample_ids.tolist())
    (out / "samples.txt").write_text(sample + "\n", encoding="utf-8")
    print(f"--- sample ({arch['length']} characters, temperature {cfg.temperature}) ---\n{sample}\n---", flush=True)
    metrics = {
        "mode": "text", "text": str(resolve_text(cfg.text)), "characters": len(text), "vocabulary": len(chars),
        "train_seconds": seconds, "sample_seconds": sample_seconds, "steps": steps,
        "bits_per_char": bpc, "perplexity": 2 ** bpc, "uniform_bits": math.log2(len(chars)),
        "params": count_params(model), "temperature": cfg.temperature,
    }
    common.save_metrics(out, metrics)
    common.print_summary(metrics, ["train_seconds", "sample_seconds", "bits_per_char", "perplexity", "uniform_bits"])
    return metrics


# %% 9. Putting it together
def build_model(arch: dict, attention: str = "fused") -> GPT:
    return GPT(arch["vocab"], arch["length"], arch["d_model"], arch["layers"], arch["heads"],
               fused=attention == "fused", width=arch.get("width", 0), hint=arch.get("hint", False))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cache_check(model: GPT, seed: int, n: int = 4, rows: int = 7) -> dict:
    """Generate the first `rows` rows of n digits both ways: the tokens must agree; time both."""
    length = rows * SIDE
    times, outs = {}, {}
    for use_cache in (True, False):
        t0 = time.perf_counter()
        outs[use_cache] = generate(model, n, 1.0, torch.Generator().manual_seed(seed), use_cache, length)
        times[use_cache] = time.perf_counter() - t0
    return {"cache_identical": bool(torch.equal(outs[True], outs[False])),
            "cache_seconds": times[True], "nocache_seconds": times[False], "cache_check_pixels": length}


def save_bits_map(path: Path, per_pos: torch.Tensor, bpp: float) -> None:
    """Held-out bits per pixel at each of the 784 positions: where a digit is hard to predict."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    im = ax.imshow(per_pos.view(SIDE, SIDE).numpy(), cmap="magma")
    ax.set_title(f"held-out bits per pixel (mean {bpp:.3f})", fontsize=8)
    ax.axis("off")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__)
    gen = common.seed_everything(cfg.seed)
    device = common.pick_device(cfg.device)
    if cfg.d_model % cfg.heads:
        raise common.UserError(f"--heads {cfg.heads} must divide --d-model {cfg.d_model}")
    if cfg.text:
        if cfg.compare:
            raise common.UserError("--compare compares digit models; drop --text")
        return run_text(cfg, device, gen, common.out_dir(cfg, __file__))
    other = read_other_metrics(cfg.compare, cfg.levels) if cfg.compare else None
    if other is not None and cfg.train_seconds == 0:
        cfg.train_seconds = float(other["train_seconds"])  # equal training wall-clock
    data = common.load_data(cfg.data)
    out = common.out_dir(cfg, __file__)
    judge = common.Judge.load(data)

    if cfg.load:
        ckpt = common.load_checkpoint(cfg.load, SCRIPT)
        arch = ckpt["extra"].get("arch", {})
        if arch.get("mode") != "digits":
            raise common.UserError(f"{cfg.load}: a text model; load it with --text")
        cfg.levels = arch["vocab"]
        model = build_model(arch, cfg.attention).to(device)
        common.load_state(model, ckpt["state"], cfg.load)
        common.save_checkpoint(out / "model.pt", SCRIPT, cfg, model.state_dict(), {"arch": arch})  # out is complete
    else:
        arch = dict(mode="digits", vocab=cfg.levels, length=N_PIXELS, d_model=cfg.d_model, layers=cfg.layers,
                    heads=cfg.heads, width=SIDE if cfg.positions == "rowcol" else 0, hint=cfg.hint)
        model = build_model(arch, cfg.attention).to(device)
    print(f"GPT: {cfg.levels} levels, {arch['layers']} blocks of width {arch['d_model']} with {arch['heads']} heads, "
          f"{'with' if arch.get('hint') else 'without'} the neighbourhood hint, "
          f"{count_params(model):,} parameters", flush=True)

    steps, train_seconds = 0, 0.0
    if not cfg.load:
        if cfg.batch_size > len(data.x_train):
            raise common.UserError(f"--batch-size {cfg.batch_size} is larger than the {len(data.x_train)} training images")
        stream = common.batches(data.x_train, data.y_train, cfg.batch_size, gen)
        steps, train_seconds, _ = train(model, lambda: quantize(next(stream)[0], cfg.levels), cfg, device)
        common.save_checkpoint(out / "model.pt", SCRIPT, cfg, model.state_dict(), {"arch": arch})
    targets_per_second = steps * cfg.batch_size * N_PIXELS / max(train_seconds, 1e-9)

    bpp, per_pos = float("nan"), None
    if cfg.eval_images:
        t0 = time.perf_counter()
        bpp, per_pos = bits_per_token(model, quantize(data.x_held[:cfg.eval_images], cfg.levels), device)
        print(f"held-out: {bpp:.4f} bits per pixel, perplexity 2^bpp = {2 ** bpp:.3f} of K = {cfg.levels} levels "
              f"({min(cfg.eval_images, len(data.x_held))} digits, {time.perf_counter() - t0:.1f}s)", flush=True)
        save_bits_map(out / "bits_map.png", per_pos, bpp)

    check = cache_check(model, cfg.seed)
    print(f"key/value cache: first {check['cache_check_pixels']} pixels of 4 digits in {check['cache_seconds']:.2f}s "
          f"with the cache, {check['nocache_seconds']:.2f}s without; identical tokens: {check['cache_identical']}", flush=True)

    t0 = time.perf_counter()
    tokens = generate_batched(model, cfg.samples, cfg.sample_batch, cfg.temperature, torch.Generator().manual_seed(cfg.seed))
    sample_seconds = time.perf_counter() - t0
    images = dequantize(tokens.cpu(), cfg.levels)
    print(f"sampled {cfg.samples} digits x {N_PIXELS} pixels in {sample_seconds:.1f}s (cache, batches of {cfg.sample_batch})", flush=True)
    common.save_grid(out / "samples.png", images[:100], nrow=10,
                     title=f"07 causal transformer, K={cfg.levels}, T={cfg.temperature}")
    common.save_samples(out, images)

    result = judge.evaluate(images)
    print(common.describe(result), flush=True)
    metrics = {
        "train_seconds": train_seconds, "sample_seconds": sample_seconds, **result,
        "bits_per_pixel": bpp, "perplexity": 2 ** bpp, "levels": cfg.levels, "steps": steps,
        "batch_size": cfg.batch_size, "targets_per_second": targets_per_second,
        "params": count_params(model), "temperature": cfg.temperature, **check,
    }
    keys = ["train_seconds", "sample_seconds", "bits_per_pixel", "perplexity", "targets_per_second",
            "fd", "fd_ratio", "confidence", "coverage", "score"]
    if other is not None:
        metrics["compare"] = {k: other[k] for k in COMPARE_KEYS}
        print(comparison_table(other, metrics), flush=True)
        metrics["bpp_gain_vs_01"] = other["bits_per_pixel"] - bpp
        keys.append("bpp_gain_vs_01")
    common.save_metrics(out, metrics)
    common.print_summary(metrics, keys)
    return metrics


if __name__ == "__main__":
    common.run_main(main)
