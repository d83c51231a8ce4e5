"""`lmstack quantize --method nf4`: the bitsandbytes checkpoint layout, read back here, by bitsandbytes' own
QuantState and by `transformers` (+ bitsandbytes on CPU) to the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import bitsandbytes.functional as bnbf
import pytest
import torch
from safetensors.torch import load_file, save_file

from lmstack.model import Transformer, load_model
from lmstack.quant.nf4 import NF4Linear, quantize_nf4
from lmstack.quant.quantize import QuantizeConfig, quantize


@pytest.fixture(scope="module")
def nf4_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("nf4") / "q"
    quantize(QuantizeConfig(model=str(tiny_model_dir), out_dir=str(out), method="nf4", eval_tokens=0, dtype="float32"))
    return out


def test_layers_are_nf4_and_equal_quantize_nf4(nf4_dir: Path, tiny_model_dir: Path) -> None:
    model, ref = load_model(nf4_dir)[0], load_model(tiny_model_dir)[0]
    layer = model.blocks[1].ffn.down_proj
    assert isinstance(layer, NF4Linear) and not isinstance(model.lm_head, NF4Linear)  # the head stays float
    want = quantize_nf4(ref.blocks[1].ffn.down_proj.weight)
    assert torch.equal(layer.weight_packed, want.packed) and torch.equal(layer.weight_absmax, want.absmax)
    cfg = json.loads((nf4_dir / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "bitsandbytes" and cfg["bnb_4bit_quant_type"] == "nf4"
    assert cfg["bnb_4bit_use_double_quant"] is True


def test_bitsandbytes_reads_our_quant_state(nf4_dir: Path) -> None:
    """bitsandbytes' own deserializer + dequantizer gives exactly our dequantized weight."""
    t = load_file(nf4_dir / "model.safetensors")
    p = "model.layers.0.mlp.gate_proj.weight"
    qs = {k.removeprefix(p + "."): v for k, v in t.items() if k.startswith(p + ".")}
    state = bnbf.QuantState.from_dict(qs, device=torch.device("cpu"))
    theirs = bnbf.dequantize_4bit(t[p], state)
    ours = load_model(nf4_dir)[0].blocks[0].ffn.gate_proj.dequantized_weight(torch.float32)
    assert torch.equal(theirs.float(), ours)


def test_transformers_loads_it(nf4_dir: Path) -> None:
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(nf4_dir, dtype=torch.float32).eval()
    ours = load_model(nf4_dir)[0]
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids).logits, rtol=0, atol=1e-2)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda t: t.pop("model.layers.0.self_attn.q_proj.weight.absmax"), "weight.absmax"),
        (lambda t: t.update({"model.layers.0.self_attn.q_proj.weight.quant_map": torch.linspace(-1, 1, 16)}), "fp4"),
        (
            lambda t: t.update({"model.layers.0.self_attn.q_proj.weight": torch.zeros(10, 1, dtype=torch.uint8)}),
            "do not fit shape",
        ),
    ],
)
def test_corrupt_nf4_checkpoint(tmp_path: Path, nf4_dir: Path, edit, match: str) -> None:
    import shutil

    d = tmp_path / "q"
    shutil.copytree(nf4_dir, d)
    t = load_file(d / "model.safetensors")
    edit(t)
    save_file(t, d / "model.safetensors")
    with pytest.raises(ValueError, match=match):
        Transformer.from_pretrained(d)
