"""`answer()`: retrieve, decide whether to answer, generate with numbered sources, verify every citation.

    ground():   hits = retriever.retrieve(question)
                if confidence(hits) < min_score   -> "I don't know." (no model call: nothing relevant was found)
                prompt = system rule + question + sources [1..k] (quoted, injection-guarded: grounding.py, injection.py)
    text = greedy generation, streamed through `on_text`
    conclude(): citations = check_citations(text, sources)   every [n] must exist and be supported by source n
                no supported sentence (or the model said it does not know) -> abstained

    from lmstack.rag import Index, Retriever, answer
    ans = answer("How do I read a file line by line?", Retriever(Index.open(path)), model, tokenizer)
    ans.text, ans.citations, ans.hits, ans.abstained

`ground` and `conclude` are the halves around generation, so a server can generate in between with its own
engine (lmstack/rag/serving.py: `lmstack serve --rag_index`).

`confidence`: the best dense cosine among the hits (reranker scores are trained to order passages, not to be
calibrated); on BM25-only collections the gate is off. `verify="model"` additionally asks the model whether
each cited source supports its sentence (yes/no logits, reranker.yes_no_score). Left out: multi-turn
conversations, answer refinement loops (self-RAG), streaming of citation checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from lmstack.generate import SamplingParams, stream_generate
from lmstack.rag.grounding import IDK, Citation, build_messages, check_citations, is_idk
from lmstack.rag.retriever import Hit, Retriever
from lmstack.tokenizer.chat import chat_stop_ids, render_prompt


@dataclass
class Answer:
    question: str
    text: str
    citations: list[Citation] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)  # the numbered sources: [1] = hits[0]
    abstained: bool = False
    reason: str = "answered"  # answered | low retrieval score | not supported | model does not know
    confidence: float = math.nan


def confidence(hits: list[Hit]) -> float:
    """How relevant the best hit is: the best dense cosine among the hits (NaN when there is none)."""
    if not hits:
        return 0.0
    dense = [h.scores["dense"] for h in hits if "dense" in h.scores]
    return max(dense) if dense else math.nan


def sources_of(hits: list[Hit]) -> list[Hit]:
    """Hits with distinct contexts (parent-child: several children of one parent become one source)."""
    seen, out = set(), []
    for h in hits:
        if h.context not in seen:
            seen.add(h.context)
            out.append(h)
    return out


@dataclass
class Grounding:
    """A question with its numbered sources, before generation: the prompt to answer from, or an abstention."""

    question: str
    hits: list[Hit]  # the numbered sources: [1] = hits[0]
    confidence: float
    messages: list[dict[str, str]] | None  # the grounded prompt; None = abstain without the model (low score)


def ground(
    question: str,
    retriever: Retriever,
    k: int | None = None,
    min_score: float = 0.3,
    injection: str = "redact",
    where: dict | None = None,
) -> Grounding:
    """Retrieve, decide whether the sources are relevant enough, and build the numbered-sources prompt."""
    hits = sources_of(retriever.retrieve(question, k, where))
    conf = confidence(hits)
    if not hits or conf < min_score:  # NaN (no calibrated score) never abstains here
        return Grounding(question, hits, conf, None)
    messages = build_messages(question, [(h.title, h.path, h.context) for h in hits], injection)
    return Grounding(question, hits, conf, messages)


def conclude(grounding: Grounding, text: str, verify: str = "overlap", model=None, tokenizer=None) -> Answer:
    """Check the generated `text`'s citations against the sources and decide whether it is an answer."""
    g, text = grounding, text.strip()
    if g.messages is None:
        return Answer(g.question, IDK, [], g.hits, True, "low retrieval score", g.confidence)
    citations = check_citations(text, [h.context for h in g.hits])
    if verify == "model":
        _verify_with_model(model, tokenizer, citations, g.hits)
    if is_idk(text) and not any(c.supported for c in citations):
        return Answer(g.question, text, citations, g.hits, True, "model does not know", g.confidence)
    if not any(c.exists and c.supported for c in citations):
        return Answer(g.question, text, citations, g.hits, True, "not supported", g.confidence)
    return Answer(g.question, text, citations, g.hits, False, "answered", g.confidence)


def answer(
    question: str,
    retriever: Retriever,
    model,
    tokenizer,
    k: int | None = None,
    min_score: float = 0.3,
    max_new_tokens: int = 160,
    injection: str = "redact",
    verify: str = "overlap",
    where: dict | None = None,
    on_text: Callable[[str], None] | None = None,
) -> Answer:
    """A grounded, cited answer to `question` (see the module docstring): `ground`, generate, `conclude`."""
    if verify not in ("overlap", "model"):
        raise ValueError(f"verify={verify!r}; expected overlap or model")
    g = ground(question, retriever, k, min_score, injection, where)
    if g.messages is None:
        _emit(on_text, IDK)
        return conclude(g, IDK)
    ids = render_prompt(tokenizer, g.messages)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop_token_ids=chat_stop_ids(tokenizer))
    text = ""
    for event in stream_generate(model, ids, params, tokenizer=tokenizer):
        if event.text:
            text += event.text
            _emit(on_text, event.text)
            if repeats_a_line(text):  # greedy decoding of a small model can loop on one line: stop there
                text = text[: text.rstrip("\n").rfind("\n")]
                break
    return conclude(g, text, verify, model, tokenizer)


def repeats_a_line(text: str, min_chars: int = 12) -> bool:
    """True when the last complete line (of at least `min_chars`) already appeared earlier in `text`."""
    if not text.endswith("\n"):
        return False
    lines = [ln.strip() for ln in text.rstrip("\n").split("\n")]
    return len(lines[-1]) >= min_chars and lines[-1] in lines[:-1]


def _verify_with_model(model, tokenizer, citations: list[Citation], hits: list[Hit]) -> None:
    from lmstack.rag.reranker import yes_no_score

    for c in citations:
        if not c.exists:
            continue
        messages = [
            {"role": "system", "content": "You check whether a source supports a claim. Reply yes or no."},
            {"role": "user", "content": f"Source:\n{hits[c.number - 1].context[:1500]}\n\nClaim: {c.sentence}\n"
                                        "Does the source support the claim? Reply yes or no."},
        ]  # fmt: skip
        c.supported = c.supported and yes_no_score(model, tokenizer, messages) > 0


def _emit(on_text: Callable[[str], None] | None, text: str) -> None:
    if on_text is not None:
        on_text(text)
