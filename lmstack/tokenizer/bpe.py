"""Byte-pair merging of one chunk: the readable reference loop, the fast loops and a heap-based loop for long
chunks, tied to the reference by tests.

A chunk (one regex match, as UTF-8 bytes) starts as single bytes; BPE repeatedly merges the adjacent pair with
the *lowest rank* (the earliest-learned merge), leftmost first on ties, until no adjacent pair is mergeable
(Sennrich et al. 2016; byte-level as in GPT-2, Radford et al. 2019). Two ways to rank a pair exist:

- *by token* (tiktoken): the rank of pair (a, b) is the rank of the token a+b, if a+b is in the vocabulary.
  Token ids are ranks, so the vocabulary alone (`mergeable_ranks`) is the whole model.
- *by merge* (Hugging Face `tokenizers` BPE): the rank of (a, b) is its position in the `merges` list, and only
  listed pairs merge. Needed to load tokenizer.json files whose ids do not follow merge order (SmolLM2).

Both loops take a `rank` function or table and return the final pieces (bytes); mapping pieces to ids is the
caller's business. Left out: BPE-dropout, unknown-token fallback (byte-level vocabularies hold all 256 bytes).
"""

from __future__ import annotations

from collections.abc import Callable

INF = 1 << 62  # "not mergeable": larger than any rank
SINGLE_BYTES = [bytes([i]) for i in range(256)]  # SINGLE_BYTES[b] == bytes([b]) without the call


def merge_reference(piece: bytes, rank: Callable[[bytes, bytes], int | None]) -> list[bytes]:
    """The plain loop: find the lowest-rank adjacent pair, merge it, repeat.

    >>> ranks = {b"a": 0, b"b": 1, b"c": 2, b"ab": 3, b"abc": 4}
    >>> merge_reference(b"abcab", lambda x, y: ranks.get(x + y))
    [b'abc', b'ab']
    """
    parts = [SINGLE_BYTES[b] for b in piece]
    while len(parts) > 1:
        best, best_i = None, -1
        for i in range(len(parts) - 1):
            r = rank(parts[i], parts[i + 1])
            if r is not None and (best is None or r < best):  # strict '<': the leftmost wins a tie
                best, best_i = r, i
        if best is None:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    return parts


def merge_by_token(piece: bytes, ranks: dict[bytes, int]) -> list[bytes]:
    """Fast loop, tiktoken ranking. Same result as `merge_reference(piece, lambda a, b: ranks.get(a + b))`.

    Keeps `pair_rank[i]` = rank of (parts[i], parts[i+1]) so each step is one C-level `min` + `index`, and only
    the two pairs beside a merge are re-ranked (the rest did not change).
    """
    get = ranks.get
    parts = [SINGLE_BYTES[b] for b in piece]
    pair_rank = [get(parts[i] + parts[i + 1], INF) for i in range(len(parts) - 1)]
    while pair_rank:
        best = min(pair_rank)
        if best == INF:
            break
        i = pair_rank.index(best)  # leftmost occurrence of the minimum
        merged = parts[i] + parts[i + 1]
        parts[i] = merged
        del parts[i + 1]
        del pair_rank[i]
        # pair i is now (merged, right neighbour); pair i-1 is (left neighbour, merged)
        if i < len(pair_rank):
            pair_rank[i] = get(merged + parts[i + 1], INF)
        if i > 0:
            pair_rank[i - 1] = get(parts[i - 1] + merged, INF)
    return parts


def merge_by_pair(piece: bytes, pair_ranks: dict[tuple[bytes, bytes], int]) -> list[bytes]:
    """Fast loop, Hugging Face ranking. Same result as `merge_reference(piece, lambda a, b: pair_ranks.get((a, b)))`."""
    get = pair_ranks.get
    parts = [SINGLE_BYTES[b] for b in piece]
    pair_rank = [get((parts[i], parts[i + 1]), INF) for i in range(len(parts) - 1)]
    while pair_rank:
        best = min(pair_rank)
        if best == INF:
            break
        i = pair_rank.index(best)
        merged = parts[i] + parts[i + 1]
        parts[i] = merged
        del parts[i + 1]
        del pair_rank[i]
        if i < len(pair_rank):
            pair_rank[i] = get((merged, parts[i + 1]), INF)
        if i > 0:
            pair_rank[i - 1] = get((parts[i - 1], merged), INF)
    return parts


LONG_PIECE = 512  # from this many bytes on, `merge_long` (O(n log n)) replaces the quadratic fast loops


def merge_long(piece: bytes, rank: Callable[[bytes, bytes], int | None]) -> list[bytes]:
    """Same result as `merge_reference`, in O(n log n) for long chunks (100k letters: ~1 s, not hours).

    The quadratic loops rescan all pairs per merge; here a heap holds (rank, left position) for every current
    adjacent pair and a linked list tracks the parts. Popping the smallest (rank, position) gives the lowest
    rank, leftmost on ties, as in the reference. An entry is stale when its left part has been merged away
    or the pair at that position is no longer the one ranked (ranks are unique per token, so comparing the
    rank suffices); stale entries are skipped.
    """
    import heapq

    n = len(piece)
    parts: list[bytes] = [SINGLE_BYTES[b] for b in piece]
    nxt = list(range(1, n + 1))  # index of the next live part (n = none)
    prv = list(range(-1, n - 1))  # index of the previous live part (-1 = none)
    alive = [True] * n
    heap = [(r, i) for i in range(n - 1) if (r := rank(parts[i], parts[i + 1])) is not None]
    heapq.heapify(heap)
    while heap:
        r, i = heapq.heappop(heap)
        j = nxt[i]
        if not alive[i] or j >= n or rank(parts[i], parts[j]) != r:
            continue  # stale
        parts[i] += parts[j]
        alive[j] = False
        nxt[i] = nxt[j]
        if nxt[j] < n:
            prv[nxt[j]] = i
        for left, right in ((prv[i], i), (i, nxt[i])):  # the two pairs the merge created
            if left >= 0 and right < n and (r2 := rank(parts[left], parts[right])) is not None:
                heapq.heappush(heap, (r2, left))
    return [parts[i] for i in range(n) if alive[i]]


def splits_of_vocab(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Every (a, b) with a, b and a+b all tokens, ordered by rank(a+b), then rank(a), rank(b).

    Written as a Hugging Face `merges` list, this makes merge-ranking behave exactly like token-ranking: any
    pair whose concatenation is a token may merge, with that token's rank as priority. A trained vocabulary
    gives ~1.5 splits per token (most tokens have one split).
    """
    out: list[tuple[int, int, int, bytes, bytes]] = []
    for token, r in ranks.items():
        for cut in range(1, len(token)):
            a, b = token[:cut], token[cut:]
            ra, rb = ranks.get(a), ranks.get(b)
            if ra is not None and rb is not None:
                out.append((r, ra, rb, a, b))
    out.sort()
    return [(a, b) for _, _, _, a, b in out]
