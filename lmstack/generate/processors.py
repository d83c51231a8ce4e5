"""Logits processors: small pure functions `(logits (B, V), ...) -> logits (B, V)`, and the pipeline that runs them.

Order (the one Hugging Face `generate` uses, `GenerationMixin._get_logits_processor`): first the processors that
edit scores from the history — logit bias, repetition penalty, frequency/presence penalties (OpenAI; HF has
none), no-repeat-n-gram, bad words, min-new-tokens — then the warpers that shape the sampling distribution:
temperature -> top-k -> top-p -> min-p -> typical-p. Temperature comes first so the filters see the tempered
distribution (top-p at T=0.5 keeps fewer tokens than at T=1).

References: CTRL repetition penalty (Keskar et al. 2019), nucleus sampling (Holtzman et al. 2020), min-p
(Nguyen et al. 2024), locally typical sampling (Meister et al. 2023), OpenAI frequency/presence penalties
(platform.openai.com/docs/advanced-usage). Each function equals the HF processor of the same name
(tests/generate/test_processors.py); filtered entries become -inf.

State is kept incrementally so a decoding step costs O(B * V), not O(B * T * V): `seen` (prompt + output) and
`counts` (output only) are (B, V) tensors updated with one scatter per step; the token history (B, T) is only
kept when no-repeat-n-gram or multi-token bad words need it. Left out: epsilon/eta/top-h sampling.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lmstack.generate.params import SamplingParams

NEG_INF = float("-inf")


def temperature(logits: torch.Tensor, t: float) -> torch.Tensor:
    return logits / t


def top_k(logits: torch.Tensor, k: int, min_keep: int = 1) -> torch.Tensor:
    """Keep the k largest logits per row (ties with the k-th are kept, as in HF)."""
    k = min(max(k, min_keep), logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p(logits: torch.Tensor, p: float, min_keep: int = 1) -> torch.Tensor:
    """Nucleus: drop the least likely tokens whose total probability stays <= 1 - p."""
    sorted_logits, order = torch.sort(logits, descending=False)  # ascending: removable tail first
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cum <= (1 - p)
    remove[..., -min_keep:] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), NEG_INF)


def min_p(logits: torch.Tensor, p: float, min_keep: int = 1) -> torch.Tensor:
    """Drop tokens whose probability is below p times the top token's probability."""
    probs = logits.softmax(dim=-1)
    remove = probs < p * probs.amax(dim=-1, keepdim=True)
    keep = torch.topk(probs, min(min_keep, probs.shape[-1]), dim=-1).indices
    remove.scatter_(-1, keep, False)
    return logits.masked_fill(remove, NEG_INF)


def typical_p(logits: torch.Tensor, mass: float, min_keep: int = 1) -> torch.Tensor:
    """Keep the tokens whose surprisal is closest to the entropy, up to `mass` of probability."""
    logp = logits.log_softmax(dim=-1)
    entropy = -(logp * logp.exp()).nansum(-1, keepdim=True)  # (B, 1)
    distance = (-logp - entropy).abs()  # how atypical each token is
    sorted_dist, order = torch.sort(distance, descending=False)
    cum = logits.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
    last = (cum < mass).sum(dim=-1).clamp_(max=logits.shape[-1] - 1)  # index of the last kept token
    remove = sorted_dist > sorted_dist.gather(-1, last[:, None])
    remove[..., :min_keep] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), NEG_INF)


def repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL rule on tokens already seen (prompt + output): positive logits / penalty, negative * penalty."""
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)


def frequency_presence(logits: torch.Tensor, counts: torch.Tensor, frequency: float, presence: float) -> torch.Tensor:
    """OpenAI: logit -= frequency * count + presence * (count > 0), counting output tokens only."""
    return logits - frequency * counts - presence * (counts > 0).to(logits.dtype)


def no_repeat_ngram(logits: torch.Tensor, history: torch.Tensor, n: int) -> torch.Tensor:
    """Ban every token that would complete an n-gram already present in `history` (B, T), -1 = padding."""
    B, T = history.shape
    V = logits.shape[-1]
    if T < n:
        return logits
    prefix = history[:, T + 1 - n :]  # (B, n-1) the n-gram the next token would complete
    windows = history.unfold(1, n, 1)  # (B, T-n+1, n)
    match = (windows[..., :-1] == prefix[:, None, :]).all(-1) & (windows[..., 0] >= 0)
    if n > 1:
        match &= prefix[:, :1] >= 0  # a prefix reaching into the padding completes nothing
    banned = torch.zeros(B, V + 1, dtype=torch.bool, device=logits.device)
    banned.scatter_(1, torch.where(match, windows[..., -1].clamp(0, V), V), True)  # misses go to a spare column
    return logits.masked_fill(banned[:, :V], NEG_INF)


def bad_words(logits: torch.Tensor, history: torch.Tensor | None, sequences: list[list[int]]) -> torch.Tensor:
    """Ban the last token of each sequence whose other tokens end the history (single tokens: always)."""
    banned = torch.zeros_like(logits, dtype=torch.bool)
    for seq in sequences:
        if len(seq) == 1:
            banned[:, seq[0]] = True
        elif history is not None and history.shape[1] >= len(seq) - 1:
            prefix = torch.tensor(seq[:-1], device=logits.device)
            banned[:, seq[-1]] |= (history[:, -(len(seq) - 1) :] == prefix).all(-1)
    return logits.masked_fill(banned, NEG_INF)


def logit_bias(logits: torch.Tensor, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return logits.index_add(-1, ids, values.to(logits.dtype).expand(logits.shape[0], -1))


def ban(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return logits.index_fill(-1, ids, NEG_INF)


class LogitsPipeline:
    """The processors one request switched on, in HF order, plus the state they read.

    >>> pipe = LogitsPipeline(params, vocab_size=V, eos_ids=[2], prompts=[[5, 6, 7]])
    >>> scores = pipe.process(logits)   # history-dependent edits
    >>> scores = pipe.warp(scores)      # temperature and filters (sampling only)
    >>> pipe.append(next_tokens)        # (B,) chosen ids
    """

    def __init__(
        self,
        params: SamplingParams,
        vocab_size: int,
        eos_ids: list[int],
        prompts: list[list[int]],
        device: torch.device | str = "cpu",
    ) -> None:
        self.p, self.V, self.device = params, vocab_size, torch.device(device)
        B = len(prompts)
        self.step = 0
        self.eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=self.device)
        multi_bad = any(len(s) > 1 for s in params.bad_words_ids)
        self.keep_history = params.no_repeat_ngram_size > 0 or multi_bad
        self.history: torch.Tensor | None = None
        if self.keep_history:  # (B, P + max_new) left-padded with -1, filled as tokens arrive
            P = max(len(x) for x in prompts)
            self.history = torch.full((B, P + params.max_new_tokens), -1, dtype=torch.long, device=self.device)
            for b, x in enumerate(prompts):
                if x:
                    self.history[b, P - len(x) : P] = torch.tensor(x, device=self.device)
            self.filled = P
        self.seen: torch.Tensor | None = None
        if params.repetition_penalty != 1.0:  # (B, V) tokens in prompt or output
            self.seen = torch.zeros(B, vocab_size, dtype=torch.bool, device=self.device)
            for b, x in enumerate(prompts):
                self.seen[b, torch.tensor(x, dtype=torch.long, device=self.device)] = True
        self.counts: torch.Tensor | None = None
        if params.frequency_penalty != 0.0 or params.presence_penalty != 0.0:  # (B, V) output counts
            self.counts = torch.zeros(B, vocab_size, device=self.device)
        self.bias: tuple[torch.Tensor, torch.Tensor] | None = None
        if params.logit_bias:
            ids = torch.tensor(list(params.logit_bias), dtype=torch.long, device=self.device)
            self.bias = (ids, torch.tensor(list(params.logit_bias.values()), device=self.device))
        self.bad = [s for s in params.bad_words_ids if not (len(s) == 1 and s[0] in set(eos_ids))]
        self.warpers = self._warpers()

    def _warpers(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        p, out = self.p, []
        if p.greedy:
            return out  # argmax ignores every warper
        if p.temperature != 1.0:
            out.append(lambda x: temperature(x, p.temperature))
        if p.top_k > 0:
            out.append(lambda x: top_k(x, p.top_k))
        if p.top_p < 1.0:
            out.append(lambda x: top_p(x, p.top_p))
        if p.min_p > 0.0:
            out.append(lambda x: min_p(x, p.min_p))
        if p.typical_p < 1.0:
            out.append(lambda x: typical_p(x, p.typical_p))
        return out

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        """History-dependent edits, HF order. logits (B, V) -> (B, V)."""
        p = self.p
        if self.bias is not None:
            logits = logit_bias(logits, *self.bias)
        if self.seen is not None:
            logits = repetition_penalty(logits, self.seen, p.repetition_penalty)
        if self.counts is not None:
            logits = frequency_presence(logits, self.counts, p.frequency_penalty, p.presence_penalty)
        hist = self.history[:, : self.filled] if self.history is not None else None
        if p.no_repeat_ngram_size > 0:
            logits = no_repeat_ngram(logits, hist, p.no_repeat_ngram_size)
        if self.bad:
            logits = bad_words(logits, hist, self.bad)
        if self.step < p.min_new_tokens and self.eos.numel():
            logits = ban(logits, self.eos)
        return logits

    def warp(self, logits: torch.Tensor) -> torch.Tensor:
        for w in self.warpers:
            logits = w(logits)
        return logits

    def append(self, tokens: torch.Tensor) -> None:
        """Record the chosen tokens (B,) of this step."""
        self.step += 1
        if self.seen is None and self.counts is None and self.history is None:
            return  # nothing to update (greedy or plain sampling)
        col = tokens[:, None]
        if self.seen is not None:
            self.seen.scatter_(1, col, True)
        if self.counts is not None:
            self.counts.scatter_add_(1, col, torch.ones_like(col, dtype=self.counts.dtype))
        if self.history is not None:
            if self.filled == self.history.shape[1]:  # speculative steps may append past max_new_tokens
                self.history = torch.cat([self.history, torch.full_like(self.history, -1)], dim=1)
            self.history[:, self.filled] = tokens
            self.filled += 1

    def select(self, rows: torch.Tensor) -> None:
        """Keep / duplicate / reorder rows (n samples, beams). rows: (B',) indices into the current batch."""
        for name in ("seen", "counts", "history"):
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.index_select(0, rows))

    @property
    def active(self) -> bool:
        """False when `process` is the identity (the lean greedy path skips it)."""
        return any(x is not None for x in (self.bias, self.seen, self.counts, self.history)) or bool(
            self.bad or (self.p.min_new_tokens > 0 and self.eos.numel())
        )


def sample(probs_logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Draw one token per row from softmax(logits) (B, V) -> (B,)."""
    probs = probs_logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def fork(pipe: LogitsPipeline) -> LogitsPipeline:
    """An independent copy whose state can advance without touching `pipe` (speculative verification)."""
    new = object.__new__(LogitsPipeline)
    new.__dict__.update(pipe.__dict__)
    for name in ("seen", "counts", "history"):
        t = getattr(pipe, name)
        if t is not None:
            setattr(new, name, t.clone())
    return new
