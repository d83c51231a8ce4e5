"""ORPO recipe: supervised fine-tuning on the chosen completions plus the odds-ratio preference term, one stage.

    lmstack orpo configs/align_orpo_smoke.yaml
    lmstack orpo --model=smollm2-135m --lam=0.1 --out_dir=runs/orpo
    python -m lmstack.align.orpo --data=pairs.jsonl

The DPO recipe's loop (dpo.py) with three changes: no reference model at all; each row's log-prob is the
per-token *average* over its completion (`sequence_logprobs(average=True)`, the paper's P(y|x)); and the loss is
`orpo_loss` = NLL of the chosen completions (mean per token) + lambda * odds-ratio term. Data, batching, held-out
evaluation, checkpoints, resume, Ctrl-C / SIGTERM handling are the same as DPO's.
Metrics: loss, nll, or_loss, reward_accuracy (lambda * avg log-prob of chosen > of rejected), log_odds_ratio per
step; held-out pref_accuracy / logp_margin (summed log-probs, as every recipe reports) and eval_loss.
Leaves out: LoRA policies, multi-process training.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from lmstack.align.batching import Rows
from lmstack.align.curves import plot_curves
from lmstack.align.evaluate import pair_logps, preference_metrics
from lmstack.align.logprobs import token_logprobs, trim
from lmstack.align.orpo_loss import orpo_loss
from lmstack.align.pair_loop import pair_loop
from lmstack.align.policy import check_out_dir, checkpoint_fns, digest, load_policy, setup_device, train_last_layers
from lmstack.align.preferences import encode_pairs, load_pairs, select
from lmstack.common.atomic import atomic_write_text
from lmstack.common.config import config_to_dict
from lmstack.common.log import JsonlLogger, info
from lmstack.common.signals import interruptible
from lmstack.train.checkpoint import load_checkpoint, read_state, save_checkpoint
from lmstack.train.optim import build_optimizer, set_lr
from lmstack.train.schedule import Schedule

CKPT = "checkpoint"


@dataclass
class ORPOConfig:
    model: str = "smollm2-135m"  # model to tune: a local model name, an HF directory or a .gguf file
    data: str = ""  # preference JSONL (prompt, chosen, rejected per line); "" = pairs built from --task
    eval_data: str = ""  # held-out preference JSONL; "" = --eval_frac of --data (or the task's held-out problems)
    eval_frac: float = 0.1  # fraction of --data held out when --eval_data is not given
    task: str = "chain_sum"  # embedded pairs: a verifiable task (lmstack.align.tasks.TASKS)
    n_train: int = 512  # embedded pairs: training pairs
    n_eval: int = 200  # embedded pairs: held-out pairs
    out_dir: str = "runs/orpo"  # metrics.jsonl, config.yaml, checkpoint/ go here
    resume: bool = False  # continue exactly from <out_dir>/checkpoint
    overwrite: bool = False  # allow starting fresh over an existing <out_dir>/checkpoint
    lam: float = 0.1  # weight of the odds-ratio term (TRL calls it beta)
    train_layers: int = 0  # train only the last N transformer blocks (+ final norm); 0 = every parameter
    max_len: int = 256  # longest row (prompt + completion) in tokens; longer rows keep the prompt's end
    batch_size: int = 8  # preference pairs per optimizer step
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 100  # optimizer steps
    lr: float = 1e-5  # peak learning rate
    schedule: str = "cosine"  # cosine | constant | wsd
    warmup_frac: float = 0.1  # fraction of the steps in linear warmup
    min_lr_ratio: float = 0.1  # final learning rate as a fraction of the peak
    weight_decay: float = 0.0  # AdamW decoupled weight decay on matrices
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = off)
    eval_every: int = 25  # steps between held-out evaluations (0 = only before and after)
    eval_batch_size: int = 16  # rows per forward when scoring held-out pairs
    ckpt_every: int = 0  # steps between checkpoints (0 = only at the end and on Ctrl-C)
    stop_after: int = 0  # stop (with a checkpoint) after this many steps, as if interrupted; 0 = run the budget
    log_every: int = 1  # steps between metrics lines
    device: str = "auto"  # auto | cpu | cuda[:N] | mps
    threads: int = 0  # torch CPU threads; 0 = all cores
    seed: int = 1337  # batch order, wrong answers of the embedded pairs, held-out split

    def __post_init__(self) -> None:
        for name in ("n_train", "n_eval", "batch_size", "grad_accum", "max_steps", "eval_batch_size", "log_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name}: got {getattr(self, name)}, expected > 0")
        for name in ("eval_every", "ckpt_every", "stop_after", "max_len", "weight_decay", "grad_clip", "lam"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name}: got {getattr(self, name)}, expected >= 0")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"--grad_accum: {self.grad_accum} does not divide --batch_size={self.batch_size}")
        if not 0 < self.eval_frac < 1:
            raise ValueError(f"--eval_frac: got {self.eval_frac}, expected 0 < eval_frac < 1")
        self.lr_schedule()

    def lr_schedule(self) -> Schedule:
        return Schedule(self.schedule, self.lr, self.warmup_frac, self.min_lr_ratio)  # type: ignore[arg-type]


def orpo_on_rows(cfg: ORPOConfig, model: Any, rows: Rows) -> tuple[torch.Tensor, dict[str, float]]:
    """The ORPO loss of `encode_pairs`-style rows (chosen then rejected) and its metrics."""
    per_token, mask = token_logprobs(model, rows)  # (2 B, T - 1)
    avg = per_token.sum(-1) / mask.sum(-1).clamp(min=1.0)  # (2 B,) mean log-prob per completion token
    B = avg.shape[0] // 2
    nll = -per_token[:B].sum() / mask[:B].sum().clamp(min=1.0)  # SFT loss: chosen completion tokens only
    loss, ratio = orpo_loss(avg[:B], avg[B:], nll, cfg.lam)
    m = ratio.metrics(avg[:B], avg[B:])
    return loss, {**m, "loss": float(loss.detach()), "nll": float(nll.detach()), "or_loss": m["loss"]}


@torch.no_grad()
def evaluate(cfg: ORPOConfig, model: Any, held_out: Rows) -> dict[str, float]:
    chosen, rejected = pair_logps(model, held_out, cfg.eval_batch_size)  # summed log-probs (N,), (N,)
    lengths = held_out.completion_lengths
    n = chosen.shape[0]
    avg = torch.cat([chosen, rejected]) / lengths  # (2 N,) per-token averages
    chosen_nll = -chosen.sum() / lengths[:n].sum()
    loss, ratio = orpo_loss(avg[:n], avg[n:], chosen_nll, cfg.lam)
    return {**preference_metrics(chosen, rejected), "eval_loss": float(loss), "eval_nll": float(chosen_nll),
            "eval_or_loss": float(ratio.losses.mean())}  # fmt: skip


def train_step(cfg: ORPOConfig, model: Any, opt: torch.optim.Optimizer, rows: Rows, lr: float) -> dict[str, float]:
    B = rows.input_ids.shape[0] // 2
    micro = B // cfg.grad_accum
    sums: dict[str, float] = {}
    for i in range(cfg.grad_accum):
        loss, m = orpo_on_rows(cfg, model, trim(select(rows, list(range(i * micro, (i + 1) * micro)))))
        (loss / cfg.grad_accum).backward()
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + v / cfg.grad_accum
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
    set_lr(opt, lr)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {**sums, "grad_norm": float(norm), "lr": lr}


@dataclass
class Run:
    """Everything the loop reads, built once by `setup`."""

    cfg: ORPOConfig
    model: Any  # the model being trained
    opt: torch.optim.Optimizer
    train_rows: Rows  # 2 N rows: the N chosen completions, then the N rejected
    eval_rows: Rows  # 2 M held-out rows, same layout, on the device
    log: JsonlLogger
    ckpt: Path
    identity: dict[str, Any]  # what a resume must match (checkpoint.check_expect)
    save_model: Any  # (state_dict, dir) -> writes the HF model directory
    load_weights: Any  # dir -> state_dict
    device: str


def setup(cfg: ORPOConfig) -> Run:
    device = setup_device(cfg.device, cfg.threads)
    out = Path(cfg.out_dir)
    check_out_dir(out, cfg.resume, cfg.overwrite)
    model, tok = load_policy(cfg.model, device)
    train_pairs, eval_pairs = load_pairs(cfg.data, cfg.eval_data, cfg.eval_frac, cfg.task, cfg.n_train, cfg.n_eval,
                                         cfg.seed)  # fmt: skip
    train_rows, eval_rows = encode_pairs(tok, train_pairs, cfg.max_len), encode_pairs(tok, eval_pairs, cfg.max_len)
    info(f"orpo: {len(train_pairs)} training pairs, {len(eval_pairs)} held-out, lambda {cfg.lam}")
    info(f"orpo: {train_last_layers(model, cfg.train_layers) / 1e6:.2f} M trainable parameters")
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay)
    keys = ("batch_size", "max_steps", "lr", "train_layers", "lam", "seed")
    identity = {"model": cfg.model, "data": digest([vars(p) for p in train_pairs])}
    identity.update({k: getattr(cfg, k) for k in keys})
    out.mkdir(parents=True, exist_ok=True)
    log = JsonlLogger(out / "metrics.jsonl", append=cfg.resume)
    return Run(cfg, model, opt, train_rows, eval_rows.to(device), log, out / CKPT, identity,
               *checkpoint_fns(model, tok), device)  # fmt: skip


def train(cfg: ORPOConfig) -> dict[str, Any]:
    """Run ORPO; return the held-out metrics before and after, the step count and timings."""
    t_start, cpu_start = time.perf_counter(), time.process_time()
    run = setup(cfg)
    if cfg.resume:
        read_state(run.ckpt)  # a clear error first if it is missing or corrupted
        state = load_checkpoint(run.ckpt, run.model, run.opt, run.identity, run.load_weights(run.ckpt))
    else:
        state = {"step": 0, "elapsed_s": 0.0, "before": evaluate(cfg, run.model, run.eval_rows)}
        run.log.log(step=0, **state["before"])
    atomic_write_text(Path(cfg.out_dir) / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    info(f"orpo: held-out preference accuracy before: {state['before']['pref_accuracy']:.3f}")
    interrupted = False
    with interruptible():  # SIGTERM takes the Ctrl-C path: save, exit 130
        try:
            loop(run, state)
        except KeyboardInterrupt:
            interrupted = True
            info(f"orpo: interrupted at step {state['step']}; saving {run.ckpt}")
        save_checkpoint(run.ckpt, run.model, run.opt, state, run.identity, run.save_model)
    if interrupted or (cfg.stop_after and state["step"] < cfg.max_steps):
        return {**state, "interrupted": interrupted, "stopped": True}
    after = evaluate(cfg, run.model, run.eval_rows)
    timing = {"wall_s": time.perf_counter() - t_start, "cpu_s": time.process_time() - cpu_start}
    run.log.log(step=state["step"], final=True, **after, **timing)
    panels = [("loss", ["loss", "nll", "eval_loss"]), ("held-out preference accuracy", ["pref_accuracy"])]
    plot = plot_curves(cfg.out_dir, panels, f"ORPO (lambda {cfg.lam}): {cfg.model}")
    return {"before": state["before"], "after": after, "steps": state["step"], "train_s": state["elapsed_s"],
            "checkpoint": str(run.ckpt), "plot": str(plot), **timing}  # fmt: skip


def loop(run: Run, state: dict[str, Any]) -> None:
    """Optimizer steps until the budget is spent (`pair_loop`); mutates `state` (step, elapsed_s)."""
    cfg = run.cfg
    pair_loop(
        run, state, run.train_rows.input_ids.shape[0] // 2,
        lambda idx, lr: train_step(cfg, run.model, run.opt, select(run.train_rows, idx).to(run.device), lr),
        evaluate=lambda: evaluate(cfg, run.model, run.eval_rows),
        save=lambda: save_checkpoint(run.ckpt, run.model, run.opt, state, run.identity, run.save_model),
        show="nll",
    )  # fmt: skip


def main(cfg: ORPOConfig) -> int:
    result = train(cfg)
    if result.get("stopped"):
        return 130 if result.get("interrupted") else 0
    b, a = result["before"], result["after"]
    print(f"steps={result['steps']} wall_s={result['wall_s']:.0f} cpu_s={result['cpu_s']:.0f} "
          f"pref_accuracy={b['pref_accuracy']:.3f}->{a['pref_accuracy']:.3f} "
          f"eval_loss={b['eval_loss']:.3f}->{a['eval_loss']:.3f} checkpoint={result['checkpoint']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    import sys

    from lmstack.cli import main as cli_main

    sys.exit(cli_main(["orpo", *sys.argv[1:]]))
