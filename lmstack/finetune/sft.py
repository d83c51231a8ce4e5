"""Supervised fine-tuning recipe: full, LoRA, QLoRA, prompt or prefix tuning, one file that reads top to bottom.

    lmstack sft configs/sft_smollm2.yaml                     # full fine-tune -> runs/.../model (HF directory)
    lmstack lora --model=smollm2-135m --data=arithmetic      # LoRA -> runs/.../adapter (PEFT directory)
    lmstack qlora | prompt-tune | prefix-tune CONFIG.yaml    # the same recipe, another `method` default

Steps: load the base model (`--model`: a name, HF directory or .gguf) -> read the data (a JSONL file of chat
`messages` or `instruction`/`output` records, or an embedded set, chat_data.py / builtin_data.py) -> render each
conversation with the model's chat template and a loss mask on assistant tokens -> attach the method (nothing for
full fine-tuning; LoRA on `target_modules`; NF4 base + LoRA; a virtual-token table; per-layer prefix K/V) ->
score the base: held-out exact match, held-out SFT loss, and the pretraining corpus's validation loss (forgetting)
-> train: each step takes `batch_size` examples (a fixed shuffled order per epoch, a pure function of seed and
step, so resume is exact), packs or pads them (packing.py), optionally adds `replay_ratio` pretraining text, and
takes one AdamW step on the masked loss -> score again -> save the HF model (full; LoRA with `--merge`) or the
PEFT adapter. Ctrl-C / SIGTERM save a checkpoint (HF or adapter dir + trainer_state/) and exit 130; `--resume`
continues exactly.

Loss with replay: (1 - replay_ratio) * SFT loss + replay_ratio * next-token loss on `replay_batch` windows of
pretraining text (the forgetting trade-off of docs/finetune.md). Leaves out: multi-GPU, gradient accumulation
(take a smaller batch or more steps), generation-based evaluation (bench/finetune.py does it; generate sits to
the right of finetune).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lmstack.common.atomic import atomic_write_text
from lmstack.common.config import config_to_dict
from lmstack.common.log import JsonlLogger, info, progress
from lmstack.common.signals import interruptible
from lmstack.finetune import peft_format
from lmstack.finetune.builtin_data import NAMES, load_builtin
from lmstack.finetune.chat_data import Messages, Rendered, read_jsonl, render_all
from lmstack.finetune.exact_match import greedy_exact_match
from lmstack.finetune.lora import apply_lora, merged_state_dict, trainable_report
from lmstack.finetune.packing import make_batch
from lmstack.finetune.prefix_tuning import PrefixTuning
from lmstack.finetune.prompt_tuning import PromptTuning
from lmstack.finetune.qlora import base_weight_bytes, quantize_base, resident_mb
from lmstack.model import Transformer, load_model, model_path
from lmstack.train.checkpoint import load_checkpoint, read_state, save_checkpoint
from lmstack.train.optim import build_optimizer, set_lr
from lmstack.train.schedule import Schedule

METHODS = ("full", "lora", "qlora", "prompt", "prefix")
CKPT = "checkpoint"


@dataclass
class SFTConfig:
    model: str = "smollm2-135m"  # base model: local name, HF directory or .gguf file
    data: str = "arithmetic"  # training data: a .jsonl file or an embedded set (arithmetic, gsm, chatterbot, ...)
    eval_data: str = ""  # held-out .jsonl; "" = the embedded set's held-out split (nothing for a file)
    n_train: int = 2000  # training conversations drawn from a generated set (0 = all of a file or fixed set)
    n_eval: int = 200  # held-out conversations scored by exact match and loss (0 = no evaluation)
    skip_invalid: bool = False  # skip malformed JSONL lines (counted and reported) instead of stopping
    max_len: int = 256  # tokens per example; longer conversations are cut (counted)
    pack: bool = True  # pack examples into rows of max_len (attention kept per example) instead of padding
    out_dir: str = "runs/sft"  # metrics.jsonl, config.yaml, checkpoint/, model/ or adapter/ go here
    resume: bool = False  # continue exactly from <out_dir>/checkpoint
    overwrite: bool = False  # allow starting fresh over an existing <out_dir>/checkpoint
    method: str = "full"  # full | lora | qlora | prompt | prefix
    # LoRA / QLoRA
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                               "up_proj", "down_proj"])  # fmt: skip
    target_regex: str = ""  # a regex over module names instead of target_modules ("all-linear" works too)
    r: int = 8  # LoRA rank
    lora_alpha: float = 16.0  # LoRA scale numerator: scale = alpha / r (rsLoRA: alpha / sqrt(r))
    lora_dropout: float = 0.0  # dropout on the adapter's input
    rslora: bool = False  # rank-stabilized scaling alpha / sqrt(r)
    adapter_dtype: str = "float32"  # float32 | bfloat16: dtype of LoRA weights
    merge: bool = False  # LoRA: also write <out_dir>/merged, an HF directory with the adapter folded in
    # prompt / prefix tuning
    num_virtual_tokens: int = 16  # virtual tokens (prompt) or prefix length (prefix); costs that much context
    init_text: str = "Answer the question with just the final answer."  # init from this text's tokens
    # forgetting
    forgetting_corpus: str = "shakespeare"  # pretraining-style corpus: val loss before/after, replay source
    forgetting_tokens: int = 8192  # validation tokens scored before and after (0 = skip)
    replay_ratio: float = 0.0  # weight of the replay loss on pretraining text (0 = no replay)
    replay_batch: int = 4  # pretraining windows of max_len tokens per step when replay_ratio > 0
    # optimization
    batch_size: int = 16  # conversations per optimizer step
    max_steps: int = 100  # optimizer steps
    lr: float = 2e-5  # peak learning rate
    schedule: str = "cosine"  # cosine | constant | wsd
    warmup_frac: float = 0.05  # fraction of steps in linear warmup
    min_lr_ratio: float = 0.1  # final learning rate as a fraction of the peak
    weight_decay: float = 0.0  # AdamW decoupled weight decay on matrices
    grad_clip: float = 1.0  # clip the global gradient norm (0 = off)
    eval_every: int = 0  # steps between held-out loss evaluations (0 = only before and after)
    ckpt_every: int = 0  # steps between checkpoints (0 = only at the end and on Ctrl-C)
    stop_after: int = 0  # stop with a checkpoint after this many steps, as if interrupted (0 = run max_steps)
    log_every: int = 5  # steps between metrics lines
    dtype: str = "float32"  # float32 | bfloat16 (autocast; fp32 master weights)
    device: str = "auto"  # auto | cpu | cuda[:N] | mps
    threads: int = 0  # torch CPU threads (0 = torch's default)
    seed: int = 0  # data order, adapter init, replay windows

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"--method: got {self.method!r}, expected one of {', '.join(METHODS)}")
        for name in ("max_len", "batch_size", "max_steps", "r", "num_virtual_tokens", "replay_batch"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name}: got {getattr(self, name)}, expected > 0")
        for name in ("n_train", "n_eval", "forgetting_tokens", "eval_every", "ckpt_every", "stop_after", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name}: got {getattr(self, name)}, expected >= 0")
        if not 0 <= self.replay_ratio < 1:
            raise ValueError(f"--replay_ratio: got {self.replay_ratio}, expected 0 <= replay_ratio < 1")
        if self.dtype not in ("float32", "bfloat16") or self.adapter_dtype not in ("float32", "bfloat16"):
            raise ValueError(
                f"--dtype/--adapter_dtype: got {self.dtype}/{self.adapter_dtype}, expected float32|bfloat16"
            )
        if self.pack and self.method in ("prompt", "prefix"):
            raise ValueError(f"--pack: packing is not supported with --method={self.method}; pass --pack=false")
        if self.merge and self.method not in ("lora", "qlora"):
            raise ValueError(f"--merge: only for --method=lora or qlora, got {self.method}")
        if not self.data.endswith(".jsonl") and self.data not in NAMES:
            raise ValueError(f"--data: got {self.data!r}, expected a .jsonl file or one of {', '.join(NAMES)}")
        Schedule(self.schedule, self.lr, self.warmup_frac, self.min_lr_ratio)  # type: ignore[arg-type]


# ---- data --------------------------------------------------------------------------------------------------


def load_conversations(cfg: SFTConfig) -> tuple[list[Messages], list[Messages], int]:
    """(training, held-out, skipped lines) conversations."""
    if cfg.data.endswith(".jsonl"):
        train, skipped = read_jsonl(cfg.data, cfg.skip_invalid)
        train = train[: cfg.n_train] if cfg.n_train else train
    else:
        train, skipped = load_builtin(cfg.data, "train", cfg.n_train, cfg.seed), 0
    if not cfg.n_eval:
        return train, [], skipped
    if cfg.eval_data:
        held, bad = read_jsonl(cfg.eval_data, cfg.skip_invalid)
        return train, held[: cfg.n_eval], skipped + bad
    if cfg.data in NAMES:
        return train, load_builtin(cfg.data, "held_out", cfg.n_eval), skipped
    return train, [], skipped


def corpus_tokens(tok: Any, name: str, split: str, n_tokens: int) -> np.ndarray:
    """The first ~n_tokens tokens of a corpus split, documents joined by EOS (the pretraining layout)."""
    from lmstack.data.corpus import load_corpus

    ids: list[int] = []
    for doc in load_corpus(name, split):
        ids += tok.encode(doc[: n_tokens * 8]) + ([tok.eos_id] if tok.eos_id is not None else [])
        if len(ids) > n_tokens:
            break
    return np.asarray(ids[: n_tokens + 1], dtype=np.int64)


def step_examples(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Example indices of optimizer step `step`: epochs are fixed permutations seeded by (seed, epoch)."""
    out = []
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(k, n)
        out.append(int(np.random.default_rng([seed, epoch]).permutation(n)[i]))
    return out


# ---- model + method -----------------------------------------------------------------------------------------


def build(cfg: SFTConfig, device: str) -> tuple[torch.nn.Module, Transformer, Any]:
    """(the module that trains, the underlying Transformer, tokenizer) with the method attached."""
    base, tok = load_model(cfg.model, device)
    base.train()
    torch.manual_seed(cfg.seed)
    if cfg.method == "full":
        return base, base, tok
    if cfg.method == "qlora":
        quantize_base(base)
    if cfg.method in ("lora", "qlora"):
        targets = cfg.target_regex or cfg.target_modules
        dtype = torch.bfloat16 if cfg.adapter_dtype == "bfloat16" else torch.float32
        apply_lora(base, targets, cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.rslora, dtype)
        return base, base, tok
    init = tok.encode(cfg.init_text) or [0]
    init = (init * (cfg.num_virtual_tokens // len(init) + 1))[: cfg.num_virtual_tokens]
    if cfg.method == "prompt":
        return PromptTuning(base, init).to(device), base, tok
    wrapper = PrefixTuning(base, cfg.num_virtual_tokens, seed=cfg.seed).to(device)
    wrapper.init_prefix_from_text(init)
    return wrapper, base, tok


def adapter_config(cfg: SFTConfig, model: torch.nn.Module) -> dict[str, Any]:
    base = str(model_path(cfg.model))
    if cfg.method in ("lora", "qlora"):
        targets = cfg.target_regex or cfg.target_modules
        return peft_format.lora_config(targets, cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.rslora, base)
    return model.peft_config(base)


def save_output(cfg: SFTConfig, model: torch.nn.Module, base: Transformer, tok: Any, d: Path) -> None:
    """The run's product into directory d: an HF model (full) or a PEFT adapter (the other methods)."""
    if cfg.method == "full":
        base.save_pretrained(d, tokenizer=tok)
    elif cfg.method in ("lora", "qlora"):
        peft_format.save_lora(base, d, adapter_config(cfg, model))
    else:
        peft_format.write_adapter(d, adapter_config(cfg, model), model.peft_tensors())


def restore_output(cfg: SFTConfig, model: torch.nn.Module, base: Transformer, d: Path) -> dict[str, torch.Tensor]:
    """Read back what `save_output` wrote into the live model; returns the full state dict for the optimizer."""
    if cfg.method == "full":
        return Transformer.from_pretrained(d).state_dict()
    tensors = peft_format.read_adapter_weights(d)
    if cfg.method in ("prompt", "prefix"):
        model.load_peft_tensors(tensors)
    else:
        names = peft_format.module_names(base)
        for ours, layer in peft_format.lora_layers(base).items():
            for part in ("lora_A", "lora_B"):
                getattr(layer, part).weight.data.copy_(tensors[f"{peft_format.PREFIX}{names[ours]}.{part}.weight"])
    return model.state_dict()


# ---- evaluation ---------------------------------------------------------------------------------------------


@torch.no_grad()
def sft_loss(model: torch.nn.Module, examples: list[Rendered], cfg: SFTConfig, device: str) -> float:
    """Mean loss per supervised token over `examples` (held-out SFT loss)."""
    was, nats, count = model.training, 0.0, 0
    model.eval()
    for i in range(0, len(examples), cfg.batch_size):
        x, pos, y = make_batch(examples[i : i + cfg.batch_size], False, cfg.max_len)
        n = int((y != -100).sum())
        nats += float(model(x.to(device), positions=pos.to(device), targets=y.to(device)).loss) * n
        count += n
    model.train(was)
    return nats / max(count, 1)


def corpus_loss(model: torch.nn.Module, tokens: np.ndarray, cfg: SFTConfig, device: str) -> float:
    from lmstack.train.evaluate import evaluate

    seq = min(cfg.max_len, model.config.max_seq_len - getattr(model, "n_virtual", 0))
    return evaluate(model, tokens, max(len(tokens), 1), seq, 8, device)["val_loss"]


def scores(model: Any, tok: Any, held: list[Messages], val: Any, cfg: SFTConfig, device: str) -> dict[str, float]:
    out: dict[str, float] = {}
    if held:  # one teacher-forced forward gives both (exact_match.py)
        em = greedy_exact_match(model, tok, held, cfg.batch_size, device)
        out["exact_match"], out["heldout_loss"] = em["accuracy"], em["answer_loss"]
    if val is not None:
        out["corpus_val_loss"] = corpus_loss(model, val, cfg, device)
    return out


# ---- the recipe -----------------------------------------------------------------------------------------------


def train(cfg: SFTConfig) -> dict[str, Any]:
    from lmstack.common.seed import pick_device

    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out, ckpt = Path(cfg.out_dir), Path(cfg.out_dir) / CKPT
    if not cfg.resume and ckpt.exists() and not cfg.overwrite:
        raise ValueError(f"--out_dir: {out} already has a checkpoint; pass --resume to continue or --overwrite")
    model, base, tok = build(cfg, device)
    rss_model = resident_mb()
    train_c, held_c, skipped = load_conversations(cfg)
    examples, counts = render_all(tok, train_c, cfg.max_len)
    held_r, _ = render_all(tok, held_c, cfg.max_len)
    val = corpus_tokens(tok, cfg.forgetting_corpus, "val", cfg.forgetting_tokens) if cfg.forgetting_tokens else None
    replay = None
    if cfg.replay_ratio > 0:
        from lmstack.data.batches import RandomBatches

        text = corpus_tokens(tok, cfg.forgetting_corpus, "train", 200_000)
        replay = RandomBatches(text, cfg.replay_batch, cfg.max_len - 1, cfg.seed)
    report = trainable_report(model)
    info(f"{cfg.method}: {len(examples)} training conversations ({counts['truncated']} cut to {cfg.max_len} "
         f"tokens, {counts['dropped']} without targets dropped, {skipped} invalid lines skipped), {len(held_c)} "
         f"held out; trainable {report['trainable']:,} of {report['total']:,} parameters "
         f"({report['trainable_pct']:.3f} %)")  # fmt: skip
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay)
    schedule = Schedule(cfg.schedule, cfg.lr, cfg.warmup_frac, cfg.min_lr_ratio)  # type: ignore[arg-type]
    identity = {"model": cfg.model, "method": cfg.method, "data": cfg.data, "n_train": len(examples),
                "batch_size": cfg.batch_size, "max_steps": cfg.max_steps, "lr": cfg.lr, "seed": cfg.seed}  # fmt: skip
    state: dict[str, Any] = {"step": 0, "elapsed_s": 0.0}
    if cfg.resume:
        saved = read_state(ckpt)
        state = load_checkpoint(ckpt, model, opt, identity, restore_output(cfg, model, base, ckpt))
        assert state["step"] == saved["step"]
        before = state["before"]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    log = JsonlLogger(out / "metrics.jsonl", append=cfg.resume)
    if not cfg.resume:
        before = scores(model, tok, held_c, val, cfg, device)
        log.log(step=0, phase="before", **before, **report, base_weight_mb=base_weight_bytes(base) / 2**20)
        info(f"{cfg.method}: before training {fmt(before)}")
    state["before"] = before

    def save() -> None:
        save_checkpoint(ckpt, model, opt, state, identity, lambda msd, d: save_output(cfg, model, base, tok, d))

    interrupted = False
    with interruptible():
        try:
            loop(cfg, state, model, opt, schedule, examples, replay, held_r, log, save, device)
        except KeyboardInterrupt:
            interrupted = True
            info(f"{cfg.method}: interrupted at step {state['step']}; saving {ckpt}")
    save()
    if interrupted or (cfg.stop_after and state["step"] < cfg.max_steps):
        return {**state, "interrupted": interrupted, "stopped": True}
    after = scores(model, tok, held_c, val, cfg, device)
    product = out / ("model" if cfg.method == "full" else "adapter")
    save_output(cfg, model, base, tok, product)
    if cfg.merge:
        plain = Transformer(base.config)
        plain.load_state_dict(merged_state_dict(base))
        plain.save_pretrained(out / "merged", tokenizer=tok)
    result = {"steps": state["step"], "train_s": state["elapsed_s"], "process_cpu_s": time.process_time(),
              **{f"before_{k}": v for k, v in before.items()},
              **{f"after_{k}": v for k, v in after.items()}, "trainable": report["trainable"],
              "resident_mb_model": rss_model, "output": str(product)}  # fmt: skip
    log.log(step=state["step"], phase="after", final=True, **result)
    info(f"{cfg.method}: after {state['step']} steps {fmt(after)}; wrote {product}")
    return result


def fmt(s: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in s.items())


def train_step(
    model: torch.nn.Module, opt: torch.optim.Optimizer, batch: tuple, replay: Any, cfg: SFTConfig, lr: float,
    device: str,
) -> tuple[float, float]:  # fmt: skip
    """One AdamW step on (1 - w) SFT loss + w replay loss; returns (loss, grad norm)."""
    x, pos, y = (t.to(device) for t in batch)
    amp = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.dtype == "bfloat16")
    with amp:
        loss = model(x, positions=pos, targets=y).loss  # mean over assistant tokens (prompt targets are -100)
        if replay is not None:
            rx, ry = (t.to(device) for t in next(replay))  # (replay_batch, max_len - 1) pretraining windows
            loss = (1 - cfg.replay_ratio) * loss + cfg.replay_ratio * model(rx, targets=ry).loss
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
    set_lr(opt, lr)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item(), float(norm)


def loop(
    cfg: SFTConfig, state: dict[str, Any], model: torch.nn.Module, opt: torch.optim.Optimizer, schedule: Schedule,
    examples: list[Rendered], replay: Any, held_r: list[Rendered], log: JsonlLogger, save: Any, device: str,
) -> None:  # fmt: skip
    bar = progress(total=cfg.max_steps, initial=state["step"], unit="step")
    while state["step"] < cfg.max_steps and not (cfg.stop_after and state["step"] >= cfg.stop_after):
        step = state["step"]
        batch = make_batch([examples[i] for i in step_examples(len(examples), cfg.batch_size, step, cfg.seed)],
                           cfg.pack, cfg.max_len)  # fmt: skip
        if replay is not None:
            replay.step = step  # the replay windows of step s are a pure function of (seed, s)
        lr = schedule.lr(step / cfg.max_steps)
        t0 = time.perf_counter()
        loss, norm = train_step(model, opt, batch, replay, cfg, lr, device)
        dt = time.perf_counter() - t0
        state.update(step=step + 1, elapsed_s=state["elapsed_s"] + dt)
        bar.update(1)
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {step + 1}; lower --lr")
        if state["step"] % cfg.log_every == 0 or state["step"] == 1:
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            log.log(step=state["step"], loss=loss, lr=lr, grad_norm=norm, step_s=dt, rows=int(batch[0].shape[0]),
                    elapsed_s=state["elapsed_s"])  # fmt: skip
        if cfg.eval_every and state["step"] % cfg.eval_every == 0 and held_r:
            log.log(step=state["step"], heldout_loss=sft_loss(model, held_r, cfg, device))
        if cfg.ckpt_every and state["step"] % cfg.ckpt_every == 0 and state["step"] < cfg.max_steps:
            save()
    bar.close()


def main(cfg: SFTConfig) -> int:
    result = train(cfg)
    keys = [k for k in result if k.startswith(("before_", "after_"))] + ["steps", "train_s", "process_cpu_s", "output"]
    print(" ".join(f"{k}={result[k]:.4g}" if isinstance(result[k], float) else f"{k}={result[k]}"
                   for k in keys if k in result))  # fmt: skip
    return 130 if result.get("interrupted") else 0


# One config class per command: the same recipe with another method default (and a learning rate that suits it).
@dataclass
class LoraConfig(SFTConfig):
    method: str = "lora"  # full | lora | qlora | prompt | prefix
    lr: float = 1e-3  # peak learning rate
    out_dir: str = "runs/lora"  # metrics.jsonl, config.yaml, checkpoint/, adapter/ go here


@dataclass
class QLoraConfig(SFTConfig):
    method: str = "qlora"  # full | lora | qlora | prompt | prefix
    lr: float = 1e-3  # peak learning rate
    out_dir: str = "runs/qlora"  # metrics.jsonl, config.yaml, checkpoint/, adapter/ go here


@dataclass
class PromptTuneConfig(SFTConfig):
    method: str = "prompt"  # full | lora | qlora | prompt | prefix
    lr: float = 3e-2  # peak learning rate
    pack: bool = False  # packing is not supported with prompt tuning
    out_dir: str = "runs/prompt"  # metrics.jsonl, config.yaml, checkpoint/, adapter/ go here


@dataclass
class PrefixTuneConfig(SFTConfig):
    method: str = "prefix"  # full | lora | qlora | prompt | prefix
    lr: float = 1e-2  # peak learning rate
    pack: bool = False  # packing is not supported with prefix tuning
    out_dir: str = "runs/prefix"  # metrics.jsonl, config.yaml, checkpoint/, adapter/ go here


if __name__ == "__main__":
    import sys

    from lmstack.cli import main as cli_main

    sys.exit(cli_main(["sft", *sys.argv[1:]]))
