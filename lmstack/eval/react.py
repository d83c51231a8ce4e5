"""ReAct (Yao et al. 2023, "ReAct: Synergizing Reasoning and Acting in Language Models"): the model alternates a
thought, an action and the action's observation until it acts `finish[answer]`.

    Question: What is 12 * 7 + 5?
    Thought: I need to compute 12 * 7 + 5.
    Action: calculator[12 * 7 + 5]
    Observation: 89                       <- written by this loop, not by the model
    Thought: I have the answer.
    Action: finish[89]

Each step generates (greedy) until the model would write "Observation:" itself, parses the last
`Action: tool[argument]` of what it wrote, runs the tool and appends its output as the observation. The loop ends at
`finish[...]`, when the model writes no action (then the last number it wrote is its answer), or after `max_steps`.
Questions are processed as a batch: every step generates for all questions still running.

Tools are plain functions str -> str. `calculator` (calculator.py) is always there; `retrieval_tool` turns a RAG
retriever (`lmstack.rag.Retriever` over an index built with `lmstack rag index`) into `search[query]`, whose
observation is the top passages' text. Left out: JSON function-calling formats, parallel tool calls.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from lmstack.eval.calculator import calculate
from lmstack.eval.generative import extract_number, generate_texts
from lmstack.eval.prompting import Answer
from lmstack.generate import SamplingParams
from lmstack.model.causal_lm import CausalLM

Tool = Callable[[str], str]
EXAMPLES = """Answer each question by thinking step by step and using tools. Tools: calculator[expression] computes \
arithmetic; finish[answer] gives the final answer.

Question: What is 12 * 7 + 5?
Thought: I need to compute 12 * 7 + 5.
Action: calculator[12 * 7 + 5]
Observation: 89
Thought: I have the answer.
Action: finish[89]

Question: A shop sells 3 boxes of 24 pencils and 15 single pencils. How many pencils does it sell?
Thought: The boxes hold 3 * 24 pencils, plus 15 single ones.
Action: calculator[3 * 24 + 15]
Observation: 87
Thought: I have the answer.
Action: finish[87]
"""
_ACTION = re.compile(r"Action:\s*(\w+)\s*\[(.*?)\]", re.S)


def retrieval_tool(retriever: Any, k: int = 2, max_chars: int = 400) -> Tool:
    """`search[query]` over a `lmstack.rag.Retriever`: the top-k chunks, each cut to `max_chars`, joined."""

    def search(query: str) -> str:
        hits = retriever.retrieve(query, k=k)
        return " | ".join(h.text.strip().replace("\n", " ")[:max_chars] for h in hits) or "no results"

    return search


def parse_action(text: str) -> tuple[str, str] | None:
    """The last 'Action: tool[argument]' in `text`, or None."""
    found = _ACTION.findall(text)
    return (found[-1][0].lower(), found[-1][1].strip()) if found else None


def react(
    model: CausalLM, tok: Any, questions: list[str], tools: dict[str, Tool] | None = None, max_steps: int = 4,
    max_new_tokens: int = 64, examples: str = EXAMPLES, batch_size: int = 16,
) -> list[Answer]:  # fmt: skip
    """Run the Thought/Action/Observation loop for every question; returns each answer with its trace."""
    tools = {"calculator": calculate, **(tools or {})}
    transcripts = [f"{examples}\nQuestion: {q}\nThought:" for q in questions]
    answers: list[Answer | None] = [None] * len(questions)
    steps: list[list[str]] = [[] for _ in questions]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=["\nObservation:", "\nQuestion:"])
    for _ in range(max_steps):
        active = [i for i, a in enumerate(answers) if a is None]
        if not active:
            break
        outs = generate_texts(model, tok, [transcripts[i] for i in active], params, batch_size)
        for i, out in zip(active, outs):
            transcripts[i] += out
            steps[i].append(out.strip())
            action = parse_action(out)
            if action is None:  # the model answered in prose: take its last number
                answers[i] = Answer(extract_number(out, "final"), transcripts[i], steps=steps[i])
            elif action[0] == "finish":
                answers[i] = Answer(extract_number(action[1]) or action[1], transcripts[i], steps=steps[i])
            else:
                tool = tools.get(action[0])
                obs = tool(action[1]) if tool else f"error: unknown tool {action[0]!r} (have {', '.join(tools)})"
                transcripts[i] += f"\nObservation: {obs}\nThought:"
                steps[i].append(f"Observation: {obs}")
    for i, a in enumerate(answers):  # out of steps: the last number it wrote or observed
        if a is None:
            answers[i] = Answer(extract_number(" ".join(steps[i]), "final"), transcripts[i], steps=steps[i])
    return answers  # type: ignore[return-value]
