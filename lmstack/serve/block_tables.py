"""Block tables: which KV blocks hold each sequence's tokens, with prefix-cache hits, forks and copy-on-write.

Token t of a sequence lives in slot `t % block_size` of block `table[t // block_size]`. This module grows the
tables as sequences advance and keeps the pool's reference counts right (after vLLM v1's `KVCacheManager`):

  prefix hit   `computed_prefix(seq)` walks the sequence's full-block hashes through the pool's cache and
               stops at the first miss. At most num_tokens - 1 tokens may hit: the last token is always
               recomputed, since its logits are what the next token is sampled from.
  allocate     `allocate(seq, num_new, hits)` takes references on the hit blocks and new blocks for `num_new`
               more tokens, or returns None (nothing changed) when the pool cannot supply them.
  fork         `fork(parent, child)`: the child's table is the parent's, every block's ref_cnt + 1 (n samples
               share the prompt's KV, computed once).
  copy-on-write  a block is written only at slots >= num_computed. If the block receiving the next token is
               shared (ref_cnt > 1, which only a fork causes: cached blocks are full and never written), the
               writer gets a fresh block and the (src, dst) pair is returned so the runner copies the KV first.
  cache        `cache_full_blocks(seq)` registers the hash of every block that became full and computed.
  free         `free(seq)` drops the table, tail block first, so a shared prefix is evicted after its tail.
Pure bookkeeping (no torch): the tensors and the copies themselves are `paged_cache.py`'s.
"""

from __future__ import annotations

from lmstack.serve.block_pool import Block, BlockPool
from lmstack.serve.sequence import Sequence


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class BlockTables:
    def __init__(self, pool: BlockPool, block_size: int, prefix_caching: bool = True) -> None:
        self.pool, self.block_size, self.prefix_caching = pool, block_size, prefix_caching
        self.tables: dict[str, list[Block]] = {}
        self.num_cached: dict[str, int] = {}  # leading blocks of each table already registered in the cache
        self.query_tokens = 0  # prompt tokens looked up in the prefix cache (at admission)
        self.hit_tokens = 0  # of which found

    def block_ids(self, seq: Sequence) -> list[int]:
        return [b.id for b in self.tables.get(seq.seq_id, [])]

    def computed_prefix(self, seq: Sequence) -> list[Block]:
        """The cached blocks holding the longest prefix of `seq` (full blocks only, never its last token)."""
        if not self.prefix_caching:
            return []
        hits = []
        for h in seq.block_hashes[: (seq.num_tokens - 1) // self.block_size]:
            block = self.pool.lookup(h)
            if block is None:
                break
            hits.append(block)
        return hits

    def record_lookup(self, seq: Sequence, hits: list[Block]) -> None:
        """Count a lookup for the hit-rate metric (once per admission, not per retry)."""
        self.query_tokens += seq.num_tokens
        self.hit_tokens += len(hits) * self.block_size

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.query_tokens if self.query_tokens else 0.0

    def blocks_needed(self, seq: Sequence, num_new: int, hits: list[Block] = ()) -> int:
        """Free blocks `allocate(seq, num_new, hits)` would take from the pool (new + copy-on-write + hits
        that are currently free and leave the free queue)."""
        table = self.tables.get(seq.seq_id, [])
        start = seq.num_computed + len(hits) * self.block_size  # first slot written
        new = cdiv(start + num_new, self.block_size) - len(table) - len(hits)
        return max(new, 0) + int(self._needs_copy(table, start)) + sum(1 for b in hits if b.ref_cnt == 0)

    def _needs_copy(self, table: list[Block], start: int) -> bool:
        i = start // self.block_size
        return start % self.block_size != 0 and i < len(table) and table[i].ref_cnt > 1

    def allocate(self, seq: Sequence, num_new: int, hits: list[Block] = ()) -> list[tuple[int, int]] | None:
        """Blocks for `num_new` tokens after `seq`'s computed ones (and after `hits`, a fresh sequence's prefix
        hits). Returns the copy-on-write (src, dst) block pairs, or None when the pool is short."""
        if self.blocks_needed(seq, num_new, hits) > self.pool.num_free:
            return None
        table = self.tables.setdefault(seq.seq_id, [])
        if hits:
            assert not table and seq.num_computed == 0, f"{seq.seq_id}: prefix hits for a sequence with blocks"
            self.pool.touch(hits)
            table.extend(hits)
            self.num_cached[seq.seq_id] = len(hits)
            seq.num_computed = len(hits) * self.block_size
        copies = []
        start = seq.num_computed
        if self._needs_copy(table, start):
            i = start // self.block_size
            (fresh,) = self.pool.allocate(1)
            copies.append((table[i].id, fresh.id))
            self.pool.free([table[i]])  # ref_cnt > 1 before: the other holders keep it
            table[i] = fresh
        new = cdiv(start + num_new, self.block_size) - len(table)
        if new > 0:
            table.extend(self.pool.allocate(new))
        return copies

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """The child shares every block of the parent."""
        table = self.tables[parent.seq_id]
        self.pool.touch(table)
        self.tables[child.seq_id] = list(table)
        self.num_cached[child.seq_id] = self.num_cached.get(parent.seq_id, 0)

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register every block that is full and computed (and not yet registered) in the prefix cache."""
        if not self.prefix_caching:
            return
        table = self.tables[seq.seq_id]
        done = self.num_cached.get(seq.seq_id, 0)
        full = min(seq.num_computed // self.block_size, len(seq.block_hashes))
        for i in range(done, full):
            if table[i].hash is None:  # a block shared by a fork may already be registered
                self.pool.cache(table[i], seq.block_hashes[i])
        self.num_cached[seq.seq_id] = max(done, full)

    def free(self, seq: Sequence) -> None:
        """Release the sequence's blocks, tail first."""
        table = self.tables.pop(seq.seq_id, [])
        self.num_cached.pop(seq.seq_id, None)
        self.pool.free(reversed(table))
