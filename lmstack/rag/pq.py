"""Product quantization (Jégou, Douze & Schmid 2011): a D-dim vector stored in m bytes.

Split the D dims into m sub-vectors of D/m dims; learn 256 centroids per sub-space by k-means; store each vector as
the m indices (one byte each) of its nearest sub-centroids. 384-d float32 (1,536 bytes) with m = 16 -> 16 bytes.

Search by asymmetric distance computation (ADC): the query stays exact. Its dot product with the reconstruction
of a code is a sum of m table lookups:

    q . x_hat = sum_j q_j . C_j[code_j]   with the table  lut[j, c] = q_j . C_j[c]   (m x 256, once per query)

so scoring a code costs m additions instead of D multiply-adds. In IVF-PQ (ivf.py) the codes quantize the
residual x - centroid, and q . x ~ q . centroid + q . residual_hat.
Left out: optimized PQ (OPQ rotation), 4-bit fast-scan codes, polysemous codes.
"""

from __future__ import annotations

import numpy as np

from lmstack.rag.kmeans import assign, kmeans

KSUB = 256  # centroids per sub-space: codes are uint8


class ProductQuantizer:
    def __init__(self, dim: int, m: int) -> None:
        if m <= 0 or dim % m:
            raise ValueError(f"product quantizer: dim={dim} must be divisible by pq_m={m}")
        self.dim, self.m, self.dsub = dim, m, dim // m
        self.codebooks = np.zeros((m, KSUB, self.dsub), np.float32)  # (m, 256, D/m)

    def train(self, x: np.ndarray, seed: int = 0, iters: int = 20) -> None:
        for j in range(self.m):
            sub = x[:, j * self.dsub : (j + 1) * self.dsub]
            self.codebooks[j] = kmeans(sub, KSUB, iters=iters, seed=seed + j)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, D) -> (n, m) uint8 codes."""
        codes = np.empty((len(x), self.m), np.uint8)
        for j in range(self.m):
            codes[:, j] = assign(x[:, j * self.dsub : (j + 1) * self.dsub], self.codebooks[j])
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(n, m) codes -> (n, D) reconstructions."""
        return np.concatenate([self.codebooks[j][codes[:, j]] for j in range(self.m)], axis=1)

    def inner_product_table(self, q: np.ndarray) -> np.ndarray:
        """(m, 256) table lut[j, c] = q_j . C_j[c] for one query q (D,)."""
        return np.einsum("jcd,jd->jc", self.codebooks, q.reshape(self.m, self.dsub))

    def adc(self, lut: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(n,) approximate q . x for codes (n, m): m lookups and a sum per code."""
        return lut[np.arange(self.m), codes].sum(axis=1)
