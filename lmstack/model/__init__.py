"""The model stage: `ModelConfig`, the `Transformer` and its `Output`, the `CausalLM` protocol every consumer
relies on, the public loader (`load_model`: a name, an HF directory or a .gguf file), HF/GGUF interop
(see docs/model.md)."""

from lmstack.model.causal_lm import CausalLM
from lmstack.model.config import ModelConfig
from lmstack.model.loader import load_model, model_path
from lmstack.model.transformer import Output, Transformer

__all__ = ["CausalLM", "ModelConfig", "Output", "Transformer", "load_model", "model_path"]
