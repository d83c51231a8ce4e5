"""Greedy and beam search equal `transformers.generate` token for token on the same random weights.

Tiny GPT-2 and Llama (GQA) built from configs -> `save_pretrained` -> our production loader
(`Transformer.from_pretrained`, lmstack.model.hf). A batch of prompts of different lengths, left padded. The final
norm is scaled up so logits are sharp: fp32 rounding differences (~1e-6) then never flip an argmax. The EOS id
is chosen from the model's own greedy output, so rows really end early and finished-row handling is exercised.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from lmstack.generate import SamplingParams, generate
from lmstack.model import Transformer

transformers.logging.set_verbosity_error()

PROMPTS = [[5, 9, 3, 7, 7, 1], [3], [10, 20, 30, 40, 50, 60, 70, 80, 90, 15]]
N_NEW = 15


def build(name: str, tmp_path) -> tuple[torch.nn.Module, Transformer]:
    t = transformers
    if name == "gpt2":
        cfg = t.GPT2Config(vocab_size=101, n_positions=64, n_embd=32, n_layer=2, n_head=4)
        cls, norm = t.GPT2LMHeadModel, "transformer.ln_f.weight"
    else:
        cfg = t.LlamaConfig(
            vocab_size=101,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
        )
        cls, norm = t.LlamaForCausalLM, "model.norm.weight"
    torch.manual_seed(0)
    hf = cls(cfg).eval()
    with torch.no_grad():
        dict(hf.named_parameters())[norm].mul_(30)
    hf.save_pretrained(tmp_path)
    return hf, Transformer.from_pretrained(tmp_path)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def models(request, tmp_path_factory):
    hf, ours = build(request.param, tmp_path_factory.mktemp(request.param))
    free = generate(ours, PROMPTS, SamplingParams(max_new_tokens=N_NEW, temperature=0, ignore_eos=True))
    eos = free[0][6]  # a token the model really emits mid-sequence
    return hf, ours, eos


def hf_generate(hf, eos: int, **kw) -> list[list[int]]:
    P = max(len(x) for x in PROMPTS)
    ids = torch.zeros(len(PROMPTS), P, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, x in enumerate(PROMPTS):
        ids[i, P - len(x) :], mask[i, P - len(x) :] = torch.tensor(x), 1
    out = hf.generate(
        ids, attention_mask=mask, max_new_tokens=N_NEW, do_sample=False, pad_token_id=0, eos_token_id=eos, **kw
    )
    rows = out[:, P:].tolist()
    return [r[: r.index(eos)] if eos in r else r for r in rows]  # HF keeps the EOS and pads after it


def test_greedy_matches_hf(models):
    hf, ours, eos = models
    want = hf_generate(hf, eos, num_beams=1)
    got = generate(ours, PROMPTS, SamplingParams(max_new_tokens=N_NEW, temperature=0, stop_token_ids=[eos]))
    assert got == want
    assert min(len(r) for r in got) < N_NEW  # EOS really ended a row early


@pytest.mark.parametrize(
    "beams, ret, lp, es",
    [(4, 2, 1.0, False), (3, 3, 0.5, True), (3, 1, 2.0, "never"), (2, 1, -1.0, False)],
)
def test_beam_search_matches_hf(models, beams, ret, lp, es):
    hf, ours, eos = models
    want = hf_generate(hf, eos, num_beams=beams, num_return_sequences=ret, length_penalty=lp, early_stopping=es)
    p = SamplingParams(
        max_new_tokens=N_NEW,
        temperature=0,
        beam_width=beams,
        num_return_sequences=ret,
        length_penalty=lp,
        early_stopping=es,
        stop_token_ids=[eos],
    )
    assert generate(ours, PROMPTS, p) == want


def test_beam_search_with_processors_matches_hf(models):
    hf, ours, eos = models
    want = hf_generate(hf, eos, num_beams=3, no_repeat_ngram_size=2, repetition_penalty=1.5)
    p = SamplingParams(
        max_new_tokens=N_NEW,
        beam_width=3,
        no_repeat_ngram_size=2,
        repetition_penalty=1.5,
        stop_token_ids=[eos],
    )
    assert generate(ours, PROMPTS[2:], p) == want[2:]  # the longest prompt: HF's penalties see no pad tokens
