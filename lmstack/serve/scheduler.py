"""The continuous-batching scheduler: which sequences run this step, and how many tokens each computes. No torch.

Continuous (iteration-level) batching (Yu et al. 2022, "Orca") re-forms the batch at every model step: a
finished sequence leaves at once and a waiting one joins at once, instead of the whole batch waiting for its
longest member (static batching). The scheduler follows vLLM v1 (the NOTE atop its `Scheduler.schedule()`):
there is no prefill phase and decode phase, only one rule —

    each step, every sequence's `num_computed` catches up with its `num_tokens`, within one token budget.

A new prompt has num_tokens = P and num_computed = 0 (or the length of its prefix-cache hit), so it computes
up to P tokens; a decoding sequence is one token behind; a preempted sequence starts over from 0. A prompt
longer than the budget left is split over several steps (chunked prefill, Agrawal et al. 2024 "Sarathi-Serve"),
so decode steps of running sequences are never stalled behind a long prompt.

One step:
  1. running sequences, in admission order, get min(behind, budget left, chunk) tokens and the blocks for them;
     when the pool is short, the most recently admitted running sequence is preempted (its blocks freed, its
     computed count reset: recomputation, vLLM's default; its output so far is kept, so after recomputing it
     continues exactly where it stopped) and moved to the front of the waiting queue;
  2. if nothing was preempted, waiting sequences are admitted first-come first-served while the budget, the
     pool and `max_num_seqs` allow; the head of the queue blocks the rest (no overtaking).
The engine then runs the model (`runner.py`), calls `update` (computed counts advance, full blocks enter the
prefix cache), samples a token for every sequence that caught up, and `append`s it or `finish`es the sequence.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from lmstack.serve.block_pool import BlockPool
from lmstack.serve.block_tables import BlockTables, cdiv
from lmstack.serve.sequence import FINISHED, RUNNING, WAITING, Sequence


@dataclass
class SchedulerConfig:
    num_blocks: int  # blocks in the pool, the null block included
    block_size: int = 8  # tokens per KV block
    max_num_seqs: int = 64  # sequences running at once
    max_num_batched_tokens: int = 512  # token budget of one step (prefill chunks + decodes)
    max_prefill_chunk: int = 0  # most tokens one sequence computes in a step (0 = the whole budget)
    chunked_prefill: bool = True  # split prompts over steps; off: a prompt is computed in one step or waits
    prefix_caching: bool = True  # reuse cached full blocks of earlier sequences with the same prefix

    def __post_init__(self) -> None:
        for name in ("block_size", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}={getattr(self, name)}: must be >= 1")
        if self.max_prefill_chunk < 0:
            raise ValueError(f"--max_prefill_chunk={self.max_prefill_chunk}: must be >= 0")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"--max_num_batched_tokens={self.max_num_batched_tokens} is below --max_num_seqs="
                f"{self.max_num_seqs}: every running sequence needs a token per step"
            )


@dataclass
class SchedulerOutput:
    """Everything the runner needs for one step (the whole scheduler -> runner message)."""

    seqs: list[Sequence] = field(default_factory=list)  # scheduled sequences, in batch order
    num_new: list[int] = field(default_factory=list)  # tokens each computes this step
    block_ids: list[list[int]] = field(default_factory=list)  # each one's block table after allocation
    copies: list[tuple[int, int]] = field(default_factory=list)  # copy-on-write (src, dst) blocks, done first
    preempted: list[Sequence] = field(default_factory=list)  # sequences sent back to waiting this step

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new)


class Scheduler:
    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.pool = BlockPool(config.num_blocks)
        self.tables = BlockTables(self.pool, config.block_size, config.prefix_caching)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    # ---- queue changes -------------------------------------------------------------------------------------

    def max_blocks(self, seq: Sequence) -> int:
        """Blocks one sequence can need at its longest (+1 for a copy-on-write in flight)."""
        return cdiv(seq.prompt_len + seq.max_tokens, self.config.block_size) + 1

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence. It must fit the pool on its own, or it could never finish."""
        assert seq.block_size == self.config.block_size, f"{seq.seq_id}: block size {seq.block_size}"
        if self.max_blocks(seq) > self.pool.num_usable:
            raise ValueError(
                f"{seq.prompt_len} prompt + {seq.max_tokens} new tokens need {self.max_blocks(seq)} KV blocks of "
                f"{self.config.block_size} tokens, the cache has {self.pool.num_usable}: raise --kv_cache_bytes"
            )
        if not self.config.chunked_prefill and seq.prompt_len + seq.max_tokens > self.config.max_num_batched_tokens:
            raise ValueError(
                f"without chunked prefill a sequence of up to {seq.prompt_len + seq.max_tokens} tokens must fit "
                f"--max_num_batched_tokens={self.config.max_num_batched_tokens} (it is recomputed whole if preempted)"
            )
        seq.status = WAITING
        self.waiting.append(seq)

    def fork(self, parent: Sequence, children: list[Sequence]) -> None:
        """Run `children` (forks of `parent`, sharing its blocks) right after the parent."""
        i = self.running.index(parent)
        for child in children:
            self.tables.fork(parent, child)
            child.status = RUNNING
        self.running[i + 1 : i + 1] = children
        parent.n = 1

    def finish(self, seq: Sequence, reason: str) -> None:
        """Remove a sequence that is done (or aborted) and free its blocks."""
        if seq.status == RUNNING:
            self.running.remove(seq)
        elif seq.status == WAITING:
            self.waiting.remove(seq)
        self.tables.free(seq)
        seq.status, seq.finish_reason = FINISHED, reason

    def abort(self, request_id: str) -> list[Sequence]:
        """Finish every sequence of a request with reason "abort"."""
        seqs = [s for s in [*self.running, *self.waiting] if s.request_id == request_id]
        for s in seqs:
            self.finish(s, "abort")
        return seqs

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        self.running.remove(seq)
        self.tables.free(seq)
        seq.num_computed, seq.status = 0, WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)
        out.preempted.append(seq)

    # ---- one step ------------------------------------------------------------------------------------------

    def _chunk(self, seq: Sequence, budget: int) -> int:
        behind = seq.num_tokens - seq.num_computed
        cap = self.config.max_prefill_chunk or budget
        return min(behind, budget, cap) if self.config.chunked_prefill else (behind if behind <= budget else 0)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        # 1. running sequences, oldest first; preempt from the newest when blocks run out
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            num_new = self._chunk(seq, budget)
            if num_new == 0:
                i += 1
                continue
            copies = self.tables.allocate(seq, num_new)
            while copies is None:
                victim = self.running[-1]
                self._preempt(victim, out)
                if victim is seq:
                    break
                copies = self.tables.allocate(seq, num_new)
            if copies is None:  # seq itself was preempted: everything after it already was
                break
            self._emit(out, seq, num_new, copies)
            budget -= num_new
            i += 1
        # 2. waiting sequences, first come first served, unless this step had to preempt
        while self.waiting and budget > 0 and not out.preempted:
            seq = self.waiting[0]
            if sum(s.n for s in self.running) + seq.n > self.config.max_num_seqs:
                break
            hits = self.tables.computed_prefix(seq)
            hit_tokens = len(hits) * self.config.block_size
            num_new = self._chunk_after_hits(seq, hit_tokens, budget)
            if num_new == 0:
                break
            copies = self.tables.allocate(seq, num_new, hits)
            if copies is None:
                break
            self.tables.record_lookup(seq, hits)
            if seq.num_preemptions == 0:
                seq.num_cached_tokens = hit_tokens
            self.waiting.popleft()
            seq.status = RUNNING
            self.running.append(seq)
            self._emit(out, seq, num_new, copies)
            budget -= num_new
        assert out.num_tokens <= self.config.max_num_batched_tokens, f"budget exceeded: {out.num_tokens}"
        assert out.seqs or not self.has_unfinished(), "no sequence could be scheduled: the scheduler is stuck"
        return out

    def _chunk_after_hits(self, seq: Sequence, hit_tokens: int, budget: int) -> int:
        behind = seq.num_tokens - hit_tokens
        if not self.config.chunked_prefill:
            return behind if behind <= budget else 0
        return min(behind, budget, self.config.max_prefill_chunk or budget)

    def _emit(self, out: SchedulerOutput, seq: Sequence, num_new: int, copies: list[tuple[int, int]]) -> None:
        out.seqs.append(seq)
        out.num_new.append(num_new)
        out.copies.extend(copies)
        out.block_ids.append(self.tables.block_ids(seq))

    def update(self, out: SchedulerOutput) -> list[Sequence]:
        """After the model ran: advance computed counts, cache newly full blocks. Returns the scheduled sequences
        that caught up with their tokens (the engine samples their next token)."""
        ready = []
        for seq, num_new in zip(out.seqs, out.num_new):
            if seq.status != RUNNING:  # aborted while the step ran
                continue
            seq.num_computed += num_new
            assert seq.num_computed <= seq.num_tokens, f"{seq.seq_id}: computed {seq.num_computed} > {seq.num_tokens}"
            self.tables.cache_full_blocks(seq)
            if seq.num_computed == seq.num_tokens:
                ready.append(seq)
        return ready

    # ---- state ---------------------------------------------------------------------------------------------

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def has_unfinished(self) -> bool:
        return bool(self.running or self.waiting)

    def check(self) -> None:
        """Invariants (tests): pool consistent, every running table covers its computed tokens, ref counts equal
        the number of tables holding each block, nothing waiting holds blocks."""
        self.pool.check()
        held: dict[int, int] = {}
        for seq in self.running:
            ids = self.tables.block_ids(seq)
            assert len(ids) * self.config.block_size >= seq.num_computed, f"{seq.seq_id} table too short"
            for b in ids:
                held[b] = held.get(b, 0) + 1
        for seq in self.waiting:
            assert seq.seq_id not in self.tables.tables and seq.num_computed == 0, f"{seq.seq_id} waits with blocks"
        for b in self.pool.blocks[1:]:
            assert b.ref_cnt == held.get(b.id, 0), f"block {b.id}: ref_cnt {b.ref_cnt}, held by {held.get(b.id, 0)}"
        assert FINISHED not in {s.status for s in [*self.running, *self.waiting]}
