"""llama.cpp's block quantization formats Q8_0, Q4_0 and Q4_1, written from the ggml format description.

GGUF stores a quantized tensor row by row, each row cut into blocks of 32 consecutive values (along the input
dim, ne0); a block is a few bytes of fp16 header and the packed integers:

    type   bytes  header          integers                 value
    Q8_0   34     d               32 x int8 q              q * d              d = max|x| / 127, q = round(x / d)
    Q4_0   18     d               16 bytes, 32 x 4-bit q   (q - 8) * d        d = x_m / -8, x_m the value of max |x|
    Q4_1   20     d, m            16 bytes, 32 x 4-bit q   q * d + m          d = (max - min) / 15, m = min

In the 4-bit types, byte j holds value j in its low nibble and value j + 16 in its high nibble. The rounding
follows ggml's reference quantizers (`quantize_row_*_ref`): Q8_0 rounds half away from zero; Q4_0 / Q4_1
truncate x / d + 8.5 (resp. (x - min) / d + 0.5) and clamp to 15; the integers use the float32 d, the header
stores d rounded to fp16. Q4_0 is symmetric with the sign of the largest-magnitude value mapped to -8, so that
value is exact; Q4_1 is asymmetric (a min per block) like our asymmetric group-32 grid, with a float offset m
instead of an integer zero point.

`quantize(x, kind)` -> raw bytes (rows, bytes per row) uint8; `dequantize(raw, kind)` -> float32 values.
tests/quant/test_gguf.py checks both against the `gguf` package's reference (de)quantizers bit for bit.
Left out: k-quants (Q4_K, Q6_K: super-blocks of 256 with quantized scales), i-quants, Q5_0 / Q5_1.
"""

from __future__ import annotations

import numpy as np

BLOCK = 32
BLOCK_BYTES = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20}


def _blocks(x: np.ndarray) -> np.ndarray:
    """(rows, K) float -> (rows * K / 32, 32) float32; K must be a multiple of 32."""
    x = np.asarray(x, dtype=np.float32)
    assert x.shape[-1] % BLOCK == 0, f"row length {x.shape[-1]} is not a multiple of {BLOCK}"
    return x.reshape(-1, BLOCK)


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _inverse(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d == 0, 0, 1 / d).astype(np.float32)


def _nibbles(q: np.ndarray) -> np.ndarray:
    """(n, 32) values in [0, 16) -> (n, 16) bytes: value j low, value j + 16 high."""
    q = q.astype(np.uint8)
    return q[:, :16] | (q[:, 16:] << 4)


def _fp16_bytes(v: np.ndarray) -> np.ndarray:
    """(n, 1) float32 -> (n, 2) uint8, little-endian fp16."""
    return v.astype("<f2").view(np.uint8).reshape(-1, 2)


def quantize(x: np.ndarray, kind: str) -> np.ndarray:
    """Rows of x (rows, K) -> raw GGUF bytes (rows, K / 32 * block bytes) uint8."""
    rows, K = np.asarray(x).reshape(-1, np.asarray(x).shape[-1]).shape
    b = _blocks(x)  # (n, 32)
    if kind == "Q8_0":
        d = np.abs(b).max(axis=1, keepdims=True) / 127
        q = _round_half_away(b * _inverse(d)).astype(np.int8)
        out = np.concatenate([_fp16_bytes(d), q.view(np.uint8)], axis=1)
    elif kind == "Q4_0":
        peak = np.take_along_axis(b, np.abs(b).argmax(axis=1)[:, None], axis=1)  # signed value of max |x|
        d = peak / -8
        q = np.minimum(15, np.trunc(b * _inverse(d) + 8.5))
        out = np.concatenate([_fp16_bytes(d), _nibbles(q)], axis=1)
    elif kind == "Q4_1":
        lo, hi = b.min(axis=1, keepdims=True), b.max(axis=1, keepdims=True)
        d = (hi - lo) / 15
        q = np.minimum(15, np.trunc((b - lo) * _inverse(d) + 0.5))
        out = np.concatenate([_fp16_bytes(d), _fp16_bytes(lo), _nibbles(q)], axis=1)
    else:
        raise ValueError(f"GGUF block type {kind!r}: expected one of {', '.join(BLOCK_BYTES)}")
    return out.reshape(rows, K // BLOCK * BLOCK_BYTES[kind])


def dequantize(raw: np.ndarray, kind: str) -> np.ndarray:
    """Raw bytes (rows, bytes per row) -> float32 (rows, K)."""
    rows = raw.shape[0]
    blocks = np.asarray(raw, dtype=np.uint8).reshape(-1, BLOCK_BYTES[kind])
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n, 1)
    if kind == "Q8_0":
        values = blocks[:, 2:].copy().view(np.int8).astype(np.float32) * d
    else:
        packed = blocks[:, 4:] if kind == "Q4_1" else blocks[:, 2:]
        q = np.concatenate([packed & 0xF, packed >> 4], axis=1).astype(np.float32)  # (n, 32)
        if kind == "Q4_0":
            values = (q - 8) * d
        else:
            values = q * d + blocks[:, 2:4].copy().view("<f2").astype(np.float32)
    return values.reshape(rows, -1)
