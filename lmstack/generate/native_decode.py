"""The decode step in C: one parallel region per forward instead of one per matrix product.

Why (docs/generate.md, "The decode step in C"): at batch 1 a float32 step of SmolLM2-135M is 121 matrix-vector
products streaming 538 MB plus ~1,000 small ops. In PyTorch each product is its own OpenMP parallel region; under
`OMP_WAIT_POLICY=PASSIVE` the second thread sleeps between regions, so every product pays a futex wake-up, and
every small op pays dispatch: ~40 ms a token where the weights alone stream in ~20 ms. `native_decode.c` runs the
whole forward (embedding rows, per layer: RMSNorm, q|k|v, RoPE, the cache write, attention, o, RMSNorm, gate|up,
SiLU, down; final norm, head) in one region: the threads wake once and meet at a spinning barrier between the
phases of a layer. It reads the weights where they are (nn.Linear's (out, in) rows, or `decode_layout`'s (in, out)
matrices with q|k|v and gate|up fused) and the keys and values in the `ContiguousKVCache`, so a prefill by
`FastForward` and the steps after it share one cache.

One call takes up to MAX_ROWS new tokens: 1-16 of one row (a decode step, a speculative verification, a short
prefill) or one each of up to 16 rows (a batched step; slots at position -1, left padding, are not attended).
Every weight is read once for all of them.

Built at first use with the system C compiler (`$CC`, else `cc`; `-O3 -march=native -fopenmp`, about a second) into
`$LMSTACK_HOME/native/<hash of source, flags, compiler and CPU>/`, written atomically; no compiler, a failed build
or `LMSTACK_NATIVE=0` leaves decoding on `FastForward` (a warning says why, once).
Covered: float32 pre-norm decoders with RMSNorm, RoPE (any scaling: the cos / sin tables come from the model's
`RotaryEmbedding`), MHA / GQA / MQA, optional q|k|v biases, SwiGLU, tied or untied head; a float32
`ContiguousKVCache`. Everything else (longer prefills, bigger batches, INT8 caches, quantized or bf16 weights,
LayerNorm, ALiBi, sliding windows, QK-norm) runs `FastForward` as before.
Logits agree with `FastForward`'s to ~1e-6 (sums in another order than MKL's; tests/generate/test_native_decode.py),
do not depend on the thread count, and equal, bit for bit, those of feeding the same tokens one call at a time.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from lmstack.common.home import lmstack_home
from lmstack.generate.fast_forward import FastForward
from lmstack.generate.kv_cache import ContiguousKVCache
from lmstack.model.ffn import SwiGLU
from lmstack.model.norms import RMSNorm
from lmstack.model.transformer import Transformer

SOURCE = Path(__file__).with_name("native_decode.c")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-std=gnu11", "-shared", "-fPIC"]
_FLOAT_P = ctypes.POINTER(ctypes.c_float)
MAX_ROWS = 16  # new tokens one call takes over all its rows (native_decode.c): steps, verifications, prefills


class _Matrix(ctypes.Structure):  # a projection's weight as stored (native_decode.c, `Matrix`)
    _fields_ = [("p", _FLOAT_P), ("bias", _FLOAT_P), ("ld", ctypes.c_long), ("by_rows", ctypes.c_int)]


class _Model(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int) for name in
                ("n_layers", "d", "n_heads", "n_kv_heads", "head_dim", "rope_dim", "d_ff", "vocab")] + [
        ("eps", ctypes.c_float), ("scale", ctypes.c_float), ("embed", _FLOAT_P),
        ("embed_row", ctypes.c_long), ("embed_col", ctypes.c_long), ("final_norm", _FLOAT_P), ("head", _Matrix),
    ]  # fmt: skip


class _Layer(ctypes.Structure):
    _fields_ = [("attn_norm", _FLOAT_P), ("ffn_norm", _FLOAT_P)] + [
        (name, _Matrix) for name in ("q", "k", "v", "o", "gate", "up", "down")
    ]


def _cpu_id() -> str:
    """What `-march=native` compiles for: the CPU model and its feature flags (Linux), else the platform."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({x for x in lines if x.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() + platform.machine()


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled step, built on first use and cached; None (with one warning) when it cannot be built."""
    if os.environ.get("LMSTACK_NATIVE", "1") == "0":
        return None
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        warnings.warn(f"native decode step: no C compiler ({cc!r} not found); decoding runs in PyTorch", stacklevel=2)
        return None
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
        key = hashlib.sha256("\0".join([SOURCE.read_text(), *FLAGS, version, _cpu_id()]).encode()).hexdigest()[:16]
        target = lmstack_home() / "native" / key / "native_decode.so"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".native_decode.", suffix=".so")
            os.close(fd)
            try:
                build = subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True,
                                       timeout=300)  # fmt: skip
                if build.returncode != 0:
                    raise OSError(f"{cc} exited with {build.returncode}: {build.stderr.strip()[-500:]}")
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as e:
        warnings.warn(
            f"native decode step: build of {SOURCE.name} failed ({e}); decoding runs in PyTorch", stacklevel=2
        )
        return None
    lib.lm_decode_step.restype = ctypes.c_int
    lib.lm_decode_step.argtypes = [
        ctypes.POINTER(_Model), ctypes.POINTER(_Layer), ctypes.POINTER(_FLOAT_P), ctypes.POINTER(_FLOAT_P),
        ctypes.c_long, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.c_void_p,
        _FLOAT_P, _FLOAT_P, _FLOAT_P, _FLOAT_P, ctypes.c_int, ctypes.c_int,
    ]  # fmt: skip
    lib.lm_read.restype = ctypes.c_double
    lib.lm_read.argtypes = [ctypes.POINTER(_FLOAT_P), ctypes.POINTER(ctypes.c_long), ctypes.c_int, ctypes.c_int]
    return lib


def read_once(tensors: list[torch.Tensor], threads: int | None = None) -> tuple[float, float]:
    """(seconds, sum of every element) for `threads` (default torch's) threads to read these contiguous float32
    tensors once, in one parallel region: the memory floor under a decode step that streams them
    (bench/generate.py). Needs the C library."""
    lib = library()
    if lib is None:
        raise RuntimeError("read_once needs the native library (a C compiler; LMSTACK_NATIVE not 0)")
    if any(t.dtype != torch.float32 or not t.is_contiguous() for t in tensors):
        raise ValueError("read_once: expected contiguous float32 tensors")
    arrays = (_FLOAT_P * len(tensors))(*(_ptr(t) for t in tensors))
    lengths = (ctypes.c_long * len(tensors))(*(t.numel() for t in tensors))
    start = time.perf_counter()
    total = lib.lm_read(arrays, lengths, len(tensors), threads or torch.get_num_threads())
    return time.perf_counter() - start, total


def _ptr(t: torch.Tensor) -> ctypes._Pointer:
    return ctypes.cast(t.data_ptr(), _FLOAT_P)


def _matrix(linear: nn.Module) -> tuple[_Matrix, list[torch.Tensor]] | None:
    """An nn.Linear's float32 weight (out, in) as the C step reads it, with the tensors it points into; None when
    neither of its strides is 1 (a layout the step does not read)."""
    if type(linear) is not nn.Linear or linear.weight.dtype != torch.float32:
        return None
    w, b = linear.weight, linear.bias
    if b is not None and (b.dtype != torch.float32 or not b.is_contiguous()):
        return None
    if w.stride(1) == 1:  # nn.Linear's own (out, in) row-major
        m = _Matrix(_ptr(w), _ptr(b) if b is not None else None, w.stride(0), 1)
    elif w.stride(0) == 1:  # `decode_layout`'s (in, out) row-major, possibly a column slice of a fused matrix
        m = _Matrix(_ptr(w), _ptr(b) if b is not None else None, w.stride(1), 0)
    else:
        return None
    return m, [t for t in (w, b) if t is not None]


def _vector(t: torch.Tensor) -> bool:
    return t.dtype == torch.float32 and t.is_contiguous()


class NativeDecode:
    """`fn(ids, positions, cache, last_only)` -> logits (B, T or 1, V) for up to MAX_ROWS new tokens, in C. Build
    with `NativeDecode.of(model)`; `covers(ids, cache)` says whether a call is one it runs."""

    def __init__(self, model: Transformer, lib: ctypes.CDLL, head: _Matrix, layers: list[_Layer], keep: list) -> None:
        cfg = self.cfg = model.config
        self.model, self.lib, self.keep = model, lib, keep  # keep: the tensors the pointers point into
        embed = model.embed.weight
        self.spec = _Model(
            cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.rope_dim, cfg.d_ff,
            cfg.vocab_size, cfg.norm_eps, cfg.head_dim**-0.5, _ptr(embed), embed.stride(0), embed.stride(1),
            _ptr(model.norm.weight), head,
        )  # fmt: skip
        self.layers = (_Layer * cfg.n_layers)(*layers)
        self._kv: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None  # the cache lists the pointers are of
        self._k_ptrs = self._v_ptrs = None
        self._scratch = torch.empty(0)

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether the C step covers `model`'s architecture and dtype (see above), whatever its weights' layout."""
        if not FastForward.covers(model):  # hooks, unknown modules, training mode, non-plain configs
            return False
        cfg = model.config
        plain = (cfg.norm == "rmsnorm" and cfg.position == "rope" and cfg.ffn == "swiglu" and not cfg.bias
                 and not cfg.qk_norm and cfg.sliding_window is None and model.rope is not None)  # fmt: skip
        if not plain or type(model.embed) is not nn.Embedding:  # e.g. an int8 table shared with the head
            return False
        embed = model.embed.weight
        if embed.dtype != torch.float32 or embed.device.type != "cpu" or type(model.norm) is not RMSNorm:
            return False
        for block in model.blocks:
            a, f = block.attn, block.ffn
            if type(f) is not SwiGLU or type(block.attn_norm) is not RMSNorm or type(block.ffn_norm) is not RMSNorm:
                return False
            for m in (a.q_proj, a.k_proj, a.v_proj, a.o_proj, f.gate_proj, f.up_proj, f.down_proj):
                if type(m) is not nn.Linear or m.weight.dtype != torch.float32:
                    return False
        return type(model.lm_head) is nn.Linear and model.lm_head.weight.dtype == torch.float32

    @classmethod
    def of(cls, model: nn.Module) -> NativeDecode | None:
        """A NativeDecode for `model`, or None when the model is outside what the C step covers (see above), its
        weights are in a layout it does not read, or the step cannot be built here."""
        if not cls.supports(model) or not _vector(model.norm.weight):
            return None
        head = _matrix(model.lm_head)
        if head is None:
            return None
        keep, layers = [model.embed.weight, model.norm.weight, *head[1]], []
        for block in model.blocks:
            a, f = block.attn, block.ffn
            norms = (block.attn_norm, block.ffn_norm)
            mats = [_matrix(m) for m in (a.q_proj, a.k_proj, a.v_proj, a.o_proj, f.gate_proj, f.up_proj, f.down_proj)]
            if any(m is None for m in mats) or not all(_vector(n.weight) for n in norms):
                return None
            keep += [t for m in mats for t in m[1]] + [n.weight for n in norms]
            layers.append(_Layer(_ptr(norms[0].weight), _ptr(norms[1].weight), *(m[0] for m in mats)))
        lib = library()
        return cls(model, lib, head[0], layers, keep) if lib is not None else None

    @staticmethod
    def covers(ids: torch.Tensor, cache: object) -> bool:
        """One row of 1..MAX_ROWS new tokens (a decode step, a speculative verification, a short prefill), or up to
        MAX_ROWS rows of one new token each (a batched decode step), through a float32 contiguous cache."""
        B, T = ids.shape
        return (
            (B == 1 or T == 1)
            and B * T <= MAX_ROWS
            and type(cache) is ContiguousKVCache
            and cache.k[0].dtype == torch.float32
            and cache.k[0].is_contiguous()
        )

    def __call__(
        self, ids: torch.Tensor, positions: torch.Tensor, cache: ContiguousKVCache, last_only: bool = False
    ) -> torch.Tensor:
        """ids, positions (B, T) -> logits (B, T, V), or (B, 1, V) for each row's last token with `last_only`; the
        new keys and values go into `cache`'s next T slots. Positions must not be negative (a new token is never
        padding) and, within a row, consecutive; earlier slots at position -1 (left padding) are not attended."""
        cfg, (B, T) = self.cfg, ids.shape
        tokens, pos = ids.flatten().tolist(), positions.tolist()
        if min(tokens) < 0 or max(tokens) >= cfg.vocab_size:
            raise ValueError(f"input_ids: token ids must be in [0, {cfg.vocab_size}), got {tokens}")
        if any(row[0] < 0 or row != list(range(row[0], row[0] + T)) for row in pos):
            raise ValueError(f"positions: expected {T} consecutive non-negative positions per row, got {pos}")
        cos, sin = (t.contiguous() for t in self.model.rope.signed(positions, torch.float32))  # (B, 1, T, rope_dim)
        slot = cache.claim(positions)
        if self._kv is None or self._kv[0] is not cache.k or self._kv[1] is not cache.v:  # new cache, grown, selected
            self._kv = (cache.k, cache.v)
            self._k_ptrs = (_FLOAT_P * len(cache.k))(*(_ptr(t) for t in cache.k))
            self._v_ptrs = (_FLOAT_P * len(cache.v))(*(_ptr(t) for t in cache.v))
        per_row = cfg.d_model + (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim + cfg.n_heads * cfg.head_dim
        need = B * T * (per_row + cfg.d_ff + cfg.n_heads * cache.capacity)
        if self._scratch.numel() < need:
            self._scratch = torch.empty(need)
        logits = torch.empty(B, 1 if last_only else T, cfg.vocab_size)
        kpos = cache.pos if cache.pos.is_contiguous() else cache.pos.contiguous()  # (B, capacity) int64
        self.lib.lm_decode_step(
            self.spec, self.layers, self._k_ptrs, self._v_ptrs, cache.capacity, slot, B, T,
            (ctypes.c_int * (B * T))(*tokens), kpos.data_ptr(), _ptr(cos), _ptr(sin), _ptr(self._scratch),
            _ptr(logits), int(not last_only), torch.get_num_threads(),
        )  # fmt: skip
        return logits
