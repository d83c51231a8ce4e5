"""Pretraining recipe: next-token prediction (or masked-LM / span corruption) on token shards, one file that
reads top to bottom.

    lmstack pretrain --data_dir=runs/data --out_dir=runs/pt --max_steps=2000
    lmstack pretrain --objective=span ...   # T5 encoder-decoder; --objective=mlm: a bidirectional encoder
    torchrun --nproc_per_node=2 -m lmstack.train.pretrain --data_dir=... [--fsdp]

Per optimizer step: one global batch of `batch_size` random windows is drawn (the same on every rank), each rank
takes its slice, the slice is split into `grad_accum` micro-batches whose gradients add up (the loss of each is
divided by `grad_accum`, DDP/FSDP average over ranks), so any (processes x accumulation) split of the same global
batch computes the same update. Then: clip the global gradient norm, set the scheduled learning rate, AdamW step.
Every `eval_every` steps: validation loss / perplexity / bits-per-byte (evaluate.py) and a sample (sample.py);
every `ckpt_every` steps and at the end: an atomic checkpoint (checkpoint.py) from which `--resume` continues
exactly. Ctrl-C or SIGTERM saves a checkpoint and exits 130. The budget is `max_steps` or, when
`train_seconds > 0`, wall-clock time spent in training steps (the schedule then runs over time: a "train for X
minutes" speedrun). A fresh run refuses an out_dir that holds a previous run unless `--overwrite`.

Mixed precision: `dtype=bfloat16` runs the forward under `torch.autocast` with fp32 master weights, fp32 AdamW
state and an fp32 loss; bf16 keeps fp32's exponent range, so no loss scaling is needed (fp16 would need it).
Distributed (`distributed.py`): DDP replicates the model and all-reduces gradients; `--fsdp` uses FSDP2
`fully_shard` (ZeRO-3): parameters, gradients and AdamW state are sharded over ranks and gathered one block at a
time. gloo on CPU, nccl on GPU.
Objectives (objectives.py): the loop is the same; only the batch and the model differ. clm trains the causal
`Transformer`; mlm the same network with bidirectional attention on BERT-masked windows (one extra id, [MASK]);
span an `EncoderDecoder` (T5 buckets, n_decoder_layers = n_layers unless set, GeGLU for the default SwiGLU, MHA) on
span-corrupted windows (extra ids: the decoder start and 100 sentinels). For mlm/span the validation metric is
the objective's own loss per target token (bits-per-byte is a CLM quantity) and no sample is drawn.
Leaves out: tensor/pipeline parallelism, multi-node launch logic (plain torchrun does it), data loading workers.
"""

from __future__ import annotations

import dataclasses
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
from lmstack.common.config import config_to_dict, section
from lmstack.common.log import JsonlLogger, info, progress
from lmstack.common.signals import interruptible
from lmstack.data.batches import RandomBatches
from lmstack.data.shards import ShardDataset, tokenizer_sha256
from lmstack.model import ModelConfig, Transformer
from lmstack.model.encoder_decoder import EncoderDecoder
from lmstack.tokenizer import Tokenizer
from lmstack.train.checkpoint import load_checkpoint, read_state, save_checkpoint
from lmstack.train.distributed import (
    all_ranks,
    check_batch_split,
    full_norm,
    grad_sync,
    join_process_group,
    rank_slice,
    wrap,
)
from lmstack.train.evaluate import evaluate
from lmstack.train.muon import build_muon
from lmstack.train.objectives import OBJECTIVES, evaluate_objective, extra_ids, make_batch_fn
from lmstack.train.optim import build_optimizer, set_lr
from lmstack.train.sample import sample_ids
from lmstack.train.schedule import Schedule, budget_fraction

CKPT = "checkpoint"
# ModelConfig fields the recipe sets itself: vocabulary and ids from the tokenizer, context from --seq_len, fp32
# master weights (bf16 runs under autocast with --dtype).
SET_BY_RECIPE = ("vocab_size", "max_seq_len", "dtype", "bos_token_id", "eos_token_id")


@dataclass
class PretrainConfig:
    data_dir: str = "runs/data"  # shard directory (train.bin, val.bin, manifest.json) from prepare-data / speedrun
    tokenizer_dir: str = ""  # tokenizer saved with checkpoints and used for samples; "" = <data_dir>/tokenizer
    out_dir: str = "runs/pretrain"  # metrics.jsonl, config.yaml, checkpoint/ go here
    objective: str = "clm"  # clm (causal LM) | mlm (BERT masking, bidirectional) | span (T5, encoder-decoder)
    resume: bool = False  # continue exactly from <out_dir>/checkpoint (an error if there is none)
    overwrite: bool = False  # start fresh over a previous run in <out_dir> (its checkpoint and metrics.jsonl)
    # the network (every ModelConfig field: --model.n_layers=4, --model.rope_theta=5e5, ...)
    model: ModelConfig = section(ModelConfig, fixed=SET_BY_RECIPE, n_layers=4, d_model=128, n_heads=4,
                                 tie_embeddings=True)  # fmt: skip
    seq_len: int = 128  # tokens per training window (and the model's context, model.max_seq_len)
    # batch and budget
    batch_size: int = 32  # sequences per optimizer step, summed over processes and accumulation micro-steps
    grad_accum: int = 1  # micro-batches per optimizer step (per process)
    max_steps: int = 1000  # optimizer steps (the budget unless train_seconds > 0)
    train_seconds: float = 0.0  # wall-clock training budget in seconds; > 0 overrides max_steps
    # optimizer and schedule
    optimizer: str = "adamw"  # adamw | muon (Muon for the block matrices, AdamW for the rest; train/muon.py)
    lr: float = 3e-3  # peak learning rate
    schedule: str = "cosine"  # cosine | constant | wsd
    warmup_frac: float = 0.02  # fraction of the budget in linear warmup
    min_lr_ratio: float = 0.1  # final learning rate as a fraction of the peak
    decay_frac: float = 0.2  # wsd: final fraction of the budget decaying to the floor
    weight_decay: float = 0.1  # AdamW decoupled weight decay on matrices (not norms, biases, embeddings)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay
    muon_momentum: float = 0.95  # Muon's momentum (Nesterov)
    muon_lr_scale: float = 1.0  # Muon's learning rate as a multiple of --lr (its updates are RMS-matched to AdamW's)
    embed_lr_scale: float = 1.0  # muon: the embeddings' and head's AdamW learning rate as a multiple of --lr
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = off)
    # evaluation, samples, checkpoints
    eval_every: int = 200  # steps between validation runs (0 = only at the end)
    eval_tokens: int = 32768  # validation tokens scored by the periodic estimate (the final eval scores all)
    eval_batch_size: int = 32  # windows per validation forward
    final_eval_tokens: int = 0  # validation tokens the final evaluation scores (0 = the whole split)
    sample_every: int = 0  # steps between samples (0 = only at the end)
    sample_tokens: int = 64  # tokens per sample
    sample_prompt: str = "\n"  # text the samples start from
    ckpt_every: int = 0  # steps between checkpoints (0 = only at the end and on Ctrl-C / SIGTERM)
    stop_after: int = 0  # stop (with a checkpoint) after this many steps, as if interrupted; 0 = run the budget
    log_every: int = 10  # steps between metrics lines
    # execution
    dtype: str = "float32"  # float32 | bfloat16 (autocast; fp32 master weights)
    compile: bool = False  # torch.compile the model (measured slower on 2 CPU cores, docs/log.md)
    fsdp: bool = False  # shard parameters/gradients/optimizer state with FSDP2 under torchrun (else DDP)
    device: str = "auto"  # auto | cpu | cuda[:N] | mps
    threads: int = 0  # torch CPU threads per process; 0 = CPU cores / processes
    seed: int = 1337  # model init and batch order

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size", "grad_accum", "max_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name}: got {getattr(self, name)}, expected > 0")
        for name in ("train_seconds", "stop_after", "weight_decay", "grad_clip", "eval_every", "sample_every",
                     "ckpt_every", "threads", "final_eval_tokens"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"--{name}: got {getattr(self, name)}, expected >= 0")
        for name in ("log_every", "eval_tokens", "eval_batch_size", "sample_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name}: got {getattr(self, name)}, expected > 0")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"--grad_accum: {self.grad_accum} does not divide --batch_size={self.batch_size}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"--dtype: got {self.dtype!r}, expected float32 or bfloat16 (fp16 needs loss scaling)")
        if self.model.dtype != "float32":
            raise ValueError(f"--model.dtype={self.model.dtype!r}: training keeps fp32 weights; use --dtype=bfloat16")
        if not 0 < self.beta1 < 1 or not 0 < self.beta2 < 1:
            raise ValueError(f"--beta1/--beta2: got {self.beta1}, {self.beta2}, expected in (0, 1)")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"--objective={self.objective!r}; expected one of {list(OBJECTIVES)}")
        if self.optimizer not in ("adamw", "muon"):
            raise ValueError(f"--optimizer: got {self.optimizer!r}, expected adamw or muon")
        if not 0 <= self.muon_momentum < 1 or not self.muon_lr_scale > 0 or not self.embed_lr_scale > 0:
            raise ValueError(f"--muon_momentum/--muon_lr_scale/--embed_lr_scale: got {self.muon_momentum}, "
                             f"{self.muon_lr_scale}, {self.embed_lr_scale}, "
                             "expected 0 <= momentum < 1 and scales > 0")  # fmt: skip
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite contradict each other; pick one")
        self.lr_schedule()  # validates lr, schedule, warmup_frac, min_lr_ratio, decay_frac

    def lr_schedule(self) -> Schedule:
        return Schedule(self.schedule, self.lr, self.warmup_frac, self.min_lr_ratio, self.decay_frac)  # type: ignore

    def model_config(self, tok: Tokenizer) -> ModelConfig:
        """The network's config for this tokenizer and objective: its vocabulary (+ the objective's extra ids) and
        EOS/BOS ids, `seq_len` positions; bidirectional for mlm, a T5 encoder-decoder for span."""
        extra = extra_ids(self.objective, tok.vocab_size)
        kw: dict[str, Any] = {}
        if self.objective == "mlm":
            kw = dict(causal=False)
        if self.objective == "span":
            ffn = "geglu" if self.model.ffn == "swiglu" else self.model.ffn  # T5 v1.1's gated FFN
            kw = dict(position="t5", n_decoder_layers=self.model.n_decoder_layers or self.model.n_layers, ffn=ffn,
                      n_kv_heads=self.model.n_heads, decoder_start_token_id=extra["start"],
                      pad_token_id=extra["start"])  # fmt: skip
        return dataclasses.replace(self.model, vocab_size=tok.vocab_size + extra["n_extra"], max_seq_len=self.seq_len,
                                   dtype="float32", eos_token_id=tok.eos_id, bos_token_id=tok.bos_id, **kw)  # fmt: skip


@dataclass
class TrainState:
    """Training progress: saved in every checkpoint, restored by --resume."""

    step: int = 0  # optimizer steps done
    tokens_seen: int = 0  # training tokens consumed
    elapsed_s: float = 0.0  # seconds spent in training steps (the time budget's clock)
    data: dict[str, Any] = field(default_factory=dict)  # batch stream position before the step in progress


@dataclass
class Run:
    """Everything the loop reads, built once by `train`."""

    cfg: PretrainConfig
    model: torch.nn.Module  # the module whose parameters train (unwrapped)
    forward: Any  # what runs forward: the model, DDP around it, or compiled
    opt: torch.optim.Optimizer
    batches: RandomBatches  # the global batch stream (identical on every rank)
    make_batch: Any  # (x, y, generator) -> the objective's forward kwargs + "targets" (objectives.py)
    val: ShardDataset
    tok: Tokenizer
    log: JsonlLogger
    ckpt: Path
    identity: dict[str, Any]  # what a resume must match (checkpoint.check_expect)
    rank: int
    world: int
    device: str


# ---- setup: processes, output directory, data, model -----------------------------------------------------------


def setup_distributed(cfg: PretrainConfig) -> tuple[int, int, str]:
    """(rank, world size, device); joins the torchrun process group when WORLD_SIZE > 1; sets CPU threads."""
    rank, world, device = join_process_group(cfg.device)
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // world))
    check_batch_split(cfg.batch_size, cfg.grad_accum, world)
    return rank, world, device


def check_out_dir(cfg: PretrainConfig) -> None:
    """A fresh run never silently replaces a previous one: its checkpoint or its metrics need --overwrite."""
    out = Path(cfg.out_dir)
    if cfg.resume or cfg.overwrite:
        return
    for name in (CKPT, "metrics.jsonl"):
        if (out / name).exists():
            raise ValueError(f"--out_dir: {out} already holds a run ({out / name}); pass --resume to continue it "
                             "(needs a checkpoint) or --overwrite to start over")  # fmt: skip


def load_data(cfg: PretrainConfig) -> tuple[ShardDataset, ShardDataset, Tokenizer]:
    """Train/val shards and the tokenizer that made them (a different tokenizer is refused, not trained on)."""
    data_dir = Path(cfg.data_dir)
    if not (data_dir / "manifest.json").is_file():
        raise FileNotFoundError(f"--data_dir: no shards at {data_dir} (expected manifest.json; run prepare-data)")
    train, val = ShardDataset(data_dir, "train"), ShardDataset(data_dir, "val")
    tok_dir = Path(cfg.tokenizer_dir or data_dir / "tokenizer")
    tok = Tokenizer.load(tok_dir)
    expected = train.manifest.get("tokenizer_sha256")
    if expected and tokenizer_sha256(tok) != expected:
        raise ValueError(f"--tokenizer_dir: {tok_dir} is not the tokenizer that wrote the shards in {data_dir} "
                         "(sha256 differs from manifest.json); use that one or prepare the data again")  # fmt: skip
    if tok.vocab_size != train.manifest["vocab_size"]:
        raise ValueError(f"--tokenizer_dir: {tok_dir} has {tok.vocab_size} tokens, the shards "
                         f"{train.manifest['vocab_size']}")  # fmt: skip
    return train, val, tok


def build_model(cfg: PretrainConfig, model_cfg: ModelConfig, world: int, device: str) -> tuple[torch.nn.Module, Any]:
    """(the module whose parameters train, the callable that runs forward): wrapped for DDP/FSDP, compiled."""
    torch.manual_seed(cfg.seed)  # identical init on every rank
    if model_cfg.is_encoder_decoder:
        model = EncoderDecoder(model_cfg).to(device)
        blocks = [*model.encoder_blocks, *model.decoder_blocks]
    else:
        model = Transformer(model_cfg).to(device)
        blocks = model.blocks
    forward = wrap(model, blocks, world, cfg.fsdp)  # DDP / FSDP2 under torchrun
    if cfg.compile:
        forward = torch.compile(forward)
    return model, forward


def run_identity(cfg: PretrainConfig, model_cfg: ModelConfig, train: ShardDataset) -> dict[str, Any]:
    """What a resumed run must share with the checkpoint (world size and accumulation may change)."""
    skip = ("activation_checkpointing", "attention")  # how the model computes, not what it is
    ident = {f"model.{k}": v for k, v in model_cfg.to_dict().items() if k not in skip}
    keys = ("objective", "batch_size", "seq_len", "max_steps", "train_seconds", "lr", "schedule", "warmup_frac",
            "min_lr_ratio", "optimizer")  # fmt: skip
    return {**ident, **{k: getattr(cfg, k) for k in keys}, "train_tokens": int(len(train.tokens))}


def make_optimizer(cfg: PretrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW (optim.py) or Muon + AdamW (muon.py), as --optimizer says."""
    if cfg.optimizer == "muon":
        return build_muon(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), cfg.muon_momentum,
                          cfg.muon_lr_scale, embed_lr_scale=cfg.embed_lr_scale)  # fmt: skip
    return build_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))


# ---- one optimizer step ----------------------------------------------------------------------------------------


def train_step(
    forward: Any, model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
    cfg: PretrainConfig, lr: float,
) -> tuple[float, float]:  # fmt: skip
    """Accumulate gradients over `grad_accum` micro-batches of this rank's slice, clip, step. Returns (loss, norm).

    x, y: (B_rank, T) where B_rank = batch_size / processes; the returned loss is this rank's mean. x may also be a
    dict of forward keyword tensors (input_ids, encoder_ids, ...: the mlm / span objectives), y their targets.
    """
    inputs = x if isinstance(x, dict) else {"input_ids": x}
    micro = y.shape[0] // cfg.grad_accum
    total = 0.0
    amp = torch.autocast(y.device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")
    for i in range(cfg.grad_accum):
        xs = {k: v[i * micro : (i + 1) * micro] for k, v in inputs.items()}  # (micro, T) each
        ys = y[i * micro : (i + 1) * micro]
        with grad_sync(forward, model, last=i == cfg.grad_accum - 1), amp:  # all-reduce on the last only
            loss = forward(**xs, targets=ys).loss / cfg.grad_accum  # mean over the whole step's tokens
        loss.backward()
        total += loss.item()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
    set_lr(opt, lr)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return total, full_norm(norm)


# ---- evaluation, samples, checkpoints ----------------------------------------------------------------------


def run_eval(model: Any, cfg: PretrainConfig, val: ShardDataset, device: str, final: bool,
             make_batch: Any = None) -> dict[str, float]:  # fmt: skip
    dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else None
    limit = (cfg.final_eval_tokens or None) if final else cfg.eval_tokens
    if cfg.objective != "clm":  # the objective's own loss, with masks fixed by the seed
        return evaluate_objective(model, make_batch, val.tokens, cfg.seq_len, cfg.eval_batch_size, device, limit,
                                  cfg.seed)  # fmt: skip
    return evaluate(model, val.tokens, val.n_bytes, cfg.seq_len, cfg.eval_batch_size, device, dtype, limit)


def run_sample(model: Any, cfg: PretrainConfig, tok: Tokenizer, device: str) -> str:
    if cfg.objective != "clm":
        return ""  # an encoder or a span filler does not continue a prompt
    prompt = tok.encode(cfg.sample_prompt) or [0]
    g = torch.Generator().manual_seed(cfg.seed)
    new = sample_ids(model, prompt, cfg.sample_tokens, cfg.seq_len, generator=g, device=device)
    return cfg.sample_prompt + tok.decode(new)


def save(run: Run, state: TrainState) -> None:
    """An atomic checkpoint of the model (HF directory, tokenizer, EOS in its configs) and the training state."""

    def save_model(msd: dict[str, torch.Tensor], d: Path) -> None:
        plain = type(run.model).without_init(run.model.config)  # unwrapped, unsharded, holding the gathered weights
        plain.load_state_dict(msd)
        plain.save_pretrained(d, tokenizer=run.tok)

    save_checkpoint(run.ckpt, run.model, run.opt, dataclasses.asdict(state), run.identity, save_model)


def restore(run: Run) -> TrainState:
    """Model, optimizer and RNG from <out_dir>/checkpoint; the batch stream rewinds to the saved position."""
    read_state(run.ckpt)  # a clear error first if it is missing or corrupted
    weights = Transformer.from_pretrained(run.ckpt).state_dict()
    saved = load_checkpoint(run.ckpt, run.model, run.opt, run.identity, weights)
    state = TrainState(**{f.name: saved[f.name] for f in dataclasses.fields(TrainState)})
    run.batches.load_state_dict(state.data)
    return state


# ---- the recipe -----------------------------------------------------------------------------------------------


def train(cfg: PretrainConfig) -> dict[str, Any]:
    """Run pretraining; return the final metrics (val_loss, val_bpb, tokens_seen, train_s, ...)."""
    rank, world, device = setup_distributed(cfg)
    check_out_dir(cfg)
    train_ds, val_ds, tok = load_data(cfg)
    model_cfg = cfg.model_config(tok)
    model, forward = build_model(cfg, model_cfg, world, device)
    opt = make_optimizer(cfg, model)
    batches = RandomBatches(train_ds.tokens, cfg.batch_size, cfg.seq_len, cfg.seed)
    make_batch = make_batch_fn(cfg.objective, tok.vocab_size, tok.eos_id)
    out = Path(cfg.out_dir)
    log = JsonlLogger(out / "metrics.jsonl" if rank == 0 else None, append=cfg.resume)  # --overwrite: truncate
    run = Run(cfg, model, forward, opt, batches, make_batch, val_ds, tok, log, out / CKPT,
              run_identity(cfg, model_cfg, train_ds), rank, world, device)  # fmt: skip
    state = restore(run) if cfg.resume else TrainState(data=batches.state_dict())
    if rank == 0:
        atomic_write_text(out / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        n_params = sum(p.numel() for p in unique_params(model))
        mode = "" if world == 1 else (" (FSDP2 fully_shard)" if cfg.fsdp else " (DDP)")
        info(f"pretrain: {n_params / 1e6:.2f} M parameters, {world} process(es){mode} on {device}, "
             f"{cfg.batch_size} x {cfg.seq_len} tokens per step, budget "
             f"{f'{cfg.train_seconds:.0f} s' if cfg.train_seconds else f'{cfg.max_steps} steps'}")  # fmt: skip
    interrupted = False
    with interruptible():  # SIGTERM (kill, docker stop, schedulers) takes the Ctrl-C path: save, exit 130
        try:
            loop(run, state)
        except KeyboardInterrupt:
            interrupted = True
            if rank == 0:
                info(f"pretrain: interrupted at step {state.step}; saving {run.ckpt}")
        save(run, state)
    if interrupted or (cfg.stop_after and state.step >= cfg.stop_after and not budget_spent(cfg, state)):
        return {**dataclasses.asdict(state), "interrupted": interrupted, "stopped": True}
    final = run_eval(model, cfg, val_ds, device, True, make_batch)  # the plain module: no recompiles for eval shapes
    sample = run_sample(model, cfg, tok, device)
    log.log(step=state.step, final=True, **final, sample=sample)
    return {**final, "params": sum(p.numel() for p in unique_params(model)), "tokens_seen": state.tokens_seen,
            "steps": state.step, "train_s": state.elapsed_s, "tokens_per_s": state.tokens_seen / max(state.elapsed_s,
            1e-9), "sample": sample, "world_size": world, "vocab_size": tok.vocab_size}  # fmt: skip


def unique_params(model: torch.nn.Module) -> list[torch.Tensor]:
    """Unique parameters (tied tensors once); global sizes under FSDP (DTensor.numel is the full size)."""
    return list({id(p): p for p in model.parameters()}.values())


def loop(run: Run, state: TrainState) -> None:
    """Optimizer steps until the budget is spent; mutates `state` as it goes."""
    cfg = run.cfg
    timed = cfg.train_seconds > 0
    bar = progress(total=int(cfg.train_seconds) if timed else cfg.max_steps, disable=run.rank != 0 or None,
                   initial=int(state.elapsed_s) if timed else state.step, unit="s" if timed else "step")  # fmt: skip
    schedule, tokens_per_step = cfg.lr_schedule(), cfg.batch_size * cfg.seq_len
    last_dt = state.elapsed_s / max(state.step, 1)  # seconds per step so far (0 on a fresh start)
    while not budget_spent(cfg, state) and not (cfg.stop_after and state.step >= cfg.stop_after):
        state.data = run.batches.state_dict()  # saved by an interrupt mid-step, so the resume redraws this batch
        # time budget: the fraction done at the end of this step, estimated with the previous step's duration
        lr = schedule.lr(budget_fraction(state.step, cfg.max_steps, state.elapsed_s + last_dt, cfg.train_seconds))
        x, y = next(run.batches)  # (batch_size, T): the global batch, identical on every rank
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + state.step)  # masks: the same after a resume
        batch = {k: rank_slice(v, run.rank, run.world).to(run.device) for k, v in run.make_batch(x, y, g).items()}
        x, y = batch, batch.pop("targets")
        t0 = time.perf_counter()
        loss, norm = train_step(run.forward, run.model, run.opt, x, y, cfg, lr)
        dt = last_dt = all_ranks(time.perf_counter() - t0, run.world, "max", run.device)  # ranks stop together
        loss = all_ranks(loss, run.world, "mean", run.device)  # the global batch's loss, not this rank's slice's
        state.step, state.tokens_seen, state.elapsed_s = state.step + 1, state.tokens_seen + tokens_per_step, \
            state.elapsed_s + dt  # fmt: skip
        state.data = run.batches.state_dict()
        bar.update(int(state.elapsed_s) - bar.n if timed else 1)
        if state.step % cfg.log_every == 0 or state.step == 1:
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_step / dt:.0f}", refresh=False)
            run.log.log(step=state.step, loss=loss, lr=lr, grad_norm=norm, tokens_seen=state.tokens_seen,
                        tokens_per_s=tokens_per_step / dt, elapsed_s=state.elapsed_s)  # fmt: skip
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {state.step}; lower --lr or raise --warmup_frac")
        periodic(run, state, loss, bar)
    bar.close()


def periodic(run: Run, state: TrainState, loss: float, bar: Any) -> None:
    """Validation estimate, sample and checkpoint at their intervals (not on the last step: `train` does those)."""
    cfg, step = run.cfg, state.step
    if budget_spent(cfg, state):
        return
    if cfg.eval_every and step % cfg.eval_every == 0:
        ev = run_eval(run.model, cfg, run.val, run.device, False, run.make_batch)
        run.log.log(step=step, tokens_seen=state.tokens_seen, elapsed_s=state.elapsed_s, **ev)
        bar.set_postfix(loss=f"{loss:.3f}", val_loss=f"{ev['val_loss']:.3f}", refresh=False)
    if cfg.sample_every and step % cfg.sample_every == 0:
        run.log.log(step=step, sample=run_sample(run.model, cfg, run.tok, run.device))
    if cfg.ckpt_every and step % cfg.ckpt_every == 0:
        save(run, state)


def budget_spent(cfg: PretrainConfig, state: TrainState) -> bool:
    if cfg.train_seconds > 0:
        return state.elapsed_s >= cfg.train_seconds
    return state.step >= cfg.max_steps


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

    from lmstack.cli import main as cli_main

    sys.exit(cli_main(["pretrain", *sys.argv[1:]]))
