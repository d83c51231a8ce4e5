"""Hugging Face checkpoint interop: our `Transformer` <-> an HF model directory (GPT-2, Llama, Mistral, Qwen2,
Qwen3 (Llama + per-head QK-norm), Mixtral, and the BERT encoder `BertModel`), so a model trained here loads in
`transformers` and a local HF checkpoint runs here.

A directory holds config.json, model.safetensors (or shards + model.safetensors.index.json) with HF tensor
names, generation_config.json and, if a tokenizer was given, its files. Architectures with no HF equivalent
(ALiBi, post-norm, sinusoidal, QK-norm outside Qwen3's shape, capacity-limited MoE, ...) save the same files with
`"model_type": "lmstack"`, our field names in config.json and our tensor names. Weights are read only from
safetensors; a pickle-only checkpoint (`pytorch_model.bin`) is refused with an explanation.
Follows the name layouts of `transformers`' modeling_gpt2/llama/mistral/qwen2/qwen3/mixtral (tables in hf_names.py).
Quantized checkpoints (GPTQ or bitsandbytes-NF4 `quantization_config`) are rebuilt by `lmstack.quant.checkpoint`.
Left out: Qwen2 mixed sliding/full layers, Llama `attention_bias` without `mlp_bias`, other quantization formats,
BERT's pooler (tanh dense on [CLS], unused by sentence embedders: skipped on import, absent on export) and
relative-position BERT variants.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from lmstack.common.atomic import atomic_files
from lmstack.common.config import read_config_file
from lmstack.model.config import ModelConfig
from lmstack.model.encoder_decoder import EncoderDecoder
from lmstack.model.hf_names import GPT2_TRANSPOSED, is_ignored, rename
from lmstack.model.save_target import SAVED_BY, check_save_target, remove_stale_weights
from lmstack.model.transformer import DTYPES, Transformer

FAMILIES = ("gpt2", "llama", "mistral", "qwen2", "qwen3", "mixtral", "bert", "t5", "lmstack")
ARCHITECTURES = {
    "gpt2": "GPT2LMHeadModel",
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "bert": "BertModel",
    "t5": "T5ForConditionalGeneration",
    "lmstack": "LmstackForCausalLM",
}


# ---------------------------------------------------------------- config.json <-> ModelConfig


def hf_family(cfg: ModelConfig) -> str:
    """The HF model_type that expresses `cfg` exactly, or "lmstack" when none does."""
    if _is_bert(cfg):
        return "bert"
    if cfg.is_encoder_decoder:
        t5_like = cfg.norm == "rmsnorm" and cfg.ffn in ("relu", "geglu") and not (cfg.bias or cfg.qkv_bias)
        return "t5" if t5_like and not (cfg.qk_norm or cfg.n_experts or cfg.sliding_window) else "lmstack"
    common = cfg.causal and cfg.norm_placement == "pre"
    if (
        common
        and not cfg.qk_norm
        and cfg.norm == "layernorm"
        and cfg.norm_bias
        and cfg.position == "learned"
        and cfg.ffn == "gelu"
        and cfg.bias
        and cfg.qkv_bias
        and cfg.n_kv_heads == cfg.n_heads
        and cfg.head_dim * cfg.n_heads == cfg.d_model
        and not cfg.n_experts
        and cfg.sliding_window is None
    ):
        return "gpt2"
    llama_like = common and cfg.norm == "rmsnorm" and cfg.position == "rope" and cfg.ffn == "swiglu"
    if not (llama_like and not cfg.bias and cfg.rope_fraction == 1.0):
        return "lmstack"
    if cfg.qk_norm:  # per-head RMSNorm on q and k before RoPE: Qwen3 (no q/k/v biases, dense FFN)
        return "qwen3" if not (cfg.qkv_bias or cfg.n_experts) else "lmstack"
    if cfg.n_experts:
        return "mixtral" if not cfg.qkv_bias and cfg.capacity_factor is None else "lmstack"
    if cfg.qkv_bias:
        return "qwen2"
    return "mistral" if cfg.sliding_window is not None else "llama"


def _is_bert(cfg: ModelConfig) -> bool:
    return (
        not cfg.causal
        and cfg.norm_placement == "post"
        and cfg.norm == "layernorm"
        and cfg.norm_bias
        and cfg.embed_norm
        and cfg.type_vocab_size > 0
        and cfg.position == "learned"
        and cfg.ffn == "gelu"
        and cfg.bias
        and cfg.qkv_bias
        and not cfg.qk_norm
        and cfg.n_kv_heads == cfg.n_heads
        and cfg.head_dim * cfg.n_heads == cfg.d_model
        and not cfg.n_experts
        and cfg.sliding_window is None
        and (not cfg.lm_head or cfg.mlm_head)  # BertModel, or BertForMaskedLM with its MLM head
    )


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """config.json contents for `cfg` (HF field names for HF families, ours for "lmstack")."""
    family = hf_family(cfg)
    ids = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id}
    head = {
        "architectures": ["BertForMaskedLM" if cfg.mlm_head else ARCHITECTURES[family]],
        "model_type": family,
        "dtype": cfg.dtype,
        "torch_dtype": cfg.dtype,
    }
    if family == "lmstack":
        return {**head, **cfg.to_dict()}
    if family == "bert":
        return {
            **head,
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.d_model,
            "num_hidden_layers": cfg.n_layers,
            "num_attention_heads": cfg.n_heads,
            "intermediate_size": cfg.d_ff,
            "hidden_act": "gelu_new" if cfg.gelu_approx == "tanh" else "gelu",
            "hidden_dropout_prob": cfg.dropout,
            "attention_probs_dropout_prob": cfg.dropout,
            "max_position_embeddings": cfg.max_seq_len,
            "type_vocab_size": cfg.type_vocab_size,
            "initializer_range": cfg.init_std,
            "layer_norm_eps": cfg.norm_eps,
            "position_embedding_type": "absolute",
            "pad_token_id": 0,
            **ids,
        }
    if family == "t5":
        return {
            **head,
            "vocab_size": cfg.vocab_size,
            "d_model": cfg.d_model,
            "d_kv": cfg.head_dim,
            "d_ff": cfg.d_ff,
            "num_layers": cfg.n_layers,
            "num_decoder_layers": cfg.n_decoder_layers,
            "num_heads": cfg.n_heads,
            "relative_attention_num_buckets": cfg.rel_buckets,
            "relative_attention_max_distance": cfg.rel_max_distance,
            "dropout_rate": cfg.dropout,
            "layer_norm_epsilon": cfg.norm_eps,
            "feed_forward_proj": "gated-gelu" if cfg.ffn == "geglu" else "relu",
            "is_encoder_decoder": True,
            "tie_word_embeddings": cfg.tie_embeddings,
            "scale_decoder_outputs": cfg.tie_embeddings and cfg.scale_decoder_output,
            "n_positions": cfg.max_seq_len,
            "pad_token_id": cfg.pad_token_id,
            "decoder_start_token_id": cfg.decoder_start_token_id,
            **ids,
        }
    if family == "gpt2":
        return {
            **head,
            "vocab_size": cfg.vocab_size,
            "n_positions": cfg.max_seq_len,
            "n_embd": cfg.d_model,
            "n_layer": cfg.n_layers,
            "n_head": cfg.n_heads,
            "n_inner": cfg.d_ff,
            "activation_function": "gelu_new" if cfg.gelu_approx == "tanh" else "gelu",
            "layer_norm_epsilon": cfg.norm_eps,
            "initializer_range": cfg.init_std,
            **{k: cfg.dropout for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")},
            "tie_word_embeddings": cfg.tie_embeddings,
            **ids,
        }
    out = {
        **head,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": cfg.rope_scaling,
        "attention_dropout": cfg.dropout,
        "initializer_range": cfg.init_std,
        "tie_word_embeddings": cfg.tie_embeddings,
        "sliding_window": cfg.sliding_window,
        **ids,
    }
    if family in ("qwen2", "qwen3"):
        out.update(use_sliding_window=cfg.sliding_window is not None, max_window_layers=0)
    if family == "qwen3":
        out.update(attention_bias=False)
    if family == "mixtral":
        out.update(
            num_local_experts=cfg.n_experts,
            num_experts_per_tok=cfg.experts_per_token,
            router_aux_loss_coef=cfg.moe_aux_loss_coef,
            router_jitter_noise=cfg.router_noise,
        )
    return out


def _first_id(value: Any) -> int | None:
    return value[0] if isinstance(value, list) and value else value if isinstance(value, int) else None


def _gpt2_config(hf: dict[str, Any]) -> dict[str, Any]:
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu", "gelu_pytorch_tanh"):
        raise ValueError(f"config.json: activation_function={act!r} is not supported for gpt2 (gelu_new, gelu)")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if hf.get(flag):
            raise ValueError(f"config.json: {flag}=true is not supported")
    return dict(
        vocab_size=hf["vocab_size"],
        n_layers=hf["n_layer"],
        d_model=hf["n_embd"],
        n_heads=hf["n_head"],
        d_ff=hf.get("n_inner") or 4 * hf["n_embd"],
        max_seq_len=hf["n_positions"],
        norm="layernorm",
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        norm_bias=True,
        position="learned",
        ffn="gelu",
        gelu_approx="none" if act == "gelu" else "tanh",
        bias=True,
        qkv_bias=True,
        tie_embeddings=hf.get("tie_word_embeddings", True),
    )


def _bert_config(hf: dict[str, Any]) -> dict[str, Any]:
    mlm = "BertForMaskedLM" in (hf.get("architectures") or [])  # the encoder plus its masked-LM head
    act = hf.get("hidden_act", "gelu")
    if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"config.json: hidden_act={act!r} is not supported for bert (gelu, gelu_new)")
    kind = hf.get("position_embedding_type", "absolute")
    if kind != "absolute":
        raise ValueError(f"config.json: position_embedding_type={kind!r} is not supported (absolute only)")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise ValueError("config.json: is_decoder / add_cross_attention BERT models are not supported")
    return dict(
        vocab_size=hf["vocab_size"],
        n_layers=hf["num_hidden_layers"],
        d_model=hf["hidden_size"],
        n_heads=hf["num_attention_heads"],
        d_ff=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 512),
        norm="layernorm",
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        norm_bias=True,
        norm_placement="post",
        position="learned",
        ffn="gelu",
        gelu_approx="none" if act == "gelu" else "tanh",
        bias=True,
        qkv_bias=True,
        causal=False,
        type_vocab_size=hf.get("type_vocab_size", 2),
        embed_norm=True,
        lm_head=mlm,
        mlm_head=mlm,
        tie_embeddings=mlm,
        scaled_residual_init=False,
        init_std=hf.get("initializer_range", 0.02),
    )


def _t5_config(hf: dict[str, Any]) -> dict[str, Any]:
    proj = hf.get("feed_forward_proj", "relu")
    if proj not in ("relu", "gated-gelu"):
        raise ValueError(f"config.json: feed_forward_proj={proj!r} is not supported for t5 (relu, gated-gelu)")
    pad = hf.get("pad_token_id", 0)
    tie = hf.get("tie_word_embeddings", True) is not False
    return dict(
        vocab_size=hf["vocab_size"],
        d_model=hf["d_model"],
        head_dim=hf["d_kv"],
        d_ff=hf["d_ff"],
        n_layers=hf["num_layers"],
        n_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
        n_heads=hf["num_heads"],
        rel_buckets=hf.get("relative_attention_num_buckets", 32),
        rel_max_distance=hf.get("relative_attention_max_distance", 128),
        norm="rmsnorm",
        norm_eps=hf.get("layer_norm_epsilon", 1e-6),
        position="t5",
        ffn="geglu" if proj == "gated-gelu" else "relu",
        tie_embeddings=tie,  # T5 v1.0 ties and scales; v1.1 unties (transformers 5 ties, without the scale)
        scale_decoder_output=hf.get("scale_decoder_outputs", tie),
        max_seq_len=hf.get("n_positions", 512),
        pad_token_id=pad,
        decoder_start_token_id=hf.get("decoder_start_token_id", pad),
    )


def _rope_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """RoPE theta / scaling from either the v5 `rope_parameters` dict or the v4 `rope_theta` + `rope_scaling`."""
    params = dict(hf.get("rope_parameters") or {})
    scaling = dict(hf.get("rope_scaling") or {}) or {k: v for k, v in params.items() if k != "rope_theta"}
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    fraction = scaling.pop("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    return dict(rope_theta=float(theta), rope_fraction=fraction, rope_scaling=None if kind == "default" else scaling)


def _llama_config(hf: dict[str, Any], family: str) -> dict[str, Any]:
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"config.json: hidden_act={hf['hidden_act']!r} is not supported (expected silu)")
    attn_bias, mlp_bias = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
    if attn_bias != mlp_bias:
        raise ValueError(f"config.json: attention_bias={attn_bias} with mlp_bias={mlp_bias} is not supported")
    window = hf.get("sliding_window")
    if family in ("qwen2", "qwen3"):
        n_full = hf.get("max_window_layers", hf["num_hidden_layers"])
        if not hf.get("use_sliding_window", False) or n_full >= hf["num_hidden_layers"]:
            window = None
        elif n_full > 0:
            raise ValueError(f"config.json: max_window_layers={n_full} (mixed sliding/full layers) is not supported")
    if family == "llama":
        window = None
    out = dict(
        vocab_size=hf["vocab_size"],
        n_layers=hf["num_hidden_layers"],
        d_model=hf["hidden_size"],
        n_heads=hf["num_attention_heads"],
        n_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        head_dim=hf.get("head_dim"),
        d_ff=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048),
        norm="rmsnorm",
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        position="rope",
        ffn="swiglu",
        bias=attn_bias,
        qkv_bias=attn_bias or family == "qwen2",
        qk_norm=family == "qwen3",
        sliding_window=window,
        tie_embeddings=hf.get("tie_word_embeddings", False),
        **_rope_fields(hf),
    )
    if family == "mixtral":
        out.update(
            n_experts=hf["num_local_experts"],
            experts_per_token=hf["num_experts_per_tok"],
            moe_aux_loss_coef=hf.get("router_aux_loss_coef", 0.02),
            router_noise=hf.get("router_jitter_noise", 0.0) or 0.0,
        )
    return out


def config_from_hf(hf: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """ModelConfig from an HF (or our "lmstack") config.json mapping; unknown model_type -> ValueError."""
    family = hf.get("model_type")
    if family not in FAMILIES:
        raise ValueError(f"{where}: model_type {family!r} is not supported; supported: {', '.join(FAMILIES)}")
    try:
        if family == "lmstack":
            names = {f.name for f in dataclasses.fields(ModelConfig)}
            return ModelConfig.from_dict({k: v for k, v in hf.items() if k in names})
        if family == "gpt2":
            fields = _gpt2_config(hf)
        elif family == "bert":
            fields = _bert_config(hf)
        elif family == "t5":
            fields = _t5_config(hf)
        else:
            fields = _llama_config(hf, family)
    except KeyError as e:
        raise ValueError(f"{where}: missing field {e.args[0]!r} required for model_type {family!r}") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None
    ids = dict(bos_token_id=_first_id(hf.get("bos_token_id")), eos_token_id=_first_id(hf.get("eos_token_id")))
    stored = hf.get("dtype") or hf.get("torch_dtype") or "float32"
    try:
        return ModelConfig(**fields, **ids, dtype=stored if stored in DTYPES else "float32")
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


# ---------------------------------------------------------------- tensors


def state_dict_to_hf(model: Transformer) -> tuple[str, dict[str, torch.Tensor]]:
    """(family, {HF name: tensor}) for `model`; tied heads are left out (HF re-ties them on load)."""
    cfg = model.config
    family = hf_family(cfg)
    sd = {k: v for k, v in model.state_dict().items() if not (cfg.tie_embeddings and k == "lm_head.weight")}
    if family == "lmstack":
        return family, {k: v.contiguous() for k, v in sd.items()}
    if family == "gpt2":
        sd = _fuse_qkv(sd, cfg.n_layers)
    out = {}
    table = _table(family, cfg)
    for name, tensor in sd.items():
        hf_name = rename(name, table, to_hf=True)
        assert hf_name is not None, f"no HF name for {name!r} in family {family}"
        if family == "gpt2" and hf_name.endswith(GPT2_TRANSPOSED):
            tensor = tensor.t()
        if table == "bert-mlm" and not hf_name.startswith("cls."):
            hf_name = "bert." + hf_name  # BertForMaskedLM's encoder lives under "bert."
        out[hf_name] = tensor.contiguous()
    return family, out


def _table(family: str, cfg: ModelConfig) -> str:
    """The name table for `family`: T5's gated FFN (wi_0/wi_1) and BERT with its MLM head have their own."""
    if family == "bert" and cfg.mlm_head:
        return "bert-mlm"
    return "t5-gated" if family == "t5" and cfg.ffn == "geglu" else family


def _fuse_qkv(sd: dict[str, Any], n_layers: int, shapes: bool = False) -> dict[str, Any]:
    """GPT-2's c_attn is q, k, v stacked on the output dim: (3 D, D) weights, (3 D,) biases (or their shapes)."""
    sd = dict(sd)
    for i in range(n_layers):
        for kind in ("weight", "bias"):
            parts = [sd.pop(f"blocks.{i}.attn.{p}_proj.{kind}") for p in "qkv"]
            if shapes:
                sd[f"blocks.{i}.attn.qkv.{kind}"] = (sum(s[0] for s in parts), *parts[0][1:])
            else:
                sd[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)
    return sd


def _split_qkv(sd: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    sd = dict(sd)
    for i in range(n_layers):
        for kind in ("weight", "bias"):
            fused = sd.pop(f"blocks.{i}.attn.qkv.{kind}", None)
            if fused is not None:
                for p, part in zip("qkv", fused.chunk(3, dim=0)):
                    sd[f"blocks.{i}.attn.{p}_proj.{kind}"] = part
    return sd


def state_dict_from_hf(tensors: dict[str, torch.Tensor], family: str, model: Transformer) -> dict[str, torch.Tensor]:
    """Rename and reshape checkpoint tensors for `model`; any missing, unexpected or mis-shaped tensor is a
    ValueError naming it (in the checkpoint's own naming)."""
    cfg = model.config
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if cfg.tie_embeddings:
        expected.pop("lm_head.weight")
    if family == "gpt2":  # hub GPT-2 files omit the "transformer." prefix; q/k/v come fused
        tensors = {
            (k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k): v for k, v in tensors.items()
        }
        expected = _fuse_qkv(expected, cfg.n_layers, shapes=True)
    if family == "bert":  # BertFor* task models prefix the encoder with "bert."
        tensors = {k.removeprefix("bert."): v for k, v in tensors.items()}
    if (
        family == "t5"
        and "lm_head.weight" in expected
        and "lm_head.weight" not in tensors
        and "shared.weight" in tensors
    ):
        tensors = {**tensors, "lm_head.weight": tensors["shared.weight"]}  # transformers 5 writes T5 heads tied
    table = _table(family, cfg)
    out: dict[str, torch.Tensor] = {}
    for hf_name, tensor in tensors.items():
        if family != "lmstack" and is_ignored(hf_name, table):
            continue
        name = hf_name if family == "lmstack" else rename(hf_name, table, to_hf=False)
        if name == "lm_head.weight" and cfg.tie_embeddings:
            continue  # a tied head saved anyway: the embedding is the source of truth
        if name not in expected:
            raise ValueError(
                f"unexpected tensor {hf_name!r} in the checkpoint (not in a {family} model of this config)"
            )
        out[name] = tensor.t() if family == "gpt2" and hf_name.endswith(GPT2_TRANSPOSED) else tensor
    for name, shape in expected.items():
        hf_name = name if family == "lmstack" else rename(name, table, to_hf=True)
        if name not in out:
            raise ValueError(f"checkpoint is missing tensor {hf_name!r} (expected shape {shape})")
        if tuple(out[name].shape) != shape:
            raise ValueError(f"tensor {hf_name!r} has shape {tuple(out[name].shape)} but config.json implies {shape}")
    return _split_qkv(out, cfg.n_layers) if family == "gpt2" else out


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """One safetensors file; a truncated or corrupted one is an error naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e}); is it truncated?") from None


def read_safetensors(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of an HF directory: model.safetensors or the shards listed in model.safetensors.index.json."""
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        return load_safetensors(single)
    if index.is_file():
        weight_map = read_config_file(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: no 'weight_map' object")
        tensors: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            if not (directory / shard).is_file():
                raise FileNotFoundError(f"{index} lists shard {shard!r}, which is not in {directory}")
            tensors.update(load_safetensors(directory / shard))
        return tensors
    pickles = sorted(p.name for p in directory.glob("*.bin")) + sorted(p.name for p in directory.glob("*.pt"))
    if pickles:
        raise ValueError(
            f"{directory} has only pickle checkpoints ({', '.join(pickles)}); lmstack never unpickles weights "
            "(arbitrary code execution). Convert them once in a trusted environment with "
            "`transformers` (`save_pretrained(dir, safe_serialization=True)`) or `safetensors.torch.save_file`."
        )
    raise FileNotFoundError(f"{directory}: no model.safetensors or model.safetensors.index.json")


# ---------------------------------------------------------------- directories


def load_hf_dir(
    directory: Path, dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu"
) -> Transformer:
    """Build our `Transformer` from an HF-format directory (ours or a real one). `dtype` None keeps the dtype
    config.json records (`dtype` / `torch_dtype`, float32 if absent), as `transformers` does with "auto"."""
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{directory}: no config.json (is this a Hugging Face model directory?)")
    hf = read_config_file(cfg_path)  # malformed JSON: an error naming the file
    cfg = config_from_hf(hf, where=str(cfg_path))
    gen_path = directory / "generation_config.json"
    if gen_path.is_file():
        gen = read_config_file(gen_path)
        for key in ("bos_token_id", "eos_token_id", "decoder_start_token_id", "pad_token_id"):
            if getattr(cfg, key) is None and _first_id(gen.get(key)) is not None:
                setattr(cfg, key, _first_id(gen.get(key)))
    if dtype is not None:
        cfg.dtype = dtype if isinstance(dtype, str) else {v: k for k, v in DTYPES.items()}.get(dtype, str(dtype))
        if cfg.dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
    tensors = read_safetensors(directory)
    if "quantization_config" in hf:  # a quantized checkpoint (GPTQ / NF4 layout): lmstack.quant rebuilds its layers
        from lmstack.quant.checkpoint import load_quantized

        return load_quantized(hf, cfg, tensors, device)
    if cfg.is_encoder_decoder:
        model = EncoderDecoder.without_init(cfg, device)
    else:
        model = Transformer.without_init(cfg, device)
    sd = state_dict_from_hf(tensors, hf["model_type"], model)
    model.load_state_dict({k: v.to(DTYPES[cfg.dtype]) for k, v in sd.items()}, strict=not cfg.tie_embeddings)
    return model.eval()


def load_pretrained(
    path: str | Path, dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu"
) -> Transformer:
    """An HF directory, a .gguf file, or a local model name (resolved by `lmstack.model.loader.model_path`)."""
    from lmstack.model.loader import model_path

    return load_hf_dir(model_path(path), dtype, device)


def _shards(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    return shards


def save_pretrained(
    model: Transformer,
    path: str | Path,
    tokenizer: Any = None,
    max_shard_bytes: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `model` as an HF directory; see `Transformer.save_pretrained` and `save_target.py` for what may be
    written where (a non-empty directory that is not an lmstack save needs `overwrite=True`)."""
    from safetensors.torch import save_file

    cfg, path = model.config, Path(path)
    ours = check_save_target(path, overwrite)
    family, tensors = state_dict_to_hf(model)
    tensors = {k: v.detach().cpu().clone() for k, v in tensors.items()}
    meta = {"format": "pt", "saved_by": SAVED_BY}
    with atomic_files(path) as tmp:
        shards = _shards(tensors, max_shard_bytes) if max_shard_bytes else [tensors]
        if len(shards) == 1:
            save_file(shards[0], tmp / "model.safetensors", metadata=meta)
        else:
            weight_map = {}
            for i, shard in enumerate(shards, 1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, tmp / name, metadata=meta)
                weight_map.update(dict.fromkeys(shard, name))
            total = sum(t.numel() * t.element_size() for t in tensors.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        (tmp / "config.json").write_text(json.dumps(config_to_hf(cfg), indent=2))
        keys = ("bos_token_id", "eos_token_id", "decoder_start_token_id", "pad_token_id")
        gen = {k: getattr(cfg, k) for k in keys if getattr(cfg, k) is not None}
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2))
        if tokenizer is not None:
            tokenizer.save(tmp)
        written = {f.name for f in tmp.iterdir()}
    remove_stale_weights(path, written, ours)
    assert family in FAMILIES
    return path
