"""Beam search: keep the `beam_width` likeliest partial sequences, finish them on EOS, rank by normalised score.

Scores are summed log-probabilities; a finished hypothesis of L generated tokens (EOS counted) is ranked by
sum_logp / L ** length_penalty (Wu et al. 2016 use a softer normaliser; HF uses this one). Each step, for every
prompt: take the top C = max(2, 1 + #EOS) * K continuations over all K beams x V tokens (more than K, so that K
unfinished ones survive even if the best all end in EOS); those among the first K that end (EOS, or the length
limit) enter the finished pool (best K kept); the best K that did not end become the new beams, and the KV cache
rows and processor state follow their parents (`select`).

Stopping (HF `early_stopping`): True stops a prompt as soon as K hypotheses are finished; False stops when the
best running beam, normalised at the current length, can no longer beat the worst finished one; "never" uses
the best length still reachable when length_penalty > 0 (the exact rule). These rules and the tie-breaking
follow `transformers` `GenerationMixin._beam_search` (v5), so outputs match it token for token
(tests/generate/test_parity_hf.py). Left out: beam sampling, diverse/group beam search, constraints.
"""

from __future__ import annotations

from typing import Any

import torch

from lmstack.generate.decode import GenerationStats, check_prompts, eos_ids_of, prefill
from lmstack.generate.fast_forward import forward_fn
from lmstack.generate.params import SamplingParams
from lmstack.generate.processors import LogitsPipeline
from lmstack.model.causal_lm import CausalLM

BIG = 1.0e9  # "minus infinity" that keeps arithmetic finite (as HF)


class BeamState:
    """Running beams and the finished pool for B prompts x K beams; tokens are the generated ones only."""

    def __init__(self, B: int, K: int, max_new: int, device: torch.device) -> None:
        self.run_tok = torch.zeros(B, K, max_new, dtype=torch.long, device=device)  # (B, K, max_new)
        self.run_score = torch.zeros(B, K, device=device)  # (B, K) summed log-probs
        self.run_score[:, 1:] = -BIG  # all beams start equal: only beam 0 may expand at step 0
        self.fin_tok = torch.zeros(B, K, max_new, dtype=torch.long, device=device)
        self.fin_score = torch.full((B, K), -BIG, device=device)  # normalised scores
        self.fin_len = torch.zeros(B, K, dtype=torch.long, device=device)  # generated length incl. EOS
        self.fin_eos = torch.zeros(B, K, dtype=torch.bool, device=device)  # ended with EOS (dropped on output)
        self.is_fin = torch.zeros(B, K, dtype=torch.bool, device=device)
        self.improvable = torch.ones(B, dtype=torch.bool, device=device)


def take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather along the beam axis: x (B, N, ...), idx (B, M) -> (B, M, ...)."""
    while idx.dim() < x.dim():
        idx = idx.unsqueeze(-1)
    return torch.take_along_dim(x, idx, dim=1)


def _finalize(s: BeamState, p: SamplingParams, cand: tuple, t: int, K: int) -> None:
    """Move the first K candidates that just ended into the finished pool (if they beat it)."""
    score, tok, ended, is_eos = cand  # (B, C), (B, C, max_new), (B, C), (B, C)
    C = score.shape[1]
    top_k = torch.arange(C, device=score.device) < K
    just = ended & top_k  # (B, C)
    norm = score / ((t + 1) ** p.length_penalty)
    full = s.is_fin.all(-1, keepdim=True) & (p.early_stopping is True)
    norm = norm - BIG * full.float() - BIG * (~s.improvable)[:, None].float() - BIG * (~just).float()
    scores = torch.cat([s.fin_score, norm], 1)  # (B, K + C)
    best = torch.topk(scores, K, dim=1).indices  # (B, K)
    s.fin_score = take(scores, best)
    s.fin_tok = take(torch.cat([s.fin_tok, tok], 1), best)
    lens = torch.full_like(score, t + 1, dtype=torch.long)
    s.fin_len = take(torch.cat([s.fin_len, lens], 1), best)
    s.fin_eos = take(torch.cat([s.fin_eos, is_eos], 1), best)
    s.is_fin = take(torch.cat([s.is_fin, just], 1), best)


def _heuristic(s: BeamState, p: SamplingParams, generated: int) -> None:
    """Can a running beam still beat the worst finished hypothesis? (HF's early-stopping test)"""
    length = p.max_new_tokens if (p.early_stopping == "never" and p.length_penalty > 0) else generated
    best_running = s.run_score[:, 0] / (length**p.length_penalty)  # (B,)
    worst = torch.where(s.is_fin, s.fin_score.min(-1, keepdim=True).values, torch.full_like(s.fin_score, -BIG))
    s.improvable &= (best_running[:, None] > worst).any(-1)


@torch.inference_mode()
def beam_search(
    model: CausalLM,
    prompts: list[list[int]],
    params: SamplingParams,
    tokenizer: Any = None,
    stats: GenerationStats | None = None,
) -> list[list[int]]:
    """Top `num_return_sequences` hypotheses per prompt, best first (rows prompt-major), EOS stripped."""
    check_prompts(model, prompts, params)
    if params.max_new_tokens == 0:
        return [[] for _ in range(len(prompts) * params.num_return_sequences)]
    if params.stop:
        raise ValueError("stop strings are not supported with beam search; use stop_token_ids")
    stats = stats if stats is not None else GenerationStats()
    device = next(model.parameters()).device
    B, K, T_new = len(prompts), params.beam_width, params.max_new_tokens
    eos = eos_ids_of(model, params)
    eos_t = torch.tensor(eos, dtype=torch.long, device=device)
    C = max(2, 1 + len(eos)) * K
    forward = forward_fn(model)
    # every beam starts from its prompt's prefill
    cache, logits, next_pos = prefill(model, prompts, K, T_new, stats, params.kv_cache_dtype, forward)
    rows = torch.arange(B, device=device).repeat_interleave(K)  # (B * K,) the prompt of each beam
    pipe = LogitsPipeline(params.replace(temperature=0.0), logits.shape[-1], eos, [prompts[r] for r in rows], device)
    s = BeamState(B, K, T_new, device)
    V = logits.shape[-1]
    for t in range(T_new):
        logp = pipe.process(torch.log_softmax(logits.float(), dim=-1))  # (B*K, V)
        acc = (logp.view(B, K, V) + s.run_score[..., None]).view(B, K * V)
        score, flat = torch.topk(acc, C, dim=1)  # (B, C) best continuations over all beams
        parent, tok = flat // V, flat % V
        cand_tok = take(s.run_tok, parent).clone()  # (B, C, max_new)
        cand_tok[:, :, t] = tok
        is_eos = torch.isin(tok, eos_t) if eos else torch.zeros_like(tok, dtype=torch.bool)
        ended = is_eos | (t + 1 == T_new)
        keep = torch.topk(score - BIG * ended.float(), K, dim=1).indices  # (B, K) best unfinished
        s.run_score, s.run_tok = take(score - BIG * ended.float(), keep), take(cand_tok, keep)
        _finalize(s, params, (score, cand_tok, ended, is_eos), t, K)
        _heuristic(s, params, t + 1)
        stop = not s.improvable.any() or (s.is_fin.all() and params.early_stopping is True) or ended.all()
        if stop:
            break
        src = (take(parent, keep) + torch.arange(B, device=device)[:, None] * K).view(-1)  # (B*K,) parent rows
        cache.select(src)
        pipe.select(src)
        new = s.run_tok[:, :, t].reshape(-1)  # (B*K,)
        pipe.append(new)
        logits = forward(new[:, None], next_pos, cache)[:, -1]
        stats.forwards += 1
        next_pos = next_pos + 1
    out = []
    for b in range(B):
        for k in range(params.num_return_sequences):
            n = int(s.fin_len[b, k]) - int(s.fin_eos[b, k])
            out.append(s.fin_tok[b, k, :n].tolist())
    stats.new_tokens += sum(len(x) for x in out)
    return out
