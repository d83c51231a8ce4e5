"""The CPU speedrun: tokenizer -> shards -> pretrain -> evaluate -> sample -> report, end to end in <= 10 minutes.

    lmstack speedrun configs/speedrun_cpu.yaml          # what `make demo` runs (scripts/speedrun_cpu.sh)

Steps, each timed and printed as it starts:
  1. read the corpus and its fixed validation split (`lmstack.data.corpus`; shakespeare: files 0, 10, ..., 40)
  2. train a byte-level BPE tokenizer on the training split (`lmstack.tokenizer.Tokenizer.train`)
  3. write token shards (`lmstack.data.shards.write_shards`)
  4. pretrain for a fixed wall-clock budget (`train_seconds`; the LR schedule runs over that time, so the run
     ends on time on a slower or busier machine, it just sees fewer tokens)
  5. score the whole validation split in non-overlapping windows (bits per byte) and sample
  6. write `<out_dir>/report.md`, `report.json` and `loss.png` (`report.py`)

Every pretraining flag works here too (this config extends `PretrainConfig`); `data_dir` and `tokenizer_dir`
are set by the speedrun to `<out_dir>/data`. The config records its choices; docs/log.md records why.
Leaves out: downloading anything beyond the package-registry corpora, multi-corpus mixtures.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from lmstack.common.config import config_to_dict
from lmstack.common.log import info
from lmstack.tokenizer import Tokenizer
from lmstack.train.corpus_shards import corpus_shards
from lmstack.train.pretrain import PretrainConfig, train
from lmstack.train.report import write_report


@dataclass
class SpeedrunConfig(PretrainConfig):
    out_dir: str = "runs/speedrun_cpu"  # run directory: data/, checkpoint/, metrics.jsonl, report.md, report.json
    corpus: str = "shakespeare"  # a corpus name from `lmstack corpus list`
    vocab_size: int = 4096  # BPE vocabulary (256 bytes + merges + <|endoftext|>)
    tokenizer_pattern: str = "gpt4"  # pre-tokenizer regex: gpt2 | gpt4 | ... (see lmstack.tokenizer.patterns)
    tokenizer_max_chars: int = 0  # train the tokenizer on only the first N characters of the train split (0 = all)
    n_samples: int = 2  # samples in the report
    train_seconds: float = 525.0  # wall-clock training budget (seconds); the schedule runs over it
    # the defaults below are the first measured choices (docs/log.md); configs/speedrun_cpu.yaml holds the current
    # ones (Muon, B16, WSD, QK-norm)

    batch_size: int = 8  # sequences per optimizer step (small batches: more steps in the budget)
    lr: float = 2e-3  # peak learning rate
    warmup_frac: float = 0.05  # fraction of the budget in linear warmup
    dtype: str = "bfloat16"  # bf16 autocast: ~1.5x faster steps on AVX512_BF16 CPUs
    eval_every: int = 0  # steps between validation estimates (0 = only the final full evaluation)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vocab_size < 257:
            raise ValueError(f"--vocab_size: got {self.vocab_size}, expected >= 257 (256 bytes + <|endoftext|>)")
        if self.tokenizer_max_chars < 0:
            raise ValueError(f"--tokenizer_max_chars: got {self.tokenizer_max_chars}, expected >= 0")


def pretrain_config(cfg: SpeedrunConfig, data_dir: Path) -> PretrainConfig:
    """The PretrainConfig part of the speedrun config, pointed at the speedrun's own data directory."""
    values = {f.name: getattr(cfg, f.name) for f in fields(PretrainConfig)}
    values |= {"data_dir": str(data_dir), "tokenizer_dir": str(data_dir / "tokenizer"), "overwrite": False}
    return PretrainConfig(**values)  # the previous run's files were removed by `clear_previous_run`


def plan(cfg: SpeedrunConfig) -> str:
    m = cfg.model
    budget = f"{cfg.train_seconds:.0f} s of training" if cfg.train_seconds else f"{cfg.max_steps} steps"
    return (
        f"speedrun plan: corpus {cfg.corpus} -> BPE {cfg.vocab_size} -> shards -> "
        f"{m.n_layers}L x {m.d_model}D x {m.n_heads}H "
        f"({m.ffn}, {m.position}, {m.norm}{', qk-norm' if m.qk_norm else ''}) "
        f"on {cfg.batch_size} x {cfg.seq_len} tokens/step, {budget} at lr {cfg.lr:g} ({cfg.schedule}), "
        f"{cfg.dtype} -> full validation (bits/byte) -> samples -> {cfg.out_dir}/report.md"
    )


def main(cfg: SpeedrunConfig) -> int:
    t_start = time.perf_counter()
    out = Path(cfg.out_dir)
    if not cfg.resume:
        clear_previous_run(out, cfg.overwrite)
    data_dir = out / "data"
    info(plan(cfg))

    info(f"[1/3] data: corpus {cfg.corpus} -> tokenizer -> shards")
    tok, manifest, timings = corpus_shards(cfg.corpus, cfg.vocab_size, cfg.tokenizer_pattern, data_dir,
                                           cfg.tokenizer_max_chars)  # fmt: skip

    t = time.perf_counter()
    info("[2/3] pretraining (then the full validation split is scored)")
    result = train(pretrain_config(cfg, data_dir))
    if result.get("stopped"):
        info(f"speedrun: stopped at step {result['step']}; `--resume` continues it")
        return 130 if result.get("interrupted") else 0
    timings["pretrain_total_s"] = time.perf_counter() - t  # training + periodic evals + final eval + checkpoint

    t = time.perf_counter()
    info("[3/3] samples and report")
    samples = [result["sample"]] + extra_samples(cfg, out / "checkpoint", tok, cfg.n_samples - 1)
    timings["samples_s"] = time.perf_counter() - t
    wall_s = time.perf_counter() - t_start
    figures = report_figures(result, manifest, wall_s)
    extra = {"timings": timings, "data": data_stats(manifest), "tokenizer": tokenizer_stats(cfg, manifest),
             "samples": samples}  # fmt: skip
    path = write_report(out, figures, config_to_dict(cfg), extra)
    print(f"val_bpb={figures['val_bpb']:.4f} val_loss={figures['val_loss']:.4f} wall_s={wall_s:.1f} "
          f"train_s={figures['train_s']:.1f} tokens_seen={figures['tokens_seen']} report={path}")  # fmt: skip
    return 0


RUN_FILES = ("data", "checkpoint", "metrics.jsonl", "config.yaml", "report.md", "report.json", "loss.png")


def clear_previous_run(out: Path, overwrite: bool) -> None:
    """A fresh speedrun needs `out` free of a previous run's files: refused unless --overwrite, which removes
    exactly the files a speedrun writes (RUN_FILES) and nothing else a user put there."""
    previous = [out / name for name in RUN_FILES if (out / name).exists()]
    if previous and not overwrite:
        raise ValueError(f"--out_dir: {out} holds a previous run ({previous[0].name}, ...); pass --resume to "
                         "continue it or --overwrite to replace it")  # fmt: skip
    for path in previous:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def extra_samples(cfg: SpeedrunConfig, ckpt: Path, tok: Tokenizer, n: int) -> list[str]:
    """More samples from the saved checkpoint, each with its own seed."""
    from lmstack.model import Transformer
    from lmstack.train.sample import sample_ids

    if n <= 0:
        return []
    model = Transformer.from_pretrained(ckpt)
    prompt = tok.encode(cfg.sample_prompt) or [0]
    outs = []
    for i in range(n):
        g = torch.Generator().manual_seed(cfg.seed + 1 + i)
        new = sample_ids(model, prompt, cfg.sample_tokens, cfg.seq_len, generator=g, stop_id=None)
        outs.append(cfg.sample_prompt + tok.decode(new))
    return outs


def report_figures(result: dict[str, Any], manifest: dict[str, Any], wall_s: float) -> dict[str, Any]:
    keys = ("val_bpb", "val_loss", "val_ppl", "params", "tokens_seen", "tokens_per_s", "train_s", "steps")
    figures = {k: result[k] for k in keys}
    figures["wall_s"] = wall_s
    figures["epochs"] = result["tokens_seen"] / manifest["splits"]["train"]["tokens"]
    return figures


def data_stats(manifest: dict[str, Any]) -> dict[str, Any]:
    s = manifest["splits"]
    return {f"{split}_{k}": s[split][k] for split in ("train", "val") for k in ("documents", "bytes", "tokens")}


def tokenizer_stats(cfg: SpeedrunConfig, manifest: dict[str, Any]) -> dict[str, Any]:
    val = manifest["splits"]["val"]
    return {
        "vocab_size": manifest["vocab_size"],
        "pattern": cfg.tokenizer_pattern,
        "val_bytes_per_token": val["bytes"] / val["tokens"],  # compression on held-out text
    }
