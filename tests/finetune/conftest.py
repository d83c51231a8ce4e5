"""Fixtures for fine-tuning tests: a tiny Llama-family model saved as an HF directory, and its HF twin."""

from __future__ import annotations

import pytest
import torch

from lmstack.model import ModelConfig, Transformer


@pytest.fixture
def tiny_llama(tiny_model_kwargs: dict, tmp_path) -> tuple[Transformer, object]:
    """(our model in eval mode, the HF directory it was saved to); untied head so every weight is distinct."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**tiny_model_kwargs, tie_embeddings=False)).eval()
    return model, model.save_pretrained(tmp_path / "base")


def hf_model(path) -> torch.nn.Module:
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def ids(B: int = 2, T: int = 9, vocab: int = 101, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))
