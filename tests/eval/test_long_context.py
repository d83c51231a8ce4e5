"""Needle-in-a-haystack and lost-in-the-middle: prompt construction, the probes on a model, the plots."""

from __future__ import annotations

import numpy as np
import pytest

from lmstack.eval import long_context as lc
from lmstack.eval.long_context import QUESTION, facts_prompt, grid_matrix, haystack, lost_in_the_middle, needle_grid

DOCS = ["The sun rose over the hills. Birds sang 42 songs! The farmer walked to the field? " * 30]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from lmstack.model import load_model

    return load_model(tiny_model_dir, device="cpu")


def test_sentences_drop_digits() -> None:
    s = lc.sentences(DOCS)
    assert s[:3] == ["The sun rose over the hills.", "Birds sang  songs!", "The farmer walked to the field?"]


@pytest.mark.parametrize("depth, where", [(0.0, 0), (1.0, -1)])
def test_haystack_places_the_needle(tiny, depth: float, where: int) -> None:
    _, tok = tiny
    needle = "The secret number is 1234."
    text = haystack(tok, lc.sentences(DOCS), 200, depth, needle)
    parts = text.split(". ")
    assert needle.rstrip(".") in parts[where] and len(tok.encode(text + QUESTION)) <= 200


def test_needle_grid_and_heatmap(tiny, tmp_path) -> None:
    model, tok = tiny
    lengths, depths = [96, 160], [0.0, 0.5, 1.0]
    cells = needle_grid(model, tok, lc.sentences(DOCS), lengths, depths, trials=1)
    assert len(cells) == 6 and all(c.length <= L for c, L in zip(cells, [96] * 3 + [160] * 3))
    m = grid_matrix(cells, lengths, depths)
    assert m.shape == (3, 2) and ((m == 0) | (m == 1)).all()
    lc.plot_heatmap(m, lengths, depths, tmp_path / "needle.png", "tiny")
    assert (tmp_path / "needle.png").stat().st_size > 1000


def test_lost_in_the_middle(tiny, tmp_path) -> None:
    model, tok = tiny
    ctx, cont = facts_prompt(["Alice", "Bob", "Carol"], ["1111", "2222", "3333"], 1)
    assert ctx.startswith("The code for Alice is 1111. The code for Bob is 2222.") and cont == " 2222"
    assert ctx.endswith("What is the code for Bob? The code for Bob is")
    curve = lost_in_the_middle(model, tok, n_facts=4, trials=2)
    assert sorted(curve) == [0, 1, 2, 3] and all(0.0 <= v <= 1.0 for v in curve.values())
    lc.plot_position_curve(curve, tmp_path / "curve.png", "tiny")
    assert (tmp_path / "curve.png").is_file()
    with pytest.raises(ValueError, match="distinct names"):
        lost_in_the_middle(model, tok, n_facts=100)
    assert np.isfinite(list(curve.values())).all()
