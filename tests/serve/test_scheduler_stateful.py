"""Hypothesis drives the scheduler with random adds, steps, forks and aborts; invariants hold after every step.

Invariants: used + free = total and ref counts equal the tables holding each block (`Scheduler.check`), no block
freed twice (asserted inside the pool), the token budget and max_num_seqs never exceeded, no sequence scheduled
twice in a step; at the end every request finishes and not one block is held.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from lmstack.serve.scheduler import Scheduler, SchedulerConfig
from lmstack.serve.sequence import Sequence

PREFIXES = [[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 9, 9], [7, 7, 7]]  # shared prefixes make prefix hits


class SchedulerMachine(RuleBasedStateMachine):
    @initialize(
        num_blocks=st.integers(6, 40),
        block_size=st.sampled_from([1, 2, 4]),
        max_num_seqs=st.integers(1, 6),
        extra_budget=st.integers(0, 24),
        chunk=st.integers(0, 6),
        caching=st.booleans(),
    )
    def setup(self, num_blocks, block_size, max_num_seqs, extra_budget, chunk, caching):
        self.cfg = SchedulerConfig(num_blocks=num_blocks, block_size=block_size, max_num_seqs=max_num_seqs,
                                   max_num_batched_tokens=max_num_seqs + extra_budget, max_prefill_chunk=chunk,
                                   prefix_caching=caching)  # fmt: skip
        self.s = Scheduler(self.cfg)
        self.requests: dict[str, list[Sequence]] = {}
        self.finished: set[str] = set()
        self.n = 0

    @rule(prefix=st.integers(0, 2), tail=st.lists(st.integers(0, 20), max_size=10), max_tokens=st.integers(1, 8),
          n=st.integers(1, 3))  # fmt: skip
    def add(self, prefix, tail, max_tokens, n):
        tokens = (PREFIXES[prefix] + tail)[: max(1, len(PREFIXES[prefix]) + len(tail))]
        rid = f"r{self.n}"
        self.n += 1
        seq = Sequence(rid, rid, tokens, len(tokens), max_tokens, self.cfg.block_size, n=n)
        if self.s.max_blocks(seq) > self.s.pool.num_usable or n > self.cfg.max_num_seqs:
            return  # too big for this pool (add refuses it; tested in test_scheduler.py)
        self.s.add(seq)
        self.requests[rid] = [seq]

    @rule()
    def step(self):
        out = self.s.schedule()
        assert out.num_tokens <= self.cfg.max_num_batched_tokens
        assert len({x.seq_id for x in out.seqs}) == len(out.seqs)
        assert sum(x.n for x in self.s.running) <= self.cfg.max_num_seqs
        for seq in self.s.update(out):
            if seq.n > 1:  # prompt done: fork the other samples, which share its blocks
                kids = [seq.fork(i) for i in range(1, seq.n)]
                self.s.fork(seq, kids)
                self.requests[seq.request_id] += kids
                targets = [seq, *kids]
            else:
                targets = [seq]
            for x in targets:
                token = (x.num_tokens * 7 + x.index) % 23  # deterministic "sampling"; 0 acts as EOS
                if token == 0:
                    self.s.finish(x, "stop")
                    continue
                x.append(token)
                if x.num_output >= x.max_tokens:
                    self.s.finish(x, "length")
        self._mark_finished()

    @precondition(lambda self: any(r not in self.finished for r in self.requests))
    @rule(data=st.data())
    def abort(self, data):
        rid = data.draw(st.sampled_from(sorted(r for r in self.requests if r not in self.finished)))
        self.s.abort(rid)
        self._mark_finished()
        assert rid in self.finished

    def _mark_finished(self):
        for rid, seqs in self.requests.items():
            if all(x.finished for x in seqs):  # a parent with n > 1 finishes unforked only when aborted
                self.finished.add(rid)

    @invariant()
    def consistent(self):
        if hasattr(self, "s"):
            self.s.check()

    def teardown(self):
        if not hasattr(self, "s"):
            return
        for _ in range(2000):
            if not self.s.has_unfinished():
                break
            self.step()
        assert not self.s.has_unfinished(), "requests did not finish"
        assert set(self.requests) == self.finished
        assert self.s.pool.num_free == self.s.pool.num_usable, "blocks still held after every request finished"
        assert all(b.ref_cnt == 0 for b in self.s.pool.blocks[1:])
        self.s.check()


SchedulerMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=30, deadline=None)
TestScheduler = SchedulerMachine.TestCase
