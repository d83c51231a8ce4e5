"""BERTScore (Zhang et al. 2020, "BERTScore: Evaluating Text Generation with BERT"): similarity of a candidate
and a reference as greedy matching of their tokens' contextual embeddings, computed with lmstack's BERT encoder.

For candidate tokens x_1..x_m and reference tokens y_1..y_n (WordPiece, with [CLS] and [SEP]), take the hidden
states of encoder layer `layer`, L2-normalize them, and match every token to its most similar token on the other
side (cosine):

    R = sum_i w(y_i) max_j cos(y_i, x_j) / sum_i w(y_i)        recall: is each reference token covered?
    P = sum_j w(x_j) max_i cos(y_i, x_j) / sum_j w(x_j)        precision: is each candidate token supported?
    F = 2 P R / (P + R)

Weights w are 1, or with `idf=True` the inverse document frequency over the references,
idf(t) = ln((M + 1) / (df(t) + 1)) for M references (unseen tokens ln(M + 1)); [CLS] and [SEP] weigh 0 either way.
An empty candidate or reference scores 0. This is exactly what the `bert-score` package computes for a local
model directory and `num_layers=layer` (tests/eval/test_bertscore.py ties them on all-MiniLM-L6-v2).
Left out: baseline rescaling (needs the package's precomputed baseline files), multi-reference max, layer-wise
all_layers output.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F


def idf_weights(references: list[list[int]]) -> dict[int, float]:
    """Token id -> ln((M + 1) / (df + 1)) over M tokenized references (a token counted once per reference)."""
    df = Counter(t for ids in references for t in set(ids))
    M = len(references)
    return {t: math.log((M + 1) / (c + 1)) for t, c in df.items()}


@torch.no_grad()
def embed(model: Any, tokenizer: Any, texts: list[str], layer: int, batch_size: int = 64) -> list[torch.Tensor]:
    """Per text: the L2-normalized hidden states (n_tokens, D) after encoder block `layer` (1-based)."""
    device = next(model.parameters()).device
    blocks = model.blocks
    if not 1 <= layer <= len(blocks):
        raise ValueError(f"layer={layer}: the encoder has blocks 1..{len(blocks)}")
    captured: list[torch.Tensor] = []
    hook = blocks[layer - 1].register_forward_hook(lambda mod, args, out: captured.append(out[0]))
    limit = model.config.max_seq_len
    out: list[torch.Tensor] = []
    try:
        for i in range(0, len(texts), batch_size):
            ids = [tokenizer.encode(t.strip(), add_special_tokens=True)[:limit] for t in texts[i : i + batch_size]]
            T = max(len(x) for x in ids)
            batch = torch.full((len(ids), T), tokenizer.pad_id, dtype=torch.long)
            pos = torch.full((len(ids), T), -1, dtype=torch.long)  # right padding: -1 is never read
            for b, x in enumerate(ids):
                batch[b, : len(x)], pos[b, : len(x)] = torch.tensor(x), torch.arange(len(x))
            captured.clear()
            model(batch.to(device), positions=pos.to(device))
            hidden = F.normalize(captured[0].float(), dim=-1)  # (B, T, D)
            out += [hidden[b, : len(x)].cpu() for b, x in enumerate(ids)]
    finally:
        hook.remove()
    return out


def greedy_match(cand: torch.Tensor, ref: torch.Tensor, w_cand: torch.Tensor, w_ref: torch.Tensor) -> tuple:
    """(P, R, F) of one pair: normalized embeddings (m, D), (n, D) and token weights (m,), (n,)."""
    sim = cand @ ref.T  # (m, n) cosines
    P = (sim.max(dim=1).values * w_cand).sum() / w_cand.sum()
    R = (sim.max(dim=0).values * w_ref).sum() / w_ref.sum()
    F1 = 2 * P * R / (P + R)
    return float(P), float(R), 0.0 if math.isnan(F1) else float(F1)


def bertscore(
    candidates: list[str],
    references: list[str],
    model: Any,
    tokenizer: Any,
    layer: int,
    idf: bool = False,
    batch_size: int = 64,
) -> tuple[list[float], list[float], list[float]]:
    """Precision, recall and F1 per (candidate, reference) pair; see the module docstring."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references; give one per candidate")
    special = {tokenizer.cls_id, tokenizer.sep_id}
    ref_ids = [tokenizer.encode(t.strip(), add_special_tokens=True) for t in references]
    cand_ids = [tokenizer.encode(t.strip(), add_special_tokens=True) for t in candidates]
    table = idf_weights(ref_ids) if idf else {}
    unseen = math.log(len(references) + 1) if idf else 1.0

    def weights(ids: list[int]) -> torch.Tensor:
        return torch.tensor([0.0 if t in special else table.get(t, unseen) for t in ids[: model.config.max_seq_len]])

    c_emb = embed(model, tokenizer, candidates, layer, batch_size)
    r_emb = embed(model, tokenizer, references, layer, batch_size)
    P, R, F1 = [], [], []
    for c, r, ci, ri in zip(c_emb, r_emb, cand_ids, ref_ids):
        if len(ci) <= 2 or len(ri) <= 2:  # only [CLS] [SEP]: an empty text scores 0, as in bert-score
            p, rr, f = 0.0, 0.0, 0.0
        else:
            p, rr, f = greedy_match(c, r, weights(ci), weights(ri))
        P.append(p)
        R.append(rr)
        F1.append(f)
    return P, R, F1
