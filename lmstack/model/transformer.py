"""The `Transformer`: one decoder (or encoder) language model whose every variant is set by `ModelConfig`.

Reading order: embeddings (+ learned or sinusoidal positions, + token types, -> embedding norm) -> L blocks ->
final norm -> LM head. A block is
    pre-norm  (GPT-2, Llama):      x = x + attn(norm1(x));  x = x + ffn(norm2(x))
    post-norm (Vaswani et al.):    x = norm1(x + attn(x));  x = norm2(x + ffn(x))   (no final norm)
with RoPE or ALiBi applied inside attention and the FFN dense (GELU / SwiGLU) or a mixture of experts.
Init follows GPT-2 (Radford et al. 2019): N(0, 0.02) weights, zero biases, and residual output projections
(o_proj, down_proj) scaled by 1/sqrt(2 L) so the residual stream's variance does not grow with depth.

Forward contract (ARCHITECTURE.md): `model(input_ids, positions=None, cache=None, targets=None) -> Output`.
`positions` (B, T) int64 with -1 for padding (default arange(T)); `cache` implements `lmstack.model.cache.KVCache`
and receives each layer's keys/values after RoPE; `targets` (B, T) with -100 = ignore. `return_attention=True`
forces the explicit-softmax path and returns every layer's attention weights (B, H, T, S) in `Output.attentions`.
An encoder (BERT: `causal=False`, post-norm, `embed_norm`, `type_vocab_size=2`, `lm_head=False`) takes
`token_type_ids` (B, T) and returns its last hidden states in `Output.hidden` (also on `return_hidden=True`);
padding is positions = -1 there too (keys at -1 are never read).
Left out: tensor/pipeline parallelism, encoder-decoder, MLM head (a later stage adds it on `causal=False`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmstack.model.attention import Attention, SharedBias
from lmstack.model.cache import KVCache
from lmstack.model.config import ModelConfig
from lmstack.model.ffn import build_ffn
from lmstack.model.mlm_head import MLMTransform
from lmstack.model.moe import MoE, RouterStats
from lmstack.model.norms import build_norm
from lmstack.model.positions import RotaryEmbedding, alibi_slopes, sinusoidal

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Output:
    logits: torch.Tensor | None  # (B, T, V); None for an encoder without an LM head
    loss: torch.Tensor | None = None  # mean cross-entropy over targets != -100, plus `aux_loss` when present
    aux_loss: torch.Tensor | None = None  # MoE: coef * load-balancing + z_coef * z-loss, averaged over layers
    expert_load: list[RouterStats] | None = None  # MoE: per-layer router statistics (load per expert, drops)
    attentions: list[torch.Tensor] | None = None  # per-layer (B, H, T, S) weights when return_attention=True
    hidden: torch.Tensor | None = None  # (B, T, D) after the final norm, when return_hidden=True or no LM head


def check_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """A clear error for token ids outside [0, vocab_size) (the embedding lookup would raise a bare IndexError).
    One reduction and one host read per forward (a decode step's ids are read from a list)."""
    n = input_ids.numel()
    if n == 0:
        return
    if n <= 8 and input_ids.device.type == "cpu":  # decode steps: reading the ids beats launching a reduction
        ids = input_ids.flatten().tolist()
        lo, hi = min(ids), max(ids)
    else:
        lo, hi = torch.stack(torch.aminmax(input_ids)).tolist()
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"input_ids: token id {lo if lo < 0 else hi} is outside the vocabulary [0, {vocab_size})")


def check_learned_positions(positions: torch.Tensor, max_seq_len: int) -> None:
    """A learned position table has no row at or past max_seq_len: a clear error instead of an IndexError."""
    last = int(positions.max())
    if last >= max_seq_len:
        raise ValueError(f"position {last} is past the learned position table (ModelConfig.max_seq_len={max_seq_len})")


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.pre = cfg.norm_placement == "pre"
        self.attn_norm = build_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.norm_bias)
        self.attn = Attention(cfg, layer_idx)
        self.ffn_norm = build_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.norm_bias)
        if cfg.n_experts:
            self.ffn = MoE(
                cfg.d_model,
                cfg.d_ff,
                cfg.n_experts,
                cfg.experts_per_token,
                cfg.bias,
                cfg.capacity_factor,
                cfg.router_noise,
            )
        else:
            self.ffn = build_ffn(cfg.ffn, cfg.d_model, cfg.d_ff, cfg.bias, cfg.gelu_approx)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        slopes: torch.Tensor | None,
        cache: KVCache | None,
        plain_causal: bool,
        return_weights: bool,
        shared: SharedBias | None = None,
    ) -> tuple[torch.Tensor, RouterStats | None, torch.Tensor | None]:
        """x (B, T, D) -> (B, T, D), router stats (MoE) and attention weights (if asked)."""
        h = self.attn_norm(x) if self.pre else x
        a, weights = self.attn(h, positions, rope, slopes, cache, plain_causal, return_weights, shared)
        x = x + self.dropped(a)
        if not self.pre:
            x = self.attn_norm(x)
        h = self.ffn_norm(x) if self.pre else x
        stats = None
        if isinstance(self.ffn, MoE):
            f, stats = self.ffn(h)
        else:
            f = self.ffn(h)
        x = x + self.dropped(f)
        if not self.pre:
            x = self.ffn_norm(x)
        return x, stats, weights

    def dropped(self, x: torch.Tensor) -> torch.Tensor:
        """Residual dropout; skipped outright when it is the identity (eval, p = 0): one module call less."""
        return self.drop(x) if self.training and self.drop.p > 0 else x


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        cfg = self.config = config
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.max_seq_len, cfg.d_model) if cfg.position == "learned" else None
        self.type_embed = nn.Embedding(cfg.type_vocab_size, cfg.d_model) if cfg.type_vocab_size else None
        self.embed_norm = build_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.norm_bias) if cfg.embed_norm else None
        self.rope = None
        if cfg.position == "rope":
            self.rope = RotaryEmbedding(cfg.rope_dim, cfg.rope_theta, cfg.rope_scaling, cfg.max_seq_len)
        if cfg.position == "alibi":
            self.register_buffer("alibi", alibi_slopes(cfg.n_heads), persistent=False)
        else:
            self.alibi = None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        pre = cfg.norm_placement == "pre"
        self.norm = build_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.norm_bias) if pre else nn.Identity()
        self.mlm = MLMTransform(cfg.d_model, cfg.norm_eps, cfg.gelu_approx) if cfg.mlm_head else None
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=cfg.mlm_head) if cfg.lm_head else None
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.apply(self._init_weights)
        if cfg.scaled_residual_init:
            std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
            for name, p in self.named_parameters():
                if name.endswith(("o_proj.weight", "down_proj.weight")):
                    nn.init.normal_(p, mean=0.0, std=std)
        self.to(DTYPES[cfg.dtype])

    def _apply(self, fn: Any, recurse: bool = True) -> Transformer:
        super()._apply(fn, recurse)
        if self.alibi is not None:  # exact in any dtype, but `to_empty` leaves it uninitialized: recompute
            self.alibi = alibi_slopes(self.config.n_heads).to(self.alibi.device)
        return self

    @classmethod
    def without_init(cls, config: ModelConfig, device: str | torch.device = "cpu") -> Transformer:
        """A model with uninitialized weights (built on the meta device, then allocated): for loading a
        checkpoint right after, without paying for a random init."""
        with torch.device("meta"):
            model = cls(config)
        model.to_empty(device=device)  # new storage breaks the embedding/head tie: restore it
        if config.tie_embeddings:
            model.lm_head.weight = model.embed.weight
        return model

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        targets: torch.Tensor | None = None,
        return_attention: bool = False,
        token_type_ids: torch.Tensor | None = None,
        return_hidden: bool = False,
    ) -> Output:
        """input_ids (B, T) -> Output with logits (B, T, V); see the module docstring for the contract."""
        B, T = input_ids.shape
        if not torch.compiler.is_compiling():
            check_ids(input_ids, self.config.vocab_size)
        plain_causal = positions is None and cache is None
        if positions is None:
            positions = torch.arange(T, device=input_ids.device).expand(B, T)  # (B, T)
        x = self.embed(input_ids)  # (B, T, D)
        if self.pos_embed is not None:
            check_learned_positions(positions, self.config.max_seq_len)
            x = x + self.pos_embed(positions.clamp(min=0))
        elif self.config.position == "sinusoidal":
            x = x + sinusoidal(positions.clamp(min=0), self.config.d_model).to(x.dtype)
        if self.type_embed is not None:  # segment A = 0, B = 1 (BERT sentence pairs)
            x = x + self.type_embed(token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids))
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        if self.training and self.drop.p > 0:
            x = self.drop(x)
        rope = self.rope.signed(positions, x.dtype) if self.rope is not None else None  # once for all layers
        shared = SharedBias() if not torch.compiler.is_compiling() else None  # the mask, built once
        stats, attentions = [], []
        for block in self.blocks:
            args = (positions, rope, self.alibi, cache, plain_causal, return_attention, shared)
            if self.config.activation_checkpointing and self.training and cache is None:
                x, s, w = checkpoint(block, x, *args, use_reentrant=False)
            else:
                x, s, w = block(x, *args)
            stats.append(s)
            attentions.append(w)
        x = self.norm(x)  # (B, T, D)
        head_in = self.mlm(x) if self.mlm is not None else x  # BERT's MLM transform (mlm_head.py)
        logits = self.lm_head(head_in) if self.lm_head is not None else None  # (B, T, V)
        out = self._output(logits, targets, stats, attentions if return_attention else None)
        if return_hidden or logits is None:
            out.hidden = x
        return out

    def _output(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor | None,
        stats: list[RouterStats | None],
        attentions: list[torch.Tensor] | None,
    ) -> Output:
        out = Output(logits=logits, attentions=attentions)
        if self.config.n_experts:
            cfg = self.config
            aux = torch.stack([s.aux_loss for s in stats]).mean()
            z = torch.stack([s.z_loss for s in stats]).mean()
            out.aux_loss = cfg.moe_aux_loss_coef * aux + cfg.moe_z_loss_coef * z
            out.expert_load = stats
        if targets is not None:
            if logits is None:
                raise ValueError("targets given to a model without an LM head (ModelConfig.lm_head=false)")
            V = logits.shape[-1]
            out.loss = F.cross_entropy(logits.float().view(-1, V), targets.reshape(-1), ignore_index=-100)
            if out.aux_loss is not None:
                out.loss = out.loss + out.aux_loss
        return out

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique parameter count (a tied head counts once); optionally without token/position embeddings."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            for table in (self.embed, self.pos_embed, self.type_embed):
                n -= table.weight.numel() if table is not None else 0
        return n

    @classmethod
    def from_pretrained(
        cls, path: str | Path, dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu"
    ) -> Transformer:
        """Load an HF-format directory (ours or a real GPT-2/Llama/Mistral/Qwen2/Mixtral one), a `.gguf` file,
        or a model name known to `lmstack.model.local_models` (e.g. "smollm2-135m")."""
        from lmstack.model.hf import load_pretrained

        return load_pretrained(path, dtype=dtype, device=device)

    def save_pretrained(
        self, path: str | Path, tokenizer: Any = None, max_shard_bytes: int | None = None, overwrite: bool = False
    ) -> Path:
        """Write config.json, model.safetensors (HF names) and generation_config.json to `path`, each file
        atomically; with a tokenizer, also `tokenizer.save(path)`. `max_shard_bytes` splits weights into shards
        plus an index. Only the files it writes are replaced; a non-empty directory that is not a previous
        lmstack save is refused unless `overwrite=True` (`lmstack/model/save_target.py`)."""
        from lmstack.model.hf import save_pretrained

        return save_pretrained(self, path, tokenizer=tokenizer, max_shard_bytes=max_shard_bytes, overwrite=overwrite)
