"""`ModelConfig`: every architecture variant of the decoder (and encoder) transformer as one plain dataclass.

One `Transformer` class reads this config; each field switches one idea on or off (norm type and placement,
position scheme, attention grouping, FFN type, mixture of experts). Validation in `__post_init__` names the
field and the value, so a bad YAML key or `--flag` fails before any tensor is allocated.

Named shapes live in `presets.py` (`ModelConfig.from_preset("gpt2-124m")`); HF `config.json` translation lives in
`hf.py`. A BERT encoder is `causal=False, norm_placement="post", embed_norm=True, type_vocab_size=2,
position="learned", ffn="gelu", lm_head=False`. Left out: encoder-decoder cross attention, parallel (GPT-J)
blocks, per-layer heterogeneous configs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

NORMS = ("layernorm", "rmsnorm")
PLACEMENTS = ("pre", "post")
POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "none")
FFNS = ("gelu", "swiglu")
DTYPES = ("float32", "bfloat16", "float16")
ATTENTIONS = ("sdpa", "reference")
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")


@dataclass
class ModelConfig:
    vocab_size: int = 256  # tokens in the vocabulary (V)
    n_layers: int = 2  # transformer blocks (L)
    d_model: int = 64  # residual stream width (D)
    n_heads: int = 4  # query heads (H)
    n_kv_heads: int | None = None  # key/value heads (Hkv): None = n_heads (MHA), 1 = MQA, else GQA
    head_dim: int | None = None  # per-head width (hd); None = d_model // n_heads
    d_ff: int | None = None  # FFN hidden width (F); None = 4*D for gelu, 8/3*D rounded up to 64 for swiglu
    max_seq_len: int = 256  # longest position the model is built for (learned table size, RoPE scaling base)
    norm: str = "rmsnorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-5  # epsilon inside the norm's square root
    norm_bias: bool = False  # LayerNorm has an additive bias (GPT-2: true); ignored by rmsnorm
    norm_placement: str = "pre"  # pre (GPT-2, Llama) | post (original Transformer, BERT); post has no final norm
    position: str = "rope"  # learned | sinusoidal | rope | alibi | none
    rope_theta: float = 10000.0  # RoPE base wavelength
    rope_fraction: float = 1.0  # fraction of each head's dims that rotate (partial rotary, e.g. 0.25 for NeoX)
    # RoPE context extension, HF-style keys: {"rope_type": "linear"|"dynamic"|"yarn"|"llama3", "factor": 8.0, ...}
    rope_scaling: dict[str, Any] | None = None
    ffn: str = "swiglu"  # gelu (2-layer MLP) | swiglu (gate/up/down)
    gelu_approx: str = "none"  # none (exact erf GELU) | tanh (GPT-2's "gelu_new")
    bias: bool = False  # biases on the attention output and FFN linears (GPT-2: true)
    qkv_bias: bool = False  # biases on the q/k/v projections (GPT-2, Qwen2: true)
    qk_norm: bool = False  # RMSNorm over each head's queries and keys before RoPE (OLMo-2, Qwen3 style)
    sliding_window: int | None = None  # a query reads only the last `sliding_window` keys (Mistral); None = all
    causal: bool = True  # causal LM mask; false = bidirectional encoder
    type_vocab_size: int = 0  # token-type (segment A/B) embeddings added to the input (BERT: 2); 0 = none
    embed_norm: bool = False  # LayerNorm on the summed input embeddings before the first block (BERT)
    lm_head: bool = True  # vocabulary head; false = an encoder whose forward returns hidden states (BertModel)
    dropout: float = 0.0  # dropout on embeddings, attention probabilities and residual branches (training only)
    tie_embeddings: bool = False  # LM head shares the token embedding matrix
    n_experts: int = 0  # mixture-of-experts FFN with this many experts (E); 0 = dense FFN
    experts_per_token: int = 2  # experts each token is routed to (k)
    moe_aux_loss_coef: float = 0.01  # weight of the load-balancing loss (Switch/Mixtral) added to `loss`
    moe_z_loss_coef: float = 0.0  # weight of the router z-loss (ST-MoE) added to `loss`
    capacity_factor: float | None = None  # expert capacity = factor * tokens * k / E, overflow dropped; None = no cap
    router_noise: float = 0.0  # multiplicative jitter U(1-x, 1+x) on router inputs while training
    init_std: float = 0.02  # std of the normal init of linear and embedding weights
    scaled_residual_init: bool = True  # GPT-2: residual output projections get std / sqrt(2 L)
    activation_checkpointing: bool = False  # recompute each block in backward instead of storing activations
    dtype: str = "float32"  # parameter dtype: float32 | bfloat16 | float16
    attention: str = "sdpa"  # sdpa (fused fast path) | reference (explicit softmax, can return weights)
    bos_token_id: int | None = None  # begin-of-sequence id (written to generation_config.json)
    eos_token_id: int | None = None  # end-of-sequence id (written to generation_config.json)

    def __post_init__(self) -> None:
        self._check_choices()
        for name in ("vocab_size", "n_layers", "d_model", "n_heads", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.n_kv_heads <= 0 or self.n_heads % self.n_kv_heads:
            raise ValueError(f"ModelConfig.n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"ModelConfig.d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                    "set head_dim explicitly"
                )
            self.head_dim = self.d_model // self.n_heads
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model if self.ffn == "gelu" else 64 * -(-(8 * self.d_model // 3) // 64)
        for name in ("head_dim", "d_ff"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("norm_eps", "rope_theta"):  # eps <= 0 divides by zero in the norm: NaN logits
            if not getattr(self, name) > 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.init_std < 0:
            raise ValueError(f"ModelConfig.init_std must be >= 0, got {self.init_std}")
        self._check_positions()
        self._check_moe()
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.type_vocab_size < 0:
            raise ValueError(f"ModelConfig.type_vocab_size must be >= 0, got {self.type_vocab_size}")
        if self.tie_embeddings and not self.lm_head:
            raise ValueError("ModelConfig.tie_embeddings=true needs lm_head=true (there is no head to tie)")
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ValueError(f"ModelConfig.sliding_window must be positive or None, got {self.sliding_window}")

    def _check_choices(self) -> None:
        choices = {
            "norm": NORMS,
            "norm_placement": PLACEMENTS,
            "position": POSITIONS,
            "ffn": FFNS,
            "gelu_approx": ("none", "tanh"),
            "dtype": DTYPES,
            "attention": ATTENTIONS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)!r}; expected one of {list(allowed)}")

    def _check_positions(self) -> None:
        if self.position != "rope":
            return
        rotary = int(self.head_dim * self.rope_fraction)
        if not 0.0 < self.rope_fraction <= 1.0 or rotary % 2:
            raise ValueError(
                f"ModelConfig.rope_fraction={self.rope_fraction} must be in (0, 1] and give an even number of "
                f"rotary dims (head_dim={self.head_dim} -> {rotary})"
            )
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type", "default"))
            if kind not in ROPE_TYPES:
                raise ValueError(f"ModelConfig.rope_scaling rope_type={kind!r}; expected one of {list(ROPE_TYPES)}")
            if kind != "default" and "factor" not in self.rope_scaling:
                raise ValueError(f"ModelConfig.rope_scaling={self.rope_scaling} needs a 'factor' for {kind!r}")

    def _check_moe(self) -> None:
        if self.n_experts < 0:
            raise ValueError(f"ModelConfig.n_experts must be >= 0, got {self.n_experts}")
        if self.n_experts and not 1 <= self.experts_per_token <= self.n_experts:
            raise ValueError(
                f"ModelConfig.experts_per_token={self.experts_per_token} must be in [1, n_experts={self.n_experts}]"
            )
        if self.capacity_factor is not None and self.capacity_factor <= 0:
            raise ValueError(f"ModelConfig.capacity_factor must be positive or None, got {self.capacity_factor}")

    @property
    def rope_dim(self) -> int:
        """Rotary dims per head (partial rotary rotates only the first `rope_dim`)."""
        return int(self.head_dim * self.rope_fraction)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named shape from `presets.py`, with optional field overrides."""
        from lmstack.model.presets import PRESETS

        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a mapping; an unknown key is an error naming it."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {unknown}; valid fields: {sorted(names)}")
        return cls(**data)
