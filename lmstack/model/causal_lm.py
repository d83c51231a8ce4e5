"""`CausalLM`: what every consumer of a language model (generate, the serving engine, fine-tuning wrappers,
evaluation) may rely on, written as a `typing.Protocol` beside `KVCache` (`cache.py`).

    model.config                 a `ModelConfig`: vocab_size, max_seq_len, n_layers, n_kv_heads, head_dim,
                                 bos_token_id / eos_token_id
    model(input_ids, positions=None, cache=None, targets=None) -> Output(logits (B, T, V), loss)
    model.parameters()           where the weights live: device and dtype of the first parameter

`Transformer` satisfies it, and so does anything that wraps one and forwards these: `torch.compile`'d modules,
LoRA / prompt-tuning wrappers, quantized models. Code that takes a model types it `CausalLM`, never `Any`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch

from lmstack.model.cache import KVCache
from lmstack.model.config import ModelConfig
from lmstack.model.transformer import Output


@runtime_checkable
class CausalLM(Protocol):
    config: ModelConfig

    def __call__(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        targets: torch.Tensor | None = None,
    ) -> Output:
        """input_ids (B, T) -> Output(logits (B, T, V), loss); positions (B, T) with -1 = padding."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...


def model_device(model: CausalLM) -> torch.device:
    """The device of the model's weights."""
    return next(model.parameters()).device
