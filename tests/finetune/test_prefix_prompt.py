"""Prompt and prefix tuning against PEFT's PromptTuning / PrefixTuning on the same values (logits), and the
adapter files moving both ways."""

from __future__ import annotations

import peft
import pytest
import torch

from lmstack.finetune.peft_format import load_adapter, save_prompt_adapter
from lmstack.finetune.prefix_tuning import PrefixTuning
from lmstack.finetune.prompt_tuning import PromptTuning
from lmstack.model import Transformer
from tests.finetune.conftest import hf_model, ids

N = 5


def peft_ref(path, kind: str) -> torch.nn.Module:
    cls = peft.PromptTuningConfig if kind == "prompt" else peft.PrefixTuningConfig
    return peft.get_peft_model(hf_model(path), cls(task_type="CAUSAL_LM", num_virtual_tokens=N)).eval()


def ours(model, kind: str) -> torch.nn.Module:
    if kind == "prompt":
        return PromptTuning(model, list(range(3, 3 + N))).eval()
    return PrefixTuning(model, N, init_std=0.5, seed=3).eval()


@pytest.mark.parametrize("kind", ["prompt", "prefix"])
def test_matches_peft_logits_both_ways(tiny_llama, tmp_path, kind):
    model, path = tiny_llama
    mine = ours(model, kind)
    if kind == "prompt":
        mine.prompt.data = torch.randn(mine.prompt.shape, generator=torch.Generator().manual_seed(5))
    save_prompt_adapter(mine, tmp_path / "adapter", str(path))
    ref = peft.PeftModel.from_pretrained(hf_model(path), tmp_path / "adapter").eval()  # ours loads in PEFT
    x = ids()
    with torch.no_grad():
        expected = ref(input_ids=x).logits
        expected = expected[:, N:] if kind == "prompt" else expected  # PEFT returns the virtual positions too
        torch.testing.assert_close(mine(x).logits, expected, atol=1e-5, rtol=1e-5)
    # a PEFT-saved adapter (its own random init) loads here and gives PEFT's logits
    theirs = peft_ref(path, kind)
    theirs.save_pretrained(tmp_path / "peft")
    loaded = load_adapter(Transformer.from_pretrained(path).eval(), tmp_path / "peft")
    with torch.no_grad():
        expected = theirs(input_ids=x).logits
        expected = expected[:, N:] if kind == "prompt" else expected
        torch.testing.assert_close(loaded(x).logits, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["prompt", "prefix"])
def test_only_the_table_trains_and_cached_decoding_matches(tiny_llama, kind):
    from lmstack.generate import SamplingParams, generate

    model, _ = tiny_llama
    mine = ours(model, kind).train()
    x = ids()
    out = mine(x, targets=x)
    out.loss.backward()
    grads = {n: p.grad for n, p in mine.named_parameters() if p.grad is not None}
    assert set(grads) == ({"prompt"} if kind == "prompt" else {"prefix_keys", "prefix_values"})
    mine.eval()
    with torch.no_grad():  # greedy decoding with the KV cache == argmax of uncached forwards
        new = generate(mine, [x[0, :4].tolist()], SamplingParams(max_new_tokens=5, temperature=0))[0]
        seq = x[0, :4].tolist()
        for _ in range(5):
            seq.append(int(mine(torch.tensor([seq])).logits[0, -1].argmax()))
    assert new == seq[4:]
