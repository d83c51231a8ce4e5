"""GGUF -> Hugging Face directory: read a llama.cpp model file, write config, fp32 safetensors and tokenizer.

GGUF (llama.cpp's single-file format, spec: github.com/ggml-org/ggml/blob/master/docs/gguf.md) holds metadata
key/values and tensors, many of them block-quantized. We read it with the `gguf` package (`GGUFReader`) and its
numpy dequantizers (`gguf.quants.dequantize`), then write what `Transformer.from_pretrained` and `transformers`
both load: `config.json` (LlamaForCausalLM or Qwen3ForCausalLM), `model.safetensors` (fp32, HF tensor names),
`generation_config.json`, `tokenizer.json` (the `tokenizers` JSON format), `tokenizer_config.json` (with the
chat template) and `special_tokens_map.json`.

Two layout facts matter:
- GGUF lists a tensor's dims fastest-first (ne0 = in_features), so a (out, in) nn.Linear weight shows as
  [in, out]; `GGUFReader` already hands us numpy arrays in (out, in) row-major order.
- llama.cpp's converter permutes the rows of Q and K inside every head for `llama` (see `unpermute_qk`); `qwen3`
  uses NeoX RoPE and keeps HF's row order.

Supported: architectures `llama` (Llama 1/2/3 without rope_freqs, Mistral, SmolLM) and `qwen3` (dense); tensor
types F32, F16, BF16, Q8_0, Q4_0, Q4_1; tokenizer model `gpt2` (byte-level BPE) with pre-tokenizer `smollm`,
`gpt-2` or `llama-bpe`. Left out: SentencePiece (`llama`) vocabularies, the Llama-3 regex pre-tokenizers,
k-quants, rope scaling, MoE GGUFs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmstack.common.atomic import atomic_files
from lmstack.common.log import progress
from lmstack.tokenizer.hf_format import onig_compatible
from lmstack.tokenizer.patterns import GPT4

# Stored in model.safetensors' metadata; bump it when the output changes so cached conversions are redone.
CONVERTER_VERSION = "2"
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")
SUPPORTED_ARCHS = ("llama", "qwen3")  # qwen3 = Llama + per-head QK-norm, NeoX RoPE (no Q/K permutation)

# GGUF tensor name (after "blk.{i}.") -> HF name (after "model.layers.{i}.").
BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",  # qwen3
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
TOP_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}  # fmt: skip

_MISSING = object()


def _meta(reader: Any, key: str, default: Any = _MISSING) -> Any:
    """A metadata value (str, number, bool or list), or `default`; missing and no default -> ValueError."""
    field = reader.fields.get(key)
    if field is None:
        if default is _MISSING:
            raise ValueError(f"GGUF metadata key {key!r} is missing")
        return default
    return field.contents()


def _f32(x: float) -> float:
    """The shortest decimal that is the same float32 (GGUF stores 1e-5 as 9.99999975e-06)."""
    return float(str(np.float32(x)))


def read_config(reader: Any) -> dict[str, Any]:
    """HF `config.json` (LlamaForCausalLM) from the GGUF metadata."""
    arch = _meta(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise ValueError(f"GGUF architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHS)})")
    scaling = _meta(reader, f"{arch}.rope.scaling.type", "none")
    if scaling not in ("none", None):
        raise ValueError(f"GGUF {arch}.rope.scaling.type={scaling!r} is not supported (only unscaled RoPE)")
    n_heads = int(_meta(reader, f"{arch}.attention.head_count"))
    d_model = int(_meta(reader, f"{arch}.embedding_length"))
    head_dim = int(_meta(reader, f"{arch}.attention.key_length", d_model // n_heads))
    rotary = int(_meta(reader, f"{arch}.rope.dimension_count", head_dim))
    if rotary != head_dim:
        raise ValueError(
            f"GGUF {arch}.rope.dimension_count={rotary} != head dim {head_dim}: partial rotary unsupported"
        )
    names = {t.name for t in reader.tensors}
    vocab = int(_meta(reader, f"{arch}.vocab_size", len(_meta(reader, "tokenizer.ggml.tokens", []))))
    return {
        "architectures": ["Qwen3ForCausalLM" if arch == "qwen3" else "LlamaForCausalLM"],
        "model_type": arch,
        "hidden_size": d_model,
        "intermediate_size": int(_meta(reader, f"{arch}.feed_forward_length")),
        "num_hidden_layers": int(_meta(reader, f"{arch}.block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(_meta(reader, f"{arch}.attention.head_count_kv", n_heads)),
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": _f32(_meta(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
        "rope_theta": _f32(_meta(reader, f"{arch}.rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "max_position_embeddings": int(_meta(reader, f"{arch}.context_length")),
        "vocab_size": vocab,
        "tie_word_embeddings": "output.weight" not in names,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": _meta(reader, "tokenizer.ggml.bos_token_id", None),
        "eos_token_id": _meta(reader, "tokenizer.ggml.eos_token_id", None),
        "pad_token_id": _meta(reader, "tokenizer.ggml.padding_token_id", None),
        "torch_dtype": "float32",
    }


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation: GGUF's interleaved-rotary layout -> HF's rotate_half layout.

    Rotary embedding rotates pairs of coordinates inside each head (head dim hd = 2·m). HF's `rotate_half`
    pairs coordinate i with i + m (the two halves of the head); ggml's rope pairs 2i with 2i + 1 (neighbours).
    Both compute the same attention if Q and K rows are reordered consistently, so the converter moved HF row
    (head h, half j, index i), i.e. h·hd + j·m + i, to GGUF row h·hd + 2·i + j. Viewing GGUF rows as
    (h, i, j) and swapping the last two axes gives back (h, j, i), the HF order. K uses n_kv_heads.

    >>> hf = np.arange(4)[:, None]            # one head, hd = 4: rows [a0 a1 b0 b1] (halves a, b)
    >>> gguf_rows = hf[[0, 2, 1, 3]]           # ggml pairs neighbours: [a0 b0 a1 b1]
    >>> unpermute_qk(gguf_rows, 1)[:, 0].tolist()
    [0, 1, 2, 3]
    """
    out_features = w.shape[0]
    hd = out_features // n_heads
    assert n_heads * hd == out_features and hd % 2 == 0, f"rows {out_features} do not split into {n_heads} heads"
    # rows (h, i, j) with i < hd/2, j in {0, 1}  ->  (h, j, i)
    return w.reshape(n_heads, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_name(name: str) -> str:
    """GGUF tensor name -> HF name, or ValueError naming the tensor."""
    if name in TOP_NAMES:
        return TOP_NAMES[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{BLOCK_NAMES[parts[2]]}"
    raise ValueError(f"GGUF tensor {name!r} has no Llama equivalent (unsupported feature, e.g. rope_freqs or MoE)")


def read_tensors(reader: Any, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Every tensor dequantized to fp32 under its HF name, Q/K rows in HF order."""
    import gguf

    tensors: dict[str, torch.Tensor] = {}
    for t in progress(reader.tensors, desc="dequantize", unit="tensor"):
        kind = t.tensor_type.name
        if kind not in SUPPORTED_TYPES:
            raise ValueError(f"GGUF tensor {t.name!r} has type {kind}; supported: {', '.join(SUPPORTED_TYPES)}")
        name = hf_name(t.name)
        w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        expected = tuple(int(d) for d in reversed(t.shape))  # GGUF dims are fastest-first
        w = w.reshape(expected)
        if config["model_type"] == "llama":  # qwen3 stores rotate-half (NeoX) rows as they are
            if name.endswith("q_proj.weight"):
                w = unpermute_qk(w, config["num_attention_heads"])
            elif name.endswith("k_proj.weight"):
                w = unpermute_qk(w, config["num_key_value_heads"])
        tensors[name] = torch.from_numpy(np.require(w, requirements=["C", "W"]))  # memmapped F32 is read-only
    missing = _expected_names(config) - tensors.keys()
    if missing:
        raise ValueError(f"GGUF file lacks tensors for {sorted(missing)[:5]} ({len(missing)} missing)")
    return tensors


def _expected_names(config: dict[str, Any]) -> set[str]:
    names = {"model.embed_tokens.weight", "model.norm.weight"}
    if not config["tie_word_embeddings"]:
        names.add("lm_head.weight")
    qk_norm = config["model_type"] == "qwen3"
    block = [n for n in BLOCK_NAMES.values() if qk_norm or not n.endswith(("q_norm.weight", "k_norm.weight"))]
    for i in range(config["num_hidden_layers"]):
        names |= {f"model.layers.{i}.{n}" for n in block}
    return names


# GGUF token types (llama.cpp `llama_token_type`): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
_SPECIAL_TYPES = {2: True, 3: True, 4: False}  # type -> `special` flag of the HF added token

# tokenizer.ggml.pre -> the HF pre-tokenizer that splits text before BPE.
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
PRE_TOKENIZERS: dict[str, dict[str, Any]] = {
    # SmolLM: every digit is its own piece, then GPT-2's regex split and byte-to-unicode mapping.
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
    "gpt-2": _BYTE_LEVEL,
    "default": _BYTE_LEVEL,
    # Llama 3 / GPT-4 (cl100k) split regex; llama.cpp also sets ignore_merges for it (as lmstack-trained vocabularies
    # written by `lmstack convert --to x.gguf` need: their merges follow token ranks).
    "llama-bpe": {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": onig_compatible(GPT4)}, "behavior": "Isolated", "invert": False},
            {**_BYTE_LEVEL, "use_regex": False},
        ],
    },
}
IGNORE_MERGES = ("llama-bpe",)


def _bpe_json(
    tokens: list[str], merges: list[list[str]], added: list[dict[str, Any]], pre: dict[str, Any],
    ignore_merges: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """A `tokenizers` BPE tokenizer.json: byte-level pre-tokenizer, decoder and post-processor.

    The BPE model has no unk token: a byte the vocabulary lacks (SmolLM2 lacks 21, e.g. 0x04) is dropped, as
    llama.cpp's BPE tokenizer and `tokenizers` without an unk token both do. (The GGUF's unknown_token_id still
    becomes tokenizer_config's unk_token, as in the original HF files.)
    """
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": ignore_merges,
            "vocab": {tok: i for i, tok in enumerate(tokens)}, "merges": merges,
        },
    }  # fmt: skip


def tokenizer_files(reader: Any, config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` from the GGUF vocabulary."""
    model = _meta(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"GGUF tokenizer.ggml.model={model!r} is not supported (only 'gpt2', byte-level BPE)")
    pre = _meta(reader, "tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise ValueError(f"GGUF tokenizer.ggml.pre={pre!r} is not supported (supported: {', '.join(PRE_TOKENIZERS)})")
    tokens: list[str] = list(_meta(reader, "tokenizer.ggml.tokens"))
    types: list[int] = list(_meta(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = [m.split(" ") for m in _meta(reader, "tokenizer.ggml.merges")]
    bad = next((m for m in merges if len(m) != 2), None)
    if bad is not None:
        raise ValueError(f"GGUF merge {' '.join(bad)!r} is not two space-separated tokens")
    added = [
        {"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": _SPECIAL_TYPES[kind]}
        for i, (tok, kind) in enumerate(zip(tokens, types, strict=True)) if kind in _SPECIAL_TYPES
    ]  # fmt: skip

    def token(key: str) -> str | None:
        i = _meta(reader, f"tokenizer.ggml.{key}_token_id", None)
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    tokenizer_json = _bpe_json(tokens, merges, added, PRE_TOKENIZERS[pre], pre in IGNORE_MERGES)
    specials = {k: token(k2) for k, k2 in (("bos_token", "bos"), ("eos_token", "eos"), ("unk_token", "unknown"),
                                           ("pad_token", "padding"))}  # fmt: skip
    specials = {k: v for k, v in specials.items() if v is not None}
    extra = [a["content"] for a in added if a["special"] and a["content"] not in specials.values()]
    tokenizer_config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_bos_token": bool(_meta(reader, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(_meta(reader, "tokenizer.ggml.add_eos_token", False)),
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": config["max_position_embeddings"],
        **specials,
        "additional_special_tokens": extra,
        "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added},
        "chat_template": _meta(reader, "tokenizer.chat_template", None),
    }
    return {
        "tokenizer.json": tokenizer_json,
        "tokenizer_config.json": tokenizer_config,
        "special_tokens_map.json": {**specials, "additional_special_tokens": extra},
    }


def converter_version(hf_dir: str | Path) -> str | None:
    """The CONVERTER_VERSION that wrote `hf_dir` (None if not written by `convert_gguf`)."""
    from safetensors import safe_open

    with safe_open(str(Path(hf_dir) / "model.safetensors"), "pt") as f:
        return (f.metadata() or {}).get("lmstack_gguf")


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Convert a Llama-architecture GGUF file into an HF model directory at `out_dir`, each file written atomically
    (a non-empty `out_dir` that is not an lmstack save needs `overwrite=True`: see save_target.py)."""
    import gguf
    from safetensors.torch import save_file

    from lmstack.model.save_target import check_save_target

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    check_save_target(out_dir, overwrite, "--to")
    try:
        reader = gguf.GGUFReader(gguf_path)
    except (ValueError, OSError) as e:
        raise ValueError(f"{gguf_path}: not a readable GGUF file ({e})") from None
    config = read_config(reader)
    files = tokenizer_files(reader, config)  # before the slow part: unsupported tokenizers fail fast
    if len(files["tokenizer.json"]["model"]["vocab"]) != config["vocab_size"]:
        raise ValueError(f"{gguf_path}: {config['vocab_size']=} but the vocabulary has a different size")
    tensors = read_tensors(reader, config)
    generation = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config[k] is not None}
    with atomic_files(out_dir) as tmp:
        save_file(
            tensors,
            str(tmp / "model.safetensors"),
            metadata={"format": "pt", "source": gguf_path.name, "lmstack_gguf": CONVERTER_VERSION},
        )
        files["config.json"] = config
        files["generation_config.json"] = generation
        for name, data in files.items():
            (tmp / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return out_dir


def cached_conversion(gguf_path: str | Path) -> Path:
    """Convert a .gguf file once into `$LMSTACK_HOME/gguf/<name>-<fingerprint>/` and return that directory.
    The fingerprint covers the file's path, size, mtime and CONVERTER_VERSION, so an edited file or a newer
    converter gets a fresh conversion."""
    from lmstack.common.home import lmstack_home

    gguf_path = Path(gguf_path).resolve()
    stat = gguf_path.stat()
    key = f"{gguf_path}:{stat.st_size}:{stat.st_mtime_ns}:{CONVERTER_VERSION}"
    out = lmstack_home() / "gguf" / f"{gguf_path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if not (out / "config.json").is_file():
        convert_gguf(gguf_path, out)
    return out
