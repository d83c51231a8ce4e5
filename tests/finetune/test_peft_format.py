"""LoRA adapters in PEFT's format: ours loads in PEFT with the same logits; PEFT's loads here."""

from __future__ import annotations

import json

import peft
import pytest
import torch

from lmstack.finetune.lora import apply_lora
from lmstack.finetune.peft_format import load_adapter, lora_config, save_lora
from lmstack.model import Transformer
from tests.finetune.conftest import hf_model, ids
from tests.finetune.test_lora import randomize_B


def test_our_adapter_loads_in_peft(tiny_llama, tmp_path):
    model, path = tiny_llama
    targets = ["q_proj", "o_proj", "up_proj"]
    apply_lora(model, targets, r=4, alpha=8)
    randomize_B(model)
    save_lora(model, tmp_path / "adapter", lora_config(targets, 4, 8, 0.0, False, str(path)))
    ref = peft.PeftModel.from_pretrained(hf_model(path), tmp_path / "adapter").eval()
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, ref(input_ids=x).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rslora", [False, True])
def test_peft_adapter_loads_here(tiny_llama, tmp_path, rslora):
    _, path = tiny_llama
    cfg = peft.LoraConfig(
        r=2, lora_alpha=5, target_modules=["k_proj", "gate_proj"], use_rslora=rslora, init_lora_weights=False
    )  # fmt: skip  (random B, so the adapter is not a no-op)
    ref = peft.get_peft_model(hf_model(path), cfg).eval()
    ref.save_pretrained(tmp_path / "peft")
    ours = load_adapter(Transformer.from_pretrained(path).eval(), tmp_path / "peft")
    x = ids()
    with torch.no_grad():
        expected = ref(input_ids=x).logits
        torch.testing.assert_close(ours(x).logits, expected, atol=1e-5, rtol=1e-5)
        merged = load_adapter(Transformer.from_pretrained(path).eval(), tmp_path / "peft", merge=True)
        torch.testing.assert_close(merged(x).logits, expected, atol=1e-5, rtol=1e-5)


def test_bad_adapters_error(tiny_llama, tmp_path):
    model, path = tiny_llama
    with pytest.raises(FileNotFoundError, match="not a PEFT adapter"):
        load_adapter(model, tmp_path)
    d = tmp_path / "dora"
    apply_lora(model, ["q_proj"], r=2, alpha=2)
    save_lora(model, d, {**lora_config(["q_proj"], 2, 2, 0.0, False, str(path)), "use_dora": True})
    with pytest.raises(ValueError, match="use_dora"):
        load_adapter(Transformer.from_pretrained(path), d)
    cfg = json.loads((d / "adapter_config.json").read_text())
    (d / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": False, "r": 3}))
    with pytest.raises(ValueError, match="shape"):
        load_adapter(Transformer.from_pretrained(path), d)
