"""Tensor-name tables between our `Transformer` state dict and Hugging Face checkpoints (data only).

Each family is a list of (our name, HF name) templates; `{i}` is a layer index, `{e}` an expert index.
GPT-2 stores q, k and v fused in one `c_attn` and keeps its linears as `Conv1D` with (in, out) weights, so
`hf.py` fuses our q/k/v into the pseudo-name `attn.qkv` and transposes the names listed in `GPT2_TRANSPOSED`.
"""

from __future__ import annotations

import re

GPT2: list[tuple[str, str]] = [
    ("embed.weight", "transformer.wte.weight"),
    ("pos_embed.weight", "transformer.wpe.weight"),
    ("blocks.{i}.attn_norm.weight", "transformer.h.{i}.ln_1.weight"),
    ("blocks.{i}.attn_norm.bias", "transformer.h.{i}.ln_1.bias"),
    ("blocks.{i}.attn.qkv.weight", "transformer.h.{i}.attn.c_attn.weight"),
    ("blocks.{i}.attn.qkv.bias", "transformer.h.{i}.attn.c_attn.bias"),
    ("blocks.{i}.attn.o_proj.weight", "transformer.h.{i}.attn.c_proj.weight"),
    ("blocks.{i}.attn.o_proj.bias", "transformer.h.{i}.attn.c_proj.bias"),
    ("blocks.{i}.ffn_norm.weight", "transformer.h.{i}.ln_2.weight"),
    ("blocks.{i}.ffn_norm.bias", "transformer.h.{i}.ln_2.bias"),
    ("blocks.{i}.ffn.up_proj.weight", "transformer.h.{i}.mlp.c_fc.weight"),
    ("blocks.{i}.ffn.up_proj.bias", "transformer.h.{i}.mlp.c_fc.bias"),
    ("blocks.{i}.ffn.down_proj.weight", "transformer.h.{i}.mlp.c_proj.weight"),
    ("blocks.{i}.ffn.down_proj.bias", "transformer.h.{i}.mlp.c_proj.bias"),
    ("norm.weight", "transformer.ln_f.weight"),
    ("norm.bias", "transformer.ln_f.bias"),
    ("lm_head.weight", "lm_head.weight"),
]
GPT2_TRANSPOSED = ("c_attn.weight", "c_proj.weight", "c_fc.weight")  # Conv1D: (in, out)
GPT2_IGNORED = (r"\.attn\.bias$", r"\.attn\.masked_bias$")  # old checkpoints store the causal mask as a buffer

_LLAMA_COMMON: list[tuple[str, str]] = [
    ("embed.weight", "model.embed_tokens.weight"),
    ("blocks.{i}.attn_norm.weight", "model.layers.{i}.input_layernorm.weight"),
    ("blocks.{i}.ffn_norm.weight", "model.layers.{i}.post_attention_layernorm.weight"),
    *[
        (f"blocks.{{i}}.attn.{p}_proj.{w}", f"model.layers.{{i}}.self_attn.{p}_proj.{w}")
        for p in "qkvo"
        for w in ("weight", "bias")
    ],
    ("blocks.{i}.attn.q_norm.weight", "model.layers.{i}.self_attn.q_norm.weight"),
    ("blocks.{i}.attn.k_norm.weight", "model.layers.{i}.self_attn.k_norm.weight"),
    ("norm.weight", "model.norm.weight"),
    ("lm_head.weight", "lm_head.weight"),
]
LLAMA: list[tuple[str, str]] = _LLAMA_COMMON + [
    (f"blocks.{{i}}.ffn.{p}_proj.{w}", f"model.layers.{{i}}.mlp.{p}_proj.{w}")
    for p in ("gate", "up", "down")
    for w in ("weight", "bias")
]
MIXTRAL: list[tuple[str, str]] = _LLAMA_COMMON + [
    ("blocks.{i}.ffn.router.weight", "model.layers.{i}.block_sparse_moe.gate.weight"),
    ("blocks.{i}.ffn.experts.{e}.gate_proj.weight", "model.layers.{i}.block_sparse_moe.experts.{e}.w1.weight"),
    ("blocks.{i}.ffn.experts.{e}.down_proj.weight", "model.layers.{i}.block_sparse_moe.experts.{e}.w2.weight"),
    ("blocks.{i}.ffn.experts.{e}.up_proj.weight", "model.layers.{i}.block_sparse_moe.experts.{e}.w3.weight"),
]
LLAMA_IGNORED = (r"rotary_emb\.inv_freq$",)  # old checkpoints store the RoPE table as a buffer


def _t5(gated: bool) -> list[tuple[str, str]]:
    """T5ForConditionalGeneration: `layer.0` self-attention, (decoder) `layer.1` cross-attention, last `layer` FFN;
    ReLU FFN `wi`/`wo`, gated FFN `wi_0` (gate) / `wi_1` (up) / `wo`; relative bias in block 0 of each stack."""
    ffn = [("gate_proj", "wi_0"), ("up_proj", "wi_1")] if gated else [("up_proj", "wi")]
    ffn.append(("down_proj", "wo"))
    out = [("embed.weight", "shared.weight"), ("lm_head.weight", "lm_head.weight")]
    for stack, ffn_layer in (("encoder", 1), ("decoder", 2)):
        dense = f"{stack}.block.{{i}}.layer.{ffn_layer}.DenseReluDense"
        out += [
            (f"{stack}_rel.weight", f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
            (f"{stack}_norm.weight", f"{stack}.final_layer_norm.weight"),
            (f"{stack}_blocks.{{i}}.attn_norm.weight", f"{stack}.block.{{i}}.layer.0.layer_norm.weight"),
            (f"{stack}_blocks.{{i}}.ffn_norm.weight", f"{stack}.block.{{i}}.layer.{ffn_layer}.layer_norm.weight"),
            *[
                (f"{stack}_blocks.{{i}}.attn.{p}_proj.weight", f"{stack}.block.{{i}}.layer.0.SelfAttention.{p}.weight")
                for p in "qkvo"
            ],
            *[
                (f"{stack}_blocks.{{i}}.ffn.{ours}.weight", f"{dense}.{hf}.weight")
                for ours, hf in ffn
            ],
        ]  # fmt: skip
    out += [("decoder_blocks.{i}.cross_norm.weight", "decoder.block.{i}.layer.1.layer_norm.weight")]
    out += [
        (f"decoder_blocks.{{i}}.cross_attn.{p}_proj.weight", f"decoder.block.{{i}}.layer.1.EncDecAttention.{p}.weight")
        for p in "qkvo"
    ]
    return out


T5_IGNORED = (r"^(encoder|decoder)\.embed_tokens\.weight$", r"EncDecAttention\.relative_attention_bias")  # tied copies

# BertModel (post-norm encoder): `attention.output.LayerNorm` normalizes after attention, `output.LayerNorm`
# after the FFN; `embeddings.LayerNorm` is our `embed_norm`. BertForMaskedLM & co. prefix everything with "bert."
BERT: list[tuple[str, str]] = [
    ("embed.weight", "embeddings.word_embeddings.weight"),
    ("pos_embed.weight", "embeddings.position_embeddings.weight"),
    ("type_embed.weight", "embeddings.token_type_embeddings.weight"),
    ("embed_norm.weight", "embeddings.LayerNorm.weight"),
    ("embed_norm.bias", "embeddings.LayerNorm.bias"),
    *[
        (f"blocks.{{i}}.attn.{ours}_proj.{w}", f"encoder.layer.{{i}}.attention.self.{theirs}.{w}")
        for ours, theirs in (("q", "query"), ("k", "key"), ("v", "value"))
        for w in ("weight", "bias")
    ],
    *[
        (f"blocks.{{i}}.{ours}.{w}", f"encoder.layer.{{i}}.{theirs}.{w}")
        for ours, theirs in (
            ("attn.o_proj", "attention.output.dense"),
            ("attn_norm", "attention.output.LayerNorm"),
            ("ffn.up_proj", "intermediate.dense"),
            ("ffn.down_proj", "output.dense"),
            ("ffn_norm", "output.LayerNorm"),
        )
        for w in ("weight", "bias")
    ],
]
# position_ids is a buffer; the pooler (tanh dense on [CLS]) and task heads (cls.*) are not part of the encoder
BERT_IGNORED = (r"embeddings\.position_ids$", r"^pooler\.", r"^cls\.")

# BertForMaskedLM's head: transform (dense, GELU, LayerNorm) then the decoder tied to the word embeddings + bias
BERT_MLM: list[tuple[str, str]] = [
    ("mlm.dense.weight", "cls.predictions.transform.dense.weight"),
    ("mlm.dense.bias", "cls.predictions.transform.dense.bias"),
    ("mlm.norm.weight", "cls.predictions.transform.LayerNorm.weight"),
    ("mlm.norm.bias", "cls.predictions.transform.LayerNorm.bias"),
    ("lm_head.bias", "cls.predictions.bias"),
]
BERT_MLM_IGNORED = (r"embeddings\.position_ids$", r"^pooler\.", r"^cls\.predictions\.decoder\.")  # tied copies

TABLES: dict[str, list[tuple[str, str]]] = {
    "gpt2": GPT2,
    "llama": LLAMA,
    "mistral": LLAMA,
    "qwen2": LLAMA,
    "qwen3": LLAMA,
    "mixtral": MIXTRAL,
    "bert": BERT,
    "bert-mlm": BERT + BERT_MLM,
    "t5": _t5(gated=False),
    "t5-gated": _t5(gated=True),
}
IGNORED: dict[str, tuple[str, ...]] = {
    "gpt2": GPT2_IGNORED,
    "mixtral": LLAMA_IGNORED,
    "bert": BERT_IGNORED,
    "bert-mlm": BERT_MLM_IGNORED,
    "t5": T5_IGNORED,
}


def _regex(template: str) -> re.Pattern[str]:
    pattern = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{e\}", r"(?P<e>\d+)")
    return re.compile(f"^{pattern}$")


def rename(name: str, family: str, to_hf: bool) -> str | None:
    """Our name -> HF name (to_hf) or back; None when the table has no entry for it.

    >>> rename("blocks.3.attn.q_proj.weight", "llama", to_hf=True)
    'model.layers.3.self_attn.q_proj.weight'
    """
    for ours, theirs in TABLES[family]:
        src, dst = (ours, theirs) if to_hf else (theirs, ours)
        m = _regex(src).match(name)
        if m:
            return dst.format(**m.groupdict())
    return None


def is_ignored(hf_name: str, family: str) -> bool:
    """Checkpoint entries that are buffers, not weights (safe to skip on import)."""
    patterns = IGNORED.get(family, LLAMA_IGNORED)
    return any(re.search(p, hf_name) for p in patterns)
