"""Rerankers: score (query, passage) pairs jointly, after retrieval has cut the collection to a few candidates.

- `CrossEncoder` (Nogueira & Cho 2019, "Passage Re-ranking with BERT"): "[CLS] query [SEP] passage [SEP]" through
  a BERT encoder, then BERT's pooler (tanh dense on [CLS]) and a linear layer -> one relevance logit. Query and
  passage attend to each other in every layer, which a bi-encoder (one vector each) cannot do; the price is one
  forward per pair. Ours starts from the all-MiniLM-L6-v2 weights (encoder and pooler) and is trained here on
  question -> passage pairs mined from the collection (`train_reranker.py`). It saves as a Hugging Face
  `BertForSequenceClassification` directory (num_labels = 1), so `transformers` loads it too.
- `LLMReranker` (pointwise LLM relevance, as in Liang et al. 2022 HELM / RankGPT's pointwise baseline): ask the
  local chat model "Does the passage answer the question? yes or no" and score logit(yes) - logit(no) of the
  next token. No training, but a forward of the whole prompt per passage, and as good as the model is small.
`yes_no_score` is that scorer, reused by the answer checker's entailment mode.
Left out: listwise/pairwise LLM reranking (RankGPT sliding windows), ColBERT late interaction, distillation.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lmstack.model.config import ModelConfig
from lmstack.model.transformer import Transformer
from lmstack.tokenizer.wordpiece import WordPieceTokenizer


class CrossEncoder(nn.Module):
    """BERT + pooler + one-logit classifier; `score(query, passages)` gives relevance logits."""

    def __init__(self, config: ModelConfig, tokenizer: WordPieceTokenizer, max_length: int = 256) -> None:
        super().__init__()
        self.encoder = Transformer(config)
        D = config.d_model
        self.pooler = nn.Linear(D, D)  # BERT's pooler: tanh(W h_[CLS] + b)
        self.classifier = nn.Linear(D, 1)
        self.tokenizer, self.max_length = tokenizer, max_length

    @classmethod
    def from_embedder(cls, path: str | Path, max_length: int = 256, seed: int = 0) -> CrossEncoder:
        """Initialize from a BERT checkpoint directory (MiniLM): encoder and pooler weights, a small random head."""
        from lmstack.model.hf import read_safetensors
        from lmstack.model.loader import model_path

        path = model_path(path)
        encoder = Transformer.from_pretrained(path, dtype="float32")
        model = cls(encoder.config, WordPieceTokenizer.load(path), max_length)
        model.encoder.load_state_dict(encoder.state_dict())
        tensors = read_safetensors(path)
        if "pooler.dense.weight" in tensors:
            model.pooler.weight.data.copy_(tensors["pooler.dense.weight"])
            model.pooler.bias.data.copy_(tensors["pooler.dense.bias"])
        g = torch.Generator().manual_seed(seed)
        nn.init.normal_(model.classifier.weight, std=0.02, generator=g)
        nn.init.zeros_(model.classifier.bias)
        return model

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """ids, positions (-1 = pad), token types (B, T) -> (B,) relevance logits."""
        hidden = self.encoder(ids, positions=positions, token_type_ids=types).hidden  # (B, T, D)
        return self.classifier(torch.tanh(self.pooler(hidden[:, 0]))).squeeze(-1)

    def batch(self, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded (ids, positions, types) for [(query, passage)] pairs."""
        enc = [self.tokenizer.encode_for_model(q, p, self.max_length) for q, p in pairs]
        T = max(len(i) for i, _ in enc)
        ids = torch.zeros(len(enc), T, dtype=torch.long)
        pos = torch.full((len(enc), T), -1, dtype=torch.long)
        types = torch.zeros(len(enc), T, dtype=torch.long)
        for r, (i, t) in enumerate(enc):
            ids[r, : len(i)], pos[r, : len(i)], types[r, : len(t)] = (
                torch.tensor(i),
                torch.arange(len(i)),
                torch.tensor(t),
            )
        return ids, pos, types

    @torch.inference_mode()
    def score(self, query: str, passages: list[str], batch_size: int = 16) -> list[float]:
        self.eval()
        out: list[float] = []
        for lo in range(0, len(passages), batch_size):
            out += self(*self.batch([(query, p) for p in passages[lo : lo + batch_size]])).tolist()
        return out

    @property
    def name(self) -> str:
        return "cross-encoder"

    def save(self, directory: str | Path) -> Path:
        """An HF BertForSequenceClassification directory (num_labels = 1), written atomically."""
        from safetensors.torch import save_file

        from lmstack.common.atomic import atomic_dir
        from lmstack.model.hf import config_to_hf, state_dict_to_hf

        family, tensors = state_dict_to_hf(self.encoder)
        assert family == "bert", family
        tensors = {f"bert.{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}
        tensors.update({
            "bert.pooler.dense.weight": self.pooler.weight, "bert.pooler.dense.bias": self.pooler.bias,
            "classifier.weight": self.classifier.weight, "classifier.bias": self.classifier.bias,
        })  # fmt: skip
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        config = config_to_hf(self.encoder.config)
        config.update(architectures=["BertForSequenceClassification"], id2label={"0": "LABEL_0"},
                      label2id={"LABEL_0": 0}, lmstack_max_length=self.max_length)  # fmt: skip
        with atomic_dir(directory) as tmp:
            save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
            (tmp / "config.json").write_text(json.dumps(config, indent=2))
            self.tokenizer.save(tmp)
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> CrossEncoder:
        from lmstack.model.hf import config_from_hf, read_safetensors, state_dict_from_hf

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"{directory}: no trained reranker (run `lmstack rag train-reranker`)")
        hf = json.loads((directory / "config.json").read_text())
        model = cls(config_from_hf(hf), WordPieceTokenizer.load(directory), hf.get("lmstack_max_length", 256))
        tensors = read_safetensors(directory)
        head = {k: tensors.pop(k) for k in list(tensors) if k.startswith(("bert.pooler.", "classifier."))}
        model.encoder.load_state_dict(state_dict_from_hf(tensors, "bert", model.encoder))
        model.pooler.weight.data.copy_(head["bert.pooler.dense.weight"])
        model.pooler.bias.data.copy_(head["bert.pooler.dense.bias"])
        model.classifier.weight.data.copy_(head["classifier.weight"])
        model.classifier.bias.data.copy_(head["classifier.bias"])
        return model.eval()


def yes_no_score(model, tokenizer, messages: list[dict[str, str]]) -> float:
    """logit("yes") - logit("no") for the assistant's first token after `messages` (case/space variants pooled)."""
    from lmstack.tokenizer.chat import render_prompt

    ids = render_prompt(tokenizer, messages)
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(torch.tensor([ids], device=device)).logits[0, -1].float()
    logp = torch.log_softmax(logits, -1)

    def pooled(words: list[str]) -> torch.Tensor:
        first = {tokenizer.encode_ordinary(w)[0] for w in words}
        return torch.logsumexp(logp[list(first)], 0)

    return float(pooled(["yes", "Yes", " yes", " Yes"]) - pooled(["no", "No", " no", " No"]))


class LLMReranker:
    """Pointwise relevance from the local chat model: logit(yes) - logit(no)."""

    name = "llm"

    def __init__(self, model, tokenizer, max_passage_chars: int = 1200) -> None:
        self.model, self.tokenizer, self.max_chars = model, tokenizer, max_passage_chars

    def score(self, query: str, passages: list[str]) -> list[float]:
        out = []
        for p in passages:
            messages = [
                {"role": "system", "content": "You judge whether a passage answers a question. Reply yes or no."},
                {"role": "user", "content": f"Passage:\n{p[: self.max_chars]}\n\nQuestion: {query}\n"
                                            "Does the passage answer the question? Reply yes or no."},
            ]  # fmt: skip
            out.append(yes_no_score(self.model, self.tokenizer, messages))
        return out
