"""Quantized checkpoints: the GPTQ layout on disk, reloaded by `Transformer.from_pretrained` / `load_model` to the
same integers and the same logits; corrupt or unsupported files fail with errors naming the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmstack.model import Transformer, load_model
from lmstack.quant import QuantLinear, kernel_report
from lmstack.quant.checkpoint import save_quantized
from lmstack.quant.rtn import QuantSpec, quantize_rtn
from lmstack.quant.swap import apply_quantized, dequantize_model, quantizable_linears, quantized_layers, untie_head
from tests.quant.conftest import tiny_llama


def _rtn_model(spec: QuantSpec, head: bool = True, **kw):
    model = tiny_llama(**kw)
    if head:
        untie_head(model)
    qweights = {n: quantize_rtn(model.get_submodule(n).weight, spec) for n in quantizable_linears(model, head)}
    return model, qweights


SPECS = [QuantSpec(4, 32, True), QuantSpec(4, 64, False), QuantSpec(8, -1, True), QuantSpec(4, 32, False, True)]


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("head", [True, False])
def test_round_trip_same_integers_and_logits(tmp_path: Path, tiny_tokenizer, spec: QuantSpec, head: bool) -> None:
    model, qweights = _rtn_model(spec, head)
    save_quantized(model, qweights, tmp_path / "q", tokenizer=tiny_tokenizer, dtype="float32")
    expected = apply_quantized(model, qweights)
    loaded = Transformer.from_pretrained(tmp_path / "q")
    back = quantized_layers(loaded)
    assert set(back) == set(qweights)
    for name, qw in qweights.items():
        assert torch.equal(back[name].q, qw.q) and torch.equal(back[name].scales, qw.scales), name
        assert torch.equal(back[name].zeros, qw.zeros) and torch.equal(back[name].g_idx, qw.g_idx), name
    ids = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, expected(ids).logits, rtol=1e-5, atol=1e-5)
    assert isinstance(loaded.lm_head, QuantLinear) == head
    assert loaded.embed.weight.dtype == torch.float32


def test_layout_and_config_follow_gptq(tmp_path: Path, tiny_tokenizer) -> None:
    model, qweights = _rtn_model(QuantSpec(4, 32, True))
    save_quantized(model, qweights, tmp_path / "q", tokenizer=tiny_tokenizer, meta={"method": "rtn"})
    cfg = json.loads((tmp_path / "q" / "config.json").read_text())
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "gptq" and qc["bits"] == 4 and qc["group_size"] == 32 and qc["sym"] is True
    assert qc["checkpoint_format"] == "gptq" and qc["lm_head"] is True and qc["meta"]["method"] == "rtn"
    assert cfg["dtype"] == "bfloat16"
    t = load_file(tmp_path / "q" / "model.safetensors")
    p = "model.layers.0.self_attn.q_proj"
    assert t[f"{p}.qweight"].shape == (64 // 8, 64) and t[f"{p}.qweight"].dtype == torch.int32
    assert t[f"{p}.qzeros"].shape == (2, 64 // 8) and t[f"{p}.scales"].shape == (2, 64)
    assert t[f"{p}.scales"].dtype == torch.float16 and t[f"{p}.g_idx"].dtype == torch.int32
    assert f"{p}.weight" not in t and "model.embed_tokens.weight" in t and "lm_head.qweight" in t
    assert t["model.embed_tokens.weight"].dtype == torch.bfloat16


def test_load_model_runs_fused_kernels_and_dequantizes(tmp_path: Path, tiny_tokenizer) -> None:
    model, qweights = _rtn_model(QuantSpec(4, 32, True))
    save_quantized(model, qweights, tmp_path / "q", tokenizer=tiny_tokenizer)
    loaded, tok = load_model(tmp_path / "q")
    assert next(loaded.parameters()).dtype == torch.bfloat16 and tok.vocab_size == 300
    assert kernel_report(loaded) == {"int4pack_mm": 14, "dequant": 1}  # the 300-row head: N % 16 != 0
    ids = torch.randint(0, 300, (1, 12))
    with torch.no_grad():
        y = loaded(ids).logits.float()
        ref = dequantize_model(loaded, torch.bfloat16)(ids).logits.float()
    assert not any(isinstance(m, QuantLinear) for m in loaded.modules())
    assert (y - ref).abs().max() < 0.05 * ref.abs().max()


def _corrupt(path: Path, edit) -> None:
    t = load_file(path / "model.safetensors")
    edit(t)
    save_file(t, path / "model.safetensors")


@pytest.mark.parametrize(
    "edit,match",
    [
        (
            lambda t: t.pop("model.layers.1.mlp.down_proj.scales"),
            "missing tensor 'model.layers.1.mlp.down_proj.scales'",
        ),
        (
            lambda t: t.update({"model.layers.0.self_attn.q_proj.qweight": torch.zeros(4, 64, dtype=torch.int32)}),
            "model.layers.0.self_attn.q_proj: qweight",
        ),
        (lambda t: t.update({"model.layers.0.mlp.up_proj.g_idx": torch.full((64,), 7, dtype=torch.int32)}), "g_idx"),
        (lambda t: t.update({"model.layers.0.oops.qweight": torch.zeros(8, 8, dtype=torch.int32)}), "oops.qweight"),
        (lambda t: t.pop("model.norm.weight"), "missing tensor 'model.norm.weight'"),
    ],
)
def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path, tiny_tokenizer, edit, match: str) -> None:
    model, qweights = _rtn_model(QuantSpec(4, 32, True))
    save_quantized(model, qweights, tmp_path / "q", tokenizer=tiny_tokenizer)
    _corrupt(tmp_path / "q", edit)
    with pytest.raises(ValueError, match=match):
        Transformer.from_pretrained(tmp_path / "q")


@pytest.mark.parametrize(
    "change,match",
    [({"quant_method": "awq"}, "quant_method='awq'"), ({"bits": 3}, "--bits=3"),
     ({"checkpoint_format": "marlin"}, "checkpoint_format"), ({"zero_point": "fp8"}, "zero_point='fp8'"),
     ({"zero_point": "float", "sym": False}, "missing tensor .*mins")],
)  # fmt: skip
def test_unsupported_quantization_config(tmp_path: Path, tiny_tokenizer, change: dict, match: str) -> None:
    model, qweights = _rtn_model(QuantSpec(4, 32, True))
    save_quantized(model, qweights, tmp_path / "q", tokenizer=tiny_tokenizer)
    cfg_path = tmp_path / "q" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["quantization_config"].update(change)
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=match):
        Transformer.from_pretrained(tmp_path / "q")
