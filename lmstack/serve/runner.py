"""The model runner: the scheduler's output -> padded tensors -> the model (through the paged cache) -> logits.

One step computes a different number of tokens per sequence (a prefill chunk of hundreds, a decode of one).
The model's forward takes a padded (B, T) batch, and padding is compute thrown away: one 512-token chunk
padded beside 63 one-token decodes would cost 64 x 512 token-computations, and two prompts of 400 and 50
tokens padded together cost 800. So the runner runs the decode rows together (T = 1, no padding) and each
prefill chunk on its own (no padding either); all of them write into and read from the same paged cache. The
price is reading the weights once more per prefill chunk in the step, a few percent of a chunk's compute
(prefill is compute-bound): the first step of bench/serve.py's workload (512 tokens from several prompts)
took 2.16 s padded and 0.86 s one chunk at a time.
Positions are the tokens' absolute indices (-1 on pads), so RoPE and the causal mask need nothing else.
Rows are left-padded, so every row's newest token sits in the last column.

The model runs through `generate.fast_forward.forward_fn`, the same decoding forward `generate()` uses (no
module calls; q|k|v and gate|up fused after `decode_layout`), and only the last column goes through the LM head:
the head's (T, V) product for every prefill position is work no one samples from (~25 % of a SmolLM2 prefill).
Only the rows that caught up with their tokens (the last chunk of a prompt, every decode) are returned.
Left out: CUDA graphs, a varlen (unpadded) attention path.
"""

from __future__ import annotations

import torch

from lmstack.generate.fast_forward import forward_fn
from lmstack.model.causal_lm import CausalLM
from lmstack.serve.paged_cache import PagedKVCache
from lmstack.serve.scheduler import SchedulerOutput
from lmstack.serve.sequence import Sequence


class ModelRunner:
    def __init__(self, model: CausalLM, cache: PagedKVCache) -> None:
        self.model, self.cache = model, cache
        self.forward = forward_fn(model)  # (ids, positions, cache, last_only) -> logits
        self.device = next(model.parameters()).device
        self.forwards = 0  # model calls so far
        self.tokens = 0  # real (unpadded) tokens computed so far
        self.padded_tokens = 0  # padding computed so far

    @torch.inference_mode()
    def execute(self, out: SchedulerOutput) -> tuple[list[Sequence], torch.Tensor]:
        """Run one step. Returns the sequences that caught up with their tokens and their next-token logits
        (R, V) in float32, in batch order."""
        self.cache.copy_blocks(out.copies)
        rows = range(len(out.seqs))
        decode = [i for i in rows if out.num_new[i] == 1]
        prefill = [i for i in rows if out.num_new[i] > 1]
        last: dict[int, torch.Tensor] = {}
        for group in [decode] * bool(decode) + [[i] for i in prefill]:
            last.update(self._forward(out, group))
        ready = [i for i in rows if out.seqs[i].num_computed + out.num_new[i] == out.seqs[i].num_tokens]
        if not ready:
            return [], torch.empty(0)
        return [out.seqs[i] for i in ready], torch.stack([last[i] for i in ready]).float()

    def _forward(self, out: SchedulerOutput, group: list[int]) -> dict[int, torch.Tensor]:
        """One model call over the rows `group`: left-padded inputs, last-position logits per row."""
        T = max(out.num_new[i] for i in group)
        ids = torch.zeros(len(group), T, dtype=torch.long)
        pos = torch.full((len(group), T), -1, dtype=torch.long)
        for r, i in enumerate(group):
            seq, n = out.seqs[i], out.num_new[i]
            start = seq.num_computed
            ids[r, T - n :] = torch.tensor(seq.token_ids[start : start + n])
            pos[r, T - n :] = torch.arange(start, start + n)
        ids, pos = ids.to(self.device), pos.to(self.device)
        view = self.cache.batch([out.block_ids[i] for i in group], [out.seqs[i].num_computed for i in group], pos)
        logits = self.forward(ids, pos, view, True)  # (B, 1, V): each row's newest token
        self.forwards += 1
        real = sum(out.num_new[i] for i in group)
        self.tokens += real
        self.padded_tokens += len(group) * T - real
        return {i: logits[r, -1] for r, i in enumerate(group)}
