"""`lmstack prepare-data`: corpus (or --input files) -> exact + near dedup -> tokenize -> token shards.

    lmstack prepare-data --tokenizer runs/tok --out_dir runs/data                    # the default corpus
    lmstack prepare-data --corpus gutenberg --tokenizer runs/tok --out_dir runs/gut
    lmstack prepare-data --input notes/ extra.jsonl --tokenizer runs/tok --out_dir runs/mine

Reads top to bottom: load the documents of each split (the fixed split: every 10th document is validation),
deduplicate the validation documents first and then the training ones against them (so a training copy of a
validation document is what gets dropped: the held-out set stays whole and uncontaminated by exact or near
copies), tokenize with the tokenizer directory into `train.bin` / `val.bin` + `manifest.json`
(`lmstack.data.shards`), log counts as JSON lines and print a summary. Re-running with the same inputs is a
no-op; an interrupted run resumes from its finished chunks.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmstack.common.atomic import atomic_write_text
from lmstack.common.config import config_to_dict
from lmstack.common.log import JsonlLogger, info
from lmstack.data.corpus import list_corpora, load_corpus, load_files, split_documents
from lmstack.data.dedup import dedup
from lmstack.data.shards import write_shards


@dataclass
class PrepareConfig:
    corpus: str = "shakespeare"  # named corpus (`lmstack corpus list`); ignored when --input is given
    input: list[str] = field(default_factory=list)  # your own .txt/.md/.jsonl files or directories instead
    tokenizer: str = ""  # tokenizer directory (or tokenizer.json) from `lmstack train-tokenizer` (required)
    out_dir: str = "runs/data"  # where train.bin, val.bin and manifest.json go
    dedup: bool = True  # drop exact duplicates (normalized text) before tokenizing
    near_dedup: bool = True  # also drop near-duplicates (MinHash + LSH)
    near_dup_threshold: float = 0.8  # Jaccard similarity of word 5-gram sets at which two documents are near-dups
    num_perm: int = 128  # MinHash signature length (more = tighter Jaccard estimate, slower)
    workers: int = 0  # tokenizer processes (0 = one per CPU, at most 8)

    def __post_init__(self) -> None:
        if not self.input and self.corpus not in list_corpora():
            raise ValueError(f"--corpus={self.corpus!r}: expected one of {list_corpora()} or --input FILES")
        if not 0.0 < self.near_dup_threshold <= 1.0:
            raise ValueError(f"--near_dup_threshold={self.near_dup_threshold}: expected a value in (0, 1]")
        if self.num_perm < 1 or self.workers < 0:
            raise ValueError(f"--num_perm={self.num_perm} must be >= 1 and --workers={self.workers} >= 0")


def load_tokenizer(path: str) -> tuple[object, str]:
    """The tokenizer and the sha256 of its tokenizer.json (the identity recorded in the shard manifest)."""
    from lmstack.tokenizer import Tokenizer

    if not path:
        raise ValueError("--tokenizer is required: a directory written by `lmstack train-tokenizer`")
    p = Path(path)
    json_file = p / "tokenizer.json" if p.is_dir() else p
    if not json_file.is_file():
        raise FileNotFoundError(f"--tokenizer {path}: no tokenizer.json there; run `lmstack train-tokenizer` first")
    return Tokenizer.load(p), hashlib.sha256(json_file.read_bytes()).hexdigest()


def load_splits(cfg: PrepareConfig) -> tuple[list[str], list[str], str]:
    """(train docs, val docs, a name for the source) from --input files or the named corpus."""
    if cfg.input:
        docs = load_files(cfg.input)
        train, val = split_documents(docs, "train"), split_documents(docs, "val")
        source = "input: " + ", ".join(cfg.input)
    else:
        train, val, source = load_corpus(cfg.corpus, "train"), load_corpus(cfg.corpus, "val"), cfg.corpus
    if not train:
        raise ValueError(f"{source}: no training documents (the validation split takes every 10th document, "
                         "starting with the first); give more documents, e.g. a .jsonl with one per line")  # fmt: skip
    return train, val, source


def main(cfg: PrepareConfig) -> int:
    start = time.time()
    out_dir = Path(cfg.out_dir)
    tokenizer, tok_hash = load_tokenizer(cfg.tokenizer)
    train, val, source = load_splits(cfg)
    log = JsonlLogger(out_dir / "prepare.jsonl")
    atomic_write_text(out_dir / "prepare_config.json", json.dumps(config_to_dict(cfg), indent=1) + "\n")
    log.log(event="loaded", source=source, train_docs=len(train), val_docs=len(val))

    # Dedup: validation first, so the earliest copy kept is the held-out one and training copies are dropped.
    report = None
    if cfg.dedup:
        docs = val + train
        report = dedup(docs, near=cfg.near_dedup, threshold=cfg.near_dup_threshold, num_perm=cfg.num_perm)
        kept, n_val = set(report.kept), len(val)
        val = [d for i, d in enumerate(val) if i in kept]
        train = [d for i, d in enumerate(train) if n_val + i in kept]
        log.log(event="dedup", exact_removed=report.exact_removed, near_removed=report.near_removed,
                threshold=cfg.near_dup_threshold, pairs=report.pairs[:20])  # fmt: skip
        info(f"dedup: {report.n_input} documents, {report.exact_removed} exact and {report.near_removed} near "
             f"duplicates removed (threshold J >= {cfg.near_dup_threshold})")  # fmt: skip

    manifest = write_shards(train, val, tokenizer, out_dir, workers=cfg.workers or None, tokenizer_hash=tok_hash)
    wall = time.time() - start
    log.log(event="done", wall_s=round(wall, 2), **{f"{n}_{k}": v for n, s in manifest["splits"].items()
                                                     for k, v in s.items() if k != "docs_sha256"})  # fmt: skip
    for name, s in manifest["splits"].items():
        print(f"{name:<5}  {s['documents']:>6,} docs  {s['bytes']:>12,} bytes  {s['tokens']:>11,} tokens  "
              f"{s['bytes'] / max(s['tokens'], 1):.2f} bytes/token")  # fmt: skip
    print(f"wrote {out_dir}/{{train,val}}.bin ({manifest['dtype']}) + manifest.json in {wall:.1f}s")
    return 0


if __name__ == "__main__":
    import sys

    from lmstack.cli import main as cli_main

    sys.exit(cli_main(["prepare-data", *sys.argv[1:]]))
