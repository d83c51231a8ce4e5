"""Block pool and block tables: exact block ids, reference counts, eviction order, prefix hits, fork, copy-on-write."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lmstack.serve.block_pool import BlockPool, hash_block
from lmstack.serve.block_tables import BlockTables
from lmstack.serve.sequence import Sequence


def seq(tokens: list[int], sid: str = "a", bs: int = 4, max_tokens: int = 8) -> Sequence:
    return Sequence(sid, sid, list(tokens), len(tokens), max_tokens, bs)


def test_allocate_takes_the_front_and_free_orders_by_eviction_priority():
    pool = BlockPool(6)  # block 0 is the null block; 1..5 usable
    assert pool.num_usable == 5 and pool.num_free == 5 and pool.null_block.id == 0
    a = pool.allocate(3)
    assert [b.id for b in a] == [1, 2, 3] and [b.ref_cnt for b in a] == [1, 1, 1] and pool.num_free == 2
    h1, h2 = hash_block(None, [1, 2]), hash_block(hash_block(None, [1, 2]), [3, 4])
    assert pool.cache(a[0], h1) and pool.cache(a[1], h2)
    pool.free(reversed(a))  # tail first: 3 has no hash -> front; 2 then 1 (cached) -> back, 1 evicted last
    assert list(pool.free_queue) == [3, 4, 5, 2, 1] and pool.usage == 0.0
    assert pool.lookup(h1) is a[0] and pool.lookup(h2) is a[1]  # free blocks keep their prefix
    b = pool.allocate(4)
    assert [x.id for x in b] == [3, 4, 5, 2]
    assert pool.lookup(h2) is None and a[1].hash is None  # block 2 was evicted on reallocation
    assert pool.lookup(h1) is a[0] and list(pool.free_queue) == [1]
    pool.check()


def test_touch_revives_a_free_cached_block_and_double_free_is_caught():
    pool = BlockPool(4)
    (blk,) = pool.allocate(1)
    h = hash_block(None, [7])
    pool.cache(blk, h)
    pool.free([blk])
    assert pool.num_free == 3 and blk.id in pool.free_queue
    pool.touch([blk])  # a prefix hit on a free block takes it out of the free queue
    assert blk.ref_cnt == 1 and blk.id not in pool.free_queue and pool.num_free == 2
    pool.touch([blk])
    assert blk.ref_cnt == 2
    pool.free([blk, blk])
    with pytest.raises(AssertionError, match="double free"):
        pool.free([blk])
    assert not pool.cache(pool.allocate(1)[0], h)  # the prefix is already cached by another block
    pool.check()


def test_hash_chains_over_the_prefix_and_extra_key():
    a = hash_block(None, [1, 2, 3])
    assert a == hash_block(None, [1, 2, 3]) and len(a) == 32
    assert hash_block(a, [4]) != hash_block(hash_block(None, [9, 2, 3]), [4])  # same block, different prefix
    assert hash_block(None, [1, 2, 3], "adapter-x") != a  # an adapter changes the KV, so the key


def test_sequence_hashes_every_full_block_as_tokens_arrive():
    s = seq([1, 2, 3, 4, 5, 6], bs=4)
    assert len(s.block_hashes) == 1 and s.block_hashes[0] == hash_block(None, [1, 2, 3, 4])
    s.append(7)
    assert len(s.block_hashes) == 1
    s.append(8)
    assert s.block_hashes[1] == hash_block(s.block_hashes[0], [5, 6, 7, 8]) and s.output == [7, 8]


def test_prefix_hit_reuses_blocks_and_never_covers_the_last_token():
    pool = BlockPool(10)
    t = BlockTables(pool, 4)
    a = seq([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "a")
    assert t.computed_prefix(a) == [] and t.allocate(a, 10) == []
    assert t.block_ids(a) == [1, 2, 3]
    a.num_computed = 10
    t.cache_full_blocks(a)  # blocks 1, 2 full -> cached; block 3 (2 tokens) not
    assert [pool.blocks[i].hash is not None for i in (1, 2, 3)] == [True, True, False]
    b = seq([1, 2, 3, 4, 5, 6, 7, 8, 42], "b")
    hits = t.computed_prefix(b)
    assert [x.id for x in hits] == [1, 2]
    assert t.blocks_needed(b, 1, hits) == 1 and t.allocate(b, 1, hits) == []
    assert t.block_ids(b) == [1, 2, 4] and b.num_computed == 8 and pool.blocks[1].ref_cnt == 2
    t.record_lookup(b, hits)
    assert (t.query_tokens, t.hit_tokens) == (9, 8)
    c = seq([1, 2, 3, 4, 5, 6, 7, 8], "c")  # the whole prompt is cached: the last block is recomputed
    assert [x.id for x in t.computed_prefix(c)] == [1]
    t.free(a)  # blocks 1, 2 stay with b; block 3 (no hash) goes to the front of the free queue
    assert [pool.blocks[i].ref_cnt for i in (1, 2, 3)] == [1, 1, 0] and list(pool.free_queue)[0] == 3
    t.free(b)  # tail first: 4 (no hash) to the front, then 2 and 1 to the back: the prefix is evicted last
    assert pool.num_free == 9 and list(pool.free_queue)[:2] == [4, 3] and list(pool.free_queue)[-2:] == [2, 1]
    pool.check()


def test_allocate_refuses_without_changing_anything_when_short():
    pool = BlockPool(3)  # 2 usable blocks
    t = BlockTables(pool, 4)
    a = seq(list(range(12)), "a")
    assert t.blocks_needed(a, 12) == 3 and t.allocate(a, 12) is None
    assert pool.num_free == 2 and t.block_ids(a) == []
    assert t.allocate(a, 8) == [] and t.block_ids(a) == [1, 2]


def test_fork_shares_blocks_and_copy_on_write_splits_the_partial_one():
    pool = BlockPool(10)
    t = BlockTables(pool, 4)
    parent = seq([1, 2, 3, 4, 5, 6], "p")
    t.allocate(parent, 6)
    parent.num_computed = 6
    t.cache_full_blocks(parent)
    kids = [parent.fork(i) for i in (1, 2)]
    for k in kids:
        t.fork(parent, k)
    assert t.block_ids(kids[0]) == [1, 2] and [pool.blocks[i].ref_cnt for i in (1, 2)] == [3, 3]
    for s, tok in zip([parent, *kids], (7, 8, 9)):
        s.append(tok)
    # each writes position 6, inside shared block 2: the first two writers copy, the last writes in place
    assert t.allocate(parent, 1) == [(2, 3)] and t.block_ids(parent) == [1, 3]
    assert t.allocate(kids[0], 1) == [(2, 4)] and t.block_ids(kids[0]) == [1, 4]
    assert t.allocate(kids[1], 1) == [] and t.block_ids(kids[1]) == [1, 2]
    assert [pool.blocks[i].ref_cnt for i in (1, 2, 3, 4)] == [3, 1, 1, 1]
    for s in (parent, *kids):
        t.free(s)
    assert pool.num_free == 9
    pool.check()


def test_bookkeeping_imports_no_torch():
    code = (
        "import sys\nimport lmstack.serve.scheduler, lmstack.serve.block_pool, lmstack.serve.block_tables\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
