"""The model stage: `ModelConfig`, the `Transformer` and its `Output`, plus HF/GGUF interop (see docs/model.md)."""

from lmstack.model.config import ModelConfig
from lmstack.model.transformer import Output, Transformer

__all__ = ["ModelConfig", "Output", "Transformer"]
