"""Recipe `lmstack train-tokenizer`: train a byte-level BPE tokenizer on a corpus, save it, print its stats.

    lmstack train-tokenizer --corpus shakespeare --vocab_size 4096 --out_dir runs/tokenizer
    lmstack train-tokenizer --input notes/ more.jsonl --vocab_size 8192 --pattern gpt2

Reads a named corpus (`lmstack corpus list`; trains on its train split, measures on its validation split) or
the user's files (`--input`: trains and measures on all of them). Adds <|endoftext|>, <|im_start|> and
<|im_end|> (ChatML) by default. Writes tokenizer.json, tokenizer_config.json, tokenizer.tiktoken, train_config.json,
stats.json and metrics.jsonl to --out_dir. Prints bytes/token and tokens/word of ours beside GPT-2 and cl100k
(GPT-4) on the same text, the share of our vocabulary used, and a sample cut into pieces.
Re-running with the same config and an existing tokenizer in --out_dir reuses it (delete it to retrain).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmstack.common.atomic import atomic_write_text
from lmstack.common.config import config_to_dict
from lmstack.common.log import JsonlLogger, info
from lmstack.data.corpus import load_corpus, load_files
from lmstack.tokenizer import Tokenizer
from lmstack.tokenizer.patterns import resolve_stages
from lmstack.tokenizer.stats import compression, pieces_line

SAMPLE = "Shall I compare thee to a summer's day? In 2026, 1234567 tokens cost $3.50 — naïve café, 東京."


@dataclass
class TrainTokenizerConfig:
    corpus: str = "shakespeare"  # named corpus (see `lmstack corpus list`); ignored when --input is given
    input: list[str] = field(default_factory=list)  # your own .txt/.md/.jsonl files or directories
    vocab_size: int = 4096  # total tokens: 256 bytes + merges + special tokens
    pattern: str = "gpt4"  # pre-tokenization: gpt2, gpt4, o200k, smollm, or a custom "regex:<pattern>"
    # special tokens appended after the merges (ChatML by default)
    special_tokens: list[str] = field(default_factory=lambda: ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    out_dir: str = "runs/tokenizer"  # where the tokenizer and its stats are written
    baselines: bool = True  # also measure GPT-2 and cl100k on the same text (needs the reference packages)
    sample: str = SAMPLE  # text shown cut into pieces at the end

    def __post_init__(self) -> None:
        floor = 256 + len(self.special_tokens)
        if self.vocab_size <= floor:
            raise ValueError(f"--vocab_size={self.vocab_size}: must exceed 256 bytes + special tokens = {floor}")
        if not self.input and not self.corpus:
            raise ValueError("--corpus or --input: say what to train on")
        if not self.out_dir:
            raise ValueError("--out_dir: needed to save the tokenizer")
        if len(set(self.special_tokens)) != len(self.special_tokens):
            raise ValueError(f"--special_tokens: duplicates in {self.special_tokens}")
        try:
            resolve_stages(self.pattern)  # a typo'd name is an error, not a literal regex
        except ValueError as e:
            raise ValueError(f"--pattern: {e}") from None


def _texts(cfg: TrainTokenizerConfig) -> tuple[list[str], list[str], str]:
    """(training documents, evaluation documents, description)."""
    if cfg.input:
        docs = load_files(cfg.input)
        return docs, docs, f"{len(cfg.input)} input path(s)"
    train, val = load_corpus(cfg.corpus, "train"), load_corpus(cfg.corpus, "val")
    return train, val or train, f"corpus {cfg.corpus} (train split; stats on the validation split)"


def _train_or_reuse(cfg: TrainTokenizerConfig, train: list[str], out: Path, log: JsonlLogger) -> Tokenizer:
    resolved = config_to_dict(cfg)
    saved = out / "train_config.json"
    if (out / "tokenizer.json").is_file() and saved.is_file() and json.loads(saved.read_text()) == resolved:
        info(f"reusing the tokenizer already trained with this config in {out} (delete it to retrain)")
        return Tokenizer.load(out)
    pattern = cfg.pattern
    start = time.perf_counter()
    tok = Tokenizer.train(train, cfg.vocab_size, pattern, cfg.special_tokens)
    seconds = time.perf_counter() - start
    n_bytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in train)
    log.log(event="trained", seconds=seconds, train_bytes=n_bytes, vocab_size=tok.vocab_size)
    info(f"trained {tok.vocab_size} tokens on {n_bytes / 1e6:.2f} MB in {seconds:.1f} s")
    tok.save(out)
    atomic_write_text(saved, json.dumps(resolved, indent=2) + "\n")
    return tok


def _baselines() -> dict[str, Tokenizer]:
    from lmstack.tokenizer.references import cl100k, gpt2

    try:
        return {"gpt2": gpt2(), "cl100k (GPT-4)": cl100k()}
    except FileNotFoundError as e:
        info(f"baselines skipped: {e}")
        return {}


def main(cfg: TrainTokenizerConfig) -> int:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = JsonlLogger(out / "metrics.jsonl")
    train, evaluation, where = _texts(cfg)
    info(f"training on {where}: {len(train)} documents")
    tok = _train_or_reuse(cfg, train, out, log)
    toks = {"ours": tok, **(_baselines() if cfg.baselines else {})}
    rows = {name: compression(t, evaluation) for name, t in toks.items()}
    stats = {name: c.as_dict() for name, c in rows.items()}
    log.log(event="stats", **{f"{n}/{k}": v for n, d in stats.items() for k, v in d.items()})
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=2) + "\n")
    print(f"tokenizer: {out}  (vocab_size {tok.vocab_size}, pattern {cfg.pattern}, special {cfg.special_tokens})")
    print(f"measured on {rows['ours'].bytes / 1e6:.2f} MB, {rows['ours'].words} words\n")
    print(f"{'tokenizer':<16} {'vocab':>7} {'bytes/token':>12} {'tokens/word':>12} {'vocab used':>11}")
    for name, c in rows.items():
        ratios = f"{c.bytes_per_token:>12.3f} {c.tokens_per_word:>12.3f} {c.vocab_used:>10.1%}"
        print(f"{name:<16} {toks[name].vocab_size:>7} {ratios}")
    ids = tok.encode_ordinary(cfg.sample)
    print(f"\nsample ({len(ids)} tokens): {pieces_line(tok, cfg.sample)}")
    print(f"ids: {ids}")
    return 0


if __name__ == "__main__":
    import sys

    from lmstack.cli import main as cli_main

    sys.exit(cli_main(["train-tokenizer", *sys.argv[1:]]))
