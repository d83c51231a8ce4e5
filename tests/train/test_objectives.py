"""Pretraining objectives: BERT masking rates, T5 span corruption is lossless and well-formed, and
`pretrain --objective mlm|span` trains (loss falls), checkpoints as HF directories and resumes exactly."""

from __future__ import annotations

import torch

from lmstack.common.log import read_jsonl
from lmstack.model import Transformer
from lmstack.model.encoder_decoder import EncoderDecoder
from lmstack.train.objectives import extra_ids, mask_tokens, span_corrupt
from lmstack.train.pretrain import train

from .conftest import tiny_pretrain


def test_mask_tokens_rates_are_15_percent_then_80_10_10() -> None:
    x = torch.randint(0, 1000, (64, 512), generator=torch.Generator().manual_seed(0))
    out = mask_tokens(x, mask_id=1000, vocab_size=1000, g=torch.Generator().manual_seed(1))
    chosen = out["targets"] != -100
    n = chosen.sum().item()
    assert abs(n / x.numel() - 0.15) < 0.005
    assert torch.equal(out["targets"][chosen], x[chosen])  # targets are the originals, only where chosen
    assert torch.equal(out["input_ids"][~chosen], x[~chosen])  # everything else is untouched
    masked = (out["input_ids"] == 1000)[chosen].sum().item() / n
    kept = (out["input_ids"] == x)[chosen].sum().item() / n  # unchanged (incl. a random draw of the same id)
    assert abs(masked - 0.8) < 0.01 and abs(kept - 0.1) < 0.01
    assert abs(1 - masked - kept - 0.1) < 0.01  # the rest: a random token


def test_span_corruption_is_lossless_and_uses_sentinels() -> None:
    ids = extra_ids("span", 50)
    x = torch.arange(40).reshape(2, 20)  # 20 distinct tokens per row: where each went is unambiguous
    out = span_corrupt(x, ids["start"], ids["sentinels"], eos_id=49, g=torch.Generator().manual_seed(0))
    enc, dec, tgt = out["encoder_ids"], out["input_ids"], out["targets"]
    sentinels = ids["sentinels"]
    assert enc.shape == (2, 20 - 3 + 1 + 1) and tgt.shape == (2, 3 + 1 + 1 + 1)  # 3 noise tokens in 1 span
    assert torch.equal(dec[:, 0], torch.full((2,), ids["start"])) and torch.equal(dec[:, 1:], tgt[:, :-1])
    for b in range(2):
        e, t = enc[b].tolist()[:-1], tgt[b].tolist()[:-1]  # drop eos
        # put the targets' spans back where the encoder's sentinels are: the original row comes back
        spans, k = {}, None
        for tok in t:
            if tok in sentinels:
                k = tok
                spans[k] = []
            else:
                spans[k].append(tok)
        restored = [tok for s in e for tok in (spans[s] if s in sentinels else [s])]
        assert restored == x[b].tolist()
        assert e.count(sentinels[0]) == 1 and t[0] == sentinels[0] and t[-1] == sentinels[1]


def _run(tiny_data, out, objective: str, **kw):  # noqa: ANN001, ANN202
    return train(tiny_pretrain(tiny_data, out, objective=objective, **{"max_steps": 30, "lr": 1e-2, **kw}))


def test_pretrain_span_and_mlm_learn_and_save_hf_directories(tiny_data, tmp_path) -> None:
    for objective, cls in (("span", EncoderDecoder), ("mlm", Transformer)):
        result = _run(tiny_data, tmp_path / objective, objective)
        rows = read_jsonl(tmp_path / objective / "metrics.jsonl")
        losses = [r["loss"] for r in rows if "loss" in r]
        assert losses[-1] < 0.7 * losses[0], (objective, losses[0], losses[-1])
        assert result["val_loss"] < 0.8 * losses[0]
        model = Transformer.from_pretrained(tmp_path / objective / "checkpoint")
        assert isinstance(model, cls)
        assert model.config.vocab_size == 300 + extra_ids(objective, 300)["n_extra"]
    import transformers

    t5 = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "span" / "checkpoint")
    assert t5.config.num_decoder_layers == 2 and t5.config.feed_forward_proj == "gated-gelu"


def test_pretrain_span_resume_is_exact(tiny_data, tmp_path) -> None:
    straight = _run(tiny_data, tmp_path / "a", "span", max_steps=6)
    _run(tiny_data, tmp_path / "b", "span", max_steps=6, stop_after=3)
    resumed = _run(tiny_data, tmp_path / "b", "span", max_steps=6, resume=True)
    assert resumed["val_loss"] == straight["val_loss"]


def test_pretrain_mlm_with_bert_design_saves_a_bert_for_masked_lm(tiny_data, tmp_path) -> None:
    import transformers

    bert = dict(norm="layernorm", norm_bias=True, norm_placement="post", position="learned", ffn="gelu", bias=True,
                qkv_bias=True, embed_norm=True, type_vocab_size=2, mlm_head=True, n_kv_heads=4)  # fmt: skip
    result = _run(tiny_data, tmp_path / "bert", "mlm", max_steps=4, **bert)
    assert result["val_loss"] > 0
    hf = transformers.BertForMaskedLM.from_pretrained(tmp_path / "bert" / "checkpoint").eval()
    ours = Transformer.from_pretrained(tmp_path / "bert" / "checkpoint")
    ids = torch.randint(0, 301, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
