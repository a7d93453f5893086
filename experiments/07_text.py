"""07_text.py: the same causal transformer learns the characters of a text.

Nothing in 07's model knows it is modelling digits: a digit is 784 tokens from a
vocabulary of K levels; a text is a long run of tokens from a vocabulary of its distinct
characters. This trains 07's GPT (without the digits' hint; one position vector per
character) with 07's own training code on random windows of --context characters, measures
bits per character on the file's last 10% (never trained on) and samples one window.
The default text is Python's own help text (pydoc's help topics, about 750 kB of English
about Python, inside the standard library), so it runs offline anywhere.

    python experiments/07_text.py                     (Python's help text)
    python experiments/07_text.py --text book.txt     (any text file)

Writes samples.txt, metrics.json and model.pt into runs/07_text/ (--load model.pt samples
again from a saved model of the same text).
"""
import dataclasses
import math
import time
from pathlib import Path

import lab
import common
import torch

ch = lab.chapter("07_causal_transformer")
DEFAULT_TEXT = "help-topics"
SCRIPT = "07_text"


@dataclasses.dataclass
class Config(common.BaseConfig):
    steps: int = common.flag(4000, "training steps (optimizer updates)", min=1)
    batch_size: int = common.flag(4, "text windows per training step", min=1)
    d_model: int = common.flag(64, "width of every token's vector", min=8)
    layers: int = common.flag(2, "transformer blocks", min=1)
    heads: int = common.flag(2, "attention heads (must divide --d-model)", min=1)
    lr: float = common.flag(4e-3, "peak AdamW learning rate (warm-up, cosine to 0)", min=0.0)
    temperature: float = common.flag(1.0, "sampling temperature (1 = as learned)", min=0.01)
    text: str = common.flag(DEFAULT_TEXT, "a text file, or help-topics: Python's help text")
    context: int = common.flag(256, "characters per window and per sample", min=2)
    out: str = common.flag("runs/07_text", "output folder")


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


def main(argv=None):
    cfg = common.parse_config(Config, argv, __doc__, leave_out=("data", "samples", "gif"))
    if cfg.load:  # the text must hold windows of the saved model's length
        saved = common.load_checkpoint(cfg.load, SCRIPT)["config"]
        cfg = dataclasses.replace(cfg, context=saved.get("context", cfg.context))
    text = read_text(cfg.text, cfg.context)
    ids, chars = encode_text(text)
    split = int(0.9 * len(ids))
    with common.run_folder(cfg, SCRIPT) as out:
        gen = common.seed_everything(cfg.seed)
        device = common.pick_device(cfg.device)
        cfg, model, extra = common.load_or_train(
            cfg, out, SCRIPT, ("d_model", "layers", "heads", "context"),
            lambda c: ch.GPT(len(chars), c.context, c.d_model, c.layers, c.heads).to(device),
            lambda m: {**ch.train(m, lambda: random_windows(ids[:split], cfg.batch_size,
                                                            cfg.context, gen), cfg, device),
                       "chars": chars})
        if extra["chars"] != chars:
            raise common.UserError(f"{cfg.load} was trained on a text with other characters")
        print(f"text: {resolve_text(cfg.text)}, {len(text):,} characters, vocabulary "
              f"{len(chars)}, context {cfg.context}", flush=True)
        # Held out: consecutive windows of the last 10%, at most 64 of them.
        n_win = max(1, min(64, (len(ids) - split) // cfg.context))
        bpc = ch.bits_per_token(model, ids[split:split + n_win * cfg.context].view(n_win, -1),
                                device)
        start = time.perf_counter()
        sample_ids = ch.generate(model, 1, cfg.temperature, torch.Generator().manual_seed(
            cfg.seed))[0]
        sample_seconds = time.perf_counter() - start
        sample = "".join(chars[i] for i in sample_ids.tolist())
        (out / "samples.txt").write_text(sample + "\n", encoding="utf-8")
        metrics = {**extra, "sample_seconds": sample_seconds, "bits_per_char": bpc,
                   "perplexity": 2 ** bpc, "uniform_bits": math.log2(len(chars)),
                   "text": str(resolve_text(cfg.text)), "characters": len(text),
                   "vocabulary": len(chars), "params": sum(p.numel() for p in model.parameters()),
                   "config": dataclasses.asdict(cfg)}
        common.save_metrics(out, metrics)
    print(f"--- sample ({cfg.context} characters, temperature {cfg.temperature}) ---\n"
          f"{sample}\n---")
    print(f"held-out: {bpc:.3f} bits per character (uniform over the vocabulary: "
          f"{metrics['uniform_bits']:.3f}), perplexity {2 ** bpc:.2f}")
    return metrics


if __name__ == "__main__":
    common.run_main(main)
