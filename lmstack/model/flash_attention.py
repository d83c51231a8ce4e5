"""FlashAttention, readable: exact attention computed tile by tile with the online softmax, in plain PyTorch.

Standard attention materializes the (T x S) score matrix, its softmax, and keeps the probabilities for the
backward pass: O(T S) memory per head. FlashAttention (Dao et al. 2022; FlashAttention-2, Dao 2023) never holds
more than one (Br x Bc) tile of scores. For each block of Br queries it walks the keys in blocks of Bc and keeps,
per query row, a running max m, a running sum l of exp(score - m) and an unnormalized output acc:

    s     = q_i k_j^T / sqrt(hd) + mask               (Br, Bc)  the only scores in memory
    m'    = max(m, rowmax(s))                          new running max
    p     = exp(s - m')                                (Br, Bc)
    l     = l * exp(m - m') + rowsum(p)                rescale the old sum to the new max, add the new terms
    acc   = acc * exp(m - m') + p v_j                  same rescaling for the output
    out_i = acc / l;  lse_i = m + log(l)               after the last key block

The backward pass keeps only out and lse (O(T) per head, not O(T S)) and recomputes each tile's probabilities
p = exp(s - lse) from q and k, as the paper does: with D = rowsum(dout * out),
    dv_j += p^T dout_i;   dp = dout_i v_j^T;   ds = p * (dp - D_i)
    dq_i += ds k_j / sqrt(hd);   dk_j += ds^T q_i / sqrt(hd)

The mask is the repository's position rule (model/cache.py): query at p reads key at q iff q >= 0, q <= p when
causal, and p - q < window; padded queries (p = -1) read every key. ALiBi adds -slope_h |p - q|. A tile whose
mask is all false is skipped (the causal upper triangle costs nothing). GQA: each KV head serves H / Hkv query
heads; its gradients are summed over them.

Why it is fast on a GPU and not here: on a GPU the tile lives in on-chip SRAM (~20 MB at ~19 TB/s on an A100)
while the T x S matrix would round-trip through HBM (~2 TB/s); the fused kernel reads Q, K, V once and writes O
once, so HBM traffic drops from O(T S) to O(T hd) per head and the kernel becomes compute-bound. This file runs
each tile as several separate PyTorch ops, each of which reads and writes main memory, in a Python loop over
(T / Br) x (S / Bc) tiles: it proves the algorithm and its memory curve (docs/flash_attention.md), not the speed.
Left out: dropout, a Triton/CUDA kernel (no GPU was lent to this work), the split-KV decoding variant.
"""

from __future__ import annotations

import math

import torch


def sequence_ids(pos: torch.Tensor) -> torch.Tensor:
    """Packed rows (attention.position_bias, packed=True): a position that does not increase starts a new
    sequence. pos (B, T) -> the sequence index of every token (B, T)."""
    starts = torch.ones_like(pos, dtype=torch.bool)
    starts[:, 1:] = pos[:, 1:] <= pos[:, :-1]
    return starts.cumsum(dim=1)


def tile_mask(
    q_pos: torch.Tensor, k_pos: torch.Tensor, causal: bool, window: int | None, slopes: torch.Tensor | None,
    q_seq: torch.Tensor | None = None, k_seq: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """q_pos (B, Br), k_pos (B, Bc) -> allowed (B, 1, Br, Bc) bool and the ALiBi bias (B, H, Br, Bc) or None.
    With packed rows, q_seq / k_seq (B, Br) / (B, Bc) are sequence ids: a query reads only its own sequence."""
    p, q = q_pos[:, None, :, None], k_pos[:, None, None, :]  # (B, 1, Br, 1), (B, 1, 1, Bc)
    dist = p - q
    allowed = q >= 0
    if q_seq is not None:
        allowed = allowed & (q_seq[:, None, :, None] == k_seq[:, None, None, :])
    if causal:
        allowed = allowed & (dist >= 0)
    if window is not None:
        allowed = allowed & (dist.abs() < window)
    allowed = allowed | (p < 0)  # padded queries read everything: no empty softmax rows
    bias = None if slopes is None else -slopes.to(q_pos.device)[None, :, None, None] * dist.abs()
    return allowed, bias


def _acc_dtype(q: torch.Tensor) -> torch.dtype:
    """Tiles accumulate in float32 (float64 inputs stay float64, for gradcheck)."""
    return torch.float64 if q.dtype == torch.float64 else torch.float32


def _scores(q_i, k_j, q_pos_i, k_pos_j, scale, causal, window, slopes, q_seq, k_seq):  # noqa: ANN001, ANN202
    """One tile of masked, scaled scores (B, H, Br, Bc), or None when the mask is all false."""
    allowed, bias = tile_mask(q_pos_i, k_pos_j, causal, window, slopes, q_seq, k_seq)
    if not bool(allowed.any()):
        return None
    s = (q_i @ k_j.transpose(-2, -1)) * scale  # (B, H, Br, Bc)
    if bias is not None:
        s = s + bias
    return s.masked_fill(~allowed, -math.inf)


class FlashAttention(torch.autograd.Function):
    """Tiled forward with the online softmax; backward recomputes the probabilities tile by tile."""

    @staticmethod
    def forward(ctx, q, k, v, q_pos, k_pos, causal, window, slopes, block_q, block_k, packed):  # noqa: ANN001, ANN205
        B, H, T, hd = q.shape
        S, group = k.shape[2], H // k.shape[1]
        scale = 1.0 / math.sqrt(hd)
        acc_t = _acc_dtype(q)
        qf = q.to(acc_t)
        kf = k.to(acc_t).repeat_interleave(group, dim=1)  # (B, H, S, hd): query head h reads KV head h // group
        vf = v.to(acc_t).repeat_interleave(group, dim=1)
        out = torch.empty(B, H, T, hd, dtype=acc_t, device=q.device)
        lse = torch.empty(B, H, T, dtype=acc_t, device=q.device)
        seq = sequence_ids(q_pos) if packed else None  # packed: the keys are the queries' own tokens
        for i in range(0, T, block_q):
            q_i, qp_i = qf[:, :, i : i + block_q], q_pos[:, i : i + block_q]  # (B, H, Br, hd), (B, Br)
            m = torch.full(q_i.shape[:3], -math.inf, dtype=acc_t, device=q.device)  # running max (B, H, Br)
            l = torch.zeros_like(m)  # running sum of exp(s - m)
            acc = torch.zeros_like(q_i)  # running unnormalized output (B, H, Br, hd)
            for j in range(0, S, block_k):
                s = _scores(q_i, kf[:, :, j : j + block_k], qp_i, k_pos[:, j : j + block_k], scale, causal, window,
                            slopes, *_tile_seq(seq, i, block_q, j, block_k))  # fmt: skip
                if s is None:
                    continue  # nothing in this tile may be read (e.g. above the causal diagonal)
                m_new = torch.maximum(m, s.amax(-1))
                m_safe = m_new.masked_fill(m_new == -math.inf, 0.0)  # a row with nothing readable yet stays 0
                p = torch.exp(s - m_safe[..., None])  # (B, H, Br, Bc)
                rescale = torch.exp(m - m_safe)  # exp(old max - new max) <= 1
                l = l * rescale + p.sum(-1)
                acc = acc * rescale[..., None] + p @ vf[:, :, j : j + block_k]
                m = m_new
            out[:, :, i : i + block_q] = acc / l[..., None]
            lse[:, :, i : i + block_q] = m + torch.log(l)
        ctx.save_for_backward(q, k, v, out, lse, q_pos, k_pos, slopes, seq)
        ctx.cfg = (causal, window, block_q, block_k)
        return out.to(q.dtype)

    @staticmethod
    def backward(ctx, dout):  # noqa: ANN001, ANN205
        q, k, v, out, lse, q_pos, k_pos, slopes, seq = ctx.saved_tensors
        causal, window, block_q, block_k = ctx.cfg
        B, H, T, hd = q.shape
        S, group = k.shape[2], H // k.shape[1]
        scale = 1.0 / math.sqrt(hd)
        acc_t = _acc_dtype(q)
        qf, do = q.to(acc_t), dout.to(acc_t)
        kf = k.to(acc_t).repeat_interleave(group, dim=1)
        vf = v.to(acc_t).repeat_interleave(group, dim=1)
        D = (do * out).sum(-1)  # (B, H, T): rowsum(dout * out) = rowsum(p * dp), the softmax Jacobian term
        dq, dk, dv = torch.zeros_like(qf), torch.zeros_like(kf), torch.zeros_like(vf)
        for j in range(0, S, block_k):  # outer loop over key blocks: dk_j, dv_j accumulate in place
            k_j, v_j, kp_j = kf[:, :, j : j + block_k], vf[:, :, j : j + block_k], k_pos[:, j : j + block_k]
            for i in range(0, T, block_q):
                q_i = qf[:, :, i : i + block_q]
                s = _scores(q_i, k_j, q_pos[:, i : i + block_q], kp_j, scale, causal, window, slopes,
                            *_tile_seq(seq, i, block_q, j, block_k))  # fmt: skip
                if s is None:
                    continue
                p = torch.exp(s - lse[:, :, i : i + block_q, None])  # recomputed probabilities (B, H, Br, Bc)
                do_i = do[:, :, i : i + block_q]
                dv[:, :, j : j + block_k] += p.transpose(-2, -1) @ do_i
                dp = do_i @ v_j.transpose(-2, -1)  # (B, H, Br, Bc)
                ds = p * (dp - D[:, :, i : i + block_q, None])
                dq[:, :, i : i + block_q] += (ds @ k_j) * scale
                dk[:, :, j : j + block_k] += (ds.transpose(-2, -1) @ q_i) * scale
        Hkv = k.shape[1]
        dk = dk.view(B, Hkv, group, S, hd).sum(2)  # GQA: a KV head's gradient sums over its query heads
        dv = dv.view(B, Hkv, group, S, hd).sum(2)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), *([None] * 8)


def _tile_seq(seq: torch.Tensor | None, i: int, bq: int, j: int, bk: int) -> tuple:
    """The query and key tiles' sequence ids (packed rows), or (None, None)."""
    return (None, None) if seq is None else (seq[:, i : i + bq], seq[:, j : j + bk])


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    causal: bool = True,
    window: int | None = None,
    slopes: torch.Tensor | None = None,
    block_q: int = 64,
    block_k: int = 64,
    packed: bool = False,
) -> torch.Tensor:
    """q (B, H, T, hd), k/v (B, Hkv, S, hd), positions (B, T) / (B, S) -> (B, H, T, hd), the same as
    `scaled_dot_product_attention` with `attention.position_bias` (same `packed`) as its mask."""
    assert q.shape[1] % k.shape[1] == 0, f"query heads {q.shape[1]} not a multiple of KV heads {k.shape[1]}"
    assert not packed or q_pos is k_pos or torch.equal(q_pos, k_pos), "packed rows: the keys are the queries"
    return FlashAttention.apply(q, k, v, q_pos, k_pos, causal, window, slopes, block_q, block_k, packed)
