"""Export a Llama-family model to a GGUF file that llama.cpp (and ollama, and `transformers`) load as is.

Llama (architecture `llama`) and Llama with per-head QK-norm (`qwen3`, HF's Qwen3: `blk.{i}.attn_q_norm`,
`blk.{i}.attn_k_norm`). The inverse of `lmstack.model.gguf` (which reads GGUF into an HF directory): config ->
`<arch>.*` metadata,
tokenizer -> `tokenizer.ggml.*` metadata, tensors -> GGUF names in F32, F16, Q8_0, Q4_0 or Q4_1. The container
(header, key/value section, tensor index, 32-byte aligned data) is written by the `gguf` package's `GGUFWriter`;
the block quantizers are ours (`gguf_blocks.py`, checked bit for bit against `gguf.quants`). Layout facts:

- GGUF names: `token_embd`, `blk.{i}.attn_q|k|v|output`, `blk.{i}.ffn_gate|up|down`, `blk.{i}.attn_norm`,
  `blk.{i}.ffn_norm`, `output_norm`, `output` (absent when the head is tied: llama.cpp reuses `token_embd`).
- `llama`: Q and K rows are permuted from HF's rotate-half order into ggml's interleaved RoPE order (`permute_qk`,
  the inverse of `lmstack.model.gguf.unpermute_qk`). `qwen3` runs ggml's NeoX (rotate-half) RoPE: rows stay.
- 1-D tensors (norms) are always F32; a 2-D tensor whose rows are not a multiple of 32 falls back to F16.
- A quantized lmstack checkpoint is exported from its dequantized weights (`swap.dequantize_model`), then
  re-quantized to the GGUF type: GPTQ/AWQ integers do not map onto Q4_0 blocks one to one (different grids).

Tokenizer: byte-level BPE only (`tokenizer.ggml.model = gpt2`). Tokens are written in the GPT-2 byte-to-unicode
spelling, merges as "a b" strings (for lmstack-trained tokenizers, which rank tokens like tiktoken, every split
of every token in rank order), and `tokenizer.ggml.pre` names llama.cpp's pre-tokenizer with the same regex as
ours (`PRE_TOKENIZERS`). Left out: SentencePiece vocabularies, k-quants, MoE / Qwen2 / GPT-2 architectures,
rope scaling, sliding windows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmstack.quant import gguf_blocks

# Our split stages -> llama.cpp's pre-tokenizer with the same regexes (llama-vocab.cpp).
PRE_TOKENIZERS = {"smollm": "smollm", "gpt-2": "gpt2", "llama-bpe": "gpt4", "gpt-4o": "o200k"}  # -> patterns.NAMED
TYPES = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1"}
FILE_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7}  # gguf.LlamaFileType
BLOCK_NAMES = {
    "attn_norm.weight": "attn_norm.weight",
    "attn.q_proj.weight": "attn_q.weight",
    "attn.k_proj.weight": "attn_k.weight",
    "attn.v_proj.weight": "attn_v.weight",
    "attn.o_proj.weight": "attn_output.weight",
    "attn.q_norm.weight": "attn_q_norm.weight",
    "attn.k_norm.weight": "attn_k_norm.weight",
    "ffn_norm.weight": "ffn_norm.weight",
    "ffn.gate_proj.weight": "ffn_gate.weight",
    "ffn.up_proj.weight": "ffn_up.weight",
    "ffn.down_proj.weight": "ffn_down.weight",
}
TOP_NAMES = {
    "embed.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF rotate-half row order -> ggml interleaved order: row (h, j, i) -> (h, i, j) inside each head."""
    hd = w.shape[0] // n_heads
    return w.reshape(n_heads, 2, hd // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(name: str) -> str:
    """Our state-dict name -> GGUF tensor name (blocks.3.attn.q_proj.weight -> blk.3.attn_q.weight)."""
    if name in TOP_NAMES:
        return TOP_NAMES[name]
    _, i, rest = name.split(".", 2)
    return f"blk.{i}.{BLOCK_NAMES[rest]}"


def pre_tokenizer(tokenizer: Any) -> str:
    """llama.cpp's name for the tokenizer's split regexes, or ValueError."""
    from lmstack.tokenizer.hf_format import onig_compatible
    from lmstack.tokenizer.patterns import NAMED

    stages = [onig_compatible(s) for s in tokenizer.split_stages]  # a reloaded tokenizer.json holds this spelling
    for name, ours in PRE_TOKENIZERS.items():
        if stages == [onig_compatible(s) for s in NAMED[ours]]:
            return name
    raise ValueError("GGUF export: the tokenizer's pre-tokenizer regex has no llama.cpp equivalent "
                     f"(supported: {', '.join(PRE_TOKENIZERS)})")  # fmt: skip


def vocabulary(tokenizer: Any) -> tuple[list[str], list[int], list[str]]:
    """(tokens in GPT-2 byte spelling, GGUF token types, merges "a b") of a byte-level BPE tokenizer."""
    from lmstack.tokenizer.bpe import splits_of_vocab
    from lmstack.tokenizer.hf_format import token_to_str

    V = tokenizer.vocab_size
    tokens, types = [f"[PAD{i}]" for i in range(V)], [5] * V  # 5 = unused (ids a vocabulary skips)
    for tok, i in tokenizer.mergeable_ranks.items():
        tokens[i], types[i] = token_to_str(tok), 1  # 1 = normal
    for s, i in tokenizer.special_tokens.items():
        tokens[i], types[i] = s, 3  # 3 = control
    pairs = tokenizer.merges if tokenizer.merges is not None else splits_of_vocab(tokenizer.mergeable_ranks)
    merges = [f"{token_to_str(a)} {token_to_str(b)}" for a, b in pairs]
    return tokens, types, merges


def tensor_data(name: str, t: torch.Tensor, qtype: str) -> tuple[np.ndarray, Any]:
    """(array to write, GGML type) for one tensor under the requested file type."""
    import gguf

    x = t.detach().float().cpu().numpy()
    kind = "F32" if x.ndim == 1 else qtype
    if kind in gguf_blocks.BLOCK_BYTES and x.shape[-1] % gguf_blocks.BLOCK:
        kind = "F16"  # rows that do not split into 32-value blocks
    if kind == "F32":
        return x.astype(np.float32), gguf.GGMLQuantizationType.F32
    if kind == "F16":
        return x.astype(np.float16), gguf.GGMLQuantizationType.F16
    return gguf_blocks.quantize(x, kind), gguf.GGMLQuantizationType[kind]


def export_gguf(model: Any, tokenizer: Any, path: str | Path, qtype: str = "f16", name: str = "model") -> Path:
    """Write `model` (a float lmstack Transformer of Llama shape) and its tokenizer to `path` (atomically)."""
    import gguf

    from lmstack.model.hf import hf_family

    cfg = model.config
    if qtype not in TYPES:
        raise ValueError(f"--gguf_type={qtype!r}: expected one of {', '.join(TYPES)}")
    arch = hf_family(cfg)
    if arch not in ("llama", "qwen3") or cfg.rope_scaling is not None or cfg.n_experts:
        raise ValueError(f"GGUF export supports Llama and Qwen3 models only (this one is {arch!r}, "
                         f"rope_scaling={cfg.rope_scaling}, n_experts={cfg.n_experts})")  # fmt: skip
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    w = gguf.GGUFWriter(tmp, arch)
    w.add_name(name)
    w.add_file_type(FILE_TYPES[TYPES[qtype]])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.d_model)
    w.add_block_count(cfg.n_layers)
    w.add_feed_forward_length(cfg.d_ff)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.n_kv_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_dimension_count(cfg.rope_dim)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    tokens, types, merges = vocabulary(tokenizer)
    if len(tokens) != cfg.vocab_size:
        raise ValueError(f"tokenizer has {len(tokens)} tokens but the model's vocab_size is {cfg.vocab_size}")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre_tokenizer(tokenizer))
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    for key, value in (("bos", cfg.bos_token_id or tokenizer.bos_id), ("eos", cfg.eos_token_id or tokenizer.eos_id)):
        if value is not None:
            getattr(w, f"add_{key}_token_id")(int(value))
    w.add_add_bos_token(False)  # lmstack never prepends BOS implicitly
    if tokenizer.chat_template:
        w.add_chat_template(tokenizer.chat_template)
    tied = model.lm_head.weight is model.embed.weight  # not cfg.tie_embeddings: a quantized head is its own copy
    for ours, t in model.state_dict().items():
        if ours == "lm_head.weight" and tied:
            continue
        x = t
        if arch == "llama" and ours.endswith(("attn.q_proj.weight", "attn.k_proj.weight")):
            heads = cfg.n_heads if "q_proj" in ours else cfg.n_kv_heads
            x = torch.from_numpy(permute_qk(t.detach().float().cpu().numpy(), heads))
        data, kind = tensor_data(ours, x, TYPES[qtype])
        w.add_tensor(gguf_name(ours), data, raw_dtype=kind if data.dtype == np.uint8 else None)
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)  # atomic: the file appears complete or not at all
    finally:
        tmp.unlink(missing_ok=True)
    return path
