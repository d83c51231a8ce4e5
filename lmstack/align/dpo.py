"""DPO recipe: align a policy to preference pairs with DPO / conservative DPO / robust DPO / IPO.

    lmstack dpo configs/align_dpo_smoke.yaml
    lmstack dpo --model=smollm2-135m --loss_type=ipo --beta=0.5 --out_dir=runs/ipo
    python -m lmstack.align.dpo --data=pairs.jsonl --eval_data=held_out.jsonl

Steps: load the policy (and tokenizer) -> load pairs (user JSONL or the embedded right-vs-wrong task pairs,
`preferences.py`) -> render every pair once (`encode_pairs`) -> reference log-probs: `reference=precompute` scores
every pair with the reference once before training (then only the policy is in memory; cached in
`<out_dir>/reference_logps.safetensors` for resume), `reference=frozen` keeps a frozen copy and scores each batch ->
evaluate the held-out pairs -> optimizer steps: a batch of pairs (a pure function of seed and step), chosen and
rejected rows in one forward, `dpo_loss`, backward, clip, scheduled LR, AdamW -> periodic held-out evaluation ->
an atomic checkpoint (an HF model directory + trainer_state) at the end, every `ckpt_every` steps and on
Ctrl-C / SIGTERM, from which `--resume` continues exactly.
Metrics (metrics.jsonl): loss, reward_accuracy, reward_margin, chosen/rejected rewards and log-probs per step;
held-out pref_accuracy (log pi(chosen) > log pi(rejected)), logp_margin, loss and reward accuracy per evaluation.
Leaves out: LoRA policies, multi-process training, padding-free packing of pairs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save

from lmstack.align.batching import Rows
from lmstack.align.curves import plot_curves
from lmstack.align.dpo_loss import check_dpo_args, dpo_loss
from lmstack.align.evaluate import pair_logps, preference_metrics
from lmstack.align.logprobs import sequence_logprobs, trim
from lmstack.align.pair_loop import pair_loop
from lmstack.align.policy import (
    check_out_dir,
    checkpoint_fns,
    digest,
    frozen,
    load_policy,
    setup_device,
    train_last_layers,
)
from lmstack.align.preferences import encode_pairs, load_pairs, select
from lmstack.common.atomic import atomic_write_bytes, atomic_write_text
from lmstack.common.config import config_to_dict
from lmstack.common.log import JsonlLogger, info
from lmstack.common.signals import interruptible
from lmstack.train.checkpoint import load_checkpoint, read_state, save_checkpoint
from lmstack.train.optim import build_optimizer, set_lr
from lmstack.train.schedule import Schedule

CKPT = "checkpoint"


@dataclass
class DPOConfig:
    model: str = "smollm2-135m"  # policy to align: a local model name, an HF directory or a .gguf file
    ref_model: str = ""  # reference policy pi_ref; "" = --model as loaded (its weights before training)
    data: str = ""  # preference JSONL (prompt, chosen, rejected per line); "" = pairs built from --task
    eval_data: str = ""  # held-out preference JSONL; "" = --eval_frac of --data (or the task's held-out problems)
    eval_frac: float = 0.1  # fraction of --data held out when --eval_data is not given
    task: str = "chain_sum"  # embedded pairs: a verifiable task (lmstack.align.tasks.TASKS)
    n_train: int = 512  # embedded pairs: training pairs
    n_eval: int = 200  # embedded pairs: held-out pairs
    out_dir: str = "runs/dpo"  # metrics.jsonl, config.yaml, checkpoint/ go here
    resume: bool = False  # continue exactly from <out_dir>/checkpoint
    overwrite: bool = False  # allow starting fresh over an existing <out_dir>/checkpoint
    loss_type: str = "sigmoid"  # sigmoid (DPO) | cdpo (conservative) | robust (rDPO) | ipo
    beta: float = 0.1  # KL strength: implicit reward = beta * log(pi / pi_ref); IPO's tau
    label_smoothing: float = 0.0  # cdpo / robust: probability that a preference label is flipped
    reference: str = "precompute"  # precompute (reference log-probs once, before training) | frozen (a copy)
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
    eval_batch_size: int = 16  # rows per forward when scoring held-out pairs and reference log-probs
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
        for name in ("eval_every", "ckpt_every", "stop_after", "max_len", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name}: got {getattr(self, name)}, expected >= 0")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"--grad_accum: {self.grad_accum} does not divide --batch_size={self.batch_size}")
        if self.reference not in ("precompute", "frozen"):
            raise ValueError(f"--reference: got {self.reference!r}, expected precompute or frozen")
        if not 0 < self.eval_frac < 1:
            raise ValueError(f"--eval_frac: got {self.eval_frac}, expected 0 < eval_frac < 1")
        check_dpo_args(self.beta, self.loss_type, self.label_smoothing)
        self.lr_schedule()

    def lr_schedule(self) -> Schedule:
        return Schedule(self.schedule, self.lr, self.warmup_frac, self.min_lr_ratio)  # type: ignore[arg-type]


# ---- reference log-probs, evaluation --------------------------------------------------------------------------


def reference_logps(cfg: DPOConfig, policy: Any, train: Rows, held_out: Rows, device: str) -> dict[str, torch.Tensor]:
    """{"train": (2 N,), "eval": (2 M,)} summed completion log-probs under pi_ref (cached in out_dir)."""
    cache = Path(cfg.out_dir) / "reference_logps.safetensors"
    key = digest([cfg.model, cfg.ref_model, train.input_ids.tolist(), held_out.input_ids.tolist()])
    if cfg.resume and cache.is_file():
        saved = load_file(str(cache))
        if saved["key"].tolist() == list(key.encode()):
            return {"train": saved["train"], "eval": saved["eval"]}
    ref = load_policy(cfg.ref_model, device)[0] if cfg.ref_model else policy  # policy: still at its initial weights
    out = {}
    for name, rows in (("train", train), ("eval", held_out)):
        chosen, rejected = pair_logps(ref, rows.to(device), cfg.eval_batch_size)
        out[name] = torch.cat([chosen, rejected]).cpu()
    atomic_write_bytes(cache, save({**out, "key": torch.tensor(list(key.encode()), dtype=torch.uint8)}))
    return out


def evaluate(cfg: DPOConfig, policy: Any, held_out: Rows, ref: torch.Tensor, logps: torch.Tensor | None = None) -> dict:
    """Held-out preference accuracy and margins, plus the DPO loss and implicit-reward metrics vs pi_ref.
    `logps` (2 M,) are the policy's held-out log-probs when already known (at step 0 they are the reference's)."""
    if logps is None:
        logps = torch.cat(pair_logps(policy, held_out, cfg.eval_batch_size)).cpu()
    n = logps.shape[0] // 2
    chosen, rejected = logps[:n], logps[n:]
    lengths = held_out.completion_lengths.cpu()
    out = dpo_loss(chosen, rejected, ref[:n], ref[n:], cfg.beta, cfg.loss_type, cfg.label_smoothing,
                   lengths[:n], lengths[n:])  # fmt: skip
    dpo = out.metrics(chosen, rejected)
    return {**preference_metrics(chosen, rejected), "eval_loss": dpo["loss"],
            "eval_reward_accuracy": dpo["reward_accuracy"], "eval_reward_margin": dpo["reward_margin"]}  # fmt: skip


# ---- one optimizer step ----------------------------------------------------------------------------------------


def train_step(
    cfg: DPOConfig, policy: Any, ref_model: Any, opt: torch.optim.Optimizer, rows: Rows, ref: torch.Tensor, lr: float
) -> dict[str, float]:
    """One optimizer step on a batch of pairs: rows (2 B, T) chosen then rejected; ref (2 B,) or None (frozen)."""
    B = rows.input_ids.shape[0] // 2
    micro = B // cfg.grad_accum
    sums: dict[str, float] = {}
    for i in range(cfg.grad_accum):
        idx = list(range(i * micro, (i + 1) * micro))
        mrows = trim(select(rows, idx))  # (2 micro, T')
        logps = sequence_logprobs(policy, mrows)  # (2 micro,)
        if ref_model is not None:
            with torch.no_grad():
                mref = sequence_logprobs(ref_model, mrows)
        else:
            mref = torch.cat([ref[idx], ref[[B + j for j in idx]]]).to(logps.device)
        lengths = mrows.completion_lengths
        out = dpo_loss(logps[:micro], logps[micro:], mref[:micro], mref[micro:], cfg.beta, cfg.loss_type,
                       cfg.label_smoothing, lengths[:micro], lengths[micro:])  # fmt: skip
        (out.losses.mean() / cfg.grad_accum).backward()
        for k, v in out.metrics(logps[:micro], logps[micro:]).items():
            sums[k] = sums.get(k, 0.0) + v / cfg.grad_accum
    norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
    set_lr(opt, lr)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {**sums, "grad_norm": float(norm), "lr": lr}


# ---- the recipe -------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything the loop reads, built once by `setup`."""

    cfg: DPOConfig
    policy: Any  # the model being trained
    ref_model: Any  # the frozen reference (reference=frozen), or None (its log-probs are precomputed in `refs`)
    opt: torch.optim.Optimizer
    train_rows: Rows  # 2 N rows: the N chosen completions, then the N rejected
    eval_rows: Rows  # 2 M held-out rows, same layout, on the device
    refs: dict[str, torch.Tensor]  # reference log-probs {"train": (2 N,), "eval": (2 M,)}
    log: JsonlLogger
    ckpt: Path
    identity: dict[str, Any]  # what a resume must match (checkpoint.check_expect)
    save_model: Any  # (state_dict, dir) -> writes the HF model directory
    load_weights: Any  # dir -> state_dict
    device: str


def setup(cfg: DPOConfig) -> Run:
    """Load the policy, the pairs, the reference log-probs (or a frozen reference) and the optimizer."""
    device = setup_device(cfg.device, cfg.threads)
    out = Path(cfg.out_dir)
    check_out_dir(out, cfg.resume, cfg.overwrite)
    policy, tok = load_policy(cfg.model, device)
    train_pairs, eval_pairs = load_pairs(cfg.data, cfg.eval_data, cfg.eval_frac, cfg.task, cfg.n_train, cfg.n_eval,
                                         cfg.seed)  # fmt: skip
    train_rows, eval_rows = encode_pairs(tok, train_pairs, cfg.max_len), encode_pairs(tok, eval_pairs, cfg.max_len)
    info(f"dpo: {len(train_pairs)} training pairs, {len(eval_pairs)} held-out, loss {cfg.loss_type} beta {cfg.beta}")
    out.mkdir(parents=True, exist_ok=True)
    refs = reference_logps(cfg, policy, train_rows, eval_rows, device)  # before any weight changes
    ref_model = None
    if cfg.reference == "frozen":
        ref_model = frozen(load_policy(cfg.ref_model, device)[0] if cfg.ref_model else policy)
    info(f"dpo: {train_last_layers(policy, cfg.train_layers) / 1e6:.2f} M trainable parameters")
    opt = build_optimizer(policy, cfg.lr, cfg.weight_decay)
    keys = ("batch_size", "max_steps", "lr", "train_layers", "loss_type", "beta", "seed")
    identity = {"model": cfg.model, "ref_model": cfg.ref_model, "data": digest([vars(p) for p in train_pairs])}
    identity.update({k: getattr(cfg, k) for k in keys})
    log = JsonlLogger(out / "metrics.jsonl", append=cfg.resume)
    return Run(cfg, policy, ref_model, opt, train_rows, eval_rows.to(device), refs, log, out / CKPT, identity,
               *checkpoint_fns(policy, tok), device)  # fmt: skip


def train(cfg: DPOConfig) -> dict[str, Any]:
    """Run DPO; return the held-out metrics before and after, the step count and timings."""
    t_start, cpu_start = time.perf_counter(), time.process_time()
    run = setup(cfg)
    if cfg.resume:
        read_state(run.ckpt)  # a clear error first if it is missing or corrupted
        state = load_checkpoint(run.ckpt, run.policy, run.opt, run.identity, run.load_weights(run.ckpt))
    else:
        # before training the policy is the reference (unless --ref_model differs): its log-probs are known
        known = run.refs["eval"] if not cfg.ref_model else None
        state = {
            "step": 0,
            "elapsed_s": 0.0,
            "before": evaluate(cfg, run.policy, run.eval_rows, run.refs["eval"], known),
        }
        run.log.log(step=0, **state["before"])
    atomic_write_text(Path(cfg.out_dir) / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    info(f"dpo: held-out preference accuracy before: {state['before']['pref_accuracy']:.3f}")
    interrupted = False
    with interruptible():  # SIGTERM takes the Ctrl-C path: save, exit 130
        try:
            loop(run, state)
        except KeyboardInterrupt:
            interrupted = True
            info(f"dpo: interrupted at step {state['step']}; saving {run.ckpt}")
        save_checkpoint(run.ckpt, run.policy, run.opt, state, run.identity, run.save_model)
    if interrupted or (cfg.stop_after and state["step"] < cfg.max_steps):
        return {**state, "interrupted": interrupted, "stopped": True}
    after = evaluate(cfg, run.policy, run.eval_rows, run.refs["eval"])
    timing = {"wall_s": time.perf_counter() - t_start, "cpu_s": time.process_time() - cpu_start}
    run.log.log(step=state["step"], final=True, **after, **timing)
    panels = [
        ("loss", ["loss", "eval_loss"]),
        ("accuracy", ["reward_accuracy", "pref_accuracy", "eval_reward_accuracy"]),
    ]
    plot = plot_curves(cfg.out_dir, panels, f"DPO ({cfg.loss_type}, beta {cfg.beta}): {cfg.model}")
    return {"before": state["before"], "after": after, "steps": state["step"], "train_s": state["elapsed_s"],
            "checkpoint": str(run.ckpt), "plot": str(plot), **timing}  # fmt: skip


def loop(run: Run, state: dict[str, Any]) -> None:
    """Optimizer steps until the budget is spent (`pair_loop`); mutates `state` (step, elapsed_s)."""
    cfg, n = run.cfg, run.train_rows.input_ids.shape[0] // 2

    def step(idx: list[int], lr: float) -> dict[str, float]:
        rows = select(run.train_rows, idx).to(run.device)
        ref = torch.cat([run.refs["train"][idx], run.refs["train"][[n + i for i in idx]]])
        return train_step(cfg, run.policy, run.ref_model, run.opt, rows, ref, lr)

    pair_loop(
        run, state, n, step,
        evaluate=lambda: evaluate(cfg, run.policy, run.eval_rows, run.refs["eval"]),
        save=lambda: save_checkpoint(run.ckpt, run.policy, run.opt, state, run.identity, run.save_model),
        show="reward_accuracy", show_eval="pref_accuracy",
    )  # fmt: skip


def main(cfg: DPOConfig) -> int:
    result = train(cfg)
    if result.get("stopped"):
        return 130 if result.get("interrupted") else 0
    b, a = result["before"], result["after"]
    print(f"steps={result['steps']} wall_s={result['wall_s']:.0f} cpu_s={result['cpu_s']:.0f} "
          f"pref_accuracy={b['pref_accuracy']:.3f}->{a['pref_accuracy']:.3f} "
          f"logp_margin={b['logp_margin']:.3f}->{a['logp_margin']:.3f} "
          f"eval_reward_accuracy={a['eval_reward_accuracy']:.3f} checkpoint={result['checkpoint']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    import sys

    from lmstack.cli import main as cli_main

    sys.exit(cli_main(["dpo", *sys.argv[1:]]))
