"""Reward-model recipe: train a transformer with a scalar head to rank preference pairs (Bradley-Terry).

    lmstack reward configs/align_reward_smoke.yaml
    lmstack reward --model=smollm2-135m --out_dir=runs/rm --max_steps=200
    python -m lmstack.align.reward --data=pairs.jsonl --eval_data=held_out.jsonl

Steps: load the base model and put a scalar head on it (`reward_model.RewardModel`: the LM head becomes the
identity, a D -> 1 linear reads the last token) -> load and render the pairs (`preferences.py`, as DPO) ->
evaluate held-out accuracy -> optimizer steps: chosen and rejected rows of a batch in one forward, rewards,
`bradley_terry_loss`, backward, clip, scheduled LR, AdamW -> periodic held-out evaluation -> atomic checkpoints
(the reward model's HF sequence-classification directory + trainer_state) with exact `--resume`, saved on
Ctrl-C / SIGTERM too. `<out_dir>/checkpoint` loads with `RewardModel.from_pretrained` and with
`transformers.AutoModelForSequenceClassification`.
Metrics: loss, accuracy (r_chosen > r_rejected), margin, mean reward per step; held-out accuracy and margin.
Leaves out: a frozen backbone (head-only training), ensembles, margins from graded preferences in the data.
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
from lmstack.align.logprobs import trim
from lmstack.align.pair_loop import pair_loop
from lmstack.align.policy import check_out_dir, digest, disable_dropout, setup_device, train_last_layers
from lmstack.align.preferences import encode_pairs, load_pairs, select
from lmstack.align.reward_model import RewardModel, bradley_terry_loss
from lmstack.common.atomic import atomic_write_text
from lmstack.common.config import config_to_dict
from lmstack.common.log import JsonlLogger, info
from lmstack.common.signals import interruptible
from lmstack.model import Transformer, load_model
from lmstack.tokenizer import Tokenizer
from lmstack.train.checkpoint import load_checkpoint, read_state, save_checkpoint
from lmstack.train.optim import build_optimizer, set_lr
from lmstack.train.schedule import Schedule

CKPT = "checkpoint"


@dataclass
class RewardConfig:
    model: str = "smollm2-135m"  # base model: a local model name, an HF directory or a .gguf file
    data: str = ""  # preference JSONL (prompt, chosen, rejected per line); "" = pairs built from --task
    eval_data: str = ""  # held-out preference JSONL; "" = --eval_frac of --data (or the task's held-out problems)
    eval_frac: float = 0.1  # fraction of --data held out when --eval_data is not given
    task: str = "chain_sum"  # embedded pairs: a verifiable task (lmstack.align.tasks.TASKS)
    n_train: int = 512  # embedded pairs: training pairs
    n_eval: int = 200  # embedded pairs: held-out pairs
    out_dir: str = "runs/reward"  # metrics.jsonl, config.yaml, checkpoint/ go here
    resume: bool = False  # continue exactly from <out_dir>/checkpoint
    overwrite: bool = False  # allow starting fresh over an existing <out_dir>/checkpoint
    center_coef: float = 0.0  # weight of the reward-centering term mean((r_w + r_l)^2) (0 = off)
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
    seed: int = 1337  # head init, batch order, wrong answers of the embedded pairs, held-out split

    def __post_init__(self) -> None:
        for name in ("n_train", "n_eval", "batch_size", "grad_accum", "max_steps", "eval_batch_size", "log_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name}: got {getattr(self, name)}, expected > 0")
        for name in ("eval_every", "ckpt_every", "stop_after", "max_len", "weight_decay", "grad_clip", "center_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name}: got {getattr(self, name)}, expected >= 0")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"--grad_accum: {self.grad_accum} does not divide --batch_size={self.batch_size}")
        if not 0 < self.eval_frac < 1:
            raise ValueError(f"--eval_frac: got {self.eval_frac}, expected 0 < eval_frac < 1")
        self.lr_schedule()

    def lr_schedule(self) -> Schedule:
        return Schedule(self.schedule, self.lr, self.warmup_frac, self.min_lr_ratio)  # type: ignore[arg-type]


def pad_token_id(tok: Tokenizer) -> int:
    """The id HF's sequence classifier treats as padding: <|endoftext|> (never inside a rendered reply), else 0."""
    return tok.special_tokens.get("<|endoftext|>", 0)


def build_reward_model(cfg: RewardConfig, device: str) -> tuple[RewardModel, Tokenizer]:
    backbone, tok = load_model(cfg.model, device=device, dtype="float32")
    torch.manual_seed(cfg.seed)  # the head's init
    return disable_dropout(RewardModel(backbone)).to(device).train(), tok


@torch.no_grad()
def pair_rewards(model: RewardModel, rows: Rows, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen (N,), rejected (N,)) rewards of `encode_pairs` rows."""
    model.eval()
    out = []
    for i in range(0, rows.input_ids.shape[0], batch_size):
        chunk = trim(Rows(*(t[i : i + batch_size] for t in (rows.input_ids, rows.positions, rows.completion_mask))))
        out.append(model(chunk.input_ids, chunk.positions))
    model.train()
    r = torch.cat(out)
    return r[: r.shape[0] // 2], r[r.shape[0] // 2 :]


def evaluate(cfg: RewardConfig, model: RewardModel, held_out: Rows) -> dict[str, float]:
    chosen, rejected = pair_rewards(model, held_out, cfg.eval_batch_size)
    return {
        "eval_accuracy": float((chosen > rejected).float().mean()),
        "eval_margin": float((chosen - rejected).mean()),
        "eval_loss": float(bradley_terry_loss(chosen, rejected, center_coef=cfg.center_coef)),
    }


def train_step(cfg: RewardConfig, model: RewardModel, opt: torch.optim.Optimizer, rows: Rows, lr: float) -> dict:
    B = rows.input_ids.shape[0] // 2
    micro = B // cfg.grad_accum
    sums: dict[str, float] = {}
    for i in range(cfg.grad_accum):
        mrows = trim(select(rows, list(range(i * micro, (i + 1) * micro))))
        r = model(mrows.input_ids, mrows.positions)  # (2 micro,)
        loss = bradley_terry_loss(r[:micro], r[micro:], center_coef=cfg.center_coef)
        (loss / cfg.grad_accum).backward()
        m = {
            "loss": float(loss.detach()),
            "accuracy": float((r[:micro] > r[micro:]).float().mean()),
            "margin": float((r[:micro] - r[micro:]).detach().mean()),
            "mean_reward": float(r.detach().mean()),
        }
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

    cfg: RewardConfig
    model: RewardModel
    tok: Tokenizer
    opt: torch.optim.Optimizer
    train_rows: Rows  # 2 N rows: the N chosen completions, then the N rejected
    eval_rows: Rows  # 2 M held-out rows, same layout, on the device
    log: JsonlLogger
    ckpt: Path
    identity: dict[str, Any]  # what a resume must match (checkpoint.check_expect)
    device: str


def setup(cfg: RewardConfig) -> Run:
    device = setup_device(cfg.device, cfg.threads)
    out = Path(cfg.out_dir)
    check_out_dir(out, cfg.resume, cfg.overwrite)
    model, tok = build_reward_model(cfg, device)
    train_pairs, eval_pairs = load_pairs(cfg.data, cfg.eval_data, cfg.eval_frac, cfg.task, cfg.n_train, cfg.n_eval,
                                         cfg.seed)  # fmt: skip
    train_rows, eval_rows = encode_pairs(tok, train_pairs, cfg.max_len), encode_pairs(tok, eval_pairs, cfg.max_len)
    trainable = train_last_layers(model.backbone, cfg.train_layers) + model.score.weight.numel()
    info(f"reward: {len(train_pairs)} training pairs, {len(eval_pairs)} held-out, {trainable / 1e6:.2f} M trainable")
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay)
    identity = {"model": cfg.model, "data": digest([vars(p) for p in train_pairs])}
    identity.update({k: getattr(cfg, k) for k in ("batch_size", "max_steps", "lr", "train_layers", "seed")})
    out.mkdir(parents=True, exist_ok=True)
    log = JsonlLogger(out / "metrics.jsonl", append=cfg.resume)
    return Run(cfg, model, tok, opt, train_rows, eval_rows.to(device), log, out / CKPT, identity, device)


def save(run: Run, state: dict[str, Any]) -> None:
    """An atomic checkpoint: the reward model's HF sequence-classification directory + trainer_state."""

    def save_model(msd: dict[str, torch.Tensor], d: Path) -> None:
        with torch.random.fork_rng(devices=[]):  # the throwaway head init must not move the saved RNG state
            plain = RewardModel(Transformer.without_init(run.model.config))
        plain.load_state_dict(msd)
        plain.save_pretrained(d, tokenizer=run.tok, pad_token_id=pad_token_id(run.tok))

    save_checkpoint(run.ckpt, run.model, run.opt, state, run.identity, save_model)


def train(cfg: RewardConfig) -> dict[str, Any]:
    """Train the reward model; return held-out accuracy before and after, the step count and timings."""
    t_start, cpu_start = time.perf_counter(), time.process_time()
    run = setup(cfg)
    if cfg.resume:
        read_state(run.ckpt)  # a clear error first if it is missing or corrupted
        weights = RewardModel.from_pretrained(run.ckpt).state_dict()
        state = load_checkpoint(run.ckpt, run.model, run.opt, run.identity, weights)
    else:
        state = {"step": 0, "elapsed_s": 0.0, "before": evaluate(cfg, run.model, run.eval_rows)}
        run.log.log(step=0, **state["before"])
    atomic_write_text(Path(cfg.out_dir) / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    interrupted = False
    with interruptible():  # SIGTERM takes the Ctrl-C path: save, exit 130
        try:
            loop(run, state)
        except KeyboardInterrupt:
            interrupted = True
            info(f"reward: interrupted at step {state['step']}; saving {run.ckpt}")
        save(run, state)
    if interrupted or (cfg.stop_after and state["step"] < cfg.max_steps):
        return {**state, "interrupted": interrupted, "stopped": True}
    after = evaluate(cfg, run.model, run.eval_rows)
    timing = {"wall_s": time.perf_counter() - t_start, "cpu_s": time.process_time() - cpu_start}
    run.log.log(step=state["step"], final=True, **after, **timing)
    panels = [("loss", ["loss", "eval_loss"]), ("accuracy", ["accuracy", "eval_accuracy"])]
    plot = plot_curves(cfg.out_dir, panels, f"reward model: {cfg.model}")
    return {"before": state["before"], "after": after, "steps": state["step"], "train_s": state["elapsed_s"],
            "checkpoint": str(run.ckpt), "plot": str(plot), **timing}  # fmt: skip


def loop(run: Run, state: dict[str, Any]) -> None:
    """Optimizer steps until the budget is spent (`pair_loop`); mutates `state` (step, elapsed_s)."""
    cfg = run.cfg
    pair_loop(
        run, state, run.train_rows.input_ids.shape[0] // 2,
        lambda idx, lr: train_step(cfg, run.model, run.opt, select(run.train_rows, idx).to(run.device), lr),
        evaluate=lambda: evaluate(cfg, run.model, run.eval_rows),
        save=lambda: save(run, state),
        show="accuracy",
    )  # fmt: skip


def main(cfg: RewardConfig) -> int:
    result = train(cfg)
    if result.get("stopped"):
        return 130 if result.get("interrupted") else 0
    b, a = result["before"], result["after"]
    print(f"steps={result['steps']} wall_s={result['wall_s']:.0f} cpu_s={result['cpu_s']:.0f} "
          f"eval_accuracy={b['eval_accuracy']:.3f}->{a['eval_accuracy']:.3f} "
          f"eval_margin={a['eval_margin']:.3f} checkpoint={result['checkpoint']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    import sys

    from lmstack.cli import main as cli_main

    sys.exit(cli_main(["reward", *sys.argv[1:]]))
