"""The model runner: the scheduler's output -> padded tensors -> the model (through the paged cache) -> logits.

One step computes a different number of tokens per sequence (a prefill chunk of hundreds, a decode of one).
Padding them to one (B, T) batch throws compute away: one 512-token chunk padded beside 63 one-token decodes
would cost 64 x 512 token-computations (the first step of bench/serve.py's workload, 512 tokens from several
prompts: 2.16 s padded, 0.86 s one chunk at a time). So the rows form groups with the same number of new tokens,
nothing padded: the decode rows together (B x 1) and each prefill chunk alone (1 x T). A step with more than one
group runs them as one ragged forward (`model.cache.RaggedBatch`): all tokens flattened into one row, so every
weight matrix is read once per step, not once per group (at batch 1 - 8 a SmolLM2 decode forward is ~70 ms of
reading weights, which a decode group beside a prefill chunk paid again), and attention runs per group through
the group's own view of the paged cache. Positions are the tokens' absolute indices, so RoPE and the causal mask
need nothing else.

The model runs through `generate.fast_forward`, the same decoding forward `generate()` uses (no module calls;
q|k|v and gate|up fused after `decode_layout`), and only each row's newest token goes through the LM head: the
head's (T, V) product for every prefill position is work no one samples from (~25 % of a SmolLM2 prefill).
Only the rows that caught up with their tokens (the last chunk of a prompt, every decode) are returned. A model
`FastForward` does not cover runs one `model(...)` call per group.
Left out: CUDA graphs, a varlen attention kernel (attention is one SDPA call per group).
"""

from __future__ import annotations

import torch

from lmstack.generate.fast_forward import FastForward, forward_fn
from lmstack.model.cache import RaggedBatch
from lmstack.model.causal_lm import CausalLM
from lmstack.serve.paged_cache import PagedBatch, PagedKVCache
from lmstack.serve.scheduler import SchedulerOutput
from lmstack.serve.sequence import Sequence


class ModelRunner:
    def __init__(self, model: CausalLM, cache: PagedKVCache) -> None:
        self.model, self.cache = model, cache
        self.forward = forward_fn(model)  # (ids, positions, cache, last_only) -> logits
        self.fast = FastForward.of(model)  # runs ragged batches; None: one forward per group
        self.device = next(model.parameters()).device
        self.forwards = 0  # model calls so far
        self.tokens = 0  # tokens computed so far

    @torch.inference_mode()
    def execute(self, out: SchedulerOutput) -> tuple[list[Sequence], torch.Tensor]:
        """Run one step. Returns the sequences that caught up with their tokens and their next-token logits
        (R, V) in float32, in batch order."""
        self.cache.copy_blocks(out.copies)
        rows = range(len(out.seqs))
        decode = [i for i in rows if out.num_new[i] == 1]
        prefill = [i for i in rows if out.num_new[i] > 1]
        groups = [decode] * bool(decode) + [[i] for i in prefill]
        last: dict[int, torch.Tensor] = {}
        if len(groups) > 1 and self.fast is not None:
            last = self._ragged(out, groups)
        else:
            for group in groups:
                last.update(self._forward(out, group))
        ready = [i for i in rows if out.seqs[i].num_computed + out.num_new[i] == out.seqs[i].num_tokens]
        if not ready:
            return [], torch.empty(0)
        return [out.seqs[i] for i in ready], torch.stack([last[i] for i in ready]).float()

    def _inputs(self, out: SchedulerOutput, group: list[int]) -> tuple[torch.Tensor, torch.Tensor, PagedBatch]:
        """ids and positions (B, T) of the rows `group` (all with T new tokens) and their paged-cache view."""
        T = out.num_new[group[0]]
        starts = [out.seqs[i].num_computed for i in group]
        ids = torch.tensor([out.seqs[i].token_ids[s : s + T] for i, s in zip(group, starts)], device=self.device)
        pos = torch.tensor([list(range(s, s + T)) for s in starts], device=self.device)
        self.tokens += len(group) * T
        return ids, pos, self.cache.batch([out.block_ids[i] for i in group], starts, pos)

    def _forward(self, out: SchedulerOutput, group: list[int]) -> dict[int, torch.Tensor]:
        """One model call over the rows `group`. Returns each row's newest-token logits."""
        ids, pos, view = self._inputs(out, group)
        logits = self.forward(ids, pos, view, True)  # (B, 1, V)
        self.forwards += 1
        return {i: logits[r, -1] for r, i in enumerate(group)}

    def _ragged(self, out: SchedulerOutput, groups: list[list[int]]) -> dict[int, torch.Tensor]:
        """One model call over several groups, flattened into one row. Returns each row's newest-token logits."""
        ids, pos, batch = RaggedBatch.join([self._inputs(out, group) for group in groups])
        logits = self.fast(ids, pos, batch, True)  # (1, R, V)
        self.forwards += 1
        return dict(zip([i for group in groups for i in group], logits[0]))
