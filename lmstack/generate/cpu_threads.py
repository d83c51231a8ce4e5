"""How many CPU threads a decoding forward should use: one, when the model's weights fit in the last-level cache.

A decode step of a small model is hundreds of ops of a few microseconds each. Its weights stay in the CPU's
last-level cache between steps, so a second thread brings no memory bandwidth, only the price of waking it for
every parallel region (an OpenMP futex wake-up under `OMP_WAIT_POLICY=PASSIVE`, tens of microseconds, more than
most of these ops take). A model too big for the cache streams its weights from memory at every step, and
there a second thread does add bandwidth. Measured on this machine (2 cores, 32 MiB L3, batch-1 greedy,
bench/generate.py): a 0.3M-parameter Llama decodes at 1,650 tokens/s on 2 threads and 2,360 on one, a 4M one
(16 MB of weights) at 380 and 491, while SmolLM2-135M (540 MB) is faster on two (19.0 vs 17.2).

`forward_fn` applies this: for a CPU model that fits, each call runs with `torch.set_num_threads(1)` and puts the
caller's setting back afterwards (the switch costs well under a microsecond). Nothing changes numerically: the
same kernels run, on one thread.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

FALLBACK_CACHE_BYTES = 32 << 20  # when sysfs does not say (the L3 of this machine)


@cache
def last_level_cache_bytes() -> int:
    """The largest CPU cache the kernel reports (Linux sysfs), or 32 MiB when unknown."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip().upper()
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=FALLBACK_CACHE_BYTES)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (each storage counted once)."""
    seen: dict[int, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        if t.device.type == "cpu" and not t.is_mkldnn:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def fits_in_cache(model: nn.Module) -> bool:
    """Whether `model` lives on the CPU and its weights fit in the last-level cache."""
    p = next(model.parameters(), None)
    return p is not None and p.device.type == "cpu" and weight_bytes(model) <= last_level_cache_bytes()


def single_threaded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` run with one torch thread, the caller's thread count restored afterwards."""

    def run(*args: Any, **kwargs: Any) -> Any:
        threads = torch.get_num_threads()
        if threads == 1:
            return fn(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return run
