"""The block pool: every KV-cache block, its reference count, the free queue and the prefix cache. No torch.

PagedAttention (Kwon et al. 2023, "Efficient Memory Management for Large Language Model Serving with
PagedAttention") stores a sequence's keys and values in fixed-size blocks of `block_size` tokens that need not
be contiguous, the way an OS pages virtual memory. A sequence wastes at most one partly filled block instead of
a whole `max_seq_len` reservation, and blocks can be shared between sequences by reference counting.

This module is the allocator only (the tensors live in `paged_cache.py`); it follows vLLM v1's `BlockPool`:
  - every block is created up front from the memory budget; block 0 is the *null block*, never handed out,
    whose zeros pad gathers (its slots have position -1 and are never attended to);
  - `ref_cnt` counts the sequences whose block table holds the block; at 0 it sits in the free queue;
  - the free queue is kept in eviction order: `allocate` takes from the front. A freed block that holds a
    cached prefix goes to the back (least recently used is evicted first); a freed block with no hash holds
    nothing reusable and goes to the front;
  - prefix cache: a *full* block gets a hash chained over everything before it, `hash(parent_hash, its
    tokens, extra_key)`, so equal hashes mean equal KV contents (`extra_key` covers whatever else changes the
    KV, such as a LoRA adapter). A free block keeps its hash until it is reallocated (evicted), so a later
    request with the same prefix can take it back from the free queue (`touch`).
Left out: multiple KV-cache groups (hybrid sliding-window models), KV events, block-level swapping to host.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

BlockHash = bytes  # sha256 digest


def hash_block(parent: BlockHash | None, tokens: Sequence[int], extra_key: object = None) -> BlockHash:
    """The prefix-cache key of a full block: sha256 over the parent block's hash, the block's token ids and
    `extra_key` (its repr). Chaining makes the key depend on the whole prefix, not just this block's tokens."""
    h = hashlib.sha256(parent or b"")
    h.update(array("q", tokens).tobytes())
    if extra_key is not None:
        h.update(repr(extra_key).encode())
    return h.digest()


@dataclass(eq=False)
class Block:
    id: int
    ref_cnt: int = 0  # block tables holding this block
    hash: BlockHash | None = None  # set once the block is full and registered in the prefix cache


class BlockPool:
    """`num_blocks` blocks (ids 0..num_blocks-1, 0 = null block), the free queue and the hash -> block map.

    >>> pool = BlockPool(4)                     # blocks 1, 2, 3 usable
    >>> a, b = pool.allocate(2)                 # ids 1, 2; ref_cnt 1
    >>> pool.free([b, a])                       # back to the free queue (no hash: at the front)
    """

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 2:
            raise ValueError(f"num_blocks={num_blocks}: need at least 2 (block 0 is the null block)")
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.null_block = self.blocks[0]
        self.null_block.ref_cnt = 1  # held forever: never in the free queue
        self.free_queue: OrderedDict[int, Block] = OrderedDict(
            (b.id, b) for b in self.blocks[1:]
        )  # front = evict first
        self.cached: dict[BlockHash, Block] = {}

    @property
    def num_usable(self) -> int:
        """Blocks that can ever hold KV (all but the null block)."""
        return len(self.blocks) - 1

    @property
    def num_free(self) -> int:
        """Blocks with ref_cnt 0, cached ones included (they are evicted on demand)."""
        return len(self.free_queue)

    @property
    def usage(self) -> float:
        """Fraction of usable blocks held by some sequence."""
        return 1.0 - self.num_free / self.num_usable

    def allocate(self, n: int) -> list[Block]:
        """Take `n` blocks from the front of the free queue, evicting their cached prefix if they hold one."""
        if n > self.num_free:
            raise ValueError(f"allocate({n}): only {self.num_free} free blocks")
        out = []
        for _ in range(n):
            _, block = self.free_queue.popitem(last=False)
            assert block.ref_cnt == 0, f"block {block.id} in the free queue with ref_cnt {block.ref_cnt}"
            if block.hash is not None:  # eviction: this prefix is no longer cached
                del self.cached[block.hash]
                block.hash = None
            block.ref_cnt = 1
            out.append(block)
        return out

    def touch(self, blocks: Iterable[Block]) -> None:
        """Take a reference on blocks found in the prefix cache (removing free ones from the free queue)."""
        for block in blocks:
            if block.ref_cnt == 0:
                del self.free_queue[block.id]
            block.ref_cnt += 1

    def free(self, blocks: Iterable[Block]) -> None:
        """Drop one reference on each block; blocks reaching 0 join the free queue, given in eviction order
        (callers pass a sequence's blocks tail first, so a shared prefix outlives the tail that follows it)."""
        for block in blocks:
            assert block.ref_cnt > 0 and block is not self.null_block, f"double free of block {block.id}"
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                self.free_queue[block.id] = block  # back of the queue: evicted last
                if block.hash is None:  # nothing worth keeping: evict first
                    self.free_queue.move_to_end(block.id, last=False)

    def lookup(self, block_hash: BlockHash) -> Block | None:
        """The cached block with this prefix hash, if any (held or free)."""
        return self.cached.get(block_hash)

    def cache(self, block: Block, block_hash: BlockHash) -> bool:
        """Register a full block under its prefix hash. False when another block already holds that prefix
        (two sequences computed the same prefix at once); this one then stays uncached."""
        assert block.hash is None and block is not self.null_block, f"block {block.id} already cached"
        if block_hash in self.cached:
            return False
        block.hash = block_hash
        self.cached[block_hash] = block
        return True

    def check(self) -> None:
        """Invariants (tests): used + free = total, free blocks have ref_cnt 0, cached map and hashes agree."""
        free = set(self.free_queue)
        for b in self.blocks[1:]:
            assert (b.ref_cnt == 0) == (b.id in free), (
                f"block {b.id}: ref_cnt {b.ref_cnt}, in free queue {b.id in free}"
            )
            assert b.ref_cnt >= 0
            if b.hash is not None:
                assert self.cached.get(b.hash) is b, f"block {b.id} has a hash the cache does not map to it"
        assert all(b.hash == h for h, b in self.cached.items())
