"""Benchmark: needle in a haystack and lost in the middle on SmolLM2-135M (window 8192), plus grounded-QA
hallucination rates.

Needle: "The secret number is NNNN." at depths 0/50/100 % of Shakespeare filler cut to 512 / 2048 / 8000 tokens;
a cell is retrieved when greedy decoding would write the number (long_context.py). Lost in the middle: 20 facts
"The code for <name> is NNNN.", the asked one at positions 1, 5, 9, 13, 17, 20, 6 trials each. Hallucination: 40
passage questions from `unsolvable_questions` (20 answerable, 20 not), unsupported-claim and abstention rates.
(Grid and trials are small because a shared 2-core CPU runs ~30 s per 512-token cell; `--lengths=512,1024,2048,4096,8000
--depths=0,0.25,0.5,0.75,1 --trials=20` gives the full picture on a quiet machine.)
Run: `OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/long_context.py [--quick]`; writes docs/img/needle.png,
docs/img/lost_in_the_middle.png and the "long_context" section of docs/benchmarks.md.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402
from lmstack.data.corpus import load_corpus  # noqa: E402
from lmstack.eval.datasets import load_unsolvable  # noqa: E402
from lmstack.eval.hallucination import grounded_qa  # noqa: E402
from lmstack.eval.long_context import (  # noqa: E402
    grid_matrix,
    lost_in_the_middle,
    needle_grid,
    plot_heatmap,
    plot_position_curve,  # fmt: skip
    sentences,
)
from lmstack.model import load_model  # noqa: E402

QUICK = "--quick" in sys.argv
IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


def arg(name: str, default: list) -> list:
    """--name=a,b,c from the command line (numbers), else `default`."""
    raw = next((a.split("=", 1)[1] for a in sys.argv if a.startswith(f"--{name}=")), None)
    return default if raw is None else [type(default[0])(x) for x in raw.split(",")]


def main() -> None:
    model, tok = load_model("smollm2-135m", device="cpu")
    filler = sentences(load_corpus("shakespeare", "val"))
    lengths = [256, 1024] if QUICK else arg("lengths", [512, 2048, 8000])
    depths = [0.0, 0.5, 1.0] if QUICK else arg("depths", [0.0, 0.5, 1.0])
    t = time.perf_counter()
    cells = needle_grid(model, tok, filler, lengths, depths, trials=1)
    m = grid_matrix(cells, lengths, depths)
    plot_heatmap(m, lengths, depths, IMG / "needle.png", "SmolLM2-135M: needle in a haystack")
    t_needle = time.perf_counter() - t
    t = time.perf_counter()
    positions = arg("positions", [0, 4, 8, 12, 16, 19])  # 0-based: facts 1, 5, 9, 13, 17, 20
    curve = lost_in_the_middle(
        model, tok, n_facts=20, positions=positions, trials=2 if QUICK else arg("trials", [6])[0]
    )
    plot_position_curve(curve, IMG / "lost_in_the_middle.png", "SmolLM2-135M: 20 facts, asked fact at position i")
    t_lim = time.perf_counter() - t
    items = load_unsolvable()
    picked = [i for i in items if i.answerable][:20] + [i for i in items if not i.answerable][:20]
    hall = grounded_qa(model, tok, picked[:6] if QUICK else picked)["summary"]
    body = [f"Needle retrieval rate (greedy), depth x length, {len(cells) // (len(lengths) * len(depths))} trials per "
            f"cell, {t_needle:.0f} s:", "", "![needle](img/needle.png)", "",
            table(["depth \\ tokens", *map(str, lengths)],
                  [[f"{d:.0%}", *[f"{v:.2f}" for v in row]] for d, row in zip(depths, m)]), "",
            f"Lost in the middle: retrieval by position of the asked fact among 20, {t_lim:.0f} s:", "",
            "![lost in the middle](img/lost_in_the_middle.png)", "",
            table(["position", *[str(p + 1) for p in curve]], [["retrieved", *[f"{v:.2f}" for v in curve.values()]]]),
            "", "Grounded QA on `unsolvable_questions` (lexical claim check, see hallucination.py):", "",
            table(["questions", "n", "abstain rate", "unsupported-claim rate"],
                  [[k, v["n"], f"{v['abstain_rate']:.2f}", f"{v['unsupported_claim_rate']:.2f}"]
                   for k, v in hall.items()])]  # fmt: skip
    write_section("long_context", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()
