"""The scheduler step by step: chunked prefill, FCFS, prefix hits, preemption order, forks, abort; exact values."""

from __future__ import annotations

import pytest

from lmstack.serve.scheduler import Scheduler, SchedulerConfig
from lmstack.serve.sequence import RUNNING, WAITING, Sequence


def seq(sid: str, tokens: list[int], max_tokens: int = 4, bs: int = 4, n: int = 1) -> Sequence:
    return Sequence(sid, sid, list(tokens), len(tokens), max_tokens, bs, n=n)


def step(s: Scheduler, next_token: int = 1):
    """schedule -> update -> append a token to every sequence that caught up (finish at max_tokens)."""
    out = s.schedule()
    plan = [(x.seq_id, n) for x, n in zip(out.seqs, out.num_new)]
    for x in s.update(out):
        x.append(next_token)
        if x.num_output >= x.max_tokens:
            s.finish(x, "length")
    s.check()
    return out, plan


def test_chunked_prefill_shares_one_token_budget_fcfs():
    s = Scheduler(SchedulerConfig(block_size=4, num_blocks=20, max_num_seqs=4, max_num_batched_tokens=8))
    s.add(seq("a", list(range(20))))
    s.add(seq("b", list(range(3))))
    assert step(s)[1] == [("a", 8)]  # a takes the whole budget; b waits behind it (no overtaking)
    assert step(s)[1] == [("a", 8)]
    assert step(s)[1] == [("a", 4), ("b", 3)]  # a's last chunk; b fits in what is left
    assert step(s)[1] == [("a", 1), ("b", 1)]  # both decode
    a = s.running[0]
    assert a.num_computed == 21 and a.output == [1, 1] and s.tables.block_ids(a) == [1, 2, 3, 4, 5, 7]


def test_max_prefill_chunk_and_max_num_seqs():
    s = Scheduler(
        SchedulerConfig(block_size=4, num_blocks=20, max_num_seqs=2, max_num_batched_tokens=16, max_prefill_chunk=5)
    )
    for name in "abc":
        s.add(seq(name, list(range(7))))
    assert step(s)[1] == [("a", 5), ("b", 5)]  # c waits: two sequences at most
    assert step(s)[1] == [("a", 2), ("b", 2)]
    assert s.num_waiting == 1 and s.num_running == 2


def test_without_chunked_prefill_a_prompt_waits_until_it_fits_whole():
    s = Scheduler(
        SchedulerConfig(block_size=4, num_blocks=20, max_num_seqs=4, max_num_batched_tokens=10, chunked_prefill=False)
    )
    s.add(seq("a", list(range(6))))
    s.add(seq("b", list(range(10, 15))))
    assert step(s)[1] == [("a", 6)]  # b (5) does not fit the 4 tokens left
    assert step(s)[1] == [("a", 1), ("b", 5)]
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        s.add(seq("c", list(range(9)), max_tokens=4))


def test_prefix_hit_skips_computed_blocks_and_counts_hits():
    s = Scheduler(SchedulerConfig(block_size=4, num_blocks=20, max_num_seqs=4, max_num_batched_tokens=64))
    s.add(seq("a", list(range(10)), max_tokens=1))
    step(s)  # a prefills 10 tokens, samples its one token, finishes: blocks 1, 2 stay cached while free
    assert s.num_running == 0 and s.pool.num_free == 19
    s.add(seq("b", [*range(8), 99, 98], max_tokens=2))
    out, plan = step(s)
    assert plan == [("b", 2)] and out.block_ids == [[1, 2, 3]]  # 8 prompt tokens hit blocks 1, 2
    assert s.running[0].num_cached_tokens == 8 and s.tables.hit_rate == 8 / 20


def test_preemption_takes_the_newest_and_it_recomputes_from_the_front_of_the_queue():
    s = Scheduler(
        SchedulerConfig(block_size=4, num_blocks=5, max_num_seqs=4, max_num_batched_tokens=16, prefix_caching=False)
    )
    s.add(seq("a", list(range(4)), max_tokens=8))  # 4 usable blocks of 4 tokens
    s.add(seq("b", list(range(4)), max_tokens=8))
    assert step(s)[1] == [("a", 4), ("b", 4)]  # blocks a:[1], b:[2]
    step(s)  # both decode: a:[1, 3], b:[2, 4]; the pool is empty
    assert s.pool.num_free == 0
    for _ in range(3):  # positions 5, 6, 7 fill the second blocks
        step(s)
    out, plan = step(s)  # a needs a third block: b (newest) is preempted, its blocks freed
    assert [x.seq_id for x in out.preempted] == ["b"] and plan == [("a", 1)]
    b = s.waiting[0]
    assert b.status == WAITING and b.num_computed == 0 and b.output == [1] * 5 and b.num_preemptions == 1
    assert s.tables.block_ids(s.running[0]) == [1, 3, 2]  # b's blocks came back (4 then 2 to the front)
    while s.running and s.running[0].seq_id == "a":
        step(s)
    out, plan = step(s)  # a finished: b comes back, recomputes prompt + output in one chunk, samples its 6th
    assert plan == [("b", 9)] and b.status == RUNNING and s.num_preemptions == 1 and b.output == [1] * 6


def test_a_sequence_that_finds_no_block_preempts_itself_and_waits():
    s = Scheduler(SchedulerConfig(block_size=4, num_blocks=4, max_num_seqs=4, max_num_batched_tokens=16,
                                  prefix_caching=False))  # fmt: skip
    with pytest.raises(ValueError, match="KV blocks"):
        s.add(seq("big", list(range(8)), max_tokens=8))  # 4 blocks (+1 for a copy): could never run
    s.add(seq("a", list(range(4)), max_tokens=4))
    s.add(seq("b", list(range(10, 14)), max_tokens=4))
    assert step(s)[1] == [("a", 4), ("b", 4)]  # a:[1], b:[2]
    out, plan = step(s)  # a takes block 3 for position 4; b finds none and, being the newest, preempts itself
    assert plan == [("a", 1)] and [x.seq_id for x in out.preempted] == ["b"] and s.pool.num_free == 1
    assert step(s)[1] == [("a", 1)]  # b (5 tokens, 2 blocks) waits: one block free
    assert step(s)[1] == [("a", 1)]  # a's 4th token: finished, blocks freed
    assert step(s)[1] == [("b", 5)] and s.pool.num_free == 1


def test_fork_runs_children_after_the_parent_sharing_blocks():
    s = Scheduler(SchedulerConfig(block_size=4, num_blocks=20, max_num_seqs=3, max_num_batched_tokens=16))
    s.add(seq("a", list(range(6)), n=3, max_tokens=3))
    s.add(seq("b", list(range(5))))
    out = s.schedule()
    assert [x.seq_id for x in out.seqs] == ["a"]  # b waits: a reserves 3 of the 3 sequence slots
    (parent,) = s.update(out)
    kids = [parent.fork(i) for i in (1, 2)]
    s.fork(parent, kids)
    for i, x in enumerate([parent, *kids]):
        x.append(10 + i)
    assert [x.seq_id for x in s.running] == ["a", "a#1", "a#2"] and s.pool.blocks[2].ref_cnt == 3
    out = s.schedule()
    assert out.num_new == [1, 1, 1] and out.copies == [(2, 3), (2, 4)]  # copy-on-write of the partial block
    assert out.block_ids == [[1, 3], [1, 4], [1, 2]]
    s.update(out)
    s.check()
    assert len(s.abort("a")) == 3 and s.pool.num_free == 19 - 0 and s.num_running == 0
    s.check()


def test_abort_frees_waiting_and_running_sequences():
    s = Scheduler(SchedulerConfig(block_size=4, num_blocks=10, max_num_seqs=1, max_num_batched_tokens=8))
    s.add(seq("a", list(range(5))))
    s.add(seq("b", list(range(5))))
    step(s)
    assert s.pool.num_free == 7
    (b,) = s.abort("b")
    assert b.finish_reason == "abort" and s.num_waiting == 0
    s.abort("a")
    assert s.pool.num_free == 9 and not s.has_unfinished()
    s.check()
