"""The segmentation lattice of a unigram language model: Viterbi, forward-backward marginals, sampling.

A unigram LM (Kudo 2018, "Subword Regularization") gives every piece x a log-probability s(x) and scores a
segmentation x_1 .. x_k of a string as sum_i s(x_i). All segmentations of a string form a lattice: node e (a
character offset) is reached from node s by every piece that spells text[s:e]. Then
  - Viterbi:  best[e] = max over edges (s -> e) of best[s] + s(x)         -> the most likely segmentation
  - forward:  alpha[e] = logsumexp over edges of alpha[s] + theta * s(x)   -> log Z = alpha[n]
  - backward: beta[s]  = logsumexp over edges (s -> e) of theta * s(x) + beta[e]
  - marginal of an edge = exp(alpha[s] + theta * s(x) + beta[e] - log Z)   -> EM's expected counts
  - sampling (forward-filtering backward-sampling): from node n, pick the incoming edge (s -> n) with
    probability exp(alpha[s] + theta * s(x) - alpha[n]), then continue from s. Exact samples from
    P(seg) proportional to exp(theta * score(seg)), the distribution sentencepiece's `nbest_size=-1` samples.

A character no piece covers gets an "unknown" edge of one character with score `unk_score` (sentencepiece and
HF `tokenizers` use the lowest piece score minus 10), so every string has at least one segmentation. Ties in
Viterbi go to the earliest start (the longest piece ending here), the order HF `tokenizers` visits edges in.
Edges are (start, piece id, score); id -1 is the unknown edge. Left out: n-best lists beyond what pruning needs.
"""

from __future__ import annotations

import math
import random

Edge = tuple[int, int, float]  # (start offset, piece id or -1 = unknown, score)


def make_trie(vocab: dict[str, tuple[int, float]]) -> dict:
    """A character trie of the pieces: nested dicts char -> child; key None holds (id, score) where a piece ends.

    >>> make_trie({"ab": (7, -1.0)})
    {'a': {'b': {None: (7, -1.0)}}}
    """
    root: dict = {}
    for piece, hit in vocab.items():
        node = root
        for ch in piece:
            node = node.setdefault(ch, {})
        node[None] = hit
    return root


def build_lattice(text: str, trie: dict, unk_score: float) -> list[list[Edge]]:
    """edges[e] = every piece ending at character offset e (1..n), as (start, id, score); edges[0] = [].

    For each start, walk the trie along the text: the walk stops at the first character no piece continues
    with, so a start costs the length of its longest matching piece, not max_len dictionary lookups."""
    n = len(text)
    edges: list[list[Edge]] = [[] for _ in range(n + 1)]
    for s in range(n):  # starts ascending, so each edges[e] lists its earliest start first: the tie rule
        node, single = trie, False
        for e in range(s, n):
            node = node.get(text[e])
            if node is None:
                break
            hit = node.get(None)
            if hit is not None:
                edges[e + 1].append((s, hit[0], hit[1]))
                single |= e == s
        if not single:  # no piece of one character here: the unknown edge keeps the lattice connected
            edges[s + 1].append((s, -1, unk_score))
    return edges


def viterbi(edges: list[list[Edge]]) -> list[Edge]:
    """The best-scoring path as a list of edges, left to right (empty for an empty string)."""
    n = len(edges) - 1
    best = [0.0] + [-math.inf] * n
    back: list[Edge | None] = [None] * (n + 1)
    for e in range(1, n + 1):
        for edge in edges[e]:
            score = best[edge[0]] + edge[2]
            if score > best[e]:  # strict: the earliest start wins a tie
                best[e], back[e] = score, edge
    path, e = [], n
    while e > 0:
        edge = back[e]
        assert edge is not None, f"no path reaches offset {e}"
        path.append(edge)
        e = edge[0]
    return path[::-1]


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    if m == -math.inf:
        return m
    return m + math.log(sum(math.exp(x - m) for x in xs))


def forward(edges: list[list[Edge]], theta: float = 1.0) -> list[float]:
    """alpha[e] = log of the summed exp(theta * score) of every path from 0 to e; alpha[n] = log Z."""
    alpha = [0.0] * len(edges)
    for e in range(1, len(edges)):
        alpha[e] = _logsumexp([alpha[s] + theta * score for s, _, score in edges[e]])
    return alpha


def marginals(edges: list[list[Edge]]) -> tuple[float, list[tuple[int, float]]]:
    """(log Z, [(piece id, expected count)] over every edge): the E-step of EM for one string (theta = 1).

    Computed with probabilities (exp of scores) for speed; a long string whose probabilities underflow is
    redone in the log domain."""
    n = len(edges) - 1
    exp = math.exp
    alpha = [1.0] + [0.0] * n
    for e in range(1, n + 1):
        alpha[e] = sum(alpha[s] * exp(score) for s, _, score in edges[e])
    if not 1e-290 < alpha[n] < math.inf:
        return _marginals_log(edges)
    beta = [0.0] * n + [1.0]
    for e in range(n, 0, -1):  # push beta[e] back along every edge that ends at e
        for s, _, score in edges[e]:
            beta[s] += exp(score) * beta[e]
    z = alpha[n]
    return math.log(z), [(i, alpha[s] * exp(score) * beta[e] / z) for e in range(1, n + 1) for s, i, score in edges[e]]


def _marginals_log(edges: list[list[Edge]]) -> tuple[float, list[tuple[int, float]]]:
    n = len(edges) - 1
    alpha = forward(edges)
    beta = [-math.inf] * (n + 1)
    beta[n] = 0.0
    for e in range(n, 0, -1):
        for s, _, score in edges[e]:
            b = score + beta[e]
            beta[s] = b if beta[s] == -math.inf else _logsumexp([beta[s], b])
    log_z = alpha[n]
    out = [(i, math.exp(alpha[s] + score + beta[e] - log_z)) for e in range(1, n + 1) for s, i, score in edges[e]]
    return log_z, out


def sample(edges: list[list[Edge]], theta: float, rng: random.Random) -> list[Edge]:
    """One segmentation drawn with probability proportional to exp(theta * score) (forward-filtering,
    backward-sampling)."""
    alpha = forward(edges, theta)
    path, e = [], len(edges) - 1
    while e > 0:
        weights = [math.exp(alpha[s] + theta * score - alpha[e]) for s, _, score in edges[e]]
        edge = rng.choices(edges[e], weights=weights)[0]
        path.append(edge)
        e = edge[0]
    return path[::-1]
