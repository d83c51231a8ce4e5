"""The calculator against published counts, `transformers` models of the same shape, and formulas by hand."""

from __future__ import annotations

import math
import types

import pytest
import torch

from lmstack.model import calc
from lmstack.model.calc import (
    BITS,
    CalcConfig,
    count_params,
    forward_flops_per_token,
    kv_cache_bytes,
    nf4_bits,
    shape_kv_cache_bytes,
    training_bytes,
    weight_bytes,
)
from lmstack.model.shapes import SHAPES, Shape, get_shape, shape_from_config

# Exact sums of the released checkpoints' tensor sizes (safetensors headers of the hub files).
EXACT = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
    "llama-2-7b": 6_738_415_616,
    "llama-3-8b": 8_030_261_248,
    "mistral-7b": 7_241_732_096,
    "mixtral-8x7b": 46_702_792_704,
    "qwen2.5-0.5b": 494_032_768,
    "smollm2-135m": 134_515_008,
}


@pytest.mark.parametrize("name", list(EXACT))
def test_matches_published_exact_counts(name: str) -> None:
    assert count_params(get_shape(name)).total == EXACT[name]


# The Qwen2.5-32B model card says 32.5B; its config gives 32.76B, which is also `sum(numel)` of the same-shape
# transformers model (test below). Every other published count is ours rounded or truncated.
CARD_OFF = {"qwen2.5-32b"}


@pytest.mark.parametrize("name", [n for n in SHAPES if n not in CARD_OFF])
def test_matches_published_rounded_counts(name: str) -> None:
    # Cards round or truncate: ours is within one unit of the published number's last significant digit.
    s = get_shape(name)
    digits = len(f"{s.published_params:.15g}".replace(".", "").strip("0"))
    unit = 10 ** (math.floor(math.log10(s.published_params)) - digits + 1)
    assert abs(count_params(s).total - s.published_params) < unit


@pytest.mark.parametrize("name", sorted(CARD_OFF))
def test_regression_qwen_cards_round_wrong(name: str) -> None:
    s = get_shape(name)
    assert count_params(s).total > 1.004 * s.published_params
    assert count_params(s).total == sum(p.numel() for p in _hf_model_on_meta(s).parameters())


def test_mixtral_active_params() -> None:
    p = count_params(get_shape("mixtral-8x7b"))
    assert p.active == pytest.approx(12.9e9, rel=2e-3)
    assert p.total == pytest.approx(46.7e9, rel=1e-3)
    # active = total - 6 of the 8 experts of every layer
    assert p.total - p.active == 32 * 6 * 3 * 4096 * 14336


def test_tied_vs_untied_differs_by_one_table() -> None:
    tied = get_shape("smollm2-135m")
    untied = Shape(**{**tied.__dict__, "tie_embeddings": False})
    assert count_params(untied).total - count_params(tied).total == 49152 * 576


def _hf_model_on_meta(s: Shape) -> torch.nn.Module:
    """The same-shape `transformers` model, built without memory on the meta device."""
    import transformers as tf

    common = dict(vocab_size=s.vocab_size, num_hidden_layers=s.n_layers, tie_word_embeddings=s.tie_embeddings)
    llama_like = dict(
        hidden_size=s.d_model, intermediate_size=s.d_ff, num_attention_heads=s.n_heads,
        num_key_value_heads=s.n_kv_heads, head_dim=s.hd, **common,
    )  # fmt: skip
    if s.learned_pos:
        cfg = tf.GPT2Config(n_embd=s.d_model, n_layer=s.n_layers, n_head=s.n_heads, n_positions=s.max_seq_len,
                            vocab_size=s.vocab_size)  # fmt: skip
    elif s.n_experts > 1:
        cfg = tf.MixtralConfig(num_local_experts=s.n_experts, num_experts_per_tok=s.experts_per_token, **llama_like)
    elif s.qkv_bias:
        cfg = tf.Qwen2Config(**llama_like)
    else:
        cfg = tf.LlamaConfig(**llama_like)
    with torch.device("meta"):
        return tf.AutoModelForCausalLM.from_config(cfg)


@pytest.mark.parametrize("name", ["gpt2", "gpt2-xl", "llama-2-13b", "llama-3-8b", "qwen2.5-1.5b", "qwen2.5-7b",
                                  "mixtral-8x7b", "smollm2-135m"])  # fmt: skip
def test_matches_transformers_numel_real_shapes(name: str) -> None:
    model = _hf_model_on_meta(get_shape(name))
    assert count_params(get_shape(name)).total == sum(p.numel() for p in model.parameters())


TINY = [
    Shape("tiny-llama", 101, 2, 32, 4, 2, 64),
    Shape("tiny-llama-tied-hd", 101, 3, 32, 4, 1, 48, head_dim=16, tie_embeddings=True),
    Shape("tiny-qwen", 77, 2, 48, 6, 2, 80, qkv_bias=True, tie_embeddings=True),
    Shape("tiny-moe", 64, 2, 32, 4, 2, 40, n_experts=4, experts_per_token=2),
    Shape("tiny-gpt2", 90, 2, 32, 4, 4, 128, ffn="gelu", bias=True, qkv_bias=True, norm="layernorm",
          norm_bias=True, learned_pos=True, tie_embeddings=True, max_seq_len=40),
]  # fmt: skip


@pytest.mark.parametrize("shape", TINY, ids=lambda s: s.name)
def test_matches_transformers_numel_tiny(shape: Shape) -> None:
    model = _hf_model_on_meta(shape)
    assert count_params(shape).total == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("shape", TINY[:2], ids=lambda s: s.name)
def test_forward_flops_match_torch_flop_counter(shape: Shape) -> None:
    # torch's FlopCounterMode counts every matmul of an eager-attention HF forward; eager attention computes the
    # full T×T scores (the mask is applied after), which is the PaLM convention S = T.
    import transformers as tf
    from torch.utils.flop_counter import FlopCounterMode

    T = 16
    kw = dict(vocab_size=shape.vocab_size, hidden_size=shape.d_model, intermediate_size=shape.d_ff,
              num_hidden_layers=shape.n_layers, num_attention_heads=shape.n_heads, head_dim=shape.hd,
              num_key_value_heads=shape.n_kv_heads, tie_word_embeddings=shape.tie_embeddings)  # fmt: skip
    cfg = tf.LlamaConfig(**kw)
    model = tf.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randint(0, shape.vocab_size, (1, T)))
    assert counter.get_total_flops() == pytest.approx(T * forward_flops_per_token(shape, T), rel=1e-9)


def test_flops_formula_by_hand() -> None:
    s = get_shape("llama-3-8b")
    n_mm = 32 * (4096 * (32 + 16) * 128 + 4096 * 4096 + 3 * 4096 * 14336) + 128256 * 4096
    assert forward_flops_per_token(s, 8192) == 2 * n_mm + 4 * 32 * 32 * 128 * 8192
    assert calc.training_flops_per_token(s, 8192) == 3 * forward_flops_per_token(s, 8192)
    # the causal average is Kaplan's halved attention term (T+1)/2 keys per query
    causal = forward_flops_per_token(s, 8192, causal=True)
    assert causal == 2 * n_mm + 4 * 32 * 32 * 128 * (8192 + 1) / 2
    # MoE: a token multiplies through its k = 2 experts and the D·E router, not all 8 experts
    mixtral = get_shape("mixtral-8x7b")
    n_mm = 32 * (4096 * (32 + 16) * 128 + 4096 * 4096 + 2 * 3 * 4096 * 14336 + 4096 * 8) + 32000 * 4096
    assert forward_flops_per_token(mixtral, 1) == 2 * n_mm + 4 * 32 * 32 * 128


def test_kv_cache_by_hand() -> None:
    # Llama-3-8B, bf16, 8k tokens: 2 · 32 layers · 8 KV heads · 128 · 8192 · 2 bytes = 1 GiB
    assert kv_cache_bytes(32, 8, 128, 8192, 1, "bf16") == 2 * 32 * 8 * 128 * 8192 * 2 == 2**30
    assert shape_kv_cache_bytes(get_shape("llama-3-8b"), 8192, 4, "fp32") == 8 * 2**30
    # Llama-2-7B has no GQA: 4x the KV heads, 4x the cache of Llama-3-8B at the same length
    assert shape_kv_cache_bytes(get_shape("llama-2-7b"), 8192) == 4 * 2**30
    # Mistral's rolling buffer never holds more than its 4096-token window
    mistral = get_shape("mistral-7b")
    assert shape_kv_cache_bytes(mistral, 32768) == shape_kv_cache_bytes(mistral, 4096) == 2**29


def test_nf4_bits_derivation() -> None:
    assert nf4_bits(64) == 4.5  # 4 + 32/64
    assert nf4_bits(64, double_quant=True) == pytest.approx(4 + 8 / 64 + 32 / (64 * 256))
    assert round(BITS["nf4-dq"], 3) == 4.127  # QLoRA: 0.127 bits/param of quantization constants


def test_weight_and_training_memory() -> None:
    s = get_shape("llama-2-7b")
    p = count_params(s)
    assert weight_bytes(s, "fp32") == 4 * p.total
    assert weight_bytes(s, "bf16") == 2 * p.total
    # nf4: the block linears at 4.5 bits, embeddings/head/norms at 16 bits
    assert weight_bytes(s, "nf4") == (p.linear * 4.5 + (p.total - p.linear) * 16) / 8
    assert training_bytes(s, "zero") == 16 * p.total
    assert training_bytes(s, "megatron") == 18 * p.total
    with pytest.raises(ValueError, match="fp5"):
        weight_bytes(s, "fp5")


def test_shape_from_config_reads_attributes() -> None:
    cfg = types.SimpleNamespace(vocab_size=101, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, head_dim=None,
                                d_ff=64, ffn="swiglu", n_experts=1, experts_per_token=1, tie_embeddings=False,
                                bias=False, norm="rmsnorm")  # fmt: skip
    assert count_params(shape_from_config(cfg)).total == count_params(TINY[0]).total


def test_cli_prints_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert calc.main(CalcConfig(preset="llama-3-8b", seq=32768)) == 0
    out = capsys.readouterr().out
    assert "8.030 B" in out and "4.00 GiB" in out  # params; KV cache 2·32·8·128·32768·2 bytes


def test_bad_input_names_the_flag() -> None:
    with pytest.raises(ValueError, match="--preset=nope"):
        calc.resolve_shape("nope")
    with pytest.raises(ValueError, match="--seq=0"):
        CalcConfig(seq=0)
    with pytest.raises(ValueError, match="n_heads=6 not a multiple"):
        Shape("bad", 10, 1, 12, 6, 4, 8)


OUR_VARIANTS = [
    dict(),
    dict(qk_norm=True, head_dim=12),
    dict(norm="layernorm", norm_bias=False, norm_placement="post"),
    dict(norm="layernorm", norm_bias=True, ffn="gelu", bias=True, qkv_bias=True, position="learned"),
    dict(position="sinusoidal", tie_embeddings=True, n_kv_heads=1),
    dict(position="alibi", qkv_bias=True, d_ff=80),
    dict(n_experts=4, experts_per_token=2, bias=True),
    dict(n_experts=3, experts_per_token=1, ffn="gelu", sliding_window=8),
]


@pytest.mark.parametrize("overrides", OUR_VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "base")
def test_matches_our_transformer_numel(overrides: dict) -> None:
    from lmstack.model import ModelConfig, Transformer

    cfg = ModelConfig(**{**dict(vocab_size=101, n_layers=2, d_model=48, n_heads=4, n_kv_heads=2), **overrides})
    with torch.device("meta"):
        model = Transformer(cfg)
    assert count_params(shape_from_config(cfg)).total == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset", ["tiny", "speedrun-cpu", "gpt2-124m", "gpt2-tiny", "mixtral-tiny", "smollm2-135m"])
def test_matches_our_presets(preset: str) -> None:
    from lmstack.model import ModelConfig, Transformer

    with torch.device("meta"):
        model = Transformer(ModelConfig.from_preset(preset))
    assert count_params(calc.resolve_shape(preset)).total == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("seq", "window"), [(1, 0), (10, 0), (4096, 0), (10, 4), (4, 10), (4096, 4000)])
def test_causal_average_keys_brute_force(seq: int, window: int) -> None:
    # query i (0-based) of a causal sequence reads i + 1 keys, at most `window`
    s = Shape("w", 10, 1, 8, 2, 2, 8, sliding_window=window)
    brute = sum(min(i + 1, window) if window else i + 1 for i in range(seq)) / seq
    assert calc.attention_keys(s, seq, causal=True) == pytest.approx(brute, rel=1e-12)
    assert calc.attention_keys(s, seq) == (min(seq, window) if window else seq)
