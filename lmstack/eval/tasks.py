"""The tasks `lmstack eval --tasks` knows: name -> what runs it, which settings its result depends on, and its
headline metric. A table, not a registry: add a row to add a task.

| task          | kind                          | headline | module             |
|---------------|-------------------------------|----------|--------------------|
| social_iqa    | multiple choice, 3 options    | acc      | multiple_choice.py |
| quartz        | multiple choice, 2 options    | acc      | multiple_choice.py |
| mmlu          | multiple choice (cloze)       | acc_norm | multiple_choice.py |
| mmlu_letters  | multiple choice (letters)     | acc      | multiple_choice.py |
| logiqa        | multiple choice, 4 options    | acc_norm | multiple_choice.py |
| arithmetic    | generated, exact number       | acc      | generative.py      |
| gsm           | generated, exact number       | acc      | generative.py      |
| humaneval     | code, unit tests in a sandbox | pass@1   | humaneval.py       |
| perplexity    | bits per byte on a corpus     | bpb      | perplexity.py      |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmstack.model.causal_lm import CausalLM


@dataclass(frozen=True)
class Task:
    run: Callable[..., dict[str, Any]]  # (model, tokenizer, cfg, show_progress) -> result dict
    settings: tuple[str, ...]  # EvalConfig fields the result depends on (with the model): the cache key
    headline: str  # the metric the summary table shows first
    higher_is_better: bool = True
    version: int = 1  # bumped when the task's data or scoring changes: part of the cache key from 2 on


def _limit(cfg: Any, default: int | None = None) -> int | None:
    return cfg.limit if cfg.limit > 0 else default


def _fewshot(cfg: Any, default: int) -> int:
    return cfg.num_fewshot if cfg.num_fewshot >= 0 else default


def _mc(task: str) -> Callable[..., dict[str, Any]]:
    def run(model: CausalLM, tok: Any, cfg: Any, show_progress: bool) -> dict[str, Any]:
        from lmstack.eval.multiple_choice import evaluate_mc

        return {
            **evaluate_mc(model, tok, task, _limit(cfg), _fewshot(cfg, 0), cfg.seed, show_progress),
            "num_fewshot": _fewshot(cfg, 0),
        }

    return run


def _generative(task: str) -> Callable[..., dict[str, Any]]:
    def run(model: CausalLM, tok: Any, cfg: Any, show_progress: bool) -> dict[str, Any]:
        from lmstack.eval.generative import evaluate_generative

        return {
            **evaluate_generative(model, tok, task, _limit(cfg, 100), _fewshot(cfg, 3), cfg.seed),
            "num_fewshot": _fewshot(cfg, 3),
        }

    return run


def _humaneval(model: CausalLM, tok: Any, cfg: Any, show_progress: bool) -> dict[str, Any]:
    from lmstack.eval.humaneval import evaluate_humaneval

    temperature = cfg.temperature if cfg.humaneval_samples > 1 else 0.0
    return evaluate_humaneval(model, tok, _limit(cfg), cfg.humaneval_samples, temperature, cfg.max_new_tokens,
                              seed=cfg.seed, timeout_s=cfg.timeout_s, allow_weak=cfg.sandbox == "rlimits",
                              show_progress=show_progress, chat=cfg.humaneval_chat)  # fmt: skip


def _perplexity(model: CausalLM, tok: Any, cfg: Any, show_progress: bool) -> dict[str, Any]:
    from lmstack.data.corpus import load_corpus, load_files
    from lmstack.eval.perplexity import perplexity

    src = cfg.ppl_corpus
    docs = load_files(src.split(",")) if any(c in src for c in "/.") else load_corpus(src, "val")
    docs = docs[: _limit(cfg)] if _limit(cfg) else docs
    r = perplexity(model, tok, docs)
    return {"metrics": {"bpb": r["val_bpb"], "ppl": r["val_ppl"], "loss": r["val_loss"]}, "ci": {},
            "items": [], "n": len(docs), "texts": {}}  # fmt: skip


MC_SETTINGS = ("limit", "num_fewshot", "seed")
TASKS: dict[str, Task] = {
    "social_iqa": Task(_mc("social_iqa"), MC_SETTINGS, "acc"),
    "quartz": Task(_mc("quartz"), MC_SETTINGS, "acc"),
    "mmlu": Task(_mc("mmlu"), MC_SETTINGS, "acc_norm"),
    "mmlu_letters": Task(_mc("mmlu_letters"), MC_SETTINGS, "acc"),
    "logiqa": Task(_mc("logiqa"), MC_SETTINGS, "acc_norm"),
    "arithmetic": Task(_generative("arithmetic"), MC_SETTINGS, "acc", version=2),  # 2: easier config, final number
    "gsm": Task(_generative("gsm"), MC_SETTINGS, "acc", version=2),
    "humaneval": Task(
        _humaneval, ("limit", "humaneval_samples", "temperature", "max_new_tokens", "seed", "humaneval_chat"), "pass@1"
    ),  # fmt: skip
    "perplexity": Task(_perplexity, ("limit", "ppl_corpus"), "bpb", higher_is_better=False),
}


def parse_tasks(spec: str) -> list[str]:
    """'social_iqa,mmlu' -> ['social_iqa', 'mmlu']; unknown names are an error naming the valid ones."""
    names = [t.strip() for t in spec.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise ValueError(f"--tasks={spec!r}: unknown {unknown or 'empty'}; choose from {', '.join(TASKS)}")
    return names
