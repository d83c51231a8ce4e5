"""Benchmark: what prompting techniques buy (or cost) a 135M model, on the same held-out problems.

Programs (lmstack/eval/prompting.py, react.py): direct answering, 3-shot, 3-shot chain-of-thought,
self-consistency (k samples of the chain-of-thought prompt, majority vote) and ReAct with a calculator (these
problems need no retrieval; `react.retrieval_tool` adds a RAG search). Problems: reasoning-gym `basic_arithmetic`
and `gsm_symbolic`, seed 1234 (test) and 99 (examples), scored by the generators' exact scorers. Also reported:
self-consistency agreement as an uncertainty score (AUROC for wrong answers, hallucination.py), and LLM-as-judge
(judge.py) agreement with ground truth on pairs (correct answer, wrong answer) in both orders.
Run: `OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/prompting.py [--n=40] [--k=5]`; writes the "prompting"
section of docs/benchmarks.md. SmolLM2-135M on a shared 2-core CPU: tens of minutes.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402
from lmstack.eval.confidence import wilson  # noqa: E402
from lmstack.eval.generative import is_correct, load_problems  # noqa: E402
from lmstack.eval.hallucination import uncertainty_vs_correctness  # noqa: E402
from lmstack.eval.judge import agreement, judge_pairs  # noqa: E402
from lmstack.eval.prompting import chain_of_thought, direct, few_shot, self_consistency  # noqa: E402
from lmstack.eval.react import react  # noqa: E402
from lmstack.model import load_model  # noqa: E402


def arg(name: str, default: int) -> int:
    return next((int(a.split("=")[1]) for a in sys.argv if a.startswith(f"--{name}=")), default)


def make_programs(model, tok, qs: list[str], plain_shots: list, shots: list, k: int) -> dict:
    """Each technique as a thunk over the same questions."""
    return {
        "direct (0-shot)": lambda: direct(model, tok, qs),
        "3-shot": lambda: few_shot(model, tok, qs, plain_shots),
        "3-shot chain-of-thought": lambda: chain_of_thought(model, tok, qs, shots, max_new_tokens=128),
        f"self-consistency (k={k})": lambda: self_consistency(model, tok, qs, shots, k=k, max_new_tokens=128),
        "ReAct + calculator": lambda: react(model, tok, qs, max_steps=3),
    }


def main() -> None:
    n, k = arg("n", 40), arg("k", 5)
    model, tok = load_model("smollm2-135m", device="cpu")
    rows, sc_uncertainty, judge_rows = [], {}, []
    for task in ("arithmetic", "gsm"):
        problems = load_problems(task, n, seed=1234)
        shots = load_problems("gsm", 3, seed=99)  # worked solutions for the chain-of-thought examples
        plain_shots = load_problems(task, 3, seed=99)
        qs = [p.question for p in problems]
        programs = make_programs(model, tok, qs, plain_shots, shots, k)
        for name, run in programs.items():
            t = time.perf_counter()
            answers = run()
            seconds = time.perf_counter() - t
            correct = [is_correct(task, p, a.answer) for p, a in zip(problems, answers)]
            lo, hi = wilson(sum(correct), n)
            rows.append([task, name, f"{sum(correct) / n:.3f}", f"{lo:.2f}–{hi:.2f}", f"{seconds:.0f}"])
            print(rows[-1], flush=True)
            if name.startswith("self-consistency"):
                sc_uncertainty[task] = uncertainty_vs_correctness([a.agreement for a in answers], correct)
        rng = random.Random(0)
        pairs, truth = [], []
        for p in problems:
            wrong = str(int(p.answer) + rng.choice([-10, -2, -1, 1, 2, 10])) if p.answer.lstrip("-").isdigit() else "0"
            if rng.random() < 0.5:
                pairs.append((p.question, p.answer, wrong)), truth.append("a")
            else:
                pairs.append((p.question, wrong, p.answer)), truth.append("b")
        stats = agreement(judge_pairs(model, tok, pairs), truth)
        judge_rows.append([task, n, f"{stats['agreement']:.3f}", f"{stats['accuracy_decided']:.3f}",
                           f"{stats['tie_rate']:.3f}", f"{stats['position1_rate']:.3f}"])  # fmt: skip
    body = [f"SmolLM2-135M-Instruct, {n} held-out problems per task (reasoning-gym seed 1234), exact scorer.", "",
            table(["task", "program", "accuracy", "95% CI", "seconds"], rows), "",
            "Self-consistency agreement as an uncertainty score (does low agreement flag wrong answers?):", "",
            table(["task", "AUROC (wrong)", "corr(agreement, correct)", "agreement when right", "when wrong"],
                  [[t, f"{u['auroc_wrong']:.3f}", f"{u['pearson_agreement_correct']:.3f}",
                    f"{u['mean_agreement_correct']:.3f}", f"{u['mean_agreement_wrong']:.3f}"]
                   for t, u in sc_uncertainty.items()]), "",
            "LLM-as-judge (the same model) on (correct, wrong) answer pairs, both orders; a tie = the verdict flipped "
            "with the order:", "",
            table(["task", "pairs", "agreement (ties 1/2)", "accuracy when decided", "tie rate", "picks position 1"],
                  judge_rows)]  # fmt: skip
    write_section("prompting", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()
