"""Token shards: exact round trip, EOT placement, dtype choice, manifest, parallel == serial, resume, atomicity.

`ByteTok` is a tiny stand-in with the Tokenizer contract (ids = UTF-8 bytes, EOT = 256) so the layout can be
checked by hand; the real `lmstack.tokenizer.Tokenizer` is used for the round-trip on Shakespeare.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from lmstack.data import shards
from lmstack.data.corpus import load_corpus
from lmstack.data.shards import ShardDataset, token_dtype, write_shards

EOT = "<|endoftext|>"


class ByteTok:
    """ids = UTF-8 bytes; <|endoftext|> = 256 (or vocab_size - 1 when a bigger vocab is declared)."""

    def __init__(self, vocab_size: int = 257) -> None:
        self.vocab_size = vocab_size
        self.special_tokens = {EOT: vocab_size - 1}
        self.calls = 0

    def encode_ordinary(self, text: str) -> list[int]:
        self.calls += 1
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        eot = self.special_tokens[EOT]
        return b"".join(EOT.encode() if i == eot else bytes([i]) for i in ids).decode("utf-8")

    def save(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "tokenizer.json").write_text(json.dumps({"bytes": True, "vocab": self.vocab_size}))


TRAIN = ["first document\n", "second, with unicode: héllo 😀\n", "", "looks special: <|endoftext|> but is text"]
VAL = ["held out one", "held out two\n"]


def joined(docs: list[str]) -> str:
    return "".join(EOT + d for d in docs)


def test_round_trip_and_eot_before_each_document(tmp_path):
    tok = ByteTok()
    manifest = write_shards(TRAIN, VAL, tok, tmp_path, workers=1)
    train = ShardDataset(tmp_path, "train")
    assert train.tokens.dtype == np.uint16
    assert tok.decode(train.tokens.tolist()) == joined(TRAIN)
    assert tok.decode(ShardDataset(tmp_path, "val").tokens.tolist()) == joined(VAL)
    eots = np.flatnonzero(train.tokens == 256)
    assert eots.tolist() == np.cumsum([0] + [1 + len(d.encode()) for d in TRAIN[:-1]]).tolist()
    assert train.n_bytes == sum(len(d.encode("utf-8")) for d in TRAIN)
    assert manifest["splits"]["train"]["documents"] == 4 and manifest["splits"]["val"]["documents"] == 2
    assert manifest["splits"]["train"]["tokens"] == len(train.tokens) == train.n_bytes + 4
    assert manifest["eot_id"] == 256 and manifest["vocab_size"] == 257 and manifest["dtype"] == "uint16"
    tok_json = tmp_path / "tj"
    tok.save(tok_json)
    assert manifest["tokenizer_sha256"] == hashlib.sha256((tok_json / "tokenizer.json").read_bytes()).hexdigest()
    on_disk = np.fromfile(tmp_path / "train.bin", dtype="<u2")  # raw little-endian, no header
    assert np.array_equal(on_disk, train.tokens)


def test_dtype_is_uint16_up_to_65536_then_uint32(tmp_path):
    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.uint32
    big = ByteTok(vocab_size=100_000)  # EOT = 99,999 does not fit 16 bits
    write_shards(TRAIN, VAL, big, tmp_path, workers=1)
    ds = ShardDataset(tmp_path, "train")
    assert ds.tokens.dtype == np.uint32 and ds.manifest["dtype"] == "uint32"
    assert int(ds.tokens[0]) == 99_999


def test_parallel_equals_serial(tmp_path):
    docs = [f"document number {i} " * (i % 7 + 1) for i in range(200)]
    write_shards(docs, VAL, ByteTok(), tmp_path / "serial", workers=1, chunk_bytes=500)
    write_shards(docs, VAL, ByteTok(), tmp_path / "forked", workers=2, chunk_bytes=500)
    for split in ("train", "val"):
        a, b = ShardDataset(tmp_path / "serial", split), ShardDataset(tmp_path / "forked", split)
        assert np.array_equal(a.tokens, b.tokens)


def test_second_run_is_a_no_op(tmp_path):
    write_shards(TRAIN, VAL, ByteTok(), tmp_path, workers=1)
    tok = ByteTok()
    write_shards(TRAIN, VAL, tok, tmp_path, workers=1)
    assert tok.calls == 0
    write_shards(TRAIN + ["one more"], VAL, tok, tmp_path, workers=1)  # different documents: redone
    assert tok.calls > 0 and ShardDataset(tmp_path, "train").n_documents == 5


def test_interrupted_run_resumes_from_finished_chunks(tmp_path, monkeypatch):
    docs = [f"doc {i} " * 50 for i in range(40)]  # 300-350 bytes each, chunks of ~1 KB
    real_write = shards._atomic_write_array
    written = []

    def crash_after_five(path: Path, tokens: np.ndarray) -> None:
        if len(written) == 5:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the training split
        written.append(path)
        real_write(path, tokens)

    monkeypatch.setattr(shards, "_atomic_write_array", crash_after_five)
    with pytest.raises(KeyboardInterrupt):
        write_shards(docs, VAL, ByteTok(), tmp_path / "out", workers=1, chunk_bytes=1000)
    assert not (tmp_path / "out/manifest.json").exists()
    with pytest.raises(FileNotFoundError, match="manifest.json: missing"):
        ShardDataset(tmp_path / "out", "train")  # an interrupted run is never mistaken for a finished one
    monkeypatch.setattr(shards, "_atomic_write_array", real_write)
    tok = ByteTok()
    write_shards(docs, VAL, tok, tmp_path / "out", workers=1, chunk_bytes=1000)
    done = shards._chunks(docs, 1000)[4][1]  # documents in the 5 chunks finished before the crash
    assert 15 <= done < len(docs)
    assert tok.calls == len(docs) - done + len(VAL)  # only the unfinished chunks were encoded again
    write_shards(docs, VAL, ByteTok(), tmp_path / "fresh", workers=1, chunk_bytes=1000)
    resumed, fresh = ShardDataset(tmp_path / "out", "train"), ShardDataset(tmp_path / "fresh", "train")
    assert np.array_equal(resumed.tokens, fresh.tokens)
    assert not (tmp_path / "out/.parts").exists()


def test_corrupted_or_missing_shards_are_clear_errors(tmp_path):
    write_shards(TRAIN, VAL, ByteTok(), tmp_path, workers=1)
    with pytest.raises(ValueError, match="split='test'"):
        ShardDataset(tmp_path, "test")
    data = (tmp_path / "val.bin").read_bytes()
    (tmp_path / "val.bin").write_bytes(data[:-2])
    with pytest.raises(ValueError, match="val.bin: .* bytes, manifest says .* tokens"):
        ShardDataset(tmp_path, "val")


def test_tokenizer_without_eot_is_rejected(tmp_path):
    tok = ByteTok()
    tok.special_tokens = {}
    with pytest.raises(ValueError, match="no <\\|endoftext\\|> special token"):
        write_shards(TRAIN, VAL, tok, tmp_path)


def test_real_tokenizer_round_trip_on_shakespeare(tmp_path):
    from lmstack.tokenizer import Tokenizer

    train, val = load_corpus("shakespeare", "train"), load_corpus("shakespeare", "val")
    tok = Tokenizer.train(train[:2], 512, special_tokens=[EOT])
    write_shards(train[:6], val[:2], tok, tmp_path, workers=2)
    for split, docs in (("train", train[:6]), ("val", val[:2])):
        ds = ShardDataset(tmp_path, split)
        assert tok.decode(ds.tokens.tolist()) == joined(docs)
        assert ds.tokens[0] == tok.special_tokens[EOT]
