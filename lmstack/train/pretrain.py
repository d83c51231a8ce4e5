"""Pretraining recipe: next-token prediction on token shards, one file that reads top to bottom.

    lmstack pretrain --data_dir=runs/data --out_dir=runs/pt --max_steps=2000
    torchrun --nproc_per_node=2 -m lmstack.train.pretrain --data_dir=... [--fsdp]

Per optimizer step: one global batch of `batch_size` random windows is drawn (the same on every rank), each rank
takes its slice, the slice is split into `grad_accum` micro-batches whose gradients add up (the loss of each is
divided by `grad_accum`, DDP/FSDP average over ranks), so any (processes x accumulation) split of the same global
batch computes the same update. Then: clip the global gradient norm, set the scheduled learning rate, AdamW step.
Every `eval_every` steps: validation loss / perplexity / bits-per-byte (evaluate.py) and a sample (sample.py);
every `ckpt_every` steps and at the end: an atomic checkpoint (checkpoint.py) from which `--resume` continues
exactly. Ctrl-C saves a checkpoint and exits. The budget is `max_steps` or, when `train_seconds > 0`, wall-clock
time spent in training steps (the schedule then runs over time: a "train for X minutes" speedrun).

Mixed precision: `dtype=bfloat16` runs the forward under `torch.autocast` with fp32 master weights, fp32 AdamW
state and an fp32 loss; bf16 keeps fp32's exponent range, so no loss scaling is needed (fp16 would need it).
Distributed (`distributed.py`): DDP replicates the model and all-reduces gradients; `--fsdp` uses FSDP2
`fully_shard` (ZeRO-3): parameters, gradients and AdamW state are sharded over ranks and gathered one block at a
time. gloo on CPU, nccl on GPU.
Leaves out: tensor/pipeline parallelism, multi-node launch logic (plain torchrun does it), data loading workers.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

from lmstack.common.atomic import atomic_write_text
from lmstack.common.config import config_to_dict
from lmstack.common.log import JsonlLogger, info, progress
from lmstack.data.batches import RandomBatches
from lmstack.data.shards import ShardDataset
from lmstack.model import ModelConfig, Transformer
from lmstack.tokenizer import Tokenizer
from lmstack.train.checkpoint import load_checkpoint, read_state, save_checkpoint
from lmstack.train.distributed import all_ranks, join_process_group, rank_slice, wrap
from lmstack.train.evaluate import evaluate
from lmstack.train.optim import build_optimizer, set_lr
from lmstack.train.sample import sample_ids
from lmstack.train.schedule import Schedule, budget_fraction

CKPT = "checkpoint"


@dataclass
class PretrainConfig:
    data_dir: str = "runs/data"  # shard directory (train.bin, val.bin, manifest.json) from prepare-data / speedrun
    tokenizer_dir: str = ""  # tokenizer saved with checkpoints and used for samples; "" = <data_dir>/tokenizer
    out_dir: str = "runs/pretrain"  # metrics.jsonl, config.yaml, checkpoint/ go here
    resume: bool = False  # continue exactly from <out_dir>/checkpoint (an error if there is none)
    overwrite: bool = False  # allow starting fresh over an existing <out_dir>/checkpoint
    # model shape (see lmstack.model.ModelConfig)
    n_layers: int = 4  # transformer blocks
    d_model: int = 128  # residual width
    n_heads: int = 4  # query heads
    n_kv_heads: int = 0  # key/value heads; 0 = n_heads
    d_ff: int = 0  # FFN hidden width; 0 = the model's default for the FFN type
    seq_len: int = 128  # tokens per training window (and the model's context)
    norm: str = "rmsnorm"  # rmsnorm | layernorm
    position: str = "rope"  # rope | learned | sinusoidal | alibi | none
    ffn: str = "swiglu"  # swiglu | gelu
    tie_embeddings: bool = True  # output head shares the token embedding
    dropout: float = 0.0  # dropout probability (0 for short pretraining runs)
    activation_checkpointing: bool = False  # recompute blocks in backward: less memory, ~30% more compute
    # batch and budget
    batch_size: int = 32  # sequences per optimizer step, summed over processes and accumulation micro-steps
    grad_accum: int = 1  # micro-batches per optimizer step (per process)
    max_steps: int = 1000  # optimizer steps (the budget unless train_seconds > 0)
    train_seconds: float = 0.0  # wall-clock training budget in seconds; > 0 overrides max_steps
    # optimizer and schedule
    lr: float = 3e-3  # peak learning rate
    schedule: str = "cosine"  # cosine | constant | wsd
    warmup_frac: float = 0.02  # fraction of the budget in linear warmup
    min_lr_ratio: float = 0.1  # final learning rate as a fraction of the peak
    decay_frac: float = 0.2  # wsd: final fraction of the budget decaying to the floor
    weight_decay: float = 0.1  # AdamW decoupled weight decay on matrices (not norms, biases, embeddings)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = off)
    # evaluation, samples, checkpoints
    eval_every: int = 200  # steps between validation runs (0 = only at the end)
    eval_tokens: int = 32768  # validation tokens scored by the periodic estimate (the final eval scores all)
    eval_batch_size: int = 32  # windows per validation forward
    final_eval_tokens: int = 0  # validation tokens the final evaluation scores (0 = the whole split)
    sample_every: int = 0  # steps between samples (0 = only at the end)
    sample_tokens: int = 64  # tokens per sample
    sample_prompt: str = "\n"  # text the samples start from
    ckpt_every: int = 0  # steps between checkpoints (0 = only at the end and on Ctrl-C)
    stop_after: int = 0  # stop (with a checkpoint) after this many steps, as if interrupted; 0 = run the budget
    log_every: int = 10  # steps between metrics lines
    # execution
    dtype: str = "float32"  # float32 | bfloat16 (autocast; fp32 master weights)
    compile: bool = False  # torch.compile the model (measured slower on 2 CPU cores, docs/log.md)
    fsdp: bool = False  # shard parameters/gradients/optimizer state with FSDP2 under torchrun (else DDP)
    device: str = "auto"  # auto | cpu | cuda[:N] | mps
    threads: int = 0  # torch CPU threads per process; 0 = CPU cores / processes
    seed: int = 1337  # model init and batch order
    extra: dict[str, Any] = field(default_factory=dict)  # more ModelConfig fields, e.g. {"rope_theta": 5e5}

    def __post_init__(self) -> None:
        positive = ("n_layers", "d_model", "n_heads", "seq_len", "batch_size", "grad_accum", "max_steps")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name}: got {getattr(self, name)}, expected > 0")
        for name in (
            "train_seconds",
            "stop_after",
            "weight_decay",
            "grad_clip",
            "eval_every",
            "sample_every",
            "ckpt_every",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name}: got {getattr(self, name)}, expected >= 0")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"--grad_accum: {self.grad_accum} does not divide --batch_size={self.batch_size}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"--dtype: got {self.dtype!r}, expected float32 or bfloat16 (fp16 needs loss scaling)")
        if not 0 < self.beta1 < 1 or not 0 < self.beta2 < 1:
            raise ValueError(f"--beta1/--beta2: got {self.beta1}, {self.beta2}, expected in (0, 1)")
        self.lr_schedule()  # validates lr, schedule, warmup_frac, min_lr_ratio, decay_frac
        self.model_config(vocab_size=256)  # validates the shape fields

    def lr_schedule(self) -> Schedule:
        return Schedule(self.schedule, self.lr, self.warmup_frac, self.min_lr_ratio, self.decay_frac)  # type: ignore

    def model_config(self, vocab_size: int) -> ModelConfig:
        kw = dict(self.extra)
        if self.n_kv_heads:
            kw["n_kv_heads"] = self.n_kv_heads
        if self.d_ff:
            kw["d_ff"] = self.d_ff
        try:
            return ModelConfig(
                vocab_size=vocab_size, n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads,
                max_seq_len=self.seq_len, norm=self.norm, position=self.position, ffn=self.ffn,
                tie_embeddings=self.tie_embeddings, dropout=self.dropout,
                activation_checkpointing=self.activation_checkpointing, **kw,
            )  # fmt: skip
        except (TypeError, ValueError) as e:
            raise ValueError(f"model shape: {e}") from None


# ---- setup: processes, data, model ---------------------------------------------------------------------------


def setup_distributed(cfg: PretrainConfig) -> tuple[int, int, str]:
    """(rank, world size, device); joins the torchrun process group when WORLD_SIZE > 1; sets CPU threads."""
    rank, world, device = join_process_group(cfg.device)
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // world))
    if cfg.batch_size % (cfg.grad_accum * world):
        raise ValueError(f"--batch_size={cfg.batch_size} is not divisible by grad_accum x processes = "
                         f"{cfg.grad_accum} x {world}")  # fmt: skip
    return rank, world, device


def load_data(cfg: PretrainConfig) -> tuple[ShardDataset, ShardDataset, Tokenizer]:
    data_dir = Path(cfg.data_dir)
    if not (data_dir / "manifest.json").is_file():
        raise FileNotFoundError(f"--data_dir: no shards at {data_dir} (expected manifest.json; run prepare-data)")
    train, val = ShardDataset(data_dir, "train"), ShardDataset(data_dir, "val")
    tok = Tokenizer.load(cfg.tokenizer_dir or data_dir / "tokenizer")
    return train, val, tok


def build_model(cfg: PretrainConfig, vocab_size: int, world: int, device: str) -> tuple[torch.nn.Module, Any]:
    """(the module whose parameters train, the callable that runs forward): wrapped for DDP/FSDP, compiled."""
    torch.manual_seed(cfg.seed)  # identical init on every rank
    model = Transformer(cfg.model_config(vocab_size)).to(device)
    forward = wrap(model, model.blocks, world, cfg.fsdp)  # DDP / FSDP2 under torchrun
    if cfg.compile:
        forward = torch.compile(forward)
    return model, forward


def run_identity(cfg: PretrainConfig, model_cfg: ModelConfig, train: ShardDataset) -> dict[str, Any]:
    """What a resumed run must share with the checkpoint (world size and accumulation may change)."""
    skip = ("activation_checkpointing", "attention")  # how the model computes, not what it is
    ident = {f"model.{k}": v for k, v in model_cfg.to_dict().items() if k not in skip}
    keys = ("batch_size", "seq_len", "max_steps", "train_seconds", "lr", "schedule", "warmup_frac", "min_lr_ratio")
    return {**ident, **{k: getattr(cfg, k) for k in keys}, "train_tokens": int(len(train.tokens))}


# ---- one optimizer step ----------------------------------------------------------------------------------------


def train_step(
    forward: Any, model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
    cfg: PretrainConfig, lr: float,
) -> tuple[float, float]:  # fmt: skip
    """Accumulate gradients over `grad_accum` micro-batches of this rank's slice, clip, step. Returns (loss, norm).

    x, y: (B_rank, T) where B_rank = batch_size / processes; the returned loss is this rank's mean.
    """
    micro = x.shape[0] // cfg.grad_accum
    total = 0.0
    amp = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")
    for i in range(cfg.grad_accum):
        last = i == cfg.grad_accum - 1
        sync = contextlib.nullcontext() if last or not hasattr(forward, "no_sync") else forward.no_sync()
        if hasattr(model, "set_requires_gradient_sync"):  # FSDP2: reduce-scatter only on the last micro-batch
            model.set_requires_gradient_sync(last)
        xs, ys = x[i * micro : (i + 1) * micro], y[i * micro : (i + 1) * micro]  # (micro, T)
        with sync, amp:
            out = forward(xs, targets=ys)
            loss = out.loss / cfg.grad_accum  # mean over the whole step's tokens
        loss.backward()
        total += loss.item()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
    norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP2 returns a DTensor
    set_lr(opt, lr)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return total, float(norm)


# ---- evaluation, samples, checkpoints ----------------------------------------------------------------------


def run_eval(model: Any, cfg: PretrainConfig, val: ShardDataset, device: str, final: bool) -> dict[str, float]:
    dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else None
    limit = (cfg.final_eval_tokens or None) if final else cfg.eval_tokens
    return evaluate(model, val.tokens, val.n_bytes, cfg.seq_len, cfg.eval_batch_size, device, dtype, limit)


def run_sample(model: Any, cfg: PretrainConfig, tok: Tokenizer, device: str) -> str:
    prompt = tok.encode(cfg.sample_prompt) or [0]
    g = torch.Generator().manual_seed(cfg.seed)
    new = sample_ids(model, prompt, cfg.sample_tokens, cfg.seq_len, generator=g, device=device)
    return cfg.sample_prompt + tok.decode(new)


def checkpoint_fns(cfg: PretrainConfig, model_cfg: ModelConfig, tok: Tokenizer) -> tuple[Any, Any]:
    """(save_model(state_dict, dir), load_weights(dir) -> state_dict): the HF directory half of a checkpoint."""

    def save_model(msd: dict[str, torch.Tensor], d: Path) -> None:
        plain = Transformer(model_cfg)  # an unwrapped, unsharded copy holding the gathered weights
        plain.load_state_dict(msd)
        plain.save_pretrained(d, tokenizer=tok)

    def load_weights(d: Path) -> dict[str, torch.Tensor]:
        return Transformer.from_pretrained(d).state_dict()

    return save_model, load_weights


# ---- the recipe -----------------------------------------------------------------------------------------------


def train(cfg: PretrainConfig) -> dict[str, Any]:
    """Run pretraining; return the final metrics (val_loss, val_bpb, tokens_seen, train_s, ...)."""
    rank, world, device = setup_distributed(cfg)
    out = Path(cfg.out_dir)
    ckpt = out / CKPT
    if not cfg.resume and ckpt.exists() and not cfg.overwrite:
        raise ValueError(f"--out_dir: {out} already has a checkpoint; pass --resume to continue or --overwrite")
    train_ds, val_ds, tok = load_data(cfg)
    model_cfg = cfg.model_config(tok.vocab_size)
    model, forward = build_model(cfg, tok.vocab_size, world, device)
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    schedule = cfg.lr_schedule()
    batches = RandomBatches(train_ds.tokens, cfg.batch_size, cfg.seq_len, cfg.seed)  # the global batch stream
    identity = run_identity(cfg, model_cfg, train_ds)
    save_model, load_weights = checkpoint_fns(cfg, model_cfg, tok)
    state: dict[str, Any] = {"step": 0, "tokens_seen": 0, "elapsed_s": 0.0, "data": batches.state_dict()}
    if cfg.resume:
        read_state(ckpt)  # clear error first if missing or corrupted
        state = load_checkpoint(ckpt, model, opt, identity, load_weights(ckpt))
        batches.load_state_dict(state["data"])
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    log = JsonlLogger(out / "metrics.jsonl" if rank == 0 else None, append=cfg.resume)
    n_params = sum(p.numel() for p in unique_params(model))
    if rank == 0:
        mode = "" if world == 1 else (" (FSDP2 fully_shard)" if cfg.fsdp else " (DDP)")
        info(f"pretrain: {n_params / 1e6:.2f} M parameters, {world} process(es){mode} on {device}, "
             f"{cfg.batch_size} x {cfg.seq_len} tokens per step, budget "
             f"{f'{cfg.train_seconds:.0f} s' if cfg.train_seconds else f'{cfg.max_steps} steps'}")  # fmt: skip

    def save() -> None:  # state["data"] is the batch stream's position before the step in progress
        save_checkpoint(ckpt, model, opt, state, identity, save_model)

    interrupted = False
    try:
        loop(cfg, state, forward, model, opt, schedule, batches, val_ds, tok, log, save, rank, world, device)
    except KeyboardInterrupt:
        interrupted = True
        if rank == 0:
            info(f"pretrain: interrupted at step {state['step']}; saving {ckpt}")
    save()
    if interrupted or (cfg.stop_after and state["step"] >= cfg.stop_after and not budget_spent(cfg, state)):
        return {**state, "interrupted": interrupted, "stopped": True}
    final = run_eval(model, cfg, val_ds, device, final=True)  # the plain module: no recompiles for eval shapes
    sample = run_sample(model, cfg, tok, device)
    log.log(step=state["step"], final=True, **final, sample=sample)
    tokens_per_s = state["tokens_seen"] / max(state["elapsed_s"], 1e-9)
    return {**final, "params": n_params, "tokens_seen": state["tokens_seen"], "steps": state["step"],
            "train_s": state["elapsed_s"], "tokens_per_s": tokens_per_s, "sample": sample,
            "world_size": world, "vocab_size": tok.vocab_size}  # fmt: skip


def unique_params(model: torch.nn.Module) -> list[torch.Tensor]:
    """Unique parameters (tied tensors once); global sizes under FSDP (DTensor.numel is the full size)."""
    return list({id(p): p for p in model.parameters()}.values())


def loop(
    cfg: PretrainConfig, state: dict[str, Any], forward: Any, model: torch.nn.Module, opt: torch.optim.Optimizer,
    schedule: Schedule, batches: RandomBatches, val_ds: ShardDataset, tok: Tokenizer, log: JsonlLogger,
    save: Any, rank: int, world: int, device: str,
) -> None:  # fmt: skip
    """Optimizer steps until the budget is spent; mutates `state` (step, tokens_seen, elapsed_s) as it goes."""
    timed = cfg.train_seconds > 0
    bar = progress(total=int(cfg.train_seconds) if timed else cfg.max_steps, disable=rank != 0 or None,
                   initial=int(state["elapsed_s"]) if timed else state["step"],
                   unit="s" if timed else "step")  # fmt: skip
    tokens_per_step = cfg.batch_size * cfg.seq_len
    last_dt = state["elapsed_s"] / max(state["step"], 1)  # seconds per step so far (0 on a fresh start)
    while not budget_spent(cfg, state) and not (cfg.stop_after and state["step"] >= cfg.stop_after):
        state["data"] = batches.state_dict()  # saved by a Ctrl-C mid-step, so the resume redraws this batch
        # time budget: the fraction done at the end of this step, estimated with the previous step's duration
        t = budget_fraction(state["step"], cfg.max_steps, state["elapsed_s"] + last_dt, cfg.train_seconds)
        lr = schedule.lr(t)
        x, y = next(batches)  # (batch_size, T): the global batch, identical on every rank
        x, y = rank_slice(x, rank, world).to(device), rank_slice(y, rank, world).to(device)
        t0 = time.perf_counter()
        loss, norm = train_step(forward, model, opt, x, y, cfg, lr)
        dt = last_dt = all_ranks(time.perf_counter() - t0, world, "max", device)  # one clock: ranks stop together
        loss = all_ranks(loss, world, "mean", device)  # the global batch's loss, not this rank's slice's
        state.update(step=state["step"] + 1, tokens_seen=state["tokens_seen"] + tokens_per_step,
                     elapsed_s=state["elapsed_s"] + dt, data=batches.state_dict())  # fmt: skip
        bar.update(int(state["elapsed_s"]) - bar.n if timed else 1)
        if state["step"] % cfg.log_every == 0 or state["step"] == 1:
            tps = tokens_per_step / dt
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tps:.0f}", refresh=False)
            log.log(step=state["step"], loss=loss, lr=lr, grad_norm=norm, tokens_seen=state["tokens_seen"],
                    tokens_per_s=tps, elapsed_s=state["elapsed_s"])  # fmt: skip
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {state['step']}; lower --lr or raise --warmup_frac")
        step, done = state["step"], budget_spent(cfg, state)
        if cfg.eval_every and step % cfg.eval_every == 0 and not done:
            ev = run_eval(model, cfg, val_ds, device, final=False)
            log.log(step=step, tokens_seen=state["tokens_seen"], elapsed_s=state["elapsed_s"], **ev)
            bar.set_postfix(loss=f"{loss:.3f}", val_bpb=f"{ev['val_bpb']:.3f}", refresh=False)
        if cfg.sample_every and step % cfg.sample_every == 0 and not done:
            log.log(step=step, sample=run_sample(model, cfg, tok, device))
        if cfg.ckpt_every and step % cfg.ckpt_every == 0 and not done:
            save()
    bar.close()


def budget_spent(cfg: PretrainConfig, state: dict[str, Any]) -> bool:
    if cfg.train_seconds > 0:
        return state["elapsed_s"] >= cfg.train_seconds
    return state["step"] >= cfg.max_steps


def main(cfg: PretrainConfig) -> int:
    result = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        keys = ("steps", "tokens_seen", "train_s", "tokens_per_s", "val_loss", "val_ppl", "val_bpb")
        print(" ".join(f"{k}={result[k]:.4g}" if isinstance(result[k], float) else f"{k}={result[k]}"
                       for k in keys if k in result))  # fmt: skip
    if dist.is_initialized():
        dist.destroy_process_group()
    return 130 if result.get("interrupted") else 0


if __name__ == "__main__":
    import sys

    from lmstack.common.config import ConfigError, format_help, load_config

    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        print(format_help(PretrainConfig, "python -m lmstack.train.pretrain", __doc__.split("\n\n")[0]))
        sys.exit(0)
    try:
        config = load_config(PretrainConfig, sys.argv[1:])
    except (ConfigError, FileNotFoundError) as err:
        sys.exit(f"pretrain: error: {err}")
    sys.exit(main(config))
