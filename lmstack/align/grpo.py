"""GRPO recipe: reinforcement learning from verifiable rewards with group-normalized advantages.

    lmstack grpo configs/align_grpo.yaml
    lmstack grpo --model=smollm2-135m --rewards=exact --group_size=8 --max_steps=40
    python -m lmstack.align.grpo --task=chain_sum --beta=0

Per step: draw `prompts_per_step` training problems (a pure function of seed and step) -> sample `group_size`
completions each with `lmstack.generate` (seed = seed + step), decode, score them by code (`tasks.REWARDS`,
weighted by `--reward_weights`) -> group-normalized advantages (`grpo_loss.group_advantages`) -> log-probs of the
sampling policy (pi_old) and, with beta > 0, of the frozen reference -> `num_iterations` passes of the clipped loss
(`grpo_loss.grpo_loss`) over the rollouts in micro-batches of `micro_batch` rows, each pass one optimizer step
(clip, scheduled LR, AdamW). Every `eval_every` steps: greedy completions of the held-out problems, mean reward
(the held-out reward curve). At the end: the final held-out evaluation, `<out_dir>/curves.png` (sampled reward per
step and held-out reward), and the checkpoint (an HF model directory + trainer_state; also on Ctrl-C / SIGTERM,
and every `ckpt_every` steps) from which `--resume` continues exactly.
Leaves out: a learned reward model as the reward (the reward recipe trains one; wiring it in is a follow-up),
vLLM-style fast rollouts, multi-process training, LoRA policies.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from lmstack.align.batching import Rows, batch_indices
from lmstack.align.curves import plot_curves
from lmstack.align.grpo_loss import LOSS_TYPES, SCALES, group_advantages, grpo_loss
from lmstack.align.logprobs import token_logprobs, trim
from lmstack.align.policy import check_out_dir, checkpoint_fns, frozen, load_policy, setup_device, train_last_layers
from lmstack.align.rollouts import Rollouts, rollout
from lmstack.align.tasks import REWARDS, Problem, splits
from lmstack.common.atomic import atomic_write_text
from lmstack.common.config import config_to_dict, section
from lmstack.common.log import JsonlLogger, info, progress
from lmstack.common.signals import interruptible
from lmstack.generate import SamplingParams
from lmstack.train.checkpoint import load_checkpoint, read_state, save_checkpoint
from lmstack.train.optim import build_optimizer, set_lr
from lmstack.train.schedule import Schedule

CKPT = "checkpoint"
# SamplingParams fields a rollout sets itself (group size, per-step seed, end-of-reply stop) or cannot use
ROLLOUT_FIXED = ("n", "seed", "stop", "stop_token_ids", "ignore_eos", "beam_width", "num_return_sequences",
                 "length_penalty", "early_stopping", "prompt_lookup", "num_draft_tokens", "prompt_lookup_max_ngram",
                 "json_mode", "json_schema", "regex", "choices")  # fmt: skip


@dataclass
class GRPOConfig:
    model: str = "smollm2-135m"  # policy to train: a local model name, an HF directory or a .gguf file
    task: str = "chain_sum"  # verifiable task the prompts come from (lmstack.align.tasks.TASKS)
    rewards: list[str] = field(default_factory=lambda: ["exact"])  # correct | exact | format | numeric
    reward_weights: list[float] = field(default_factory=list)  # one weight per reward function ([] = all 1)
    n_train: int = 512  # training problems
    n_eval: int = 64  # held-out problems (greedy completions, mean reward)
    out_dir: str = "runs/grpo"  # metrics.jsonl, config.yaml, curves.png, checkpoint/ go here
    resume: bool = False  # continue exactly from <out_dir>/checkpoint
    overwrite: bool = False  # allow starting fresh over an existing <out_dir>/checkpoint
    prompts_per_step: int = 4  # problems per step
    group_size: int = 8  # completions sampled per problem (G); advantages are normalized within each group
    # how rollouts are sampled: every SamplingParams field (--sampling.temperature, --sampling.top_k, ...) except
    # those GRPO sets itself (n = group_size, the seed, the end-of-reply stop token)
    sampling: SamplingParams = section(SamplingParams, fixed=ROLLOUT_FIXED, max_new_tokens=16, temperature=1.0)
    loss_type: str = "grpo"  # grpo (per-sequence mean) | bnpo (token mean) | dr_grpo (fixed normalizer)
    scale_rewards: str = "group"  # divide advantages by the group std (group), the batch std (batch), or not (none)
    beta: float = 0.04  # KL penalty to the reference (the initial policy); 0 = no reference model in memory
    epsilon: float = 0.2  # clip range below 1 of the ratio pi / pi_old
    epsilon_high: float = 0.0  # clip range above 1 (0 = --epsilon; DAPO's clip-higher uses ~0.28)
    num_iterations: int = 1  # optimizer steps per batch of rollouts (mu); > 1 makes the clipping matter
    train_layers: int = 0  # train only the last N transformer blocks (+ final norm); 0 = every parameter
    micro_batch: int = 8  # rows per forward/backward (gradient accumulation over the step's rows)
    max_steps: int = 40  # rollout steps
    lr: float = 1e-5  # peak learning rate
    schedule: str = "constant"  # cosine | constant | wsd
    warmup_frac: float = 0.05  # fraction of the steps in linear warmup
    min_lr_ratio: float = 0.1  # final learning rate as a fraction of the peak (cosine, wsd)
    weight_decay: float = 0.0  # AdamW decoupled weight decay on matrices
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = off)
    eval_every: int = 10  # steps between held-out evaluations (0 = only before and after)
    eval_batch_size: int = 32  # held-out prompts per generate call
    ckpt_every: int = 0  # steps between checkpoints (0 = only at the end and on Ctrl-C)
    stop_after: int = 0  # stop (with a checkpoint) after this many steps, as if interrupted; 0 = run the budget
    log_every: int = 1  # steps between metrics lines
    device: str = "auto"  # auto | cpu | cuda[:N] | mps
    threads: int = 0  # torch CPU threads; 0 = all cores
    seed: int = 1337  # problem order, rollout sampling, held-out split

    def __post_init__(self) -> None:
        positive = ("n_train", "n_eval", "prompts_per_step", "num_iterations", "micro_batch",
                    "max_steps", "eval_batch_size", "log_every")  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name}: got {getattr(self, name)}, expected > 0")
        for name in ("eval_every", "ckpt_every", "stop_after", "beta", "epsilon", "epsilon_high", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name}: got {getattr(self, name)}, expected >= 0")
        if self.group_size < 2:
            raise ValueError(f"--group_size: got {self.group_size}, expected >= 2 (advantages compare a group)")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"--loss_type: got {self.loss_type!r}, expected one of {', '.join(LOSS_TYPES)}")
        if self.scale_rewards not in SCALES:
            raise ValueError(f"--scale_rewards: got {self.scale_rewards!r}, expected one of {', '.join(SCALES)}")
        if not self.rewards or any(r not in REWARDS for r in self.rewards):
            raise ValueError(f"--rewards: got {self.rewards}, expected some of {', '.join(REWARDS)}")
        if self.reward_weights and len(self.reward_weights) != len(self.rewards):
            raise ValueError(f"--reward_weights: {len(self.reward_weights)} weights for {len(self.rewards)} rewards")
        if self.sampling.temperature <= 0 or self.sampling.max_new_tokens <= 0:
            raise ValueError(
                f"--sampling.temperature={self.sampling.temperature} and --sampling.max_new_tokens="
                f"{self.sampling.max_new_tokens}: rollouts need temperature > 0 and max_new_tokens > 0"
            )
        self.lr_schedule()

    def lr_schedule(self) -> Schedule:
        return Schedule(self.schedule, self.lr, self.warmup_frac, self.min_lr_ratio)  # type: ignore[arg-type]

    def rollout_params(self, step: int) -> SamplingParams:
        """The rollout sampler of `step`: its own seed, so a resumed run samples the same completions."""
        return self.sampling.replace(n=self.group_size, seed=self.seed + step)

    def reward_map(self) -> dict[str, float]:
        return dict(zip(self.rewards, self.reward_weights or [1.0] * len(self.rewards)))


# ---- evaluation ---------------------------------------------------------------------------------------------


def evaluate(cfg: GRPOConfig, policy: Any, tok: Any, problems: list[Problem]) -> dict[str, Any]:
    """Greedy completions of the held-out problems: mean reward (weighted) and each reward function's mean."""
    greedy = SamplingParams(max_new_tokens=cfg.sampling.max_new_tokens, temperature=0.0)
    totals, parts, samples = [], {name: [] for name in cfg.rewards}, []
    for i in range(0, len(problems), cfg.eval_batch_size):
        chunk = problems[i : i + cfg.eval_batch_size]
        r = rollout(policy, tok, chunk, greedy, cfg.reward_map())
        totals.append(r.rewards)
        for name in parts:
            parts[name].append(r.per_reward[name])
        samples += [f"{p.question!r} -> {t!r}" for p, t in zip(chunk[:2], r.texts[:2])] if i == 0 else []
    out = {"eval_reward": float(torch.cat(totals).mean())}
    out.update({f"eval_{name}": float(torch.cat(v).mean()) for name, v in parts.items()})
    return {**out, "eval_samples": samples}


# ---- one step: rollouts -> advantages -> clipped policy-gradient updates -------------------------------------


@torch.no_grad()
def per_token_logps(model: Any, rows: Rows, micro: int, temperature: float) -> torch.Tensor:
    """(B, T - 1) completion log-probs of `rows` without gradients, in chunks of `micro` rows."""
    return torch.cat([token_logprobs(model, sub, temperature)[0] for sub in chunks(rows, micro)])


def chunks(rows: Rows, micro: int) -> list[Rows]:
    """Consecutive slices of `micro` rows (kept at the full width T, so per-token tensors line up)."""
    n = rows.input_ids.shape[0]
    return [Rows(*(t[i : i + micro] for t in (rows.input_ids, rows.positions, rows.completion_mask)))
            for i in range(0, n, micro)]  # fmt: skip


def train_step(
    cfg: GRPOConfig, policy: Any, ref_model: Any, opt: torch.optim.Optimizer, ro: Rollouts, lr: float, device: str
) -> dict[str, float]:
    """`num_iterations` optimizer steps on one batch of rollouts; returns the last pass's loss and stats."""
    rows = trim(ro.rows).to(device)
    adv = group_advantages(ro.rewards, cfg.group_size, cfg.scale_rewards).to(device)  # (N,)
    T = cfg.sampling.temperature  # log-probs of the tempered policy the rollouts were sampled from
    old = per_token_logps(policy, rows, cfg.micro_batch, T) if cfg.num_iterations > 1 else None
    ref = per_token_logps(ref_model, rows, cfg.micro_batch, T) if cfg.beta > 0 else None
    n_rows = rows.input_ids.shape[0]
    stats: dict[str, float] = {}
    for _ in range(cfg.num_iterations):
        stats = {"loss": 0.0, "kl": 0.0, "clip_low": 0.0, "clip_high": 0.0}
        for k, sub in enumerate(chunks(rows, cfg.micro_batch)):
            sl = slice(k * cfg.micro_batch, k * cfg.micro_batch + sub.input_ids.shape[0])
            logps, mask = token_logprobs(policy, sub, T)  # (b, T - 1) with gradients
            old_sub = old[sl] if old is not None else logps.detach()  # mu = 1: pi_old is pi itself (ratio 1)
            ref_sub = ref[sl] if ref is not None else None
            eps_high = cfg.epsilon_high or cfg.epsilon
            loss, s = grpo_loss(logps, old_sub, ref_sub, adv[sl], mask, cfg.beta, cfg.epsilon, eps_high, cfg.loss_type,
                                cfg.sampling.max_new_tokens)  # fmt: skip
            # each chunk's loss is a mean over its rows; weight by the chunk's share of the step's rows
            (loss * sub.input_ids.shape[0] / n_rows).backward()  # fmt: skip
            for key, v in {"loss": float(loss.detach()), **s}.items():
                stats[key] += v * sub.input_ids.shape[0] / n_rows
        norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        set_lr(opt, lr)
        opt.step()
        opt.zero_grad(set_to_none=True)
        stats["grad_norm"] = float(norm)
    return stats


# ---- the recipe ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything the loop reads, built once by `setup`."""

    cfg: GRPOConfig
    policy: Any  # the model being trained
    ref_model: Any  # the frozen initial policy (beta > 0), else None
    tok: Any
    opt: torch.optim.Optimizer
    train_problems: list[Problem]
    eval_problems: list[Problem]
    log: JsonlLogger
    ckpt: Path
    identity: dict[str, Any]  # what a resume must match (checkpoint.check_expect)
    save_model: Any  # (state_dict, dir) -> writes the HF model directory
    load_weights: Any  # dir -> state_dict
    device: str


def setup(cfg: GRPOConfig) -> Run:
    device = setup_device(cfg.device, cfg.threads)
    out = Path(cfg.out_dir)
    check_out_dir(out, cfg.resume, cfg.overwrite)
    policy, tok = load_policy(cfg.model, device)
    train_problems, eval_problems = splits(cfg.task, cfg.n_train, cfg.n_eval, cfg.seed)
    ref_model = frozen(policy) if cfg.beta > 0 else None  # the initial policy, before any checkpoint is loaded
    info(f"grpo: {train_last_layers(policy, cfg.train_layers) / 1e6:.2f} M trainable parameters")
    opt = build_optimizer(policy, cfg.lr, cfg.weight_decay)
    keys = ("task", "n_train", "prompts_per_step", "group_size", "max_steps", "lr", "train_layers", "beta", "seed")
    identity = {"model": cfg.model, **{k: getattr(cfg, k) for k in keys}}
    out.mkdir(parents=True, exist_ok=True)
    log = JsonlLogger(out / "metrics.jsonl", append=cfg.resume)
    return Run(cfg, policy, ref_model, tok, opt, train_problems, eval_problems, log, out / CKPT, identity,
               *checkpoint_fns(policy, tok), device)  # fmt: skip


def train(cfg: GRPOConfig) -> dict[str, Any]:
    """Run GRPO; return held-out reward before and after, the step count and timings."""
    t_start, cpu_start = time.perf_counter(), time.process_time()
    run = setup(cfg)
    if cfg.resume:
        read_state(run.ckpt)  # a clear error first if it is missing or corrupted
        state = load_checkpoint(run.ckpt, run.policy, run.opt, run.identity, run.load_weights(run.ckpt))
    else:
        before = evaluate(cfg, run.policy, run.tok, run.eval_problems)
        state = {"step": 0, "elapsed_s": 0.0, "rollout_s": 0.0, "before": before}
        run.log.log(step=0, **before)
    atomic_write_text(Path(cfg.out_dir) / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    info(f"grpo: {cfg.prompts_per_step} prompts x {cfg.group_size} samples per step, rewards {cfg.reward_map()}, "
         f"held-out reward before: {state['before']['eval_reward']:.3f}")  # fmt: skip
    interrupted = False
    with interruptible():  # SIGTERM takes the Ctrl-C path: save, exit 130
        try:
            loop(run, state)
        except KeyboardInterrupt:
            interrupted = True
            info(f"grpo: interrupted at step {state['step']}; saving {run.ckpt}")
        save_checkpoint(run.ckpt, run.policy, run.opt, state, run.identity, run.save_model)
    if interrupted or (cfg.stop_after and state["step"] < cfg.max_steps):
        return {**state, "interrupted": interrupted, "stopped": True}
    after = evaluate(cfg, run.policy, run.tok, run.eval_problems)
    timing = {"wall_s": time.perf_counter() - t_start, "cpu_s": time.process_time() - cpu_start}
    run.log.log(step=state["step"], final=True, **after, **timing)
    panels = [("reward", ["reward", "eval_reward"]), ("KL to reference", ["kl"])]
    plot = plot_curves(cfg.out_dir, panels, f"GRPO on {cfg.task}: {cfg.model}")
    return {"before": state["before"], "after": after, "steps": state["step"], "train_s": state["elapsed_s"],
            "rollout_s": state["rollout_s"], "checkpoint": str(run.ckpt), "plot": str(plot), **timing}  # fmt: skip


def loop(run: Run, state: dict[str, Any]) -> None:
    """Rollout + update steps until the budget is spent; mutates `state` (step, elapsed_s, rollout_s)."""
    cfg, schedule = run.cfg, run.cfg.lr_schedule()
    bar = progress(total=cfg.max_steps, initial=state["step"], unit="step")
    while state["step"] < cfg.max_steps and not (cfg.stop_after and state["step"] >= cfg.stop_after):
        step = state["step"]
        idx = batch_indices(len(run.train_problems), cfg.prompts_per_step, step, cfg.seed)
        t0 = time.perf_counter()
        ro = rollout(run.policy, run.tok, [run.train_problems[i] for i in idx], cfg.rollout_params(step),
                     cfg.reward_map())  # fmt: skip
        t1 = time.perf_counter()
        m = train_step(cfg, run.policy, run.ref_model, run.opt, ro, schedule.lr((step + 1) / cfg.max_steps), run.device)
        dt = time.perf_counter() - t0
        state.update(step=step + 1, elapsed_s=state["elapsed_s"] + dt, rollout_s=state["rollout_s"] + t1 - t0)
        reward = float(ro.rewards.mean())
        bar.update(1)
        bar.set_postfix(reward=f"{reward:.3f}", kl=f"{m['kl']:.4f}", refresh=False)
        if state["step"] % cfg.log_every == 0 or state["step"] == 1:
            extra = {f"reward_{k}": float(v.mean()) for k, v in ro.per_reward.items()}
            run.log.log(step=state["step"], elapsed_s=state["elapsed_s"], reward=reward,
                        reward_std=float(ro.rewards.std()), ended=float(ro.ended.float().mean()),
                        completion_len=float(ro.rows.completion_lengths.mean()), rollout_s=t1 - t0, **extra, **m,
                        sample=ro.texts[0])  # fmt: skip
        if not math.isfinite(m["loss"]):
            raise FloatingPointError(f"loss is {m['loss']} at step {state['step']}; lower --lr")
        done = state["step"] >= cfg.max_steps
        if cfg.eval_every and state["step"] % cfg.eval_every == 0 and not done:
            ev = evaluate(cfg, run.policy, run.tok, run.eval_problems)
            run.log.log(step=state["step"], **ev)
            bar.set_postfix(reward=f"{reward:.3f}", eval_reward=f"{ev['eval_reward']:.3f}", refresh=False)
        if cfg.ckpt_every and state["step"] % cfg.ckpt_every == 0 and not done:
            save_checkpoint(run.ckpt, run.policy, run.opt, state, run.identity, run.save_model)
    bar.close()


def main(cfg: GRPOConfig) -> int:
    result = train(cfg)
    if result.get("stopped"):
        return 130 if result.get("interrupted") else 0
    b, a = result["before"], result["after"]
    parts = " ".join(f"eval_{n}={b[f'eval_{n}']:.3f}->{a[f'eval_{n}']:.3f}" for n in cfg.rewards)
    print(f"steps={result['steps']} wall_s={result['wall_s']:.0f} cpu_s={result['cpu_s']:.0f} "
          f"rollout_s={result['rollout_s']:.1f} "
          f"eval_reward={b['eval_reward']:.3f}->{a['eval_reward']:.3f} {parts} plot={result['plot']} "
          f"checkpoint={result['checkpoint']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    import sys

    from lmstack.cli import main as cli_main

    sys.exit(cli_main(["grpo", *sys.argv[1:]]))
