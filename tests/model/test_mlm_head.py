"""BERT's masked-LM head on the one Transformer: logits and masked-LM loss equal `transformers.BertForMaskedLM` on
random weights (fp32, 1e-5) through the production loader, and our export loads back as BertForMaskedLM."""

from __future__ import annotations

import torch
import transformers

from lmstack.model import Transformer
from lmstack.model.hf import hf_family
from lmstack.train.objectives import mask_tokens

transformers.logging.set_verbosity_error()
TOL = dict(atol=1e-5, rtol=1e-5)


def hf_bert_mlm(seed: int = 0) -> torch.nn.Module:
    cfg = transformers.BertConfig(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64, layer_norm_eps=1e-12)  # fmt: skip
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.BertForMaskedLM(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases (the head's bias too), so a skipped one shows
        for n, p in model.named_parameters():
            if n.endswith("bias") or "LayerNorm" in n:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _batch() -> tuple[torch.Tensor, ...]:
    """Masked ids (2, 12), row 1 right-padded by 4, token types, targets (-100 off the masked positions)."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 101, (2, 12), generator=g)
    batch = mask_tokens(ids, mask_id=4, vocab_size=101, g=g, rate=0.3)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0
    types = torch.zeros(2, 12, dtype=torch.long)
    types[:, 6:] = 1
    targets = batch["targets"].masked_fill(mask == 0, -100)
    return batch["input_ids"], mask, types, targets


def test_logits_and_loss_match_bert_for_masked_lm(tmp_path) -> None:
    hf = hf_bert_mlm()
    hf.save_pretrained(tmp_path / "hf")
    ours = Transformer.from_pretrained(tmp_path / "hf")
    assert ours.config.mlm_head and hf_family(ours.config) == "bert"
    ids, mask, types, targets = _batch()
    pos = torch.where(mask.bool(), torch.arange(12).expand(2, 12), torch.full_like(ids, -1))
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=targets)
        out = ours(ids, positions=pos, token_type_ids=types, targets=targets)
    real = mask.bool()
    torch.testing.assert_close(out.logits[real], ref.logits[real], **TOL)
    torch.testing.assert_close(out.loss, ref.loss, **TOL)
    ours.save_pretrained(tmp_path / "ours")  # and back: our export is a BertForMaskedLM directory
    back = transformers.BertForMaskedLM.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        again = back(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    torch.testing.assert_close(again[real], ref.logits[real], **TOL)
