"""Training checkpoints: a Hugging Face model directory plus `trainer_state/`, written atomically, resumed exactly.

Layout of one checkpoint directory:

    config.json, model.safetensors, tokenizer.json, ...   the model, written by `Transformer.save_pretrained`
    trainer_state/optimizer.safetensors                   AdamW moments and step counts, keyed by parameter name
    trainer_state/rng.safetensors                         torch's CPU (and CUDA) generator states
    trainer_state/state.json                              step, tokens seen, elapsed time, data position,
                                                          optimizer hyper-parameters, the run's identity
                                                          (`expect`), and a sha256 of every file above

Nothing is unpickled: tensors go through safetensors, everything else through JSON. The whole directory is built
in a temp directory and swapped in (`lmstack.common.atomic.atomic_dir`), so a crash mid-save leaves the previous
checkpoint intact. On load, every file's hash is checked (a truncated or edited file is an error naming it) and
the saved identity (model shape, batch, data) is compared with the current run's: a mismatch is an error that
names the field, never a silent fresh start.

State dicts are gathered with `torch.distributed.checkpoint.state_dict.get_state_dict(full_state_dict=True)`, so
plain, DDP and FSDP2 models save the same unsharded checkpoint, which then loads at any world size.
Leaves out: sharded (distributed-checkpoint) saving for models too large for one host's memory.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from lmstack.common.atomic import atomic_dir, atomic_write_text

FORMAT_VERSION = 1
STATE_DIR = "trainer_state"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _flatten_optimizer(osd: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """{'state': {fqn: {key: tensor}}, 'param_groups': [...]} -> flat tensors + JSON-able groups."""
    tensors = {}
    for fqn, per_param in osd["state"].items():
        for key, value in per_param.items():
            tensors[f"{fqn}::{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, [dict(g) for g in osd["param_groups"]]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[str, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        fqn, key = name.rsplit("::", 1)
        state.setdefault(fqn, {})[key] = value
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def _rng_tensors() -> dict[str, torch.Tensor]:
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"cuda_{i}"] = s
    return rng


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    expect: dict[str, Any],
    save_model: Any,
) -> None:
    """Write a checkpoint (collective under torch.distributed: every rank calls it, rank 0 writes).

    state:      JSON-able training progress: step, tokens_seen, elapsed_s, data position, ...
    expect:     JSON-able identity a resume must match (model config, batch, data); checked by `load_checkpoint`
    save_model: `save_model(full_state_dict, dir)` writes the HF model directory into `dir` (the recipe builds
                an unwrapped model from the gathered state dict and calls its `save_pretrained`)
    """
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    msd, osd = get_state_dict(model, optimizer, options=opts)
    if dist.is_initialized() and dist.get_rank() != 0:
        dist.barrier()
        return
    opt_tensors, groups = _flatten_optimizer(osd)
    try:
        _write(path, msd, opt_tensors, groups, state, expect, save_model)
    except (OSError, SafetensorError) as e:  # disk full, quota, permissions: the previous checkpoint is intact
        raise OSError(
            f"cannot write checkpoint {path}: {_cause(e)}; the previous checkpoint (if any) is intact"
        ) from None
    if dist.is_initialized():
        dist.barrier()


def _cause(e: Exception) -> str:
    """The OS's words for a failed write (safetensors wraps them in a Rust debug string)."""
    m = re.search(r'message: "([^"]+)"', str(e))
    return m.group(1) if m else (e.strerror if isinstance(e, OSError) and e.strerror else str(e))


def _write(
    path: str | Path, msd: dict, opt_tensors: dict, groups: list, state: dict, expect: dict, save_model: Any
) -> None:
    with atomic_dir(path) as tmp:
        save_model(msd, tmp)  # config.json, model.safetensors, tokenizer files
        sd = tmp / STATE_DIR
        sd.mkdir()
        save_file(opt_tensors, str(sd / "optimizer.safetensors"))
        save_file(_rng_tensors(), str(sd / "rng.safetensors"))
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        record = {
            "format": FORMAT_VERSION,
            **state,
            "param_groups": groups,
            "expect": expect,
            "sha256": {str(p.relative_to(tmp)): _sha256(p) for p in files},
        }
        atomic_write_text(sd / "state.json", json.dumps(record, indent=1, default=str))


def read_state(path: str | Path) -> dict[str, Any]:
    """Read and verify `trainer_state/state.json` and every file's hash; errors name the path."""
    path = Path(path)
    state_file = path / STATE_DIR / "state.json"
    if not path.is_dir():
        raise FileNotFoundError(f"--resume: checkpoint directory not found: {path}")
    if not state_file.is_file():
        raise FileNotFoundError(f"--resume: {path} is not a training checkpoint (no {STATE_DIR}/state.json)")
    try:
        record = json.loads(state_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"--resume: {state_file} is corrupted (not valid JSON: {e})") from None
    if record.get("format") != FORMAT_VERSION:
        raise ValueError(f"--resume: {state_file} has format {record.get('format')!r}, expected {FORMAT_VERSION}")
    for rel, digest in record["sha256"].items():
        f = path / rel
        if not f.is_file():
            raise ValueError(f"--resume: checkpoint {path} is incomplete: {rel} is missing")
        if _sha256(f) != digest:
            raise ValueError(f"--resume: checkpoint file {f} is corrupted (sha256 does not match state.json)")
    return record


def check_expect(saved: dict[str, Any], current: dict[str, Any], path: str | Path) -> None:
    """Raise naming every field where the checkpoint's identity differs from the current run's."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str):
            diffs.append(f"{key}: checkpoint has {a!r}, this run has {b!r}")
    if diffs:
        raise ValueError(f"--resume: checkpoint {path} does not match this run:\n  " + "\n  ".join(diffs))


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    expect: dict[str, Any],
    model_state_dict: dict[str, torch.Tensor],
) -> dict[str, Any]:
    """Restore model, optimizer and RNG in place (any world size) and return the saved training state.

    model_state_dict: the full weights, read by the recipe from the HF directory (`Transformer.from_pretrained`).
    """
    record = read_state(path)
    check_expect(record["expect"], expect, path)
    sd = Path(path) / STATE_DIR
    try:
        opt_tensors = load_file(str(sd / "optimizer.safetensors"))
        rng = load_file(str(sd / "rng.safetensors"))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"--resume: {sd} is corrupted: {e}") from None
    osd = _unflatten_optimizer(opt_tensors, record["param_groups"])
    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False, strict=True)
    set_state_dict(model, optimizer, model_state_dict=model_state_dict, optim_state_dict=osd, options=opts)
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(rng) if k.startswith("cuda_")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    return {k: v for k, v in record.items() if k not in ("format", "param_groups", "expect", "sha256")}
