"""Evaluation and prompting (docs/eval.md): metrics equal to their reference implementations, a log-likelihood
harness equal to lm-eval, generative and code tasks (HumanEval in a sandbox), prompt programs (few-shot,
chain-of-thought, self-consistency, ReAct), LLM-as-judge, long-context probes, hallucination and contamination
checks, cached results and a per-model report card.

    lmstack eval --model smollm2-135m --tasks social_iqa,mmlu,humaneval --limit 200
    lmstack report --model runs/speedrun_cpu/checkpoint

Modules are imported where used (no heavy imports here).
"""
