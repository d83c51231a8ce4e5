"""The tiled online-softmax attention (FlashAttention algorithm) equals SDPA, forward and backward, in fp32."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmstack.model import ModelConfig, Transformer
from lmstack.model.attention import position_bias
from lmstack.model.flash_attention import flash_attention
from lmstack.model.positions import alibi_slopes

# name -> (causal, window, alibi, padded, T, S, H, Hkv); tiles of 16 so every case spans several tiles
CASES = {
    "causal": (True, None, False, False, 50, 50, 4, 4),
    "causal-gqa": (True, None, False, False, 40, 40, 4, 2),
    "window": (True, 7, False, False, 50, 50, 4, 2),
    "padded": (True, None, False, True, 37, 37, 4, 1),
    "padded-window": (True, 5, False, True, 37, 37, 2, 2),
    "bidirectional-padded": (False, None, False, True, 33, 33, 2, 2),
    "cached-decode": (True, None, False, False, 5, 45, 4, 2),  # 5 new queries at positions 40..44 over 45 keys
    "alibi": (True, None, True, False, 30, 30, 4, 4),
}


def _inputs(case: tuple, seed: int = 0) -> tuple:
    causal, window, alibi, padded, T, S, H, Hkv = case
    g = torch.Generator().manual_seed(seed)
    B, hd = 2, 8
    q = torch.randn(B, H, T, hd, generator=g, requires_grad=True)
    k = torch.randn(B, Hkv, S, hd, generator=g, requires_grad=True)
    v = torch.randn(B, Hkv, S, hd, generator=g, requires_grad=True)
    k_pos = torch.arange(S).expand(B, S).clone()
    if padded:  # row 0 left-padded by 6
        k_pos[0] = torch.cat([torch.full((6,), -1), torch.arange(S - 6)])
    q_pos = k_pos[:, S - T :].clone()
    slopes = alibi_slopes(H) if alibi else None
    return q, k, v, q_pos, k_pos, causal, window, slopes


@pytest.mark.parametrize("name", list(CASES))
def test_matches_sdpa_forward_and_backward(name: str) -> None:
    q, k, v, q_pos, k_pos, causal, window, slopes = _inputs(CASES[name])
    ours = flash_attention(q, k, v, q_pos, k_pos, causal, window, slopes, block_q=16, block_k=16)
    bias = position_bias(q_pos, k_pos, causal, window, slopes, q.dtype)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=q.shape[1] != k.shape[1])
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(ref)
    g_ours = torch.autograd.grad(ours, (q, k, v), grad)
    g_ref = torch.autograd.grad(ref, (q, k, v), grad)
    for name_, a, b in zip("qkv", g_ours, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m, n=name_: f"d{n}: {m}")


def test_packed_rows_match_sdpa() -> None:
    """Several sequences packed in a row (positions restart): a query reads only its own sequence."""
    q, k, v, _, _, causal, window, slopes = _inputs(CASES["causal-gqa"])
    pos = torch.cat([torch.arange(15), torch.arange(20), torch.arange(5)]).expand(2, 40).clone()
    ours = flash_attention(q, k, v, pos, pos, True, None, None, block_q=16, block_k=16, packed=True)
    bias = position_bias(pos, pos, True, None, None, q.dtype, packed=True)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_gradcheck_float64() -> None:
    q, k, v, q_pos, k_pos, causal, window, slopes = _inputs((True, 4, True, True, 9, 9, 2, 1))
    args = [t.detach()[:, :, :, :3].double().requires_grad_() for t in (q, k, v)]  # small: gradcheck is O(n^2)
    fn = lambda q, k, v: flash_attention(q, k, v, q_pos, k_pos, causal, window, slopes.double(), 4, 3)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(), dict(sliding_window=5), dict(causal=False)], ids=["gqa", "window", "bidir"])
def test_model_with_flash_attention_matches_sdpa(kwargs: dict, tiny_model_kwargs: dict) -> None:
    torch.manual_seed(0)
    fast = Transformer(ModelConfig(**tiny_model_kwargs, **kwargs))
    flash = Transformer(ModelConfig(**tiny_model_kwargs, **kwargs, attention="flash"))
    flash.load_state_dict(fast.state_dict())
    ids = torch.randint(0, 101, (2, 64))
    pos = torch.stack([torch.cat([torch.full((4,), -1), torch.arange(60)]), torch.arange(64)])
    targets = ids.roll(-1, 1).masked_fill(pos < 0, -100)
    a, b = fast(ids, positions=pos, targets=targets), flash(ids, positions=pos, targets=targets)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=1e-5)
    a.loss.backward()
    b.loss.backward()
    for (n, p), r in zip(flash.named_parameters(), fast.parameters()):
        torch.testing.assert_close(p.grad, r.grad, atol=1e-5, rtol=1e-4, msg=lambda m, n=n: f"{n}: {m}")


def test_saves_linear_not_quadratic_memory_for_backward() -> None:
    """Autograd keeps q, k, v, out and the log-sum-exp: O(T) per head; the explicit path keeps T x T weights."""
    saved = {}
    for T in (256, 512):
        q, k, v, q_pos, k_pos, *_ = _inputs((True, None, False, False, T, T, 2, 2))
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            flash_attention(q, k, v, q_pos, k_pos)
        saved[T] = total
    assert saved[512] < 2.1 * saved[256], saved  # doubling T doubles what is kept, not 4x
