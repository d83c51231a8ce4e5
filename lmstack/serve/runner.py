"""The model runner: the scheduler's output -> padded tensors -> the model (through the paged cache) -> logits.

One step computes a different number of tokens per sequence (a prefill chunk of hundreds, a decode of one).
The model's forward takes a padded (B, T) batch, and padding is compute thrown away: one 512-token chunk
padded beside 63 one-token decodes would cost 64 x 512 token-computations, and two prompts of 400 and 50
tokens padded together cost 800. So the runner runs the decode rows together (T = 1, no padding) and each
prefill chunk on its own (no padding either); all of them write into and read from the same paged cache. The
price is reading the weights once more per prefill chunk in the step, a few percent of a chunk's compute
(prefill is compute-bound): the first step of bench/serve.py's workload (512 tokens from several prompts)
took 2.16 s padded and 0.86 s one chunk at a time.
So every forward's rows have the same number of new tokens and nothing is padded. Positions are the tokens'
absolute indices, so RoPE and the causal mask need nothing else.

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
        self.tokens = 0  # tokens computed so far

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
        """One model call over the rows `group`, which all compute the same number of new tokens (decodes: one
        each; a prefill chunk runs alone), so nothing is padded. Returns each row's newest-token logits."""
        T = out.num_new[group[0]]
        starts = [out.seqs[i].num_computed for i in group]
        ids = torch.tensor([out.seqs[i].token_ids[s : s + T] for i, s in zip(group, starts)], device=self.device)
        pos = torch.tensor([list(range(s, s + T)) for s in starts], device=self.device)
        view = self.cache.batch([out.block_ids[i] for i in group], starts, pos)
        logits = self.forward(ids, pos, view, True)  # (B, 1, V)
        self.forwards += 1
        self.tokens += len(group) * T
        return {i: logits[r, -1] for r, i in enumerate(group)}
