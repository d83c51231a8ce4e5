"""Checkpoint directories: round trips (HF families, sharded, "lmstack"), and clear errors for bad input."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmstack.model import ModelConfig, Transformer
from lmstack.model.hf import config_from_hf, hf_family
from lmstack.model.presets import GPT2_STYLE


def saved(tmp_path, tiny: dict, **kw) -> tuple[Transformer, object]:
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**{**tiny, **kw})).eval()
    return model, model.save_pretrained(tmp_path / "m")


def same_logits(a: Transformer, b: Transformer) -> None:
    ids = torch.randint(0, 101, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a(ids).logits, b(ids).logits, atol=0, rtol=0)


@pytest.mark.parametrize(
    "kw, family",
    [
        (dict(), "llama"),
        (dict(sliding_window=8), "mistral"),
        (dict(qkv_bias=True), "qwen2"),
        (dict(qk_norm=True), "qwen3"),
        (dict(qk_norm=True, qkv_bias=True), "lmstack"),
        (dict(n_experts=4), "mixtral"),
        (
            dict(GPT2_STYLE, n_kv_heads=4),
            "gpt2",
        ),
        (dict(position="alibi"), "lmstack"),
        (dict(norm_placement="post", position="sinusoidal", qk_norm=True, causal=False), "lmstack"),
        (dict(n_experts=4, capacity_factor=1.25), "lmstack"),
    ],
)
def test_round_trip_is_exact(kw: dict, family: str, tiny_model_kwargs: dict, tmp_path) -> None:
    model, path = saved(tmp_path, tiny_model_kwargs, bos_token_id=1, eos_token_id=2, **kw)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == family == hf_family(model.config)
    assert json.loads((path / "generation_config.json").read_text()) == {"bos_token_id": 1, "eos_token_id": 2}
    back = Transformer.from_pretrained(path)
    assert back.config == model.config
    assert (back.lm_head.weight is back.embed.weight) == model.config.tie_embeddings
    same_logits(model, back)


def test_sharded_checkpoint_with_index(tiny_model_kwargs: dict, tmp_path) -> None:
    model, path = saved(tmp_path, tiny_model_kwargs)
    Transformer.save_pretrained(model, path, max_shard_bytes=20_000)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and not (path / "model.safetensors").exists()
    same_logits(model, Transformer.from_pretrained(path))


def test_tokenizer_is_saved_alongside(tiny_model_kwargs: dict, tmp_path) -> None:
    class FakeTokenizer:
        def save(self, directory) -> None:
            (directory / "tokenizer.json").write_text("{}")

    model = Transformer(ModelConfig(**tiny_model_kwargs))
    path = model.save_pretrained(tmp_path / "m", tokenizer=FakeTokenizer())
    assert (path / "tokenizer.json").read_text() == "{}"


def test_unknown_model_type_is_named(tiny_model_kwargs: dict, tmp_path) -> None:
    _, path = saved(tmp_path, tiny_model_kwargs)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "model_type": "falcon"}))
    with pytest.raises(ValueError, match=r"model_type 'falcon' is not supported"):
        Transformer.from_pretrained(path)


def test_missing_tensor_is_named(tiny_model_kwargs: dict, tmp_path) -> None:
    _, path = saved(tmp_path, tiny_model_kwargs)
    tensors = load_file(path / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, path / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight'"):
        Transformer.from_pretrained(path)


def test_shape_mismatch_is_named(tiny_model_kwargs: dict, tmp_path) -> None:
    _, path = saved(tmp_path, tiny_model_kwargs)
    tensors = load_file(path / "model.safetensors")
    tensors["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(32, 32)
    save_file(tensors, path / "model.safetensors")
    with pytest.raises(
        ValueError, match=r"'model\.layers\.0\.self_attn\.k_proj\.weight' has shape \(32, 32\).*\(16, 32\)"
    ):
        Transformer.from_pretrained(path)


def test_unexpected_tensor_is_named(tiny_model_kwargs: dict, tmp_path) -> None:
    _, path = saved(tmp_path, tiny_model_kwargs)
    tensors = load_file(path / "model.safetensors")
    tensors["model.layers.7.mlp.up_proj.weight"] = torch.zeros(64, 32)
    save_file(tensors, path / "model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected tensor 'model\.layers\.7\.mlp\.up_proj\.weight'"):
        Transformer.from_pretrained(path)


def test_pickle_only_checkpoint_is_refused(tiny_model_kwargs: dict, tmp_path) -> None:
    _, path = saved(tmp_path, tiny_model_kwargs)
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(b"\x80\x04 not really a pickle")
    with pytest.raises(ValueError, match=r"only pickle checkpoints \(pytorch_model\.bin\).*never unpickles"):
        Transformer.from_pretrained(path)


def test_missing_config_field_is_named() -> None:
    with pytest.raises(ValueError, match=r"missing field 'num_hidden_layers'"):
        config_from_hf({"model_type": "llama", "vocab_size": 10, "hidden_size": 8})


def test_not_a_model_path(tmp_path) -> None:
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(ValueError, match=r"weights\.txt: expected a model directory"):
        Transformer.from_pretrained(tmp_path / "weights.txt")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Transformer.from_pretrained(tmp_path)


def test_convert_command_both_ways(tiny_model_kwargs: dict, tmp_path) -> None:
    from lmstack.cli import main

    model, path = saved(tmp_path, tiny_model_kwargs)
    (path / "tokenizer.json").write_text('{"version": "1.0"}')
    assert main(["convert", "--from", str(path), "--to", str(tmp_path / "b"), "--max_shard_mb=0"]) == 0
    assert (tmp_path / "b" / "tokenizer.json").is_file()
    assert main(["convert", f"--from={tmp_path / 'b'}", f"--to={tmp_path / 'c'}", "--dtype=bfloat16"]) == 0
    back = Transformer.from_pretrained(tmp_path / "c")
    assert back.config.dtype == "bfloat16" and back.embed.weight.dtype == torch.bfloat16
    torch.testing.assert_close(back.embed.weight.float(), model.embed.weight, atol=1e-2, rtol=1e-2)
    assert main(["convert", "--to", str(tmp_path / "d")]) == 2  # --from missing: an error, not a crash


def test_config_validation_names_field_and_value() -> None:
    with pytest.raises(ValueError, match=r"d_model=30 is not divisible by n_heads=4"):
        ModelConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match=r"n_heads=4 must be a multiple of n_kv_heads=3"):
        ModelConfig(n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match=r"position='xpos'"):
        ModelConfig(position="xpos")
    with pytest.raises(ValueError, match=r"experts_per_token=3 must be in \[1, n_experts=2\]"):
        ModelConfig(n_experts=2, experts_per_token=3)
    with pytest.raises(ValueError, match=r"unknown model preset 'gpt5'"):
        ModelConfig.from_preset("gpt5")
