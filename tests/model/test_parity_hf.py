"""Parity with `transformers` on random weights: tiny HF model -> save_pretrained -> our production loader
(`lmstack.model.hf`) -> same fp32 logits (atol = rtol = 1e-5); and the reverse: our model -> save_pretrained ->
`AutoModelForCausalLM.from_pretrained` -> same logits."""

from __future__ import annotations

import pytest
import torch
import transformers

transformers.logging.set_verbosity_error()

from lmstack.model import ModelConfig, Transformer  # noqa: E402

TOL = dict(atol=1e-5, rtol=1e-5)
LLAMA_KW = dict(
    vocab_size=101,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    bos_token_id=1,
    eos_token_id=2,
)


def hf_models() -> dict:
    t = transformers
    gpt2 = dict(vocab_size=101, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=2)
    return {
        "gpt2": (t.GPT2Config(**gpt2), t.GPT2LMHeadModel),
        "llama-gqa-untied": (t.LlamaConfig(**LLAMA_KW, rope_theta=5000.0), t.LlamaForCausalLM),
        "llama-gqa-tied": (t.LlamaConfig(**LLAMA_KW, tie_word_embeddings=True), t.LlamaForCausalLM),
        "mistral-window": (t.MistralConfig(**LLAMA_KW, sliding_window=5), t.MistralForCausalLM),
        "qwen2-bias": (t.Qwen2Config(**LLAMA_KW), t.Qwen2ForCausalLM),
        "qwen3-qk-norm": (t.Qwen3Config(**LLAMA_KW, head_dim=16), t.Qwen3ForCausalLM),
        "mixtral-top2of4": (
            t.MixtralConfig(**LLAMA_KW, num_local_experts=4, num_experts_per_tok=2),
            t.MixtralForCausalLM,
        ),
    }


def build_hf(name: str) -> torch.nn.Module:
    config, cls = hf_models()[name]
    config._attn_implementation = "eager"  # the plain reference implementation (mask honoured everywhere)
    torch.manual_seed(0)
    model = cls(config).eval()
    with torch.no_grad():  # random non-trivial norms and biases, so a swapped or skipped one shows
        for n, p in model.named_parameters():
            if n.endswith("bias") or "norm" in n or "ln_" in n:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("name", list(hf_models()))
def test_matches_hf_logits_after_import(name: str, tmp_path) -> None:
    hf = build_hf(name)
    hf.save_pretrained(tmp_path)
    ours = Transformer.from_pretrained(tmp_path)
    ids = torch.randint(0, 101, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids).logits
    torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize("name", list(hf_models()))
def test_matches_hf_logits_after_export(name: str, tmp_path) -> None:
    hf = build_hf(name)
    hf.save_pretrained(tmp_path / "hf")
    ours = Transformer.from_pretrained(tmp_path / "hf")
    ours.save_pretrained(tmp_path / "ours")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours", attn_implementation="eager").eval()
    assert type(back) is type(hf)
    ids = torch.randint(0, 101, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, ours(ids).logits, **TOL)


def test_our_random_model_loads_in_transformers(tiny_model_kwargs: dict, tmp_path) -> None:
    cfg = ModelConfig(**tiny_model_kwargs, rope_theta=500.0, rope_scaling={"rope_type": "linear", "factor": 2.0})
    torch.manual_seed(0)
    ours = Transformer(cfg).eval()
    ours.save_pretrained(tmp_path)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids = torch.randint(0, 101, (1, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, ours(ids).logits, **TOL)


def test_matches_hf_with_left_padding(tmp_path) -> None:
    """Batched left padding: our positions (-1 for pads) vs HF's attention_mask + position_ids."""
    hf = build_hf("llama-gqa-untied")
    hf.save_pretrained(tmp_path)
    ours = Transformer.from_pretrained(tmp_path)
    ids = torch.randint(3, 101, (2, 8), generator=torch.Generator().manual_seed(4))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[0, :3] = 0
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, -1)
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, position_ids=positions.clamp(min=0)).logits
        got = ours(ids, positions=positions).logits
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], **TOL)


def test_mistral_window_matches_hf_sdpa_path_too(tmp_path) -> None:
    """transformers 5.x applies the sliding window in its SDPA path as well (not only in eager)."""
    build_hf("mistral-window").save_pretrained(tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    ours = Transformer.from_pretrained(tmp_path)
    ids = torch.randint(0, 101, (2, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, **TOL)
