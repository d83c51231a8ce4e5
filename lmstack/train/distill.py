"""Recipe `lmstack distill`: train a small student on the teacher's next-token distribution, beside the same student
trained on the observed tokens alone, and compare them on held-out text.

    lmstack distill --teacher=smollm2-135m --corpus=shakespeare --steps=300 --out_dir=runs/distill
    lmstack distill --alpha=1.0 --tau=4 --student.n_layers=2      # pure soft targets, a smaller student

1. The teacher (any `--model` spec: a local name, an HF directory, a .gguf) and its tokenizer, which the student
   shares (the student's vocabulary and ids are the teacher's: SmolLM2's 49,152 tokens by default).
2. The same tokens for everyone: `train_windows` windows of `seq_len` + 1 tokens from the corpus's training split,
   `val_windows` from its validation split (documents joined with EOS).
3. The teacher's top-k logits for every training position, computed once (distillation.py) and cached in
   out_dir/teacher_topk.safetensors (keyed by teacher, corpus, windows and k). Its cost is reported separately:
   both students then spend the same number of steps, on the same batches, in comparable time.
4. Two students from the same initialization: "kd" with loss alpha tau^2 KL + (1 - alpha) CE, and "ce"
   (alpha = 0, the plain language-model loss). AdamW, warmup + cosine, gradient clipping at 1.
5. Held-out: cross-entropy (nats/token) and bits per byte of the observed tokens, next-token accuracy, and top-1
   agreement with the teacher; the teacher's own numbers beside them. Students are saved as HF directories
   (out_dir/kd, out_dir/ce, with the tokenizer); results.json and metrics.jsonl beside.
Ctrl-C / SIGTERM saves the student in training and exits 130. Left out: --resume (the whole comparison runs in
minutes; rerunning reuses the cached teacher targets), distributed training, live (uncached) teacher logits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmstack.common.atomic import atomic_write_text
from lmstack.common.config import config_to_dict, section
from lmstack.common.log import JsonlLogger, info, progress
from lmstack.common.signals import interruptible
from lmstack.data.corpus import load_corpus
from lmstack.model import ModelConfig, Transformer, load_model
from lmstack.train.distillation import kd_loss, teacher_topk
from lmstack.train.optim import build_optimizer, set_lr
from lmstack.train.schedule import Schedule

SET_BY_RECIPE = ("vocab_size", "max_seq_len", "dtype", "bos_token_id", "eos_token_id")


@dataclass
class DistillConfig:
    teacher: str = "smollm2-135m"  # teacher model: local name, HF directory or .gguf (its tokenizer is shared)
    corpus: str = "shakespeare"  # named corpus (`lmstack corpus list`): train split to learn, val split to score
    out_dir: str = "runs/distill"  # students (kd/, ce/), teacher_topk.safetensors, metrics.jsonl, results.json
    overwrite: bool = False  # replace the students and results of a previous run in out_dir
    # the student network (every ModelConfig field: --student.n_layers=2, ...); vocabulary = the teacher's
    student: ModelConfig = section(ModelConfig, fixed=SET_BY_RECIPE, n_layers=4, d_model=128, n_heads=4,
                                   n_kv_heads=2, tie_embeddings=True)  # fmt: skip
    seq_len: int = 128  # tokens per window
    train_windows: int = 512  # training windows: the same tokens for both students
    val_windows: int = 64  # held-out windows
    top_k: int = 64  # teacher logits kept per position
    tau: float = 2.0  # softmax temperature of the soft targets
    alpha: float = 0.5  # weight of the soft (KL) term; the CE term gets 1 - alpha
    compare: bool = True  # also train the CE-only student (same init, batches, steps)
    steps: int = 300  # optimizer steps per student
    batch_size: int = 16  # windows per step
    lr: float = 3e-3  # peak learning rate (warmup then cosine to 10%)
    warmup_frac: float = 0.05  # fraction of the steps in linear warmup
    weight_decay: float = 0.1  # AdamW decoupled weight decay on matrices
    teacher_batch: int = 8  # windows per teacher forward
    threads: int = 0  # torch CPU threads (0 = leave torch's default)
    seed: int = 1337  # student init and batch order

    def __post_init__(self) -> None:
        for name in ("seq_len", "train_windows", "val_windows", "top_k", "steps", "batch_size", "teacher_batch"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name}: got {getattr(self, name)}, expected > 0")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"--alpha: got {self.alpha}, expected in [0, 1]")
        if self.tau <= 0:
            raise ValueError(f"--tau: got {self.tau}, expected > 0")
        if self.student.dtype != "float32":
            raise ValueError(f"--student.dtype={self.student.dtype!r}: the student trains in float32")


def windows(tok: Any, docs: list[str], n: int, seq_len: int) -> torch.Tensor:
    """The first n windows of seq_len + 1 tokens of the documents joined with EOS -> (n, seq_len + 1) int64."""
    stream: list[int] = []
    eos = [tok.eos_id] if tok.eos_id is not None else []
    for ids in tok.encode_batch(docs, allowed_special=(), disallowed_special=()):
        stream += ids + eos
        if len(stream) >= n * (seq_len + 1):
            break
    if len(stream) < n * (seq_len + 1):
        raise ValueError(
            f"--train_windows/--val_windows: the corpus has {len(stream)} tokens, need {n} x {seq_len + 1}"
        )
    return torch.tensor(stream[: n * (seq_len + 1)]).view(n, seq_len + 1)


def cached_topk(cfg: DistillConfig, teacher: torch.nn.Module, train: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Teacher top-k (values, ids) for the training windows, from out_dir/teacher_topk.safetensors when its key
    (teacher, corpus, windows, k) matches."""
    from safetensors.torch import load_file, save_file

    path = Path(cfg.out_dir) / "teacher_topk.safetensors"
    key = hashlib.sha256(f"{cfg.teacher}|{cfg.corpus}|{cfg.top_k}|".encode() + train.numpy().tobytes()).hexdigest()
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("key") == key:
                cached = load_file(path)
                return cached["values"], cached["ids"], 0.0
    t0 = time.perf_counter()
    values, ids = teacher_topk(teacher, train[:, :-1], cfg.top_k, cfg.teacher_batch)
    seconds = time.perf_counter() - t0
    tmp = path.with_suffix(".tmp")
    save_file({"values": values.half(), "ids": ids}, tmp, metadata={"key": key})
    tmp.replace(path)
    return values.half(), ids, seconds


@torch.no_grad()
def held_out(model: torch.nn.Module, val: torch.Tensor, n_bytes: int, teacher_top1: torch.Tensor | None) -> dict:
    """Cross-entropy, bits/byte, accuracy and agreement with the teacher's top-1 on the validation windows."""
    model.eval()
    nats, correct, agree = 0.0, 0, 0
    for i in range(0, val.shape[0], 16):
        x, y = val[i : i + 16, :-1], val[i : i + 16, 1:]
        logits = model(x).logits.float()
        nats += torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.reshape(-1), reduction="sum").item()
        pred = logits.argmax(-1)
        correct += int((pred == y).sum())
        if teacher_top1 is not None:
            agree += int((pred == teacher_top1[i : i + 16]).sum())
    n = val[:, 1:].numel()
    out = {"val_loss": nats / n, "val_bpb": nats / (math.log(2) * n_bytes), "accuracy": correct / n}
    if teacher_top1 is not None:
        out["teacher_agreement"] = agree / n
    return out


def train_student(
    cfg: DistillConfig, name: str, alpha: float, model_cfg: ModelConfig, train: torch.Tensor,
    topk: tuple[torch.Tensor, torch.Tensor], log: JsonlLogger,
) -> tuple[Transformer, float]:  # fmt: skip
    """One student: same init (seed), same batch order (seed) for every `alpha`. Returns (model, seconds)."""
    torch.manual_seed(cfg.seed)
    model = Transformer(model_cfg)
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay)
    schedule = Schedule("cosine", cfg.lr, cfg.warmup_frac, 0.1, 0.2)
    order = torch.Generator().manual_seed(cfg.seed)
    values, ids = topk
    elapsed = 0.0
    bar = progress(total=cfg.steps, desc=f"student {name}", unit="step")
    for step in range(cfg.steps):
        rows = torch.randint(0, train.shape[0], (cfg.batch_size,), generator=order)
        x, y = train[rows, :-1], train[rows, 1:]
        t0 = time.perf_counter()
        loss, soft, hard = kd_loss(model(x).logits, values[rows], ids[rows], y, cfg.tau, alpha)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        lr = schedule.lr(step / cfg.steps)
        set_lr(opt, lr)
        opt.step()
        opt.zero_grad(set_to_none=True)
        elapsed += time.perf_counter() - t0
        bar.update(1)
        if step % 10 == 0 or step == cfg.steps - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}", ce=f"{hard.item():.3f}", refresh=False)
            log.log(student=name, step=step + 1, loss=loss.item(), kl=soft.item(), ce=hard.item(), lr=lr,
                    elapsed_s=elapsed)  # fmt: skip
    bar.close()
    return model, elapsed


def main(cfg: DistillConfig) -> int:
    out = Path(cfg.out_dir)
    if (out / "results.json").exists() and not cfg.overwrite:
        raise ValueError(f"--out_dir: {out} already holds a distillation run; pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    teacher, tok = load_model(cfg.teacher, device="cpu", dtype="float32")
    train = windows(tok, load_corpus(cfg.corpus, "train"), cfg.train_windows, cfg.seq_len)
    val = windows(tok, load_corpus(cfg.corpus, "val"), cfg.val_windows, cfg.seq_len)
    n_bytes = sum(len(tok.decode(row).encode("utf-8")) for row in val[:, 1:].tolist())
    info(f"distill: {train.numel()} training tokens, {val.numel()} held-out; teacher {cfg.teacher}")
    *topk, teacher_s = cached_topk(cfg, teacher, train)
    with torch.no_grad():
        teacher_top1 = torch.cat([teacher(val[i : i + 8, :-1]).logits.argmax(-1) for i in range(0, len(val), 8)])
    rows = {"teacher": held_out(teacher, val, n_bytes, None)}
    del teacher
    atomic_write_text(out / "config.json", json.dumps(config_to_dict(cfg), indent=2) + "\n")
    log = JsonlLogger(out / "metrics.jsonl")
    model_cfg = dataclasses.replace(cfg.student, vocab_size=tok.vocab_size, max_seq_len=cfg.seq_len,
                                    eos_token_id=tok.eos_id, bos_token_id=tok.bos_id)  # fmt: skip
    runs = [("kd", cfg.alpha)] + ([("ce", 0.0)] if cfg.compare and cfg.alpha > 0 else [])
    with interruptible():
        for name, alpha in runs:
            try:
                model, seconds = train_student(cfg, name, alpha, model_cfg, train, tuple(topk), log)
            except KeyboardInterrupt:
                info(f"distill: interrupted while training student {name}")
                return 130
            model.save_pretrained(out / name, tokenizer=tok)
            rows[name] = {**held_out(model, val, n_bytes, teacher_top1), "train_s": seconds, "alpha": alpha}
    results = {"teacher_topk_s": teacher_s, "params": model.num_parameters(), "rows": rows}
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    print(f"{'model':<10} {'val loss':>9} {'val bpb':>8} {'accuracy':>9} {'agree w/ teacher':>17} {'train s':>8}")
    for name, r in rows.items():
        agree = f"{r['teacher_agreement']:.3f}" if "teacher_agreement" in r else "-"
        secs = f"{r['train_s']:.0f}" if "train_s" in r else "-"
        print(f"{name:<10} {r['val_loss']:>9.3f} {r['val_bpb']:>8.3f} {r['accuracy']:>9.3f} {agree:>17} {secs:>8}")
    return 0


if __name__ == "__main__":
    import sys

    from lmstack.cli import main as cli_main

    sys.exit(cli_main(["distill", *sys.argv[1:]]))
