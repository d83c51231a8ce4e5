"""Query expansion with the local model: HyDE and query rewriting.

- HyDE (Gao, Ma, Lin & Callan 2022, "Precise Zero-Shot Dense Retrieval without Relevance Labels"): ask the model
  to *write* a passage that answers the question, then embed that passage instead of the question. A fake answer
  lies closer to real answers in embedding space than a question does, even when its facts are wrong. Dense
  search uses [question, hypothetical passage] (both, fused by RRF); BM25 keeps the question.
- Rewriting (Ma et al. 2023, "Query Rewriting for Retrieval-Augmented LLMs"): ask the model for a short keyword
  search query; both the original and the rewrite are searched by both retrievers and fused.
Both decode greedily (deterministic) with the `generate` stage. Left out: multi-sample HyDE averaging, trained
rewriters, step-back prompting.
"""

from __future__ import annotations

from lmstack.generate import SamplingParams, generate
from lmstack.tokenizer.chat import chat_stop_ids, render_prompt

HYDE_PROMPT = "Write a short passage from the Python documentation that answers this question.\nQuestion: {q}"
REWRITE_PROMPT = (
    "Rewrite this question as a short search query of keywords (no explanation, one line).\nQuestion: {q}\nQuery:"
)


def complete(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """Greedy chat completion of one user message."""
    ids = render_prompt(tokenizer, [{"role": "user", "content": prompt}])
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop_token_ids=chat_stop_ids(tokenizer))
    out = generate(model, [ids], params, tokenizer=tokenizer)[0]
    return tokenizer.decode(out).strip()


class HyDE:
    def __init__(self, model, tokenizer, max_new_tokens: int = 96, prompt: str = HYDE_PROMPT) -> None:
        self.model, self.tokenizer, self.max_new_tokens, self.prompt = model, tokenizer, max_new_tokens, prompt

    def expand(self, query: str) -> dict[str, list[str]]:
        passage = complete(self.model, self.tokenizer, self.prompt.format(q=query), self.max_new_tokens)
        return {"bm25": [query], "dense": [query, passage] if passage else [query]}


class QueryRewriter:
    def __init__(self, model, tokenizer, max_new_tokens: int = 24) -> None:
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens

    def expand(self, query: str) -> dict[str, list[str]]:
        rewrite = complete(self.model, self.tokenizer, REWRITE_PROMPT.format(q=query), self.max_new_tokens)
        rewrite = rewrite.split("\n")[0].strip().strip('"')
        texts = [query, rewrite] if rewrite and rewrite.lower() != query.lower() else [query]
        return {"bm25": texts, "dense": texts}
