"""The cross-encoder: built from the MiniLM weights, saved as an HF BertForSequenceClassification that
`transformers` scores identically; the training recipe mines pairs and takes optimizer steps; the LLM reranker."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from lmstack.rag import Index, IndexSettings, load_documents
from lmstack.rag.reranker import CrossEncoder
from lmstack.rag.train_reranker import TrainRerankerConfig, continue_from, main, mine

PAIRS = [
    ("How do I read a file line by line?", "Loop over the file object: for line in f."),
    ("How do I read a file line by line?", "json.dumps serializes an object to a JSON string."),
]


def test_saved_reranker_loads_in_transformers_with_the_same_scores(tmp_path) -> None:
    model = CrossEncoder.from_embedder("all-minilm-l6-v2", max_length=64)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.5)  # a non-trivial head
    model.save(tmp_path / "ce")
    ours = CrossEncoder.load(tmp_path / "ce").score(PAIRS[0][0], [p for _, p in PAIRS])
    assert json.loads((tmp_path / "ce" / "config.json").read_text())["architectures"] == [
        "BertForSequenceClassification"
    ]
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "ce").eval()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tmp_path / "ce" / "tokenizer.json"), pad_token="[PAD]"
    )
    batch = tok(
        [q for q, _ in PAIRS], [p for _, p in PAIRS], padding=True, return_token_type_ids=True, return_tensors="pt"
    )
    with torch.no_grad():
        theirs = hf(**batch).logits[:, 0].tolist()
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs), atol=1e-4, rtol=1e-4)


def test_training_recipe_mines_pairs_and_saves(folder, tmp_path) -> None:
    ix = Index.create(tmp_path / "ix", IndexSettings(embedder="none", chunk_size=30))
    ix.add_documents(load_documents(str(folder)))
    ix.save()
    cfg = TrainRerankerConfig(index=str(tmp_path / "ix"), out_dir=str(tmp_path / "ce"), pairs=8, steps=2,
                              batch_queries=2, hard_negatives=1, max_length=48, exclude="faq/*")  # fmt: skip
    examples = mine(Index.open(tmp_path / "ix"), cfg)
    assert examples and all(e.labels[0] == 1.0 and set(e.labels[1:]) <= {0.0} for e in examples)
    assert not any("What is Python" in e.query for e in examples)  # excluded documents are never mined
    assert main(cfg) == 0
    lines = (tmp_path / "ce.metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "loss" in json.loads(lines[0])
    assert len(CrossEncoder.load(tmp_path / "ce").score("read a file", ["for line in f", "json"])) == 2


def test_distillation_attaches_teacher_cosines_and_trains(folder, tmp_path) -> None:
    ix = Index.create(tmp_path / "ix", IndexSettings(chunk_size=30))
    ix.add_documents(load_documents(str(folder)))
    ix.save()
    index = Index.open(tmp_path / "ix")
    cfg = TrainRerankerConfig(index=str(tmp_path / "ix"), out_dir=str(tmp_path / "ce"), pairs=6, steps=2,
                              batch_queries=2, dense_negatives=1, distill=1.0, max_length=48)  # fmt: skip
    examples = mine(index, cfg)
    assert examples and all(e.teacher is not None and len(e.teacher) == len(e.passages) for e in examples)
    e = examples[0]
    q, p = index.embedder.embed([e.query], use_cache=False)[0], index.embedder.embed(e.passages)
    assert e.teacher == pytest.approx((p @ q).tolist(), abs=1e-6)  # the bi-encoder's cosines, passage by passage
    assert main(cfg) == 0
    losses = [json.loads(line)["loss"] for line in (tmp_path / "ce.metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(x > 0 for x in losses)
    again = TrainRerankerConfig(index=str(tmp_path / "ix"), init=str(tmp_path / "ce"), out_dir=str(tmp_path / "ce2"))
    saved = CrossEncoder.load(tmp_path / "ce")
    assert torch.equal(continue_from(again).classifier.weight, saved.classifier.weight)  # --init=a saved reranker
    assert continue_from(TrainRerankerConfig(index="x")) is None  # the embedder name: a fresh head
    with pytest.raises(ValueError, match="--temperature"):
        TrainRerankerConfig(index="x", temperature=0)
