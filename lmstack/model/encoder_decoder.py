"""`EncoderDecoder`: the T5 encoder-decoder transformer (Raffel et al. 2020, "Exploring the Limits of Transfer
Learning with a Unified Text-to-Text Transformer"), built from the same `ModelConfig` and layers as `Transformer`.

    encoder:  x = embed(source);  L_enc x [x += attn(norm(x)) (bidirectional);  x += ffn(norm(x))];  norm
    decoder:  y = embed(target);  L_dec x [y += attn(norm(y)) (causal);  y += cross_attn(norm(y), encoder);
                                          y += ffn(norm(y))];  norm;  logits = lm_head(y)

Cross-attention: queries from the decoder, keys and values projected from the encoder's output, no causal mask
(only the source's padding is hidden). Positions: no embedding; T5's relative buckets add a learned scalar per head
to every score (positions.py), computed in the first block of each stack and shared by the others; cross-attention
has none. T5 specifics kept exactly: RMSNorm ("T5LayerNorm"), no 1/sqrt(hd) in attention (folded into the init),
no biases, ReLU (v1.0) or GeGLU (v1.1) FFN, and with tied embeddings (and `scale_decoder_output`) the decoder
output scaled by D^-0.5 before the head. Init follows T5 (Mesh TensorFlow): embeddings N(0, 1),
q N(0, (D hd)^-0.5), k/v N(0, D^-0.5), o N(0, (H hd)^-0.5), FFN in N(0, D^-0.5), out N(0, F^-0.5).

Forward: `model(input_ids, positions=None, cache=None, targets=None, encoder_ids=None, encoder_positions=None)`;
`input_ids` are the decoder's inputs (targets shifted right behind `decoder_start_token_id`: `shift_right`). The
encoder runs from `encoder_ids`, or is read from `cache.encoder` (`lmstack.model.cache.EncoderCache`, whose
cross-attention keys/values are projected once), which is how `lmstack.generate` drives it: `encode` once, then
decoder steps through the ordinary KV-cache protocol. Logits equal HF `T5ForConditionalGeneration` (tests).
Left out: MQA/GQA in T5 (T5 has none), the encoder-only T5 head, relative-bias sharing across stacks (T5 has none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmstack.model.attention import position_bias, sdpa
from lmstack.model.cache import EncoderCache, KVCache
from lmstack.model.config import ModelConfig
from lmstack.model.ffn import build_ffn
from lmstack.model.norms import RMSNorm
from lmstack.model.positions import RelativePositionBias
from lmstack.model.transformer import DTYPES, Output


class T5Attention(nn.Module):
    """Multi-head attention with T5's conventions: no biases, no score scaling, an additive bias tensor."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        inner = cfg.n_heads * cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, inner, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, inner, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, inner, bias=False)
        self.o_proj = nn.Linear(inner, cfg.d_model, bias=False)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, S, D) -> k, v (B, H, S, hd)."""
        return self.heads(self.k_proj(x)), self.heads(self.v_proj(x))

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) queries over k, v (B, H, S, hd) with bias (B, 1 or H, T, S) -> (B, T, D)."""
        B, T, _ = x.shape
        out = sdpa(self.heads(self.q_proj(x)), k, v, bias, scale=1.0)  # fp32 under CPU autocast (attention.sdpa)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class T5Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int, decoder: bool) -> None:
        super().__init__()
        self.layer_idx, self.decoder = layer_idx, decoder
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = T5Attention(cfg)
        if decoder:
            self.cross_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
            self.cross_attn = T5Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn = build_ffn(cfg.ffn, cfg.d_model, cfg.d_ff, False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        rel: RelativePositionBias,
        bias: torch.Tensor | None,
        cache: KVCache | None = None,
        encoder: EncoderCache | None = None,
        cross_bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D) -> (B, T, D) and the self-attention bias (B, H, T, S), computed here in the first block."""
        h = self.attn_norm(x)
        k, v = self.attn.keys_values(h)
        k_pos = positions
        if cache is not None:
            k, v, k_pos = cache.update(self.layer_idx, k, v, positions)  # (B, H, S, hd), (B, S)
        if bias is None:  # mask from positions (cache.py) + T5's relative buckets, shared by the later blocks
            bias = position_bias(positions, k_pos, self.decoder, None, None, x.dtype) + rel(positions, k_pos)
        x = x + self.drop(self.attn(h, k, v, bias))
        if self.decoder:
            h = self.cross_norm(x)
            k, v, _ = encoder.keys_values(self.layer_idx, self.cross_attn.keys_values)  # projected once
            x = x + self.drop(self.cross_attn(h, k, v, cross_bias))
        return x + self.drop(self.ffn(self.ffn_norm(x))), bias


def shift_right(labels: torch.Tensor, start_id: int) -> torch.Tensor:
    """Decoder inputs for teacher forcing: [start, y_0, ..., y_{T-2}] (-100 labels become 0 inputs, as in T5)."""
    start = torch.full_like(labels[:, :1], start_id)
    return torch.cat([start, labels[:, :-1].clamp(min=0)], dim=1)


class EncoderDecoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        cfg = self.config = config
        if not cfg.is_encoder_decoder or cfg.n_kv_heads != cfg.n_heads:
            raise ValueError(
                f"EncoderDecoder needs n_decoder_layers > 0 and n_kv_heads == n_heads (T5 has no GQA); got "
                f"n_decoder_layers={cfg.n_decoder_layers}, n_heads={cfg.n_heads}, n_kv_heads={cfg.n_kv_heads}"
            )
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.encoder_rel = RelativePositionBias(cfg.rel_buckets, cfg.rel_max_distance, cfg.n_heads, True)
        self.encoder_blocks = nn.ModuleList(T5Block(cfg, i, decoder=False) for i in range(cfg.n_layers))
        self.encoder_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.decoder_rel = RelativePositionBias(cfg.rel_buckets, cfg.rel_max_distance, cfg.n_heads, False)
        self.decoder_blocks = nn.ModuleList(T5Block(cfg, i, decoder=True) for i in range(cfg.n_decoder_layers))
        self.decoder_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.drop = nn.Dropout(cfg.dropout)
        self.apply(self._init_weights)
        self.to(DTYPES[cfg.dtype])

    def _init_weights(self, module: nn.Module) -> None:
        D, hd, H, F_ = self.config.d_model, self.config.head_dim, self.config.n_heads, self.config.d_ff
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=1.0)
        elif isinstance(module, T5Attention):
            nn.init.normal_(module.q_proj.weight, std=(D * hd) ** -0.5)
            nn.init.normal_(module.k_proj.weight, std=D**-0.5)
            nn.init.normal_(module.v_proj.weight, std=D**-0.5)
            nn.init.normal_(module.o_proj.weight, std=(H * hd) ** -0.5)
        elif isinstance(module, RelativePositionBias):
            nn.init.normal_(module.weight, std=D**-0.5)
        elif isinstance(module, nn.Linear) and module is not self.lm_head:
            fan_in = module.weight.shape[1]  # up/gate: D, down: F
            nn.init.normal_(module.weight, std=(D if fan_in == D else F_) ** -0.5)
        elif module is self.lm_head and not self.config.tie_embeddings:
            nn.init.normal_(module.weight, std=1.0)

    @classmethod
    def without_init(cls, config: ModelConfig, device: str | torch.device = "cpu") -> EncoderDecoder:
        """Uninitialized weights (meta device, then allocated), for loading a checkpoint right after."""
        with torch.device("meta"):
            model = cls(config)
        model.to_empty(device=device)
        if config.tie_embeddings:
            model.lm_head.weight = model.embed.weight
        return model

    def encode(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None) -> EncoderCache:
        """Source ids (B, S) [positions (B, S), -1 = padding] -> the encoder's output, ready for cross-attention."""
        B, S = input_ids.shape
        if positions is None:
            positions = torch.arange(S, device=input_ids.device).expand(B, S)
        x = self.drop(self.embed(input_ids))  # (B, S, D)
        bias = None
        for block in self.encoder_blocks:
            x, bias = block(x, positions, self.encoder_rel, bias)
        return EncoderCache(self.drop(self.encoder_norm(x)), positions)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        targets: torch.Tensor | None = None,
        encoder_ids: torch.Tensor | None = None,
        encoder_positions: torch.Tensor | None = None,
    ) -> Output:
        """Decoder ids (B, T) -> Output(logits (B, T, V), loss); the source comes from `encoder_ids` or
        `cache.encoder`."""
        encoder = getattr(cache, "encoder", None)
        if encoder is None:
            if encoder_ids is None:
                raise ValueError("an encoder-decoder needs encoder_ids (the source) or a cache holding .encoder")
            encoder = self.encode(encoder_ids, encoder_positions)
        B, T = input_ids.shape
        if positions is None:
            positions = torch.arange(T, device=input_ids.device).expand(B, T)
        y = self.drop(self.embed(input_ids))  # (B, T, D)
        cross_bias = position_bias(positions, encoder.positions, False, None, None, y.dtype)  # hide source padding
        bias = None
        for block in self.decoder_blocks:
            y, bias = block(y, positions, self.decoder_rel, bias, cache, encoder, cross_bias)
        y = self.drop(self.decoder_norm(y))
        if self.config.tie_embeddings and self.config.scale_decoder_output:
            y = y * self.config.d_model**-0.5  # T5 v1.0: the tied head sees the output scaled down
        logits = self.lm_head(y)  # (B, T, V)
        out = Output(logits=logits)
        if targets is not None:
            out.loss = F.cross_entropy(logits.float().flatten(0, 1), targets.reshape(-1), ignore_index=-100)
        return out

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if exclude_embeddings else n

    @classmethod
    def from_pretrained(
        cls, path: str | Path, dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu"
    ) -> EncoderDecoder:
        from lmstack.model.hf import load_pretrained

        model = load_pretrained(path, dtype=dtype, device=device)
        if not isinstance(model, cls):
            raise ValueError(f"{path}: holds a decoder-only model, not an encoder-decoder")
        return model

    def save_pretrained(self, path: str | Path, tokenizer: Any = None, max_shard_bytes: int | None = None) -> Path:
        """An HF directory (`model_type: t5`) that `transformers.T5ForConditionalGeneration` loads."""
        from lmstack.model.hf import save_pretrained

        return save_pretrained(self, path, tokenizer=tokenizer, max_shard_bytes=max_shard_bytes)
