"""Named shapes of real models, as data: what the calculator (`calc.py`) needs to count and size a model.

A `Shape` is the architecture without weights: widths, depths, head counts, FFN kind, MoE fan-out, tying,
biases and norm kind. The numbers below are the published `config.json` values of each model (Hugging Face
hub, read November 2026); `tests/model/test_calc.py` checks each against the parameter count its authors
publish and against `sum(p.numel())` of the same-shape `transformers` model built on the meta device.

`shape_from_config(cfg)` turns our `lmstack.model.ModelConfig` (or anything with the same attribute names) into
a `Shape`, so the calculator also covers our presets. Left out: QK-norm, partial rotary, shared experts,
encoder-decoder models, multimodal towers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Shape:
    name: str  # preset name, e.g. "llama-3-8b"
    vocab_size: int  # V, rows of the embedding table
    n_layers: int  # L, transformer blocks
    d_model: int  # D, residual width
    n_heads: int  # H, query heads
    n_kv_heads: int  # Hkv, key/value heads (== H for MHA, 1 for MQA)
    d_ff: int  # F, FFN hidden width (per expert for MoE)
    head_dim: int = 0  # hd, 0 means D // H
    ffn: Literal["swiglu", "gelu"] = "swiglu"  # gated SiLU (3 matrices) or GELU MLP (2 matrices)
    n_experts: int = 1  # E, experts per MoE layer (1 = dense)
    experts_per_token: int = 1  # k, experts each token is routed to
    tie_embeddings: bool = False  # LM head shares the embedding matrix
    bias: bool = False  # the attention output and FFN linears have biases (GPT-2)
    qkv_bias: bool = False  # the q/k/v projections have biases (GPT-2, Qwen2)
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"  # normalization layer kind
    norm_bias: bool = False  # LayerNorm carries an additive bias (GPT-2); ignored for rmsnorm
    qk_norm: bool = False  # an RMSNorm of width hd on queries and one on keys per block (OLMo-2, Qwen3)
    final_norm: bool = True  # a norm before the LM head (pre-norm models)
    learned_pos: bool = False  # learned absolute position table of max_seq_len rows (GPT-2)
    max_seq_len: int = 2048  # trained context length
    sliding_window: int = 0  # attention window in tokens (0 = full causal attention)
    published_params: float = 0.0  # the count its authors publish (0 = none), for the tests and the table

    def __post_init__(self) -> None:
        for f in ("vocab_size", "n_layers", "d_model", "n_heads", "n_kv_heads", "d_ff"):
            if getattr(self, f) <= 0:
                raise ValueError(f"shape {self.name!r}: {f}={getattr(self, f)} must be positive")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"shape {self.name!r}: n_heads={self.n_heads} not a multiple of n_kv_heads")
        if not 1 <= self.experts_per_token <= self.n_experts:
            raise ValueError(f"shape {self.name!r}: experts_per_token={self.experts_per_token} not in [1, E]")

    @property
    def hd(self) -> int:
        """Head dimension: explicit, or D // H."""
        return self.head_dim or self.d_model // self.n_heads


def _gpt2(name: str, d: int, layers: int, heads: int, published: float) -> Shape:
    # GPT-2 (Radford et al. 2019): LayerNorm with bias, GELU MLP 4x, biases everywhere, learned positions, tied.
    return Shape(
        name, 50257, layers, d, heads, heads, 4 * d, ffn="gelu", tie_embeddings=True, bias=True, qkv_bias=True,
        norm="layernorm", norm_bias=True, learned_pos=True, max_seq_len=1024, published_params=published,
    )  # fmt: skip


def _llama(name: str, v: int, d: int, layers: int, h: int, hkv: int, f: int, ctx: int, published: float,
           **kw: Any) -> Shape:  # fmt: skip
    # Llama family (Touvron et al. 2023): RMSNorm, SwiGLU, RoPE, no biases, untied unless said otherwise.
    return Shape(name, v, layers, d, h, hkv, f, max_seq_len=ctx, published_params=published, **kw)


# name -> Shape. Sources: each model's config.json on the Hugging Face hub; published counts from the model
# cards / papers (GPT-2 from `sum(numel)` of the released checkpoints).
SHAPES: dict[str, Shape] = {
    s.name: s
    for s in [
        _gpt2("gpt2", 768, 12, 12, 124.44e6),
        _gpt2("gpt2-medium", 1024, 24, 16, 354.82e6),
        _gpt2("gpt2-large", 1280, 36, 20, 774.03e6),
        _gpt2("gpt2-xl", 1600, 48, 25, 1557.6e6),
        _llama("llama-2-7b", 32000, 4096, 32, 32, 32, 11008, 4096, 6.74e9),
        _llama("llama-2-13b", 32000, 5120, 40, 40, 40, 13824, 4096, 13.0e9),
        _llama("llama-2-70b", 32000, 8192, 80, 64, 8, 28672, 4096, 69.0e9),
        _llama("llama-3-8b", 128256, 4096, 32, 32, 8, 14336, 8192, 8.03e9),
        _llama("llama-3-70b", 128256, 8192, 80, 64, 8, 28672, 8192, 70.6e9),
        _llama("mistral-7b", 32000, 4096, 32, 32, 8, 14336, 32768, 7.24e9, sliding_window=4096),
        _llama("mixtral-8x7b", 32000, 4096, 32, 32, 8, 14336, 32768, 46.7e9, n_experts=8, experts_per_token=2),
        _llama("qwen2.5-0.5b", 151936, 896, 24, 14, 2, 4864, 32768, 0.49e9, tie_embeddings=True, qkv_bias=True),
        _llama("qwen2.5-1.5b", 151936, 1536, 28, 12, 2, 8960, 32768, 1.54e9, tie_embeddings=True, qkv_bias=True),
        _llama("qwen2.5-3b", 151936, 2048, 36, 16, 2, 11008, 32768, 3.09e9, tie_embeddings=True, qkv_bias=True),
        _llama("qwen2.5-7b", 152064, 3584, 28, 28, 4, 18944, 131072, 7.61e9, qkv_bias=True),
        _llama("qwen2.5-14b", 152064, 5120, 48, 40, 8, 13824, 131072, 14.7e9, qkv_bias=True),
        _llama("qwen2.5-32b", 152064, 5120, 64, 40, 8, 27648, 131072, 32.5e9, qkv_bias=True),
        _llama("qwen2.5-72b", 152064, 8192, 80, 64, 8, 29568, 131072, 72.7e9, qkv_bias=True),
        _llama("smollm2-135m", 49152, 576, 30, 9, 3, 1536, 8192, 134.5e6, tie_embeddings=True),
    ]
}

# Published active parameters per token for MoE shapes (Mixtral paper, Jiang et al. 2024: "13B active";
# the model card's exact figure is 12.9B).
PUBLISHED_ACTIVE: dict[str, float] = {"mixtral-8x7b": 12.9e9}


def get_shape(name: str) -> Shape:
    """The named real shape, or a ValueError listing the names."""
    key = name.lower()
    if key not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; known: {', '.join(SHAPES)}")
    return SHAPES[key]


def shape_from_config(cfg: Any, name: str = "config") -> Shape:
    """A `Shape` from our `lmstack.model.ModelConfig` (read by attribute name: this module never imports the model).

    Attributes read: vocab_size, n_layers, d_model, n_heads, n_kv_heads, head_dim, d_ff, ffn, n_experts,
    experts_per_token, tie_embeddings, bias, qkv_bias, norm, norm_bias, qk_norm, norm_placement, position,
    max_seq_len, sliding_window. Our MoE experts are always SwiGLU; n_experts 0 means a dense FFN.
    """

    def get(attr: str, default: Any = None) -> Any:
        value = getattr(cfg, attr, default)
        return default if value is None else value

    n_heads, d_model = int(get("n_heads")), int(get("d_model"))
    n_experts = int(get("n_experts", 0))
    moe = n_experts > 1
    return Shape(
        name=name,
        vocab_size=int(get("vocab_size")),
        n_layers=int(get("n_layers")),
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=int(get("n_kv_heads", n_heads)),
        d_ff=int(get("d_ff", 4 * d_model)),
        head_dim=int(get("head_dim", 0)),
        ffn="swiglu" if moe or get("ffn", "swiglu") == "swiglu" else "gelu",
        n_experts=n_experts if moe else 1,
        experts_per_token=int(get("experts_per_token", 1)) if moe else 1,
        tie_embeddings=bool(get("tie_embeddings", False)),
        bias=bool(get("bias", False)),
        qkv_bias=bool(get("qkv_bias", False)),
        norm="layernorm" if get("norm", "rmsnorm") == "layernorm" else "rmsnorm",
        norm_bias=bool(get("norm_bias", False)),
        qk_norm=bool(get("qk_norm", False)),
        final_norm=get("norm_placement", "pre") == "pre",
        learned_pos=get("position", "rope") == "learned",
        max_seq_len=int(get("max_seq_len", 2048)),
        sliding_window=int(get("sliding_window", 0)),
    )
