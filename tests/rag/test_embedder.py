"""all-MiniLM-L6-v2 on our BERT + WordPiece equals sentence-transformers on the same weights (cosine >= 0.9999,
HF_HUB_OFFLINE, loaded from the package's directory); batching/padding does not change a vector; the cache."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lmstack.model.local_models import resolve_model
from lmstack.rag.embed_cache import EmbeddingCache
from lmstack.rag.embedder import SentenceEmbedder

TEXTS = [
    "The cat sat on the mat.",
    "A feline rested on a rug.",
    "Stock markets fell sharply today.",
    "How do I read a file line by line?",
    "Über naïve café — 你好 😀 " * 3,
    "word " * 400,  # longer than the 256-token window: truncated the same way
    "x",
]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(resolve_model("all-minilm-l6-v2")), device="cpu")
    return st.encode(TEXTS, batch_size=4, normalize_embeddings=True)


def test_matches_sentence_transformers(minilm: SentenceEmbedder, reference: np.ndarray) -> None:
    ours = minilm.embed(TEXTS, batch_size=3)
    assert ours.shape == (len(TEXTS), 384)
    cosine = (ours * reference).sum(1)
    assert cosine.min() >= 0.9999, cosine
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # the published reference similarities (ASSETS.md)
    assert ours[0] @ ours[1] == pytest.approx(0.5530, abs=5e-4)
    assert ours[0] @ ours[2] == pytest.approx(0.0425, abs=5e-4)


def test_batching_does_not_change_vectors(minilm: SentenceEmbedder) -> None:
    alone = np.stack([minilm.embed([t])[0] for t in TEXTS[:4]])
    together = minilm.embed(TEXTS[:4], batch_size=4)
    np.testing.assert_allclose(alone, together, atol=2e-6)


def test_cache_is_keyed_by_content(minilm: SentenceEmbedder, tmp_path, monkeypatch) -> None:
    emb = SentenceEmbedder("all-minilm-l6-v2", cache=tmp_path / "cache.sqlite")
    first = emb.embed(TEXTS[:3])
    assert len(EmbeddingCache(tmp_path / "cache.sqlite")) == 3
    monkeypatch.setattr(emb, "_forward", lambda *a: (_ for _ in ()).throw(AssertionError("not cached")))
    np.testing.assert_array_equal(emb.embed(TEXTS[:3][::-1]), first[::-1])  # all three from the cache
    with pytest.raises(AssertionError, match="not cached"):
        emb.embed(["a new text"])


def test_lm_embedder_mean_pools_a_causal_model(tmp_path, tiny_model_kwargs) -> None:
    from lmstack.model import ModelConfig, Transformer
    from lmstack.rag.embedder import LMEmbedder
    from lmstack.tokenizer import Tokenizer

    tok = Tokenizer.train(["hello world, files and lines"] * 20, vocab_size=270, show_progress=False)
    Transformer(ModelConfig(**{**tiny_model_kwargs, "vocab_size": 270})).save_pretrained(tmp_path / "m", tokenizer=tok)
    emb = LMEmbedder(str(tmp_path / "m"))
    vecs = emb.embed(["hello world", "files and lines and more lines"], batch_size=2)
    single = emb.embed(["hello world"])
    assert vecs.shape == (2, 32)
    np.testing.assert_allclose(vecs[0], single[0], atol=1e-5)  # right padding does not leak into the mean
