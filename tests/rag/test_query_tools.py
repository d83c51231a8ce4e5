"""LLM reranker, HyDE and query rewriting plumbing on a tiny random model (the real SmolLM2 runs in
test_grounding.py): scores per passage, the original query always kept, generated text added."""

from __future__ import annotations

import math

import pytest

from lmstack.model import ModelConfig, Transformer
from lmstack.rag.query_expansion import HyDE, QueryRewriter
from lmstack.rag.reranker import LLMReranker, yes_no_score
from lmstack.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_kwargs_module):
    text = "yes no Yes No question passage answer file line read the a of to " * 30
    tok = Tokenizer.train([text], vocab_size=300, show_progress=False)
    model = Transformer(ModelConfig(**{**tiny_model_kwargs_module, "vocab_size": tok.vocab_size, "max_seq_len": 512}))
    return model.eval(), tok


@pytest.fixture(scope="module")
def tiny_model_kwargs_module() -> dict:
    return dict(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2)


def test_llm_reranker_scores_every_passage(tiny_lm) -> None:
    model, tok = tiny_lm
    scores = LLMReranker(model, tok).score("read a file", ["the file line", "answer", "no"])
    assert len(scores) == 3 and all(math.isfinite(s) for s in scores)
    messages = [{"role": "user", "content": "yes or no?"}]
    assert yes_no_score(model, tok, messages) == pytest.approx(yes_no_score(model, tok, messages))


def test_hyde_and_rewriter_keep_the_question(tiny_lm) -> None:
    model, tok = tiny_lm
    hyde = HyDE(model, tok, max_new_tokens=8).expand("read a file")
    assert hyde["bm25"] == ["read a file"] and hyde["dense"][0] == "read a file" and len(hyde["dense"]) <= 2
    rewrite = QueryRewriter(model, tok, max_new_tokens=6).expand("read a file")
    assert rewrite["bm25"][0] == "read a file" and rewrite["bm25"] == rewrite["dense"]
