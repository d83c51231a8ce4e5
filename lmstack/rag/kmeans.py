"""k-means (Lloyd 1982) for the IVF coarse quantizer and the product quantizer's codebooks.

Each iteration assigns every point to its nearest centroid, then moves each centroid to the mean of its points.
Choices follow faiss' defaults: random distinct points as the initial centroids, training on at most 256 points
per centroid (a random subsample), 20 iterations, an empty cluster re-seeded from a random point.
`spherical=True` renormalizes centroids to unit length after each update (for inner-product search on unit
vectors: the nearest centroid is then the one with the largest dot product).
Left out: k-means++ seeding (O(n k) sequential passes, little gain at these sizes), mini-batch k-means.
"""

from __future__ import annotations

import numpy as np

CHUNK = 16384  # rows per assignment block: bounds the (rows, k) score matrix to a few tens of MB


def assign(x: np.ndarray, centroids: np.ndarray, spherical: bool = False) -> np.ndarray:
    """(n,) index of the nearest centroid: argmin |x - c|^2 = argmax x.c - |c|^2 / 2 (argmax x.c if spherical)."""
    bias = 0.0 if spherical else 0.5 * (centroids**2).sum(1)  # (k,)
    out = np.empty(len(x), np.int64)
    for lo in range(0, len(x), CHUNK):
        out[lo : lo + CHUNK] = np.argmax(x[lo : lo + CHUNK] @ centroids.T - bias, axis=1)
    return out


def kmeans(
    x: np.ndarray,
    k: int,
    iters: int = 20,
    seed: int = 0,
    spherical: bool = False,
    max_points_per_centroid: int = 256,
) -> np.ndarray:
    """(k, D) float32 centroids of the rows of x (n, D)."""
    x = np.ascontiguousarray(x, np.float32)
    if len(x) < k:
        raise ValueError(f"k-means needs at least k={k} training vectors, got {len(x)}")
    rng = np.random.default_rng(seed)
    if len(x) > k * max_points_per_centroid:
        x = x[rng.choice(len(x), k * max_points_per_centroid, replace=False)]
    centroids = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(iters):
        labels = assign(x, centroids, spherical)
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=k)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        nonempty = counts > 0
        sums = np.add.reduceat(x[order], starts[nonempty], axis=0)  # (k', D) one sum per non-empty cluster
        centroids[nonempty] = sums / counts[nonempty, None]
        empty = np.flatnonzero(~nonempty)
        if len(empty):  # re-seed empty clusters at random points (faiss splits a big cluster; close enough)
            centroids[empty] = x[rng.choice(len(x), len(empty), replace=False)]
        if spherical:
            centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return centroids.astype(np.float32)
