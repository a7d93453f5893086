"""07_causal_transformer.py: train on every generation step of a digit in one evaluation.

Chapter 01 drew a digit pixel by pixel with a network told which position to
predict: one evaluation, one pixel learned. A *causal* network reads the whole
image and predicts, at each of the 784 positions, that pixel from the pixels
before it only: one evaluation trains all 784 generation steps. The network is
a small GPT written out in full, the architecture of large language models,
trained as they are. It samples with a key/value cache: token passes become
linear in the length (784, not about 784^2/2). Each position is also handed
the already-drawn pixels around it (section 1); without that hint (--no-hint)
the plain GPT did not beat 01 (README, claims table).

Before: 01_autoregressive_pixels.py, all it builds on: it can be read right after
02, before the GAN and the VAE, and it explains the causal networks that 03
onwards lean on. After: 08_latent_diffusion.py.

Run:  python 07_causal_transformer.py  (train, sample 1,000 digits, judge them; generation.gif
                                         shows 16 filling in; runs/07_causal_transformer/)
      python experiments/07_one_pass.py, 07_mask_cost.py, 07_versus_01.py, 07_text.py: one
      pass against one position, the mask's cost, 07 against 01, on Python's help text
"""
from __future__ import annotations

import common  # first: from here on Ctrl-C prints one line, even while torch loads

import dataclasses
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SCRIPT = "07_causal_transformer"
SIDE = 28  # MNIST's side: 784 pixels, each a grey level; every function takes any other side
SHAPE_KEYS = ("levels", "d_model", "layers", "heads", "hint")  # what a checkpoint's model is
EVAL_IMAGES = 1000  # held-out digits for bits per pixel
SAMPLE_BATCH = 250  # digits generated together: the cache holds layers x 2 x B x 784 x D floats


# %% 0. Settings
@dataclasses.dataclass
class Config(common.BaseConfig):
    steps: int = common.flag(4000, "training steps (optimizer updates)", min=1)
    batch_size: int = common.flag(4, "images per training step", min=1)
    levels: int = common.flag(2, "K, intensity levels per pixel (2 = paper or ink)", min=2, max=256)
    d_model: int = common.flag(64, "width of every token's vector", min=8)
    layers: int = common.flag(2, "transformer blocks", min=1)
    heads: int = common.flag(2, "attention heads (must divide --d-model)", min=1)
    lr: float = common.flag(4e-3, "peak AdamW learning rate (warm-up, cosine to 0)", min=0.0)
    temperature: float = common.flag(1.0, "sampling temperature (1 = as learned)", min=0.01)
    hint: bool = common.flag(True, "hand each position the drawn pixels around it (section 1)")
    attention: str = common.flag("fused", "fused: torch's kernel; explicit: section 2's "
                                 "(same numbers, slower)", choices=["fused", "explicit"])


# %% 1. Pixels as tokens
# A language model reads a sequence of tokens from a small vocabulary. A digit
# becomes one: quantize each pixel to one of K levels and read the 28 x 28 grid
# row by row (raster order), exactly as chapter 01 does, so that the two
# chapters' bits per pixel are comparable. Position i is then predicted from
# positions 0..i-1: the pixels above it and to its left.
# from 01
def quantize(images: torch.Tensor, levels: int) -> torch.Tensor:
    """Images (N, [1,] side, side) in [0, 1] -> tokens (N, side*side): each pixel's
    nearest of the K levels 0, 1/(K-1), ..., 1 as an index 0..K-1, in raster order."""
    return torch.round(images.reshape(len(images), -1).clamp(0, 1) * (levels - 1)).long()


# from 01
def dequantize(tokens: torch.Tensor, levels: int) -> torch.Tensor:
    """Tokens (N, side*side) -> images (N, side, side) in [0, 1]: level / (K-1)."""
    side = math.isqrt(tokens.shape[1])
    return (tokens.float() / (levels - 1)).view(len(tokens), side, side)


def shift_right(tokens: torch.Tensor, bos: int) -> torch.Tensor:
    """(B, T) targets -> (B, T) inputs [BOS, t_0, ..., t_{T-2}]: output i must predict token
    i from tokens 0..i-1 only; shifted right behind a begin-of-sequence token (BOS), input i
    holds token i-1, and the causal mask (section 2) lets output i see inputs 0..i only."""
    start = torch.full_like(tokens[:, :1], bos)
    return torch.cat([start, tokens[:, :-1]], dim=1)


# The neighbourhood hint. Read as a sequence, a digit loses its grid: the pixel
# above pixel i sits 28 tokens back, and the network must discover that before
# it can use the best clues there are (strokes continue downwards and sideways).
# So position i is also handed the pixels near pixel i that raster order has
# already drawn: two rows above, two columns either side, and the pixel two to
# the left, like a PixelCNN's first, masked 5x5 layer (the pixel to the left is
# the previous token). All come before i, so nothing leaks (the tests check it);
# the hint only saves learning time. Off the grid it holds PAD.
NEIGHBOURS = [(dr, dc) for dr in (-2, -1) for dc in (-2, -1, 0, 1, 2)] + [(0, -2)]  # (rows, cols)


def neighbour_pixels(tokens: torch.Tensor, pad: int, start: int = 0, stop: int | None = None,
                     width: int = SIDE) -> torch.Tensor:
    """Targets (B, T), rows of `width` pixels -> (B, stop - start, 11): for each position i
    in start..stop-1 the token at each offset of NEIGHBOURS from pixel i, or pad off the grid."""
    stop = tokens.shape[1] if stop is None else stop
    pos = torch.arange(start, stop, device=tokens.device)[:, None]         # (T', 1)
    dr, dc = torch.tensor(NEIGHBOURS, device=tokens.device).T              # (11,) each
    row, col = pos // width + dr, pos % width + dc                          # (T', 11)
    on_grid = (row >= 0) & (col >= 0) & (col < width)
    src = (row * width + col).clamp(min=0)    # raster index of each neighbour, < i
    got = tokens[:, src]                      # (B, T', 11): used only where on_grid
    return torch.where(on_grid, got, torch.full_like(got, pad))


# %% 2. Causal self-attention: the mask is the whole trick
# Self-attention: position i forms a query q_i, every position j offers a key
# k_j and a value v_j, and i's output is the average of the values weighted by
# softmax(q_i . k_j). Left alone, position i would read the pixel it must predict
# and learn to copy. The causal mask forbids it: every score with j > i is set
# to -inf before the softmax, so its weight is exactly 0. Output i is then a
# function of inputs 0..i only, for every i at once: one pass over an image
# computes the 784 predictions that generation makes one at a time. The mask
# costs a little quality, the talk says; causal=False lifts it, only for
# experiments/07_mask_cost.py, which measures that (README, claims table).
def causal_mask(t_query: int, t_key: int | None = None, device=None) -> torch.Tensor:
    """Bool (Tq, Tk): True where query i may look at key j, i.e. j <= i + (Tk - Tq): the
    lower triangle, shifted right when Tq new queries follow cached keys (section 5)."""
    t_key = t_query if t_key is None else t_key
    return torch.ones(t_query, t_key, dtype=torch.bool, device=device).tril(t_key - t_query)


def attention(q, k, v, mask=None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_head) + mask) v, written out: q (B, H, Tq, dh), k and v
    (B, H, Tk, dh) -> (B, H, Tq, dh). Dividing by sqrt(d_head) keeps the scores' spread near
    1 whatever the head width: the softmax starts neither flat nor saturated."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # exp(-inf) = 0: no weight on the future
    return scores.softmax(dim=-1) @ v


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention. Heads attend independently (one may track the
    stroke above, another the pixel to the left), then their outputs are mixed."""

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
        if not self.fused:
            y = attention(q, k, v, causal_mask(t, k.shape[2], x.device) if self.causal else None)
        elif k.shape[2] == t:  # torch's fused kernel: the same numbers, far faster (it never
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # stores T x T)
        else:  # cached decoding: the new queries come last; one new query may see every key
            mask = None if t == 1 else causal_mask(t, k.shape[2], x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
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
    """A causal transformer over `vocab` symbols plus a BOS token; heads must divide d_model.
    Attention is blind to order, so each position adds a learned position vector to its
    token's: how it knows a pixel sits at row 3, column 17 (with `width`, the row length the
    hint needs, a row plus a column vector)."""

    def __init__(self, vocab: int, length: int, d_model: int = 64, layers: int = 3,
                 heads: int = 4, fused: bool = True, width: int = 0, hint: bool = False,
                 causal: bool = True):
        super().__init__()
        if d_model % heads or (hint and not width):
            raise ValueError(f"heads {heads} must divide d_model {d_model}; a hint needs a width")
        self.vocab, self.length, self.bos, self.width, self.hint = vocab, length, vocab, width, hint
        self.tok_emb = nn.Embedding(vocab + 1, d_model)          # + 1: the BOS token
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
        for p_name, p in self.named_parameters():  # (layer norms' gains stay 1)
            if p.dim() >= 2 or p_name.endswith("bias"):
                nn.init.normal_(p, std=0.02) if p.dim() >= 2 else nn.init.zeros_(p)

    def inputs(self, tokens: torch.Tensor, start: int = 0, stop: int | None = None):
        """Targets (B, T) -> the network's inputs at positions start..stop-1 only (so each
        step of generation costs the same): the previous token (B, T') or, with the hint, it
        and its neighbours (B, T', 1 + 11). Input i reads targets before i only."""
        stop = tokens.shape[1] if stop is None else stop
        # Input i holds token i - 1 (shift_right); position 0 holds BOS.
        prev = shift_right(tokens[:, :stop], self.bos) if start == 0 else \
            tokens[:, start - 1:stop - 1]
        if not self.hint:
            return prev
        hint = neighbour_pixels(tokens, self.vocab, start, stop, self.width)
        return torch.cat([prev.unsqueeze(-1), hint], dim=-1)

    def embed(self, idx: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Inputs (B, T) or (B, T, 12) at positions start..start+T-1 -> vectors (B, T, D)."""
        pos = torch.arange(start, start + idx.shape[1], device=idx.device)
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


def build(cfg: Config, causal: bool = True, shape=(1, SIDE, SIDE)) -> GPT:
    """The model of the settings for grey images `shape` (1, H, H): H*H positions in rows of H."""
    if cfg.d_model % cfg.heads:
        raise common.UserError(f"--heads {cfg.heads} must divide --d-model {cfg.d_model}")
    return GPT(cfg.levels, shape[1] * shape[2], cfg.d_model, cfg.layers, cfg.heads,
               fused=cfg.attention == "fused", width=shape[2], hint=cfg.hint, causal=causal)


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


# Without the causal trick, training the same network means evaluating it once
# per generation step: run it on the prefix 0..i and learn from position i's
# prediction alone (a batch shares i, so no prefix is padded). One causal pass
# computes exactly the losses of all 784 such evaluations (the tests check it).
def one_position_loss(model: GPT, tokens: torch.Tensor, i: int) -> torch.Tensor:
    """Tokens (B, T) -> inputs (B, i + 1[, 12]) -> logits (B, i + 1, vocab), of which only
    the last row counts: the cross-entropy at position i alone."""
    logits = model(model.inputs(tokens, 0, i + 1))[:, -1]   # (B, vocab)
    return F.cross_entropy(logits.float(), tokens[:, i])


def random_position_loss(gen: torch.Generator, length: int):
    """one_position_loss at a position drawn uniformly from 0..length-1 for each batch."""
    return lambda model, tokens: one_position_loss(
        model, tokens, int(torch.randint(length, (1,), generator=gen)))


@torch.no_grad()
def bits_per_token(model: GPT, tokens: torch.Tensor, device, batch: int = 50) -> float:
    """Bits per token of sequences (N, T), e.g. held-out digits: sequence_loss in bits."""
    model.eval()
    nats, progress = 0.0, common.Progress(len(tokens), "held-out")
    for i in range(0, len(tokens), batch):
        chunk = tokens[i:i + batch].to(device)
        with common.autocast(device):
            nats += sequence_loss(model, chunk).item() * len(chunk)
        progress.update(i + len(chunk))
    return nats / len(tokens) / math.log(2)


# %% 5. Generation: one token at a time, with and without a key/value cache
# Generating is the loop the training pass unrolled: predict token 0 from BOS,
# draw it, feed it back, predict token 1, and so on. Without a cache, step t
# reruns all t tokens so far, recomputing keys and values that the causal mask
# guarantees have not changed: 1 + 2 + ... + T ~ T^2/2 token-passes (and cubic
# attention). With a cache, each layer keeps every position's key and value,
# and step t runs only the new token, its query attending to the stored keys:
# T token-passes, and quadratic attention. Same numbers, far less work: for a
# digit, 784 token-passes instead of about 307,000.
class KVCache:
    """Per layer, keys and values (B, H, T_max, dh) of every position processed so far."""

    def __init__(self, layers: int, t_max: int):
        self.t_max = t_max
        self.k, self.v = [None] * layers, [None] * layers  # per layer, once it has run
        self.length = 0  # positions stored (the same in every layer)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store new keys/values (B, H, T, dh) after the old ones; return all of them."""
        if self.k[layer] is None:
            # Allocated once, at the full length to generate, and filled in place: growing
            # a tensor by concatenation every step would copy the whole cache each time.
            b, h, _, dh = k.shape
            self.k[layer], self.v[layer] = (x.new_empty(b, h, self.t_max, dh) for x in (k, v))
        end = self.length + k.shape[2]
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


def draw(logits: torch.Tensor, temperature: float, u: torch.Tensor) -> torch.Tensor:
    """One token per row from softmax(logits / temperature), by inverse CDF with uniforms
    u (B,): the first token whose cumulative probability exceeds u. Passing u in lets the
    cached and uncached paths draw alike, so they must agree token for token. Temperature
    < 1 sharpens the distribution (fewer stray pixels, less variety); > 1 flattens it."""
    if temperature <= 0:
        raise ValueError(f"temperature must be above 0, got {temperature}")
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
        if use_cache:  # one new position -> (n, vocab)
            logits = model(model.inputs(out, t, t + 1), cache)[:, -1]
        else:          # all t + 1 positions, recomputed -> (n, vocab)
            logits = model(model.inputs(out, 0, t + 1))[:, -1]
        out[:, t] = draw(logits, temperature, torch.rand(n, generator=gen))
    return out


def generate_batched(model: GPT, n: int, batch: int, temperature: float,
                     gen: torch.Generator) -> torch.Tensor:
    """generate() in groups of `batch` sequences, all from one random stream."""
    out, progress = [], common.Progress(n, "sampling")
    for i in range(0, n, batch):
        with common.autocast(next(model.parameters()).device):
            out.append(generate(model, min(batch, n - i), temperature, gen))
        progress.update(i + len(out[-1]))
    return torch.cat(out)


# %% 6. Training: a warm-up, then a cosine decay
# Transformers dislike a large learning rate at the start (the attention
# softmax saturates before the embeddings mean anything), hence the short
# warm-up; the cosine decay to 0 then settles the weights for the final model.
def learning_rate(progress: float, peak: float, warmup: float = 0.05) -> float:
    """progress in [0, 1] -> lr: linear warm-up over the first 5%, then half a cosine to 0."""
    if progress < warmup:
        return peak * progress / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def train_step(model: GPT, opt, tokens: torch.Tensor, loss_fn=sequence_loss) -> float:
    """One optimizer update of loss_fn(model, tokens) on tokens (B, T); returns it in bits."""
    loss = loss_fn(model, tokens)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # one bad batch cannot throw it far
    opt.step()
    return loss.item() / math.log(2)


def train(model: GPT, next_batch, cfg: Config, device, label: str = "train",
          loss_fn=sequence_loss) -> dict:
    """cfg.steps updates of loss_fn(model, tokens) on next_batch() (B, T) tokens; returns
    train_seconds, steps, targets_per_second and the last 50 steps' mean loss in bits."""
    # AdamW: Adam with decoupled weight decay, the usual transformer optimizer; beta2 = 0.95
    # (GPT's choice) lets the step size react faster when the loss landscape changes.
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.01)
    progress, losses, targets = common.Progress(cfg.steps, label), [], 0
    model.train()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step / cfg.steps, cfg.lr)
        tokens = next_batch().to(device)
        with common.autocast(device):
            losses.append(train_step(model, opt, tokens, loss_fn))
        # every position is a target of sequence_loss; one per sequence of one_position_loss
        targets += tokens.numel() if loss_fn is sequence_loss else len(tokens)
        progress.update(step + 1, loss_bits=float(np.mean(losses[-50:])))
    seconds = progress.elapsed()
    return {"train_seconds": seconds, "steps": cfg.steps, "targets_per_second": targets / seconds,
            "final_loss_bits": float(np.mean(losses[-50:]))}


def digit_batches(data: common.Data, cfg: Config, gen: torch.Generator):
    """A function returning the next training batch as tokens (B, 784)."""
    stream = common.batches(data.x_train, data.y_train, cfg.batch_size, gen)
    return lambda: quantize(next(stream)[0], cfg.levels)


# %% 7. Putting it together: held-out bits, samples, the animation
GIF_IMAGES, GIF_EVERY = 16, 16  # 16 samples, a frame every 16 pixels: 50 frames


def save_animation(path, tokens: torch.Tensor, levels: int) -> None:
    """generation.gif from finished samples: generation never changes a drawn pixel, so
    after p steps pixels 0..p-1 are as they end up; the rest are shown light grey."""
    images = dequantize(tokens[:GIF_IMAGES], levels)                     # (n, 28, 28)
    n = images[0].numel()
    steps = list(range(0, n, GIF_EVERY)) + [n]
    frames = [torch.where(torch.arange(n).view_as(images[0]) < p, images, 0.25) for p in steps]
    common.save_images(path, frames, 8, titles=[f"pixel {p} of {n}" for p in steps])


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__)
    data = common.load_data(cfg.data)
    if data.x_train.shape[1] != 1 or data.x_train.shape[2] != data.x_train.shape[3]:
        raise common.UserError("07 models grey levels of square images: pass grey images "
                               f"(N, H, H), not {'x'.join(map(str, data.x_train.shape[1:]))}")
    with common.run_folder(cfg, SCRIPT) as out:
        gen = common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        judge = common.load_judge(data)
        cfg, model, extra = common.load_or_train(
            cfg, out, SCRIPT, SHAPE_KEYS, lambda c: build(c, shape=data.x_train.shape[1:])
            .to(device), lambda m: train(m, digit_batches(data, cfg, gen), cfg, device), data)
        bpp = bits_per_token(model, quantize(data.x_held[:EVAL_IMAGES], cfg.levels), device)
        start = time.perf_counter()
        tokens = generate_batched(model, cfg.samples, SAMPLE_BATCH, cfg.temperature,
                                  torch.Generator().manual_seed(cfg.seed)).cpu()
        x = dequantize(tokens, cfg.levels)  # (N, 784) -> (N, 28, 28)
        metrics = {**extra, "sample_seconds": time.perf_counter() - start,
                   "bits_per_pixel": bpp, "perplexity": 2 ** bpp, "levels": cfg.levels,
                   "params": sum(p.numel() for p in model.parameters()), "device": str(device),
                   **(judge.evaluate(x) if judge else {}), "config": dataclasses.asdict(cfg)}
        common.save_images(out / "samples.png", x[:100], 10,
                           titles=f"{SCRIPT}: K={cfg.levels}, T={cfg.temperature:g}")
        common.save_samples(out, x)
        if cfg.gif:
            save_animation(out / "generation.gif", tokens, cfg.levels)
        common.save_metrics(out, metrics)
    common.print_summary(metrics, [("bits_per_pixel", "held-out bits per pixel (lower is better)"),
                                   ("perplexity", f"perplexity 2^bits, of K = {cfg.levels}"),
                                   ("targets_per_second", "targets learned per second")])
    return metrics


# %% Run it (in a notebook too; common.run_main(main, ["--steps", "300"]) changes settings)
if __name__ == "__main__":
    common.run_main(main)

# %% Exercises (answers: docs/exercises.md; patches for the code changes: docs/solutions/)
# 1. Predict, then run: one causal pass learns 784 targets, one evaluation on a prefix learns
#    one. Will the causal pass learn 784 times as many targets per second?
#      python experiments/07_one_pass.py
# 2. Predict, then run: the same transformer on Python's help text. How many bits per
#    character will it need, against log2 of the number of distinct characters?
#      python experiments/07_text.py
# 3. Change the code: build the model with causal=False in main. Predict the training loss
#    and the held-out bits per pixel, then look at samples.png
#    (a solution: docs/solutions/07_no_mask.patch).
# 4. Explain: the talk says the mask costs a little quality, as full attention sees more.
#    What did experiments/07_mask_cost.py find at its budget (README's claims table), and
#    why can seeing less help a network learn?
# 5. Explain: how can one model beat another in held-out bits per pixel and still draw worse
#    samples? Compare 07 with 01 in README's claims table (experiments/07_versus_01.py).
