"""LoRA against PEFT's `get_peft_model` on the same base weights with non-zero B; merge/unmerge; the report."""

from __future__ import annotations

import peft
import pytest
import torch

from lmstack.finetune.lora import LoRALinear, apply_lora, lora_layers, merge_lora, trainable_report
from tests.finetune.conftest import hf_model, ids

TARGETS = ["q_proj", "v_proj", "down_proj"]


def randomize_B(model: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for layer in lora_layers(model).values():
        layer.lora_B.weight.data = torch.randn(layer.lora_B.weight.shape, generator=g) * 0.1


def copy_to_peft(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    """Our A/B into PEFT's modules (names: blocks.i.attn.q_proj <-> ...layers.i.self_attn.q_proj)."""
    from lmstack.finetune.lora import module_names

    names = module_names(ours)
    theirs_modules = dict(theirs.named_modules())
    for name, layer in lora_layers(ours).items():
        target = theirs_modules[f"base_model.model.{names[name]}"]
        target.lora_A["default"].weight.data.copy_(layer.lora_A.weight.data)
        target.lora_B["default"].weight.data.copy_(layer.lora_B.weight.data)


@pytest.mark.parametrize("rslora", [False, True])
def test_matches_peft_logits_and_merged_weights(tiny_llama, rslora):
    model, path = tiny_llama
    apply_lora(model, TARGETS, r=4, alpha=8, rslora=rslora)
    randomize_B(model)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, use_rslora=rslora, lora_dropout=0.0)
    ref = peft.get_peft_model(hf_model(path), cfg).eval()
    copy_to_peft(model, ref)
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, ref(input_ids=x).logits, atol=1e-5, rtol=1e-5)
    merge_lora(model)
    merged = ref.merge_and_unload()
    theirs = merged.state_dict()
    torch.testing.assert_close(model.blocks[1].attn.v_proj.weight, theirs["model.layers.1.self_attn.v_proj.weight"])
    torch.testing.assert_close(model.blocks[0].ffn.down_proj.weight, theirs["model.layers.0.mlp.down_proj.weight"])
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, merged(input_ids=x).logits, atol=1e-5, rtol=1e-5)


def test_regex_targets_match_peft(tiny_llama):
    model, path = tiny_llama
    regex = r"model\.layers\.1\.(self_attn\.(k|o)_proj|mlp\.up_proj)"
    chosen = apply_lora(model, regex, r=2, alpha=4)
    ref = peft.get_peft_model(hf_model(path), peft.LoraConfig(r=2, lora_alpha=4, target_modules=regex))
    peft_names = {n.removeprefix("base_model.model.") for n, m in ref.named_modules() if hasattr(m, "lora_A")}
    assert sorted(chosen) == ["blocks.1.attn.k_proj", "blocks.1.attn.o_proj", "blocks.1.ffn.up_proj"]
    assert len(peft_names) == 3 and all(n.startswith("model.layers.1.") for n in peft_names)


def test_starts_equal_to_base_and_merge_unmerge_round_trip(tiny_llama):
    model, _ = tiny_llama
    x = ids()
    with torch.no_grad():
        before = model(x).logits
        apply_lora(model, "all-linear", r=4, alpha=16, dropout=0.1)
        model.eval()
        torch.testing.assert_close(model(x).logits, before, atol=0, rtol=0)  # B = 0 at init
        randomize_B(model)
        adapted = model(x).logits
        for layer in lora_layers(model).values():
            layer.merge()
        torch.testing.assert_close(model(x).logits, adapted, atol=1e-5, rtol=1e-5)
        for layer in lora_layers(model).values():
            layer.unmerge()
            layer.merged = True  # pretend merged: base alone must now be the original model
        torch.testing.assert_close(model(x).logits, before, atol=1e-5, rtol=1e-5)


def test_trainable_report_is_r_times_in_plus_out(tiny_llama):
    model, _ = tiny_llama
    total = sum(p.numel() for p in model.parameters())
    apply_lora(model, ["q_proj", "gate_proj"], r=3, alpha=6)
    c = model.config
    per_layer = 3 * (c.d_model + c.n_heads * c.head_dim) + 3 * (c.d_model + c.d_ff)
    report = trainable_report(model)
    assert report["trainable"] == c.n_layers * per_layer
    assert report["total"] == total + report["trainable"]
    assert all(isinstance(m, LoRALinear) for m in lora_layers(model).values())
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def test_bad_targets_error(tiny_llama):
    model, _ = tiny_llama
    with pytest.raises(ValueError, match="matches no linear layer"):
        apply_lora(model, ["qkv"], r=2, alpha=2)
