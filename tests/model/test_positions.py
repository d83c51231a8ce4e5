"""Position schemes: RoPE's relative-position property, context-extension frequencies against `transformers`'
ROPE_INIT_FUNCTIONS, ALiBi slopes from the paper, sinusoids by hand, and permutation symmetry without positions."""

from __future__ import annotations

import math

import pytest
import torch

from lmstack.model import ModelConfig, Transformer
from lmstack.model.positions import RotaryEmbedding, alibi_slopes, apply_rope, rope_inv_freq, sinusoidal


def test_rope_score_depends_only_on_relative_position() -> None:
    """<R(p) q, R(p') k> is a function of p - p' alone: shifting both positions leaves every score unchanged."""
    rope = RotaryEmbedding(16, 10000.0, None, 128)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)

    def score(p: int, p2: int) -> torch.Tensor:
        cq, sq = rope(torch.tensor([[p]]), torch.float64)
        ck, sk = rope(torch.tensor([[p2]]), torch.float64)
        return (apply_rope(q.double(), cq, sq) * apply_rope(k.double(), ck, sk)).sum()

    for p, p2 in [(5, 2), (9, 0), (3, 3)]:
        for shift in (1, 17, 60):
            torch.testing.assert_close(score(p + shift, p2 + shift), score(p, p2), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score(5, 2), score(5, 3))  # but it does depend on the distance


def test_partial_rotary_leaves_tail_dims_untouched() -> None:
    x = torch.randn(1, 2, 3, 16)
    cos, sin = RotaryEmbedding(4, 10000.0, None, 64)(torch.arange(3)[None], torch.float32)
    y = apply_rope(x, cos, sin)
    assert torch.equal(y[..., 4:], x[..., 4:]) and not torch.allclose(y[..., :4], x[..., :4])
    torch.testing.assert_close(y[..., :4].norm(dim=-1), x[..., :4].norm(dim=-1))  # a rotation keeps length


SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 256},
    "yarn-betas": {"rope_type": "yarn", "factor": 4.0, "beta_fast": 16, "beta_slow": 2},
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
}


@pytest.mark.parametrize("name", list(SCALINGS))
@pytest.mark.parametrize("seq_len", [None, 2048])
def test_rope_scaling_matches_transformers(name: str, seq_len: int | None) -> None:
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling, theta, max_len = SCALINGS[name], 50000.0, 512
    hf_cfg = transformers.LlamaConfig(
        hidden_size=256,
        num_attention_heads=4,
        max_position_embeddings=max_len,
        rope_parameters={**scaling, "rope_theta": theta},
    )
    expected, expected_scale = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](hf_cfg, "cpu", seq_len=seq_len)
    got, scale = rope_inv_freq(64, theta, scaling, max_len, seq_len)
    torch.testing.assert_close(got, expected, atol=0, rtol=1e-6)
    assert scale == pytest.approx(expected_scale)
    base = rope_inv_freq(64, theta, None, max_len)[0]
    if name != "dynamic" or seq_len:  # every scaling slows the lowest frequency
        assert got[-1] < base[-1]


def test_alibi_slopes_match_the_paper() -> None:
    """Press et al. 2022: for 8 heads the slopes are 1/2, 1/4, ..., 1/256; for 6 heads, the 4-head sequence
    (1/4, 1/16, 1/64, 1/256) followed by the odd terms of the 8-head one (1/2, 1/8)."""
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0**-i for i in range(1, 9)]))
    torch.testing.assert_close(alibi_slopes(6), torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]))


def test_sinusoidal_by_hand() -> None:
    pe = sinusoidal(torch.tensor([[0, 3]]), 8)
    assert pe.shape == (1, 2, 8)
    assert torch.equal(pe[0, 0], torch.tensor([0.0, 1, 0, 1, 0, 1, 0, 1]))
    i = 2  # dims 4, 5: frequency 10000^(-4/8)
    assert pe[0, 1, 2 * i].item() == pytest.approx(math.sin(3 / 10000 ** (2 * i / 8)), abs=1e-6)
    assert pe[0, 1, 2 * i + 1].item() == pytest.approx(math.cos(3 / 10000 ** (2 * i / 8)), abs=1e-6)


def test_no_positions_bidirectional_is_permutation_equivariant(tiny_model_kwargs: dict) -> None:
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**tiny_model_kwargs, position="none", causal=False)).eval()
    ids = torch.randint(0, 101, (1, 9))
    perm = torch.randperm(9)
    with torch.no_grad():
        torch.testing.assert_close(model(ids[:, perm]).logits, model(ids).logits[:, perm], atol=1e-5, rtol=1e-5)
    rope = Transformer(ModelConfig(**tiny_model_kwargs, position="rope", causal=False)).eval()
    with torch.no_grad():
        assert not torch.allclose(rope(ids[:, perm]).logits, rope(ids).logits[:, perm], atol=1e-4)


def test_alibi_extrapolates_past_training_length(tiny_model_kwargs: dict) -> None:
    """ALiBi and RoPE have no position table: sequences beyond max_seq_len run; a learned table refuses."""
    for position in ("alibi", "rope"):
        model = Transformer(ModelConfig(**{**tiny_model_kwargs, "max_seq_len": 16}, position=position))
        assert torch.isfinite(model(torch.randint(0, 101, (1, 40))).logits).all()
    learned = Transformer(ModelConfig(**{**tiny_model_kwargs, "max_seq_len": 16}, position="learned"))
    with pytest.raises(ValueError, match="max_seq_len=16"):
        learned(torch.randint(0, 101, (1, 40)))
