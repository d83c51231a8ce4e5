"""QLoRA forward == forward with the dequantized weights; teacher-forced exact match == real greedy decoding."""

from __future__ import annotations

import torch

from lmstack.finetune.exact_match import greedy_exact_match
from lmstack.finetune.lora import apply_lora, lora_layers, merged_state_dict
from lmstack.finetune.qlora import base_weight_bytes, quantize_base
from lmstack.model import Transformer
from lmstack.quant.nf4 import NF4Linear
from tests.finetune.conftest import ids
from tests.finetune.test_lora import randomize_B
from tests.finetune.tiny import arithmetic, tiny_base


def test_qlora_forward_equals_dequantized_model(tiny_llama):
    model, _ = tiny_llama
    fp32_bytes = base_weight_bytes(model)
    names = quantize_base(model)
    assert len(names) == 2 * 7 and all(isinstance(model.get_submodule(n), NF4Linear) for n in names)
    apply_lora(model, "all-linear", r=4, alpha=8)
    randomize_B(model)
    plain = Transformer(model.config).eval()
    plain.load_state_dict(merged_state_dict(model))  # dequantized base + folded adapters
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, plain(x).logits, atol=1e-5, rtol=1e-5)
    model(x, targets=x).loss.backward()  # gradients reach the adapters only
    assert all(layer.lora_A.weight.grad is not None for layer in lora_layers(model).values())
    assert not any(p.grad is not None for n, p in model.named_parameters() if "lora_" not in n)
    assert base_weight_bytes(model) < fp32_bytes  # the tiny model is mostly embeddings; bench/ measures 135M


def test_teacher_forced_exact_match_equals_greedy_generation(tmp_path):
    from lmstack.finetune.chat_data import prompt_and_answer
    from lmstack.finetune.sft import SFTConfig, train
    from lmstack.generate import SamplingParams, generate
    from lmstack.model import load_model
    from tests.finetune.tiny import write_jsonl

    data = write_jsonl(tmp_path / "train.jsonl", arithmetic(64, 0))
    cfg = SFTConfig(
        model=str(tiny_base(tmp_path / "base")),
        data=str(data),
        n_eval=0,
        forgetting_tokens=0,
        out_dir=str(tmp_path / "sft"),
        max_len=48,
        batch_size=8,
        max_steps=40,
        lr=3e-3,
        threads=1,
    )
    train(cfg)  # a model that answers and stops with <|im_end|>, right on some items and wrong on others
    model, tok = load_model(tmp_path / "sft" / "model")
    convs = arithmetic(40, 5)
    end = tok.special_tokens["<|im_end|>"]
    prompts = [prompt_and_answer(tok, m)[0] for m in convs]
    outs = generate(model, prompts, SamplingParams(max_new_tokens=6, temperature=0, stop_token_ids=[end]))
    # generate drops the stop token; an output shorter than max_new_tokens ended at <|im_end|>
    by_decoding = [out + [end] == prompt_and_answer(tok, m)[1] and len(out) < 6 for out, m in zip(outs, convs)]
    result = greedy_exact_match(model, tok, convs, batch_size=7)
    assert result["correct"] == by_decoding and 0 < sum(by_decoding) < len(convs), by_decoding
