"""A `Sequence`: one stream of token ids that the scheduler moves from waiting to running to finished. No torch.

Everything the scheduler needs is here: the token ids (prompt, then output), how many of them already have
their keys/values in the cache (`num_computed`), the output budget, and the prefix-cache hash of every full
block of tokens (kept up to date as tokens are appended). The rule the scheduler follows is one line: each step,
`num_computed` catches up with `num_tokens` as far as the token budget allows. A fresh prompt, a prompt that
hit the prefix cache, a chunked prefill, a decode step and the recomputation after a preemption are all that
same rule from different starting points.

A request asking for n > 1 samples starts as one sequence with `n` set; once its prompt is computed the engine
forks it into n sequences that share the prompt's blocks (`Scheduler.fork`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmstack.serve.block_pool import BlockHash, hash_block

WAITING, RUNNING, FINISHED = "waiting", "running", "finished"


@dataclass(eq=False)
class Sequence:
    seq_id: str  # unique: the request id, plus "#i" for forked samples
    request_id: str  # the request this sequence answers
    token_ids: list[int]  # prompt then output
    prompt_len: int  # how many of token_ids are the prompt
    max_tokens: int  # output budget (new tokens)
    block_size: int  # tokens per KV block (for the hashes)
    index: int = 0  # sample index within its request (0..n-1)
    n: int = 1  # sequences this one forks into once its prompt is computed (> 1 only before the fork)
    extra_key: object = None  # whatever else changes the KV (e.g. an adapter name): part of every block hash
    num_computed: int = 0  # tokens whose K/V are in the cache
    status: str = WAITING
    finish_reason: str | None = None  # "stop", "length", "abort" or "error"
    num_preemptions: int = 0
    num_cached_tokens: int = 0  # prompt tokens found in the prefix cache at first admission
    block_hashes: list[BlockHash] = field(default_factory=list)  # one per full block of token_ids

    def __post_init__(self) -> None:
        assert 0 < self.prompt_len <= len(self.token_ids), f"prompt_len={self.prompt_len}, {len(self.token_ids)} ids"
        self._hash_full_blocks()

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output(self) -> int:
        return len(self.token_ids) - self.prompt_len

    @property
    def output(self) -> list[int]:
        return self.token_ids[self.prompt_len :]

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    def append(self, token: int) -> None:
        """Add one sampled token (its K/V are computed next step)."""
        self.token_ids.append(token)
        self._hash_full_blocks()

    def fork(self, index: int) -> Sequence:
        """A copy for sample `index` of the same request (the scheduler shares its blocks)."""
        child = Sequence(
            seq_id=f"{self.request_id}#{index}",
            request_id=self.request_id,
            token_ids=list(self.token_ids),
            prompt_len=self.prompt_len,
            max_tokens=self.max_tokens,
            block_size=self.block_size,
            index=index,
            extra_key=self.extra_key,
            num_computed=self.num_computed,
            status=self.status,
        )
        return child

    def _hash_full_blocks(self) -> None:
        bs = self.block_size
        while (len(self.block_hashes) + 1) * bs <= len(self.token_ids):
            i = len(self.block_hashes)
            parent = self.block_hashes[-1] if i else None
            self.block_hashes.append(hash_block(parent, self.token_ids[i * bs : (i + 1) * bs], self.extra_key))
