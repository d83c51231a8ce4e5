"""QLoRA: LoRA adapters over a frozen base whose linear layers are stored in NF4 (Dettmers et al. 2023).

`quantize_base(model)` swaps every linear layer inside the transformer blocks for an `NF4Linear`
(`lmstack/quant/nf4.py`: 4-bit NormalFloat codes, block 64, double-quantized absmax) and frees the fp32 weights;
`lora.apply_lora` then wraps those layers, so a forward computes  x W_nf4^T + scale * x A^T B^T  with W_nf4
dequantized on the fly and A, B in fp32 (or bf16). The gradient reaches A and B through the dequantized weight;
the base never changes. Embeddings, norms and the (tied) output head stay in full precision, as in QLoRA.

Memory: a weight costs 4.127 bits instead of 32 (~0.13x); `resident_mb()` reads the process's resident set
from /proc (what the OS actually holds), not tensor sizes, and `release_memory()` hands freed heap pages back
first (glibc keeps small freed blocks otherwise). The dequantized weight of one layer exists only during that
layer's matmul (and is recomputed in backward).
Left out: paged optimizers, 4-bit compute kernels (we dequantize to the compute dtype), quantizing the embeddings.
"""

from __future__ import annotations

import ctypes
import gc
import os

from torch import nn

from lmstack.model import Transformer
from lmstack.quant.nf4 import NF4Linear


def quantize_base(model: Transformer, blocksize: int = 64, double_quant: bool = True) -> list[str]:
    """Replace every nn.Linear inside `model.blocks` by an NF4Linear in place; returns their names."""
    names = []
    for name, mod in list(model.blocks.named_modules()):
        if isinstance(mod, nn.Linear):
            parent, _, child = name.rpartition(".")
            setattr(model.blocks.get_submodule(parent), child, NF4Linear.from_linear(mod, blocksize, double_quant))
            names.append(f"blocks.{name}")
    release_memory()
    return names


def base_weight_bytes(model: nn.Module) -> int:
    """Bytes the frozen base weights occupy as stored (NF4 buffers + full-precision parameters), tied once."""
    total = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "lora_" not in n)
    nf4 = [m for m in model.modules() if isinstance(m, NF4Linear)]
    return total + sum(b.numel() * b.element_size() for m in nf4 for b in m.buffers())


def release_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: the pages stay with the allocator (still reusable by this process)
        pass


def resident_mb() -> float:
    """Current resident set size of this process in MiB (Linux /proc; 0.0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0
