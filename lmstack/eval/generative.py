"""Generative tasks with answer extraction: the model writes an answer, a parser pulls the number out, an exact
scorer decides.

Problems come from `reasoning-gym` (seeded procedural generators with exact scorers; nothing to download):

| task       | generator          | example                                                                    |
|------------|--------------------|----------------------------------------------------------------------------|
| arithmetic | `basic_arithmetic` | 2-3 terms of 1-2 digits: "Calculate -( 20 + 67 + -59 )." -> -28             |
| gsm        | `gsm_symbolic`     | GSM8K templates with fresh numbers (Mirzadeh et al. 2024, "GSM-Symbolic") |

Prompt: k solved examples then the question, "Question: ...\nAnswer:" (the examples come from the same generator
with another seed, so they never repeat a test item); greedy decoding stops at the first newline. Extraction
(`extract_number`, mode "final"): the number after "answer is" / "####", else the last number written — a model that
restates the problem ("313 + -345 = 668") is scored on its result, not on the first operand; commas and a trailing
".0" are dropped. The generator's default arithmetic (up to 6 terms of 4 digits) is beyond a 135M model, so the task
uses 2-3 terms of 1-2 digits, where answering directly, reasoning and a calculator tool differ measurably.
Scoring: the generator's own `score_answer` (1.0 = exact) on the extracted string.
Left out: the original GSM8K test set (not in any package here), MATH-style LaTeX answers, partial credit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from lmstack.eval.confidence import interval
from lmstack.generate import GenerationStats, SamplingParams, generate
from lmstack.model.causal_lm import CausalLM

GENERATORS = {  # task -> (reasoning-gym generator, its config)
    "arithmetic": ("basic_arithmetic", {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2}),
    "gsm": ("gsm_symbolic", {}),
}
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass
class Problem:
    id: str
    question: str
    answer: str  # the exact answer as the generator prints it
    cot: str = ""  # a worked solution when the generator has one (gsm), for chain-of-thought examples
    entry: dict = field(default_factory=dict, repr=False)  # the generator's item, for its scorer


def _dataset(task: str, size: int, seed: int) -> Any:
    try:
        import reasoning_gym
    except ImportError:
        raise ImportError("the arithmetic / gsm tasks need reasoning-gym: pip install reasoning-gym==0.1.25") from None
    if task not in GENERATORS:
        raise ValueError(f"unknown generative task {task!r}; expected one of {', '.join(GENERATORS)}")
    name, kwargs = GENERATORS[task]
    return reasoning_gym.create_dataset(name, size=size, seed=seed, **kwargs)


def load_problems(task: str, n: int, seed: int = 1234) -> list[Problem]:
    """n problems of `task`, the same ones for the same seed."""
    ds = _dataset(task, n, seed)
    return [Problem(f"{task}/{seed}/{i}", e["question"], str(e["answer"]), _cot(e), e) for i, e in enumerate(ds)]


def _cot(entry: dict) -> str:
    steps = entry.get("metadata", {}).get("answer_cot", "")
    return re.sub(r"\s*####\s*\S+\s*$", "", steps).strip()


def is_correct(task: str, problem: Problem, answer: str | None) -> bool:
    """The generator's exact scorer on an extracted answer (None = nothing extracted = wrong)."""
    if answer is None:
        return False
    return _scorer(task).score_answer(answer=answer, entry=problem.entry) == 1.0


@cache
def _scorer(task: str) -> Any:
    return _dataset(task, 1, 0)


def _clean(num: str) -> str:
    num = num.replace(",", "")
    return num[:-2] if num.endswith(".0") else num


def extract_number(text: str, mode: str = "first") -> str | None:
    """The answer number in model output. mode 'first': the first number (direct answers); 'final': the number after
    'answer is' or '####' if present, else the last number (reasoning chains)."""
    if mode == "final":
        m = re.search(r"(?:answer is|####)\s*:?\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", text, re.I)
        if m:
            return _clean(m[1])
        nums = _NUMBER.findall(text)
        return _clean(nums[-1]) if nums else None
    m = _NUMBER.search(text)
    return _clean(m[0]) if m else None


def generate_texts(
    model: CausalLM, tokenizer: Any, prompts: list[str], params: SamplingParams, batch_size: int = 16
) -> list[str]:
    """`generate_text` in batches, with each prompt cut from the left to fit the model's window (a small model's
    128-token window cannot hold a 3-shot prompt; the question, at the end, is kept). Rows: prompt-major, n each."""
    keep = model.config.max_seq_len - params.max_new_tokens
    if keep < 1:
        raise ValueError(
            f"max_new_tokens={params.max_new_tokens} leaves no room in a {model.config.max_seq_len}-token window"
        )
    out: list[str] = []
    for s in range(0, len(prompts), batch_size):
        ids = [
            tokenizer.encode(p, allowed_special="all")[-keep:] or [tokenizer.eos_id]
            for p in prompts[s : s + batch_size]
        ]
        stats = GenerationStats()
        rows = generate(model, ids, params, tokenizer=tokenizer, stats=stats)
        out += stats.texts if stats.texts else [tokenizer.decode(r) for r in rows]
    return out


def qa_prompt(question: str, shots: list[Problem], cot: bool = False) -> str:
    """'Question: ...\\nAnswer: ...' blocks for the shots, then the open question."""
    blocks = [f"Question: {s.question}\nAnswer: {s.cot + ' The answer is ' + s.answer + '.' if cot else s.answer}"
              for s in shots]  # fmt: skip
    return "\n\n".join([*blocks, f"Question: {question}\nAnswer:"])


def evaluate_generative(
    model: CausalLM, tokenizer: Any, task: str, limit: int = 100, num_fewshot: int = 3, seed: int = 1234,
    max_new_tokens: int = 24, batch_size: int = 16,
) -> dict[str, Any]:  # fmt: skip
    """Direct answering with k-shot examples; accuracy of the extracted number."""
    problems = load_problems(task, limit, seed)
    shots = load_problems(task, num_fewshot, seed + 1) if num_fewshot else []
    prompts = [qa_prompt(p.question, shots) for p in problems]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=["\n"])
    outputs = generate_texts(model, tokenizer, prompts, params, batch_size)
    records = []
    for p, out in zip(problems, outputs):
        ans = extract_number(out, "final")
        records.append({"id": p.id, "gold": p.answer, "output": out, "extracted": ans,
                        "correct": float(is_correct(task, p, ans))})  # fmt: skip
    acc = [r["correct"] for r in records]
    return {"metrics": {"acc": sum(acc) / len(acc)}, "ci": {"acc": interval(acc)}, "items": records,
            "texts": {p.id: f"{p.question} {p.answer}" for p in problems}}  # fmt: skip
