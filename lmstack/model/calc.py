"""The calculator: parameters, FLOPs per token, weight / training memory and KV-cache bytes of a model shape.

`lmstack calc --preset llama-3-8b --seq 32768 [--batch 1] [--dtype bf16]` prints the table. Every quantity is
an exact count from a `Shape` (see `shapes.py`), with the formula next to it:

- Parameters: embeddings V·D (+ a learned position table), per block attention D·(H + 2·Hkv)·hd + H·hd·D, FFN
  3·D·F (SwiGLU) or 2·D·F (GELU MLP), per MoE layer E·3·D·F + the D·E router, norms, and the V·D LM head unless
  tied. Active parameters (MoE) count k of the E experts.
- FLOPs per token (forward): 2·N_mm + 4·L·H·hd·S. N_mm counts the weights that take part in a matmul (block
  linears, router, and the V·D LM head even when tied; not the embedding lookup, norms or biases); S is the
  number of keys a query reads (QKᵀ and A·V are 2·S·H·hd FLOPs each). Training = 3 × forward
  (backward = 2 × forward). With S = T this is the PaLM MFU formula 6N + 12·L·H·hd·T (Chowdhery et al. 2022,
  App. B); `causal=True` uses the exact causal average S = (T+1)/2, which is Kaplan et al. 2020's
  6N + 6·L·T·d_attn (Table 1). Chinchilla (Hoffmann et al. 2022, App. F) also counts softmax and embeddings.
- Weight memory at fp32 / bf16 / int8 / int4 / nf4 / nf4-dq: block linears at that format, embeddings, head,
  norms and biases stay bf16 (what bitsandbytes and GPTQ tools do). Bits per weight in `BITS`.
- Training memory with AdamW in mixed precision, three conventions in `TRAINING_BYTES` (bytes per parameter).
- KV cache: 2·L·Hkv·hd·seq·batch·bytes(dtype); sliding-window models keep at most `window` positions.

Left out: activation memory (depends on checkpointing and kernels), communication, optimizer sharding.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmstack.model.shapes import PUBLISHED_ACTIVE, SHAPES, Shape, get_shape, shape_from_config


def nf4_bits(block: int = 64, double_quant: bool = False, block2: int = 256) -> float:
    """Bits per weight of NF4 (Dettmers et al. 2023, QLoRA): 4-bit codes + one absmax per `block` weights.

    Plain: the absmax is fp32, so 4 + 32/64 = 4.5 bits. Double quantization stores the absmaxes as 8-bit
    floats in blocks of `block2`, each block with its own fp32 scale: 4 + 8/64 + 32/(64·256) = 4.127 bits.
    """
    if not double_quant:
        return 4 + 32 / block
    return 4 + 8 / block + 32 / (block * block2)


# Bits per quantized weight. int8/int4: symmetric group-wise absmax, group 128, one fp16 scale per group.
BITS: dict[str, float] = {
    "fp32": 32.0,
    "bf16": 16.0,
    "fp16": 16.0,
    "int8": 8 + 16 / 128,
    "int4": 4 + 16 / 128,
    "nf4": nf4_bits(64),
    "nf4-dq": nf4_bits(64, double_quant=True),
}

# Training bytes per parameter with AdamW in mixed precision (activations excluded).
TRAINING_BYTES: dict[str, dict[str, int]] = {
    # PyTorch AMP / lmstack's trainer: fp32 weights and grads, bf16 casts made on the fly inside autocast.
    "autocast": {"fp32 weights": 4, "fp32 grads": 4, "adam m": 4, "adam v": 4},
    # ZeRO (Rajbhandari et al. 2020, §3.1): 16-bit weights and grads + K = 12 bytes of fp32 optimizer state.
    "zero": {"bf16 weights": 2, "bf16 grads": 2, "fp32 master": 4, "adam m": 4, "adam v": 4},
    # Megatron-LM with fp32 gradient accumulation (main_grad): 18 bytes.
    "megatron": {"bf16 weights": 2, "fp32 grads": 4, "fp32 master": 4, "adam m": 4, "adam v": 4},
}

DTYPE_BYTES: dict[str, float] = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2,
                                 "fp8": 1, "int8": 1}  # fmt: skip


@dataclass(frozen=True)
class ParamCount:
    embedding: int  # V·D token table
    positions: int  # learned position table (0 for RoPE/ALiBi)
    attention: int  # all blocks: q, k, v, o weights and biases
    ffn: int  # all blocks: every expert's FFN (MoE) or the dense FFN
    ffn_active: int  # all blocks: the k routed experts' FFN a token uses
    router: int  # all blocks: MoE router weights
    norms: int  # all norm weights (and LayerNorm biases), final norm included
    lm_head: int  # V·D if untied, else 0
    linear: int  # all blocks: linear weight matrices (every expert, router), biases excluded
    matmul_active: int  # N_mm: weights one token multiplies through (the LM head counted even if tied)

    @property
    def total(self) -> int:
        return self.embedding + self.positions + self.attention + self.ffn + self.router + self.norms + self.lm_head

    @property
    def active(self) -> int:
        return self.total - self.ffn + self.ffn_active

    @property
    def non_embedding(self) -> int:
        """Kaplan et al.'s N: everything but the token and position tables (and an untied head)."""
        return self.total - self.embedding - self.positions - self.lm_head


def count_params(s: Shape) -> ParamCount:
    """Exact parameter count of shape `s` (as `sum(p.numel())` of the model, shared tensors once)."""
    D, hd, L = s.d_model, s.hd, s.n_layers
    q_out, kv_out = s.n_heads * hd, s.n_kv_heads * hd
    attn_w = D * (q_out + 2 * kv_out) + q_out * D  # q, k, v: D -> out; o: H·hd -> D
    attn_b = (q_out + 2 * kv_out if s.qkv_bias else 0) + (D if s.bias else 0)
    mats = 3 if s.ffn == "swiglu" else 2  # gate/up/down vs fc/proj
    expert_w = mats * D * s.d_ff
    expert_b = (s.d_ff * (mats - 1) + D) if s.bias else 0
    router = D * s.n_experts if s.n_experts > 1 else 0
    norm_size = D * (2 if s.norm == "layernorm" and s.norm_bias else 1)  # weight (+ bias)
    head = s.vocab_size * D
    return ParamCount(
        embedding=head,
        positions=s.max_seq_len * D if s.learned_pos else 0,
        attention=L * (attn_w + attn_b),
        ffn=L * s.n_experts * (expert_w + expert_b),
        ffn_active=L * s.experts_per_token * (expert_w + expert_b),
        router=L * router,
        norms=(2 * L + s.final_norm) * norm_size + L * 2 * hd * s.qk_norm,
        lm_head=0 if s.tie_embeddings else head,
        linear=L * (attn_w + s.n_experts * expert_w + router),
        matmul_active=L * (attn_w + s.experts_per_token * expert_w + router) + head,
    )


def attention_keys(s: Shape, seq: int, causal: bool = False) -> float:
    """Keys a query reads on average in a `seq`-token forward: seq (PaLM convention) or the causal average."""
    if causal:
        if s.sliding_window and seq > s.sliding_window:
            w = s.sliding_window  # first w queries see 1..w keys, the rest see w
            return (w * (w + 1) / 2 + (seq - w) * w) / seq
        return (seq + 1) / 2
    return min(seq, s.sliding_window) if s.sliding_window else seq


def forward_flops_per_token(s: Shape, seq: int, causal: bool = False) -> float:
    """2·N_mm + 4·L·H·hd·S: matmul FLOPs of one token's forward at context `seq` (see module docstring)."""
    return 2 * count_params(s).matmul_active + 4 * s.n_layers * s.n_heads * s.hd * attention_keys(s, seq, causal)


def training_flops_per_token(s: Shape, seq: int, causal: bool = False) -> float:
    """3 × forward: the backward pass costs two forwards (grads w.r.t. activations and w.r.t. weights)."""
    return 3 * forward_flops_per_token(s, seq, causal)


def decode_flops_per_token(s: Shape, context: int) -> float:
    """Inference FLOPs of one new token that attends to `context` cached positions (2N + attention)."""
    return forward_flops_per_token(s, context, causal=False)


def weight_bytes(s: Shape, fmt: str) -> float:
    """Bytes to hold the weights with block linears at `fmt` (`BITS`); the rest stays bf16 unless fmt is fp32."""
    if fmt not in BITS:
        raise ValueError(f"--dtype={fmt}: expected one of {', '.join(BITS)}")
    p = count_params(s)
    rest_bits = 32 if fmt == "fp32" else 16
    return (p.linear * BITS[fmt] + (p.total - p.linear) * rest_bits) / 8


def training_bytes(s: Shape, convention: str = "autocast") -> float:
    """Bytes of weights + grads + AdamW state per `TRAINING_BYTES[convention]` (activations excluded)."""
    if convention not in TRAINING_BYTES:
        raise ValueError(f"training memory convention {convention!r}: expected one of {', '.join(TRAINING_BYTES)}")
    return count_params(s).total * sum(TRAINING_BYTES[convention].values())


def kv_cache_bytes(n_layers: int, n_kv_heads: int, head_dim: int, seq: int, batch: int, dtype: str = "bf16") -> float:
    """2 (K and V) · L · Hkv · hd · seq · batch · bytes(dtype).

    >>> kv_cache_bytes(32, 8, 128, 8192, 1, "bf16") / 2**30  # Llama-3-8B, 8k tokens
    1.0
    """
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"--dtype={dtype}: expected one of {', '.join(DTYPE_BYTES)}")
    return 2 * n_layers * n_kv_heads * head_dim * seq * batch * DTYPE_BYTES[dtype]


def shape_kv_cache_bytes(s: Shape, seq: int, batch: int = 1, dtype: str = "bf16") -> float:
    """KV cache of shape `s`; a sliding-window model keeps a rolling buffer of `window` positions."""
    kept = min(seq, s.sliding_window) if s.sliding_window else seq
    return kv_cache_bytes(s.n_layers, s.n_kv_heads, s.hd, kept, batch, dtype)


def resolve_shape(name: str) -> Shape:
    """A named real shape (`shapes.SHAPES`) or one of our `ModelConfig` presets."""
    if name.lower() in SHAPES:
        return get_shape(name)
    try:
        from lmstack.model.config import ModelConfig
    except ImportError:
        raise ValueError(f"--preset={name}: unknown; known shapes: {', '.join(SHAPES)}") from None
    try:
        cfg = ModelConfig.from_preset(name)
    except (KeyError, ValueError) as e:
        raise ValueError(f"--preset={name}: not a real shape ({', '.join(SHAPES)}) nor a model preset: {e}") from None
    return shape_from_config(cfg, name=name)


def published_active(s: Shape) -> float:
    """The published active-parameter count of a MoE shape (0 if none)."""
    return PUBLISHED_ACTIVE.get(s.name, 0.0)


@dataclass
class CalcConfig:
    preset: str = "llama-3-8b"  # a real shape (gpt2, llama-3-8b, mixtral-8x7b, qwen2.5-7b, ...) or a model preset
    seq: int = 4096  # sequence length: context for FLOPs, tokens held in the KV cache
    batch: int = 1  # sequences in the KV cache
    dtype: str = "bf16"  # KV-cache dtype: fp32, bf16, fp16, fp8 or int8

    def __post_init__(self) -> None:
        if self.seq <= 0:
            raise ValueError(f"--seq={self.seq}: must be positive")
        if self.batch <= 0:
            raise ValueError(f"--batch={self.batch}: must be positive")
        if self.dtype not in DTYPE_BYTES:
            raise ValueError(f"--dtype={self.dtype}: expected one of {', '.join(DTYPE_BYTES)}")


def _count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:,.3f} {unit}"
    return f"{n:,.0f}"


def _gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB"


def _flops(n: float) -> str:
    return f"{n / 1e9:,.2f} GFLOP"


def table_rows(s: Shape, seq: int, batch: int, dtype: str) -> list[tuple[str, str, str]]:
    """(quantity, value, formula) rows of the calculator table."""
    p = count_params(s)
    rows = [
        ("parameters (total)", _count(p.total), "embeddings + blocks + norms (+ head if untied)"),
        (
            "  embeddings",
            _count(p.embedding + p.positions),
            "V·D" + (" + max_seq_len·D positions" if p.positions else ""),
        ),
        ("  LM head V·D", _count(p.lm_head), "0: shares the embedding" if s.tie_embeddings else "separate"),
        ("  non-embedding", _count(p.non_embedding), "Kaplan's N"),
        ("  attention (all L)", _count(p.attention), "L·[D·(H+2·Hkv)·hd + H·hd·D]"),
        ("  FFN (all L)", _count(p.ffn), f"L·E·{3 if s.ffn == 'swiglu' else 2}·D·F"),
    ]
    if s.n_experts > 1:
        rows.append(("parameters (active)", _count(p.active), f"{s.experts_per_token} of {s.n_experts} experts"))
    if s.published_params:
        rows.append(("  published", _count(s.published_params), "model card / paper"))
    rows += [
        (f"train FLOPs/token @T={seq}", _flops(training_flops_per_token(s, seq)), "6·N_mm + 12·L·H·hd·T (PaLM)"),
        (f"  causal-exact @T={seq}", _flops(training_flops_per_token(s, seq, causal=True)), "S = (T+1)/2"),
        (f"decode FLOPs/token @S={seq}", _flops(decode_flops_per_token(s, seq)), "2·N_mm + 4·L·H·hd·S"),
    ]
    for fmt in BITS:
        rows.append((f"weights {fmt}", _gib(weight_bytes(s, fmt)), f"{BITS[fmt]:.3f} bits/linear weight"))
    for conv, parts in TRAINING_BYTES.items():
        breakdown = " + ".join(f"{v} {k}" for k, v in parts.items())
        rows.append(
            (f"train memory ({conv})", _gib(training_bytes(s, conv)), f"{sum(parts.values())} B/param: {breakdown}")
        )
    kv_formula = f"2·{s.n_layers}·{s.n_kv_heads}·{s.hd}·seq·{batch}·{DTYPE_BYTES[dtype]:g}"
    if s.sliding_window:
        kv_formula += f", seq ≤ window {s.sliding_window}"
    rows.append((f"KV cache {dtype} @{seq}×{batch}", _gib(shape_kv_cache_bytes(s, seq, batch, dtype)), kv_formula))
    per_token = shape_kv_cache_bytes(s, 1, 1, dtype)
    rows.append(("  per token", f"{per_token / 1024:,.1f} KiB", "2·L·Hkv·hd·bytes"))
    return rows


def describe(s: Shape) -> str:
    """One line: the shape's dimensions."""
    moe = f", MoE {s.experts_per_token}/{s.n_experts}" if s.n_experts > 1 else ""
    win = f", window {s.sliding_window}" if s.sliding_window else ""
    return (
        f"{s.name}: V={s.vocab_size} L={s.n_layers} D={s.d_model} H={s.n_heads} Hkv={s.n_kv_heads} hd={s.hd} "
        f"F={s.d_ff} {s.ffn} {s.norm}{moe}{win}, {'tied' if s.tie_embeddings else 'untied'}"
    )


def main(cfg: CalcConfig) -> int:
    s = resolve_shape(cfg.preset)
    rows = table_rows(s, cfg.seq, cfg.batch, cfg.dtype)
    w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    print(describe(s))
    print(f"{'quantity':<{w0}}  {'value':>{w1}}  formula")
    for name, value, formula in rows:
        print(f"{name:<{w0}}  {value:>{w1}}  {formula}")
    return 0


if __name__ == "__main__":
    import sys

    from lmstack.cli import main as cli_main

    sys.exit(cli_main(["calc", *sys.argv[1:]]))
