"""How many CPU threads a decoding step should use: measured, not guessed.

A decode step (one new token per row, a few rows) is hundreds of small ops around one matrix-vector product
per weight matrix. On this machine (2 cores, `OMP_WAIT_POLICY=PASSIVE`) a second thread rarely pays for it:
waking it for a parallel region is an OpenMP futex wake-up of tens of microseconds, more than most of these ops
take (SDPA for one query over 64 keys: 97 us on 2 threads, 14 us on 1), and MKL's fp32 matrix-vector product
streams a 3072x576 matrix in 343 us on one thread and 332 us on two. A prefill (many tokens per row) is
compute-bound and does use both. Whether the second thread pays depends on the model, the batch and the machine,
so `DecodeThreads` measures it: the first decode steps of a (model, thread count, batch size) alternate between
one thread and the caller's count, and the rest of the steps (and later generate calls) use the faster one.
Measured with it (bench/generate.py, batch 1): a 0.3M-parameter Llama 1,650 -> 2,360 tokens/s, a 4M one 380 -> 491.
Nothing changes numerically: the same kernels run on fewer threads.
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

TRIALS = 3  # timed decode steps per candidate thread count (after one warm-up step)
_CHOICES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, int], int]] = weakref.WeakKeyDictionary()


class DecodeThreads:
    """Wraps a forward `fn(ids, positions, cache, last_only)`; decode calls (T == 1) run on the measured-faster
    thread count, prefill calls on the caller's."""

    def __init__(
        self, model: nn.Module, fn: Callable[..., torch.Tensor], clock: Callable[[], float] = time.perf_counter
    ):
        self.fn, self.clock = fn, clock
        self.choices = _CHOICES.setdefault(model, {})
        self.samples: dict[tuple[int, int], dict[int, list[float]]] = {}
        self.warm = False  # the first decode step pays for allocations: it is not timed

    def __call__(self, ids: torch.Tensor, *args: Any) -> torch.Tensor:
        threads = torch.get_num_threads()
        if threads == 1 or ids.shape[1] != 1:
            return self.fn(ids, *args)
        key = (threads, ids.shape[0])
        choice = self.choices.get(key)
        if choice is not None:
            return self._run(choice, threads, ids, *args)
        times = self.samples.setdefault(key, {1: [], threads: []})
        if not self.warm:
            self.warm = True
            return self.fn(ids, *args)
        trial = 1 if len(times[1]) <= len(times[threads]) else threads
        t = self.clock()
        out = self._run(trial, threads, ids, *args)
        times[trial].append(self.clock() - t)
        if len(times[threads]) >= TRIALS:
            self.choices[key] = min((1, threads), key=lambda n: statistics.median(times[n]))
        return out

    def _run(self, use: int, threads: int, ids: torch.Tensor, *args: Any) -> torch.Tensor:
        if use == threads:
            return self.fn(ids, *args)
        torch.set_num_threads(use)
        try:
            return self.fn(ids, *args)
        finally:
            torch.set_num_threads(threads)


def decode_threads_chosen(model: nn.Module) -> dict[tuple[int, int], int]:
    """{(caller's thread count, batch rows): threads its decode steps use} measured so far for `model`."""
    return dict(_CHOICES.get(model, {}))
