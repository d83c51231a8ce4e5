"""T5 encoder-decoder: logits equal HF `T5ForConditionalGeneration` on random weights (both FFN variants, padded
sources, decoder steps through the KV cache), export loads back in `transformers`, greedy generation through
`lmstack.generate` equals HF's `generate`, and relative buckets equal HF's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmstack.generate import ContiguousKVCache, SamplingParams, generate
from lmstack.model import ModelConfig, Transformer
from lmstack.model.encoder_decoder import EncoderDecoder, shift_right
from lmstack.model.positions import relative_position_bucket

VARIANTS = {  # T5 v1.0 (ReLU FFN, tied + scaled head) and v1.1 (gated GELU, untied head)
    "v1.0": dict(feed_forward_proj="relu", tie_word_embeddings=True),
    "v1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}


def hf_t5(variant: str, seed: int = 0):  # noqa: ANN201
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.T5Config(
        vocab_size=101, d_model=32, d_kv=8, d_ff=64, num_layers=3, num_decoder_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **VARIANTS[variant],
    )  # fmt: skip
    model = transformers.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # random norm gains, so a skipped or swapped norm shows
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def test_relative_buckets_match_transformers() -> None:
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.arange(-300, 300)
    for bidirectional in (True, False):
        for n, dist in ((32, 128), (8, 20)):
            theirs = T5Attention._relative_position_bucket(rel, bidirectional, n, dist)
            assert torch.equal(relative_position_bucket(rel, bidirectional, n, dist), theirs)


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, tmp_path_factory) -> tuple:  # noqa: ANN001
    hf = hf_t5(request.param)
    d = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(d)
    ours = Transformer.from_pretrained(d)  # the production loader picks EncoderDecoder from config.json
    assert isinstance(ours, EncoderDecoder)
    return hf, ours


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source ids (2, 9), row 0 left-padded by 3 (mask and positions), decoder labels (2, 6)."""
    g = torch.Generator().manual_seed(1)
    src = torch.randint(2, 101, (2, 9), generator=g)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[0, :3] = 0
    src[0, :3] = 0
    labels = torch.randint(2, 101, (2, 6), generator=g)
    return src, mask, labels


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.bool(), mask.cumsum(1) - 1, torch.full_like(mask, -1))


def test_logits_and_loss_match_transformers(pair: tuple) -> None:
    hf, ours = pair
    src, mask, labels = _batch()
    with torch.no_grad():
        ref = hf(input_ids=src, attention_mask=mask, labels=labels)
        out = ours(shift_right(labels, 0), targets=labels, encoder_ids=src, encoder_positions=_positions(mask))
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=1e-5)


def test_cached_decoder_steps_match_the_full_forward(pair: tuple) -> None:
    _, ours = pair
    src, mask, labels = _batch()
    dec = shift_right(labels, 0)
    with torch.no_grad():
        full = ours(dec, encoder_ids=src, encoder_positions=_positions(mask)).logits
        cache = ContiguousKVCache.for_model(ours, 2, max_len=8)
        cache.encoder = ours.encode(src, _positions(mask))
        steps = [ours(dec[:, :2], positions=torch.arange(2).expand(2, 2), cache=cache).logits]
        for t in range(2, 6):
            steps.append(ours(dec[:, t : t + 1], positions=torch.full((2, 1), t), cache=cache).logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert len(cache.encoder.kv) == ours.config.n_decoder_layers  # cross K/V projected once per layer


def test_export_loads_in_transformers(pair: tuple, tmp_path) -> None:
    import transformers

    hf, ours = pair
    ours.save_pretrained(tmp_path)
    back = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    src, mask, labels = _batch()
    with torch.no_grad():
        a = back(input_ids=src, attention_mask=mask, labels=labels).logits
        b = hf(input_ids=src, attention_mask=mask, labels=labels).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    again = Transformer.from_pretrained(tmp_path)
    assert again.config == ours.config


def test_greedy_generation_matches_transformers(pair: tuple) -> None:
    hf, ours = pair
    src, mask, _ = _batch()
    prompts = [src[0, 3:].tolist(), src[1].tolist()]
    with torch.no_grad():
        ref = hf.generate(input_ids=src, attention_mask=mask, max_new_tokens=12, do_sample=False, num_beams=1)
    expect = []
    for row in ref[:, 1:].tolist():  # drop the decoder start token; HF pads finished rows after EOS
        expect.append(row[: row.index(1)] if 1 in row else row)
    got = generate(ours, prompts, SamplingParams(max_new_tokens=12, temperature=0.0))
    assert got == expect
    with torch.no_grad():  # beam search shares the prefill (encoder cache rows follow the beams)
        ref = hf.generate(input_ids=src, attention_mask=mask, max_new_tokens=8, do_sample=False, num_beams=3,
                          early_stopping=True)  # fmt: skip
    expect = [row[: row.index(1)] if 1 in row else row for row in ref[:, 1:].tolist()]
    beams = SamplingParams(max_new_tokens=8, temperature=0.0, beam_width=3, early_stopping=True)
    assert generate(ours, prompts, beams) == expect


def test_encoder_decoder_config_is_validated() -> None:
    with pytest.raises(ValueError, match="position"):
        ModelConfig(n_decoder_layers=2)  # an encoder-decoder without T5 buckets
    with pytest.raises(ValueError, match="encoder_ids"):
        EncoderDecoder(ModelConfig(n_decoder_layers=1, position="t5", ffn="relu"))(torch.zeros(1, 2, dtype=torch.long))


def test_cpu_autocast_attends_in_float32(pair: tuple, monkeypatch) -> None:
    """T5's attention goes through `attention.sdpa` too: under CPU bf16 autocast the kernel sees float32 inputs
    (its bf16 backward is slow) and the loss stays within bf16 rounding of the fp32 loss."""
    _, ours = pair
    seen: list[torch.dtype] = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(
        F, "scaled_dot_product_attention", lambda q, *a, **k: (seen.append(q.dtype), real(q, *a, **k))[1]
    )
    src, mask, labels = _batch()
    args = dict(targets=labels, encoder_ids=src, encoder_positions=_positions(mask))
    with torch.no_grad():
        full = ours(shift_right(labels, 0), **args).loss
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = ours(shift_right(labels, 0), **args).loss
    assert seen and set(seen) == {torch.float32}
    torch.testing.assert_close(low.float(), full, atol=5e-2, rtol=2e-2)
