"""Named model shapes (data only): `ModelConfig.from_preset(name)` builds one, keyword overrides on top.

These are our own shapes for training and tests. Real published shapes for the calculator (Llama-3-8B,
Mixtral-8x7B, ...) live in `shapes.py`. Each entry is plain `ModelConfig` keyword arguments.
"""

from __future__ import annotations

from typing import Any

GPT2_STYLE: dict[str, Any] = dict(
    norm="layernorm",
    norm_bias=True,
    position="learned",
    ffn="gelu",
    gelu_approx="tanh",
    bias=True,
    qkv_bias=True,
    tie_embeddings=True,
)

LLAMA_STYLE: dict[str, Any] = dict(norm="rmsnorm", position="rope", ffn="swiglu", bias=False, qkv_bias=False)

PRESETS: dict[str, dict[str, Any]] = {
    # unit tests and smoke runs: Llama style (RMSNorm, RoPE, SwiGLU), 2 layers, width 32, GQA 4/2, vocab 101
    "tiny": dict(vocab_size=101, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, max_seq_len=64, **LLAMA_STYLE),
    # the CPU speedrun's shape (configs/speedrun_cpu.yaml, measured in docs/log.md): ~0.8M non-embedding parameters
    "speedrun-cpu": dict(
        vocab_size=4096, n_layers=4, d_model=128, n_heads=4, max_seq_len=128, tie_embeddings=True, **LLAMA_STYLE
    ),
    # GPT-2 small (Radford et al. 2019): 124M parameters with tied embeddings
    "gpt2-124m": dict(vocab_size=50257, n_layers=12, d_model=768, n_heads=12, max_seq_len=1024, **GPT2_STYLE),
    "gpt2-tiny": dict(vocab_size=101, n_layers=2, d_model=32, n_heads=4, max_seq_len=64, **GPT2_STYLE),
    "llama-tiny": dict(
        vocab_size=101, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=64, **LLAMA_STYLE
    ),
    "mixtral-tiny": dict(
        vocab_size=101,
        n_layers=2,
        d_model=32,
        n_heads=4,
        n_kv_heads=2,
        d_ff=64,
        max_seq_len=64,
        n_experts=4,
        experts_per_token=2,
        **LLAMA_STYLE,
    ),
    # SmolLM2-135M's shape (Llama architecture, tied embeddings, RoPE theta 1e5)
    "smollm2-135m": dict(
        vocab_size=49152,
        n_layers=30,
        d_model=576,
        n_heads=9,
        n_kv_heads=3,
        d_ff=1536,
        max_seq_len=8192,
        rope_theta=100000.0,
        tie_embeddings=True,
        **LLAMA_STYLE,
    ),
}
