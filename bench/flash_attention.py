"""Benchmark: peak memory and time of one attention call (forward + backward) as T grows: the tiled online-softmax
reference (FlashAttention's algorithm, `lmstack/model/flash_attention.py`) vs the explicit T x T softmax vs
PyTorch's fused SDPA.

Claim (issue 16): the tiled algorithm's memory grows linearly in T (it keeps q, k, v, out and one log-sum-exp per
row, and one Br x Bc tile at a time), the explicit path's quadratically; on a CPU, in plain PyTorch, the tiled
loop is slower than both (docs/flash_attention.md explains why).
Method: q, k, v of shape (1, 8, T, 64), fp32, causal; each (path, T) runs in a fresh spawned process: one warm-up
call, then the peak-RSS counter is reset (/proc/self/clear_refs) and VmHWM - VmRSS over one forward + backward is
the extra memory; "saved MiB" is what autograd keeps for backward (exact). Tiles of 128 x 128.
Run: `OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/flash_attention.py [--quick]`; writes docs/benchmarks.md
(section "flash_attention") and docs/img/flash_attention_memory.png.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.model import _in_subprocess, _reset_peak, _status_mib  # noqa: E402
from bench.report import table, write_section  # noqa: E402

THREADS, H, HD, BLOCK = 2, 8, 64, 128
QUICK = "--quick" in sys.argv
LENGTHS = [256, 512, 1024] if QUICK else [256, 512, 1024, 2048, 4096]
PATHS = ("flash", "explicit", "sdpa")


def _call(path: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    from lmstack.model.attention import reference_attention
    from lmstack.model.flash_attention import flash_attention

    if path == "flash":
        return flash_attention(q, k, v, pos, pos, causal=True, block_q=BLOCK, block_k=BLOCK)
    if path == "explicit":
        return reference_attention(q, k, v, None, True, 0.0)[0]
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _worker(path: str, T: int, queue: mp.Queue) -> None:
    torch.set_num_threads(THREADS)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, H, T, HD, generator=g, requires_grad=True) for _ in range(3))
    pos = torch.arange(T)[None]
    _call(path, q, k, v, pos).sum().backward()  # warm-up
    q.grad = k.grad = v.grad = None
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.untyped_storage().nbytes()
        return t

    before = _reset_peak()
    t0 = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = _call(path, q, k, v, pos)
    out.sum().backward()
    queue.put((_status_mib("VmHWM") - before, time.perf_counter() - t0, saved / 2**20))


def plot(rows: list[list[object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for col, (label, style) in enumerate(
        [("tiled online softmax (flash reference)", "o-"), ("explicit T x T softmax", "s-"), ("SDPA (fused)", "^-")]
    ):
        ax.plot(T, [max(r[1 + col], 0.1) for r in rows], style, label=label)
    ax.plot(T, [H * t * t * 4 / 2**20 for t in T], ":", color="gray", label="one H x T x T fp32 matrix")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("peak extra memory, fwd+bwd (MiB)")
    ax.set_title(f"Causal attention, B=1, H={H}, hd={HD}, CPU fp32")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    rows = []
    for T in LENGTHS:
        res = {p: _in_subprocess(_worker, p, T) for p in PATHS}
        rows.append(
            [T, *(round(res[p][0], 1) for p in PATHS), *(round(res[p][2], 1) for p in PATHS)]
            + [*(round(res[p][1] * 1000) for p in PATHS)]
        )
        print(rows[-1], flush=True)
    img = Path(__file__).resolve().parent.parent / "docs" / "img" / "flash_attention_memory.png"
    plot(rows, img)
    head = ["T", "flash peak MiB", "explicit peak MiB", "SDPA peak MiB", "flash saved MiB", "explicit saved MiB"]
    head += ["SDPA saved MiB", "flash ms", "explicit ms", "SDPA ms"]
    body = (
        f"One causal attention call, forward + backward, q/k/v (1, {H}, T, {HD}) fp32, {THREADS} threads, tiles "
        f"{BLOCK} x {BLOCK}; peak = extra resident memory in a fresh process (allocator noise of a few MiB); saved = "
        "what autograd keeps for backward (exact). Plot: docs/img/flash_attention_memory.png.\n\n" + table(head, rows)
    )
    write_section("flash_attention", body)
    print(body)


if __name__ == "__main__":
    main()
