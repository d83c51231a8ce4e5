"""Multiple-choice evaluation by log-likelihood: the model never writes an answer, it scores each option.

For a question with options c_1..c_C, every option is a continuation of the same prompt; the prediction is

    raw:                argmax_i  log p(c_i | prompt)                   (sum over the option's tokens)
    length-normalized:  argmax_i  log p(c_i | prompt) / len(c_i)         len in characters (lm-eval's `acc_norm`)

Raw scoring favours short options (fewer tokens, fewer chances to lose probability); per-character
normalization removes most of that bias (Brown et al. 2020 used per-token normalization; lm-eval and lighteval
report per-character). Calibration: a softmax over the raw log-likelihoods gives the model's probability for each
option; `calibration.py` turns the chosen option's probability into ECE.

Prompt formats (the continuation is always " " + option text unless noted):

| task         | prompt                                                                  |
|--------------|-------------------------------------------------------------------------|
| social_iqa   | "Q: {context and question}\nA:"  (lm-eval `siqa`)                        |
| quartz       | "Question: {question}\nAnswer:"                                          |
| mmlu         | "Question: {question}\nAnswer:"  (cloze, as SmolLM2's "MMLU (cloze)")    |
| mmlu_letters | "{question}\nA. ..\nB. ..\nC. ..\nD. ..\nAnswer:" -> " A" / " B" / ...    (Hendrycks et al.) |
| logiqa       | "Passage: ..\nQuestion: ..\nChoices:\nA. ..\n..\nAnswer:" (lm-eval `logiqa`) |

Few-shot: k solved examples (prompt + gold option), separated by blank lines, precede the question. They are drawn
with a seeded RNG from the same file excluding the question itself (lm-eval's rule for sets without a train
split); QuaRTz uses the 4 examples its registry ships. Left out: per-token normalization, calibrated / PMI scoring
(dividing by the option's unconditional likelihood), generative ("answer with a letter") multiple choice.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np

from lmstack.eval.calibration import choice_probabilities, expected_calibration_error
from lmstack.eval.confidence import interval
from lmstack.eval.datasets import LETTERS, MCItem, load_mc, quartz_fewshot
from lmstack.eval.loglikelihood import encode_pair, loglikelihood
from lmstack.model.causal_lm import CausalLM

MC_TASKS = ("social_iqa", "quartz", "mmlu", "mmlu_letters", "logiqa")


def _logiqa_prompt(it: MCItem) -> str:
    options = "".join(f"{LETTERS[k]}. {c}\n" for k, c in enumerate(it.choices))
    return f"Passage: {it.passage}\nQuestion: {it.question}\nChoices:\n{options}Answer:"


PROMPTS: dict[str, Callable[[MCItem], tuple[str, list[str]]]] = {
    "social_iqa": lambda it: (f"Q: {it.question}\nA:", [f" {c}" for c in it.choices]),
    "quartz": lambda it: (f"Question: {it.question}\nAnswer:", [f" {c}" for c in it.choices]),
    "mmlu": lambda it: (f"Question: {it.question}\nAnswer:", [f" {c}" for c in it.choices]),
    "mmlu_letters": lambda it: (it.source_prompt.strip(), [f" {LETTERS[k]}" for k in range(len(it.choices))]),
    "logiqa": lambda it: (_logiqa_prompt(it), [f" {c}" for c in it.choices]),
}


def load_items(task: str) -> list[MCItem]:
    return load_mc("mmlu" if task == "mmlu_letters" else task)


def fewshot_prefix(task: str, items: list[MCItem], index: int, k: int, seed: int) -> str:
    """k solved examples (not item `index`) as text, each followed by a blank line; "" when k = 0."""
    if k == 0:
        return ""
    if task == "quartz":
        pool = quartz_fewshot()
        if k > len(pool):
            raise ValueError(f"--num_fewshot={k}: QuaRTz ships {len(pool)} few-shot examples")
        shots = pool[:k]
    else:
        rng = random.Random(seed * 1_000_003 + index)  # the same shots for the same item, whatever else runs
        shots = [items[j] for j in rng.sample([j for j in range(len(items)) if j != index], k)]
    blocks = []
    for shot in shots:
        prompt, conts = PROMPTS[task](shot)
        blocks.append(prompt + conts[shot.gold])
    return "\n\n".join(blocks) + "\n\n"


def requests_for(task: str, items: list[MCItem], selected: list[int], k: int, seed: int) -> list[tuple[str, str]]:
    """(context, continuation) pairs for the selected items, choices in order."""
    reqs = []
    for i in selected:
        prompt, conts = PROMPTS[task](items[i])
        prefix = fewshot_prefix(task, items, i, k, seed)
        reqs += [(prefix + prompt, c) for c in conts]
    return reqs


def score_items(task: str, items: list[MCItem], selected: list[int], logliks: list[Any]) -> dict[str, Any]:
    """Accuracy (raw and length-normalized), ECE and per-item records from the choices' log-likelihoods."""
    records, pos = [], 0
    for i in selected:
        it = items[i]
        _, conts = PROMPTS[task](it)
        ll = [r.logprob for r in logliks[pos : pos + len(conts)]]
        pos += len(conts)
        pred = int(np.argmax(ll))
        pred_norm = int(np.argmax([v / len(c) for v, c in zip(ll, conts)]))
        probs = choice_probabilities(ll)
        records.append({"id": it.id, "gold": it.gold, "pred": pred, "pred_norm": pred_norm,
                        "correct": float(pred == it.gold), "correct_norm": float(pred_norm == it.gold),
                        "confidence": float(probs[pred]), "logliks": [round(v, 4) for v in ll]})  # fmt: skip
    acc = [r["correct"] for r in records]
    acc_norm = [r["correct_norm"] for r in records]
    metrics = {"acc": float(np.mean(acc)), "acc_norm": float(np.mean(acc_norm)),
               "ece": expected_calibration_error([r["confidence"] for r in records], acc),
               "chance": float(np.mean([1 / len(items[i].choices) for i in selected]))}  # fmt: skip
    return {"metrics": metrics, "ci": {"acc": interval(acc), "acc_norm": interval(acc_norm)}, "items": records}


def item_text(task: str, item: MCItem) -> str:
    """The text a contamination check looks for: passage, question and the gold answer."""
    return " ".join(x for x in (item.passage, item.question, item.choices[item.gold]) if x)


def evaluate_mc(
    model: CausalLM, tokenizer: Any, task: str, limit: int | None = None, num_fewshot: int = 0, seed: int = 1234,
    show_progress: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Run one multiple-choice task on the first `limit` items (all when None)."""
    if task not in PROMPTS:
        raise ValueError(f"unknown multiple-choice task {task!r}; expected one of {', '.join(PROMPTS)}")
    items = load_items(task)
    selected = list(range(len(items) if limit is None else min(limit, len(items))))
    fits = [
        i for i in selected if fits_window(tokenizer, requests_for(task, items, [i], 0, seed), model.config.max_seq_len)
    ]
    reqs = requests_for(task, items, fits, num_fewshot, seed)
    logliks = loglikelihood(model, tokenizer, reqs, show_progress=show_progress)
    out = score_items(task, items, fits, logliks)
    out["skipped"] = len(selected) - len(fits)  # an option longer than the model's whole window cannot be scored
    out["texts"] = {items[i].id: item_text(task, items[i]) for i in fits}
    return out


def fits_window(tokenizer: Any, requests: list[tuple[str, str]], max_len: int) -> bool:
    """True when every option fits the model's window (the context is truncated from the left if needed)."""
    return all(len(encode_pair(tokenizer, c, x)[1]) <= max_len for c, x in requests)
