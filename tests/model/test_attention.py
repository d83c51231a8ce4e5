"""The SDPA fast path equals the explicit-softmax reference (forward and backward); masks follow positions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmstack.model import ModelConfig, Transformer
from lmstack.model.attention import position_bias

CASES = {
    "mha-causal": dict(n_kv_heads=4),
    "gqa": dict(),
    "mqa": dict(n_kv_heads=1),
    "window": dict(sliding_window=3),
    "alibi": dict(position="alibi"),
    "bidirectional": dict(causal=False),
    "qk-norm-head-dim": dict(qk_norm=True, head_dim=16),
}


def pair(kwargs: dict, tiny: dict) -> tuple[Transformer, Transformer]:
    torch.manual_seed(0)
    fast = Transformer(ModelConfig(**{**tiny, **kwargs, "attention": "sdpa"}))
    ref = Transformer(ModelConfig(**{**tiny, **kwargs, "attention": "reference"}))
    ref.load_state_dict(fast.state_dict())
    return fast, ref


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_matches_reference_forward_and_backward(name: str, padded: bool, tiny_model_kwargs: dict) -> None:
    fast, ref = pair(CASES[name], tiny_model_kwargs)
    ids = torch.randint(0, 101, (2, 10), generator=torch.Generator().manual_seed(1))
    pos = None
    targets = ids.roll(-1, 1)
    if padded:
        pos = torch.stack([torch.cat([torch.full((2,), -1), torch.arange(8)]), torch.arange(10)])
        targets = targets.masked_fill(pos < 0, -100)
    out_fast, out_ref = fast(ids, positions=pos, targets=targets), ref(ids, positions=pos, targets=targets)
    torch.testing.assert_close(out_fast.logits, out_ref.logits, atol=1e-5, rtol=1e-5)
    out_fast.loss.backward()
    out_ref.loss.backward()
    for (n, a), b in zip(fast.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("name", ["gqa", "window", "alibi"])
def test_cpu_autocast_runs_sdpa_in_float32(name: str, tiny_model_kwargs: dict, monkeypatch) -> None:
    """Under CPU bf16 autocast the SDPA path attends in float32 (torch's bf16 CPU kernel has a slow backward): the
    kernel sees float32 q/k/v and the logits match the reference attention, which computes in float32 too."""
    fast, ref = pair(CASES[name], tiny_model_kwargs)
    seen: list[torch.dtype] = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(
        F, "scaled_dot_product_attention", lambda q, *a, **k: (seen.append(q.dtype), real(q, *a, **k))[1]
    )
    ids = torch.randint(0, 101, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_fast, out_ref = fast(ids, targets=ids.roll(-1, 1)), ref(ids, targets=ids.roll(-1, 1))
    assert seen and set(seen) == {torch.float32}
    torch.testing.assert_close(out_fast.logits.float(), out_ref.logits.float(), atol=2e-2, rtol=2e-2)
    out_fast.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fast.parameters())
    seen.clear()
    fast.to(torch.bfloat16)(ids)  # bf16 weights without autocast: attention stays in the model's dtype
    assert set(seen) == {torch.bfloat16} and len(seen) == fast.config.n_layers


def test_attention_weights_are_returned_and_respect_the_mask(tiny_model_kwargs: dict) -> None:
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**tiny_model_kwargs, sliding_window=3))
    ids = torch.randint(0, 101, (1, 7))
    out = model(ids, return_attention=True)
    assert len(out.attentions) == 2
    w = out.attentions[0]  # (B, H, T, S)
    assert w.shape == (1, 4, 7, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 4, 7))
    p, q = torch.arange(7)[:, None], torch.arange(7)[None, :]
    forbidden = (q > p) | (p - q >= 3)
    assert (w[..., forbidden] == 0).all() and (w[..., ~forbidden] > 0).all()
    torch.testing.assert_close(out.logits, model(ids).logits, atol=1e-5, rtol=1e-5)


def test_position_bias_rule_by_hand() -> None:
    """query p reads key q iff q >= 0 and q <= p and p - q < window; pad queries read everything; ALiBi subtracts
    slope * distance."""
    q_pos = torch.tensor([[-1, 0, 1, 2]])
    k_pos = torch.tensor([[-1, 0, 1, 2]])
    bias = position_bias(q_pos, k_pos, causal=True, window=2, slopes=None, dtype=torch.float32)[0, 0]
    inf = float("-inf")
    expected = torch.tensor([[0, 0, 0, 0], [inf, 0, inf, inf], [inf, 0, 0, inf], [inf, inf, 0, 0]])
    assert torch.equal(bias, expected)
    alibi = position_bias(q_pos[:, 1:], k_pos[:, 1:], True, None, torch.tensor([0.5]), torch.float32)[0, 0]
    assert torch.equal(alibi, torch.tensor([[0, inf, inf], [-0.5, 0, inf], [-1.0, -0.5, 0]]))
