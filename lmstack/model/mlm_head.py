"""BERT's masked-LM head (Devlin et al. 2019; `BertLMPredictionHead` in transformers): before the vocabulary
projection, one more dense layer, GELU and LayerNorm, then the decoder tied to the input embedding plus a bias.

    logits = norm(gelu(dense(h))) @ E^T + b          h: the encoder's last hidden state (B, T, D), E: (V, D)

`ModelConfig(mlm_head=True)` puts this transform before the (tied, biased) `lm_head`; the masked-LM objective that
trains it is `lmstack/train/objectives.py::mask_tokens`. Left out: BERT's next-sentence-prediction head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmstack.model.norms import LayerNorm


class MLMTransform(nn.Module):
    def __init__(self, d_model: int, eps: float, gelu_approx: str = "none") -> None:
        super().__init__()
        self.approx = gelu_approx
        self.dense = nn.Linear(d_model, d_model)
        self.norm = LayerNorm(d_model, eps, bias=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        return self.norm(F.gelu(self.dense(h), approximate=self.approx))
