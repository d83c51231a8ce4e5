"""Data parallelism through torch.distributed: joining the `torchrun` process group, DDP / FSDP2 wrapping, and
the two collectives the training loop needs.

- DDP (Li et al. 2020, "PyTorch Distributed"): every rank holds the whole model; gradients are all-reduced
  (averaged) in buckets while backward runs, so every rank applies the same update.
- FSDP2 `fully_shard` (ZeRO-3; Rajbhandari et al. 2020): each block's parameters, their gradients and the AdamW
  state live sharded across ranks (a DTensor per parameter); a block's parameters are all-gathered just before
  its forward and backward and freed after, gradients are reduce-scattered. Per-rank memory for weights +
  gradients + optimizer state falls by ~the world size, for more communication.

gloo on CPU, nccl on GPU. Every rank draws the same global batch and keeps its own rows (`rank_slice`), so the
update does not depend on how many processes share the batch. Leaves out: tensor/pipeline parallelism,
hybrid sharding, CPU offload.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lmstack.common.seed import pick_device


def join_process_group(device: str) -> tuple[int, int, str]:
    """(rank, world size, device) from torchrun's environment; one process when WORLD_SIZE is unset or 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device)
    if world > 1 and not dist.is_initialized():
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"  # one GPU per process
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return (dist.get_rank() if world > 1 else 0), world, device


def wrap(model: nn.Module, blocks: nn.ModuleList, world: int, fsdp: bool) -> Any:
    """The callable that runs forward: the model itself, DDP around it, or the model sharded in place by FSDP2."""
    if world == 1:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in blocks:  # one FSDP unit per block: only one block's full parameters exist at a time
            fully_shard(block)
        fully_shard(model)  # the rest (embeddings, final norm, head) as the root unit
        return model
    return nn.parallel.DistributedDataParallel(model)


def rank_slice(x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rows [rank * B / world, (rank + 1) * B / world) of the global batch x (B, ...)."""
    per = x.shape[0] // world
    return x[rank * per : (rank + 1) * per]


def all_ranks(value: float, world: int, op: str, device: str) -> float:
    """The max or mean of `value` over ranks (the value itself for one process)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)  # nccl reduces only GPU tensors
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return float(t) / (world if op == "mean" else 1)


def check_batch_split(batch_size: int, grad_accum: int, world: int) -> None:
    """The global batch must split evenly into processes x micro-batches."""
    if batch_size % (grad_accum * world):
        raise ValueError(f"--batch_size={batch_size} is not divisible by grad_accum x processes = "
                         f"{grad_accum} x {world}")  # fmt: skip


@contextlib.contextmanager
def grad_sync(forward: Any, model: nn.Module, last: bool) -> Iterator[None]:
    """Communicate gradients only on the last micro-batch of a step: DDP's `no_sync()` before it; FSDP2's
    `set_requires_gradient_sync(last)` (reduce-scatter once). A plain model needs nothing."""
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(last)
    if last or not hasattr(forward, "no_sync"):  # plain model, or DDP's last micro-batch
        yield
        return
    with forward.no_sync():
        yield


def full_norm(norm: torch.Tensor) -> float:
    """The global gradient norm as a float (FSDP2's clip_grad_norm_ returns a DTensor)."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
