"""Per-sequence decoding state: `lmstack.generate`'s pieces, applied to one sequence at a time.

The engine batches sequences that arrived at different times and are at different steps, so the state that
`generate`'s loop keeps per batch row lives here per sequence: the logits pipeline (`LogitsPipeline`, the HF
processor order), the seeded `torch.Generator`, the constraint automaton state (JSON / schema / regex /
choices) and the stop-string `TextTracker`. `choose` and `accept` are the body of
`lmstack.generate.decode.sample_stream` for one row, in the same order, so a request produces the tokens
`generate` would produce for it alone (tests/serve/test_engine_parity.py):

    scores = pipeline.process(logits)                     # bias, penalties, n-gram / bad-word bans, min tokens
    scores[constraint forbids] = -inf                     # with `left` = tokens still allowed after this one
    token = argmax(scores) | sample(pipeline.warp(scores), generator)
    EOS / stop id -> finished, not emitted;  else constraint.advance, tracker.feed (stop strings), pipeline.append

With n > 1, the samples fork from the prompt's state (`fork`); sample i draws from its own generator seeded
with seed + i, so every sample is reproducible on its own whatever else is in the batch (`generate` draws the
n rows from one generator, so seeded n > 1 samples differ from `generate`'s; greedy ones are equal).
"""

from __future__ import annotations

from typing import Any

import torch

from lmstack.generate.decode import make_generator
from lmstack.generate.params import SamplingParams
from lmstack.generate.processors import LogitsPipeline, fork, sample
from lmstack.generate.stop import TextTracker


class SequenceSampler:
    def __init__(
        self,
        params: SamplingParams,
        prompt: list[int],
        vocab_size: int,
        eos_ids: list[int],
        tokenizer: Any = None,
        constraint: Any = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.params, self.eos, self.tokenizer = params, set(eos_ids), tokenizer
        self.pipe = LogitsPipeline(params, vocab_size, eos_ids, [prompt], device)
        self.generator = make_generator(params, torch.device(device))
        self.constraint = constraint
        self.state = constraint.start() if constraint is not None else None
        self.tracker = TextTracker(tokenizer, params.stop) if tokenizer is not None else None
        self.steps = 0  # tokens chosen so far
        # plain greedy: the next token is the argmax of the raw logits (the engine batches these rows)
        self.plain_greedy = params.greedy and not self.pipe.active and constraint is None

    def fork(self, index: int) -> SequenceSampler:
        """A copy for sample `index` of the same request, taken before any token was chosen."""
        assert self.steps == 0, "fork before the first token"
        new = object.__new__(SequenceSampler)
        new.__dict__.update(self.__dict__)
        new.pipe = fork(self.pipe)
        seed = None if self.params.seed is None else self.params.seed + index
        new.generator = make_generator(self.params.replace(seed=seed), self.pipe.device)
        new.tracker = TextTracker(self.tokenizer, self.params.stop) if self.tokenizer is not None else None
        return new

    def choose(self, logits: torch.Tensor) -> int:
        """The next token from this sequence's logits (V,)."""
        p = self.params
        scores = logits[None]  # (1, V)
        if self.pipe.active:
            scores = self.pipe.process(scores)
        if self.constraint is not None:
            left = p.max_new_tokens - self.steps - 1
            scores = scores.masked_fill(~self.constraint.masks([self.state], left, scores.device), float("-inf"))
        tok = scores.argmax(-1) if p.greedy else sample(self.pipe.warp(scores), self.generator)
        return int(tok)

    def accept(self, token: int) -> tuple[str, bool]:
        """Record a chosen token. Returns (text safe to show now, finished). An EOS / stop id finishes the
        sequence and is not part of the output; a completed stop string finishes it too."""
        self.steps += 1
        if token in self.eos:
            return "", True
        text, stopped = "", False
        if self.constraint is not None:
            self.state = self.constraint.advance(self.state, token)
        if self.tracker is not None:
            text, stopped = self.tracker.feed(token)
        self.pipe.append(torch.tensor([token], device=self.pipe.device))
        return text, stopped

    def flush(self) -> str:
        """Text held back (a partial stop string, an unfinished character) once the sequence ends."""
        return self.tracker.flush() if self.tracker is not None else ""

    def kept_tokens(self, n: int) -> int:
        """How many of the n emitted tokens stay in the output (a stop string drops the tokens it overlaps)."""
        return self.tracker.kept_tokens() if self.tracker is not None else n

    @property
    def final_text(self) -> str:
        return self.tracker.final_text if self.tracker is not None else ""
