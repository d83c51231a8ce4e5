"""Train the cross-encoder reranker from the MiniLM weights on (question, passage) pairs mined from the collection.

No reranker ships offline, and no labelled pairs do either, so they are mined from the collection itself:
- heading pairs: a section heading ("Reading and Writing Files") is the query, a chunk of that section the
  positive passage (headings are how documentation names what a passage is about);
- inverse cloze pairs (Lee, Chang & Toutanova 2019, ICT): a sentence of a chunk is the query, the chunk without
  that sentence the positive (the passage must be recognized from its context, not by string match).
Negatives per query: `hard_negatives` from BM25's top 20 and `dense_negatives` from the embedder's top 20 that are
not from the query's own section (close in words or in meaning, wrong in topic) and one random chunk. Loss:
localized contrastive estimation (Gao, Dai & Callan 2021): a softmax over each query's group [positive,
negatives] with the positive as the target, plus (`--distill`, Hofstätter et al. 2020 style teacher
distillation) the KL divergence from the bi-encoder's softmax over the same group (cosines / `temperature`):
the mined labels say which passage is right, the teacher how close the others are, which is what ranking needs.
(Pointwise binary cross-entropy, Nogueira & Cho 2019, was tried first: with 1 positive per 3 negatives and a few
hundred steps it collapsed to predicting the 25% prior for every pair; the group softmax always pushes the positive
above its own negatives, so it cannot.)
With `--queries=FILE` (from `lmstack rag-doc2query`), the local model's questions about passages join the mined
queries, each with its passage as the positive and negatives mined the same way: question-shaped queries, which
neither headings nor sentences are.
Documents matching `exclude` (the FAQ pages, our evaluation questions) are never mined. Passages are chunk text
without titles: a first version put "document > section heading" on top of each passage, and a heading query then
matched its positive by string (a shortcut that trained fine and ranked FAQ answers no better than chance).

    lmstack rag-train-reranker --index=runs/rag/pydocs --out_dir=runs/rag/reranker --steps=200

AdamW, linear warmup then linear decay, gradient clipping; metrics.jsonl in out_dir; Ctrl-C / SIGTERM saves the
current weights and exits 130. Left out: exact resume of an interrupted run, distillation from a bigger reranker
(none ships offline).
"""

from __future__ import annotations

import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from lmstack.common.log import JsonlLogger, info, progress
from lmstack.common.signals import interruptible
from lmstack.rag.bm25 import analyze
from lmstack.rag.doc2query import eligible_ids, read_questions
from lmstack.rag.index import Index
from lmstack.rag.reranker import CrossEncoder
from lmstack.rag.store import StoredChunk

SENTENCE = re.compile(r"[^.!?\n]{30,300}[.!?]")


@dataclass
class TrainRerankerConfig:
    index: str = ""  # collection directory to mine pairs from (built by `lmstack rag index`)
    out_dir: str = ""  # where the trained reranker is saved (default: <index>/reranker)
    init: str = "all-minilm-l6-v2"  # BERT weights to start from, or a reranker saved by this recipe to continue
    exclude: str = "faq/*"  # glob of document paths never mined (keep evaluation questions out)
    queries: str = ""  # doc2query questions (JSON lines from `lmstack rag-doc2query`), added to the mined pairs
    pairs: int = 2000  # queries mined (half headings, half inverse cloze)
    steps: int = 200  # optimizer steps
    batch_queries: int = 4  # queries per step; each brings 1 positive + hard_negatives + 1 random passage
    hard_negatives: int = 2  # BM25 negatives per query
    dense_negatives: int = 0  # negatives from the embedder's top 20 per query
    distill: float = 0.0  # weight of the KL term toward the bi-encoder teacher's group softmax (0 = labels only)
    temperature: float = 0.05  # teacher softmax temperature over cosines
    max_length: int = 128  # tokens per (query, passage) pair
    lr: float = 3e-5  # peak learning rate (AdamW)
    warmup: float = 0.1  # fraction of steps of linear warmup
    seed: int = 0  # mining and shuffling seed
    overwrite: bool = False  # replace an existing out_dir

    def __post_init__(self) -> None:
        if not self.index:
            raise ValueError("train-reranker needs --index=DIR (a collection built by `lmstack rag index`)")
        if self.hard_negatives < 0 or self.dense_negatives < 0 or self.distill < 0 or self.temperature <= 0:
            raise ValueError("--hard_negatives, --dense_negatives and --distill must be >= 0, --temperature > 0")
        for name in ("pairs", "steps", "batch_queries", "max_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name}={getattr(self, name)} must be positive")
        if not 0 < self.lr < 1:
            raise ValueError(f"--lr={self.lr} must be in (0, 1)")


@dataclass
class Example:
    query: str
    passages: list[str]  # positive first
    labels: list[float]
    teacher: list[float] | None = None  # the bi-encoder's cosine for each passage (distillation target)


def mine(index: Index, cfg: TrainRerankerConfig) -> list[Example]:
    """Heading and inverse-cloze queries (and doc2query questions when `cfg.queries` names a file) with hard
    negatives (see the module docstring)."""
    rng = random.Random(cfg.seed)
    ids, excluded = eligible_ids(index, cfg.exclude)
    rng.shuffle(ids)
    chunks = {c.id: c for c in index.get(ids[: cfg.pairs * 2])}
    out: list[Example] = []
    for n, i in enumerate(chunks):
        if len(out) >= cfg.pairs:
            break
        c = chunks[i]
        heading = c.title.rsplit(" > ", 1)[-1] if " > " in c.title else ""
        if n % 2 == 0 and len(analyze(heading)) >= 2:
            query, positive = heading, c.text
        else:
            sentences = SENTENCE.findall(c.text)
            if not sentences:
                continue
            s = rng.choice(sentences)
            query, positive = s.strip(), c.text.replace(s, " ")
        if positive.strip():
            out.append(with_negatives(index, cfg, query, positive, c, excluded, ids, rng))
    if cfg.queries:
        questions = {i: q for i, q in read_questions(cfg.queries).items() if i not in excluded}
        for c in index.get(list(questions)):
            out.append(with_negatives(index, cfg, questions[c.id], c.text, c, excluded, ids, rng))
        info(f"{len(questions)} doc2query questions from {cfg.queries}")
    if cfg.distill > 0:
        teach(index, out)
    return out


def with_negatives(
    index: Index,
    cfg: TrainRerankerConfig,
    query: str,
    positive: str,
    chunk: StoredChunk,
    excluded: set[int],
    ids: list[int],
    rng: random.Random,
) -> Example:
    """An example for `query`: `positive`, then BM25 and dense negatives from outside the chunk's own section and
    one random chunk."""
    negatives: list[int] = []
    for count, search in ((cfg.hard_negatives, index.bm25_search), (cfg.dense_negatives, index.dense_search)):
        if count == 0:
            continue
        hard = [h for h, _ in search(query, 20) if h not in excluded and h not in negatives]
        hard = [h for h in hard if (ch := index.get([h])) and (ch[0].path, ch[0].title) != (chunk.path, chunk.title)]
        negatives += rng.sample(hard, min(count, len(hard)))
    negatives.append(rng.choice(ids))
    texts = [x.text for x in index.get(list(dict.fromkeys(negatives))) if x.id != chunk.id]
    return Example(query, [positive, *texts], [1.0] + [0.0] * len(texts))


def teach(index: Index, examples: list[Example]) -> None:
    """Attach the bi-encoder's cosine (query, passage) to every passage of every example."""
    embedder = index.embedder
    queries = embedder.embed([e.query for e in examples], use_cache=False, show_progress=True)
    passages = embedder.embed([p for e in examples for p in e.passages], show_progress=True)  # one batched call
    start = 0
    for e, q in zip(examples, queries):
        e.teacher = (passages[start : start + len(e.passages)] @ q).tolist()
        start += len(e.passages)


def continue_from(cfg: TrainRerankerConfig) -> CrossEncoder | None:
    """A reranker saved by this recipe, when --init names one (training continues from it), else None."""
    config = Path(cfg.init).expanduser() / "config.json"
    if not config.is_file() or "BertForSequenceClassification" not in json.loads(config.read_text()).get(
        "architectures", []
    ):
        return None
    model = CrossEncoder.load(config.parent)
    model.max_length = cfg.max_length
    return model


def main(cfg: TrainRerankerConfig) -> int:
    out_dir = Path(cfg.out_dir or Path(cfg.index) / "reranker")
    if (out_dir / "config.json").exists() and not cfg.overwrite:
        raise ValueError(f"{out_dir} already holds a reranker; pass --overwrite to replace it")
    torch.manual_seed(cfg.seed)
    index = Index.open(cfg.index)
    info(f"mining {cfg.pairs} query -> passage examples from {cfg.index}")
    examples = mine(index, cfg)
    if not examples:
        raise ValueError(f"{cfg.index}: no examples could be mined (is the collection empty?)")
    model = continue_from(cfg) or CrossEncoder.from_embedder(cfg.init, max_length=cfg.max_length, seed=cfg.seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    warm = max(1, int(cfg.warmup * cfg.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (cfg.steps - s) / max(1, cfg.steps - warm)))
    )
    log = JsonlLogger(out_dir.parent / f"{out_dir.name}.metrics.jsonl", append=False)
    rng = random.Random(cfg.seed)
    step = 0
    try:
        with interruptible():
            for step in progress(range(cfg.steps), desc="train reranker", disable=False):
                batch = [examples[rng.randrange(len(examples))] for _ in range(cfg.batch_queries)]
                pairs = [(e.query, p) for e in batch for p in e.passages]
                logits = model(*model.batch(pairs))
                losses, start = [], 0
                for e in batch:  # one softmax per query over [positive, negatives...]
                    logp = torch.log_softmax(logits[start : start + len(e.passages)], 0)
                    loss_e = -logp[0]
                    if cfg.distill > 0 and e.teacher is not None:  # KL(teacher || student) over the group
                        target = torch.softmax(torch.tensor(e.teacher) / cfg.temperature, 0)
                        loss_e = loss_e + cfg.distill * F.kl_div(logp, target, reduction="sum")
                    losses.append(loss_e)
                    start += len(e.passages)
                loss = torch.stack(losses).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                sizes = [len(e.passages) for e in batch]
                acc = torch.tensor([float(g.argmax() == 0) for g in logits.detach().split(sizes)]).mean()
                log.log(step=step, loss=loss.item(), acc=acc.item(), lr=sched.get_last_lr()[0])
    except KeyboardInterrupt:
        model.save(out_dir)
        info(f"interrupted at step {step}; weights saved to {out_dir}")
        return 130
    model.save(out_dir)
    info(f"saved the reranker to {out_dir} ({len(examples)} mined examples, {cfg.steps} steps)")
    return 0


if __name__ == "__main__":
    import sys

    from lmstack.cli import main as cli_main

    sys.exit(cli_main(["rag-train-reranker", *sys.argv[1:]]))
