"""Long-context probes: needle in a haystack (Kamradt 2023) and lost in the middle (Liu et al. 2023).

Needle in a haystack: one sentence, "The secret number is 4827.", is hidden at a relative depth d of filler text
(sentence boundaries of a corpus) cut to L tokens; the prompt ends "What is the secret number? The secret number
is" and the probe scores the continuation " 4827." by log-likelihood. A cell is *retrieved* when every token of the
number is the model's greedy choice (what greedy decoding would write), and its log-probability gives a softer
signal. The grid over depths x lengths (up to the model's window) becomes a heat map.

Lost in the middle: k facts "The code for <name> is <number>." in a row, then a question about the fact at
position i; retrieval accuracy against i, averaged over trials with fresh names and numbers, is the curve. Liu
et al. found U shapes: facts at the start and end are found, the middle is lost.

Both build prompts as text and score with `loglikelihood.py` (chunked prefill through the KV cache, so an 8k-token
context never materializes (T, V) logits). Left out: multi-needle retrieval, generation-based scoring with a judge.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmstack.common.atomic import atomic_write_bytes
from lmstack.common.log import progress
from lmstack.eval.loglikelihood import encode, loglikelihood
from lmstack.model.causal_lm import CausalLM

QUESTION = "\n\nWhat is the secret number? The secret number is"


def sentences(documents: list[str]) -> list[str]:
    """Filler sentences: the documents split after '.', '!' or '?', whitespace collapsed, digits removed (so no
    other number competes with the needle)."""
    text = re.sub(r"\s+", " ", " ".join(documents))
    text = re.sub(r"\d", "", text)
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 3]


def haystack(tok: Any, filler: list[str], n_tokens: int, depth: float, needle: str) -> str:
    """Filler sentences totalling about `n_tokens` tokens with `needle` inserted at relative depth `depth`."""
    budget = n_tokens - len(encode(tok, needle + QUESTION)) - 8
    chosen, used = [], 0
    for s in filler:
        cost = len(encode(tok, " " + s))
        if used + cost > budget:
            break
        chosen.append(s)
        used += cost
    at = round(depth * len(chosen))
    return " ".join(chosen[:at] + [needle] + chosen[at:])


@dataclass
class Cell:
    length: int  # context tokens (measured)
    depth: float
    retrieved: bool
    logprob: float


def needle_grid(
    model: CausalLM, tok: Any, filler: list[str], lengths: list[int], depths: list[float], trials: int = 1,
    seed: int = 0,
) -> list[Cell]:  # fmt: skip
    """Every (length, depth) cell, `trials` needles each (fresh numbers)."""
    rng = random.Random(seed)
    cells = []
    window = model.config.max_seq_len
    jobs = [(L, d) for L in lengths for d in depths for _ in range(trials)]
    for L, d in progress(jobs, desc="needle", unit="cell"):
        number = str(rng.randint(1000, 9999))
        offset = rng.randrange(len(filler) // 2) if len(filler) > 2 else 0
        prompt = haystack(tok, filler[offset:] + filler[:offset], min(L, window), d, f"The secret number is {number}.")
        ctx = prompt + QUESTION
        res = loglikelihood(model, tok, [(ctx, f" {number}")])[0]
        cells.append(Cell(len(encode(tok, ctx)), d, res.is_greedy, res.logprob))
    return cells


def grid_matrix(cells: list[Cell], lengths: list[int], depths: list[float]) -> np.ndarray:
    """(len(depths), len(lengths)) retrieval rate, in the order the cells were requested."""
    m = np.array([c.retrieved for c in cells], dtype=float).reshape(len(lengths), len(depths), -1).mean(-1)
    return m.T


def plot_heatmap(matrix: np.ndarray, lengths: list[int], depths: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(lengths) + 2, 0.6 * len(depths) + 1.8), dpi=110)
    im = ax.imshow(matrix, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(lengths)), [str(x) for x in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    for i in range(len(depths)):
        for j in range(len(lengths)):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="retrieved (greedy)")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


NAMES = ("Alice Bob Carol David Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy Rupert Sybil Trent Uma "
         "Victor Walter Xena Yusuf Zoe Arthur Beatrice Cedric Delia Edgar Fiona Gareth").split()  # fmt: skip


def facts_prompt(names: list[str], codes: list[str], ask: int) -> tuple[str, str]:
    """(context, continuation) asking for fact `ask` of the list."""
    facts = " ".join(f"The code for {n} is {c}." for n, c in zip(names, codes))
    return f"{facts}\n\nWhat is the code for {names[ask]}? The code for {names[ask]} is", f" {codes[ask]}"


def lost_in_the_middle(
    model: CausalLM, tok: Any, n_facts: int = 20, positions: list[int] | None = None, trials: int = 20, seed: int = 0
) -> dict[int, float]:
    """Retrieval rate (greedy) of the fact at each position, over `trials` random fact lists."""
    if n_facts > len(NAMES):
        raise ValueError(f"n_facts={n_facts}: at most {len(NAMES)} distinct names")
    positions = positions if positions is not None else list(range(n_facts))
    rng = random.Random(seed)
    requests, where = [], []
    for _ in range(trials):
        names = rng.sample(NAMES, n_facts)
        codes = [str(rng.randint(1000, 9999)) for _ in range(n_facts)]
        for p in positions:
            requests.append(facts_prompt(names, codes, p))
            where.append(p)
    res = loglikelihood(model, tok, requests, show_progress=True)
    return {p: float(np.mean([r.is_greedy for r, w in zip(res, where) if w == p])) for p in positions}


def plot_position_curve(curve: dict[int, float], path: Path, title: str) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    xs = sorted(curve)
    ax.plot([x + 1 for x in xs], [curve[x] for x in xs], "o-")
    ax.set_xlabel("position of the asked fact (1 = first)")
    ax.set_ylabel("retrieved (greedy)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
