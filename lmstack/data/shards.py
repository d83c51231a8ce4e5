"""Token shards on disk: documents -> one flat `np.memmap`-able token array per split, plus a manifest.

Layout of `out_dir` (what `lmstack prepare-data` writes and `lmstack pretrain` reads):

    train.bin      every training document's tokens, each preceded by <|endoftext|>:  EOT d0 EOT d1 EOT d2 ...
    val.bin        the same for the validation documents
    manifest.json  {"format", "dtype", "vocab_size", "eot_id", "tokenizer_sha256",
                    "splits": {"train"|"val": {"tokens", "documents", "bytes", "docs_sha256"}}}

The separator comes *before* each document, as in GPT-2's training data: every document starts right after an
EOT, so a window that begins at an EOT sees a document from its start, and the model learns to predict the EOT
that ends one document (it is the first token of the next) from the document's end. `bytes` is the UTF-8
length of the split's documents (separators excluded): the denominator of bits-per-byte. Tokens are uint16
when every id fits (vocab_size <= 65,536), else uint32, raw little-endian with no header, so
`np.memmap(path, dtype, mode="r")` reads them.

Writing is parallel, resumable and atomic: documents are grouped into ~1 MB chunks; forked workers encode
chunks with `tokenizer.encode_ordinary` (document text that looks like a special token stays text); each
finished chunk lands in `out_dir/.parts/` under a key hashing the tokenizer and the chunk's documents, so an
interrupted run redoes only the missing chunks. The split files are then assembled with temp file + rename and
the manifest is written last: a manifest on disk means its shards are complete (`ShardDataset` also checks
the file sizes). Leaves out: sharding one split over several files (our corpora fit one memmap each).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lmstack.common.atomic import atomic_write_text
from lmstack.common.log import progress

FORMAT = "lmstack-shards-1"
EOT = "<|endoftext|>"


class TokenizerLike(Protocol):
    """What sharding needs from `lmstack.tokenizer.Tokenizer` (tests use a tiny stand-in)."""

    special_tokens: dict[str, int]

    @property
    def vocab_size(self) -> int: ...

    def encode_ordinary(self, text: str) -> list[int]: ...

    def save(self, directory: str | Path) -> None: ...


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id (< vocab_size) fits in 16 bits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def tokenizer_sha256(tokenizer: TokenizerLike) -> str:
    """sha256 of the tokenizer.json that `tokenizer.save` writes (the tokenizer's identity)."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)
        return hashlib.sha256((Path(tmp) / "tokenizer.json").read_bytes()).hexdigest()


def _doc_hash(doc: str) -> bytes:
    return hashlib.sha256(doc.encode("utf-8", errors="surrogatepass")).digest()


def _chunks(docs: Sequence[str], chunk_bytes: int) -> list[tuple[int, int]]:
    """[start, end) document ranges of about `chunk_bytes` characters each (whole documents only)."""
    bounds, start, size = [], 0, 0
    for i, doc in enumerate(docs):
        size += len(doc)
        if size >= chunk_bytes:
            bounds.append((start, i + 1))
            start, size = i + 1, 0
    if start < len(docs):
        bounds.append((start, len(docs)))
    return bounds


_WORKER: tuple[TokenizerLike, int, np.dtype] | None = None  # set in the parent before forking workers


def _encode_chunk(docs: list[str]) -> np.ndarray:
    """EOT d0 EOT d1 ... for one chunk of documents, as the shard dtype."""
    assert _WORKER is not None, "shard worker started without a tokenizer"
    tok, eot, dtype = _WORKER
    pieces = [np.array([eot, *tok.encode_ordinary(doc)], dtype=np.int64) for doc in docs]
    out = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    assert out.size == 0 or (out.min() >= 0 and out.max() <= np.iinfo(dtype).max), "token id out of dtype range"
    return out.astype(dtype)


def _write_split(
    name: str, docs: Sequence[str], out_dir: Path, key: str, workers: int, chunk_bytes: int
) -> dict[str, Any]:
    """Encode the missing chunks of one split into .parts/, then assemble `<name>.bin`; return its stats."""
    parts_dir = out_dir / ".parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    bounds = _chunks(docs, chunk_bytes)
    hashes = [_doc_hash(d) for d in docs]
    paths = []
    for i, (a, b) in enumerate(bounds):
        chunk_key = hashlib.sha256(key.encode() + b"".join(hashes[a:b])).hexdigest()[:16]
        paths.append(parts_dir / f"{name}-{i:05d}-{chunk_key}.bin")
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    total = sum(len(docs[j]) for i in todo for j in range(*bounds[i]))
    bar = progress(total=total, unit="B", unit_scale=True, desc=f"tokenize {name}")
    jobs = [list(docs[bounds[i][0] : bounds[i][1]]) for i in todo]
    pool = None
    if workers > 1 and len(jobs) > 1 and "fork" in mp.get_all_start_methods():
        pool = mp.get_context("fork").Pool(min(workers, len(jobs)))
    try:
        results = pool.imap(_encode_chunk, jobs) if pool else map(_encode_chunk, jobs)
        for i, tokens in zip(todo, results):
            _atomic_write_array(paths[i], tokens)  # a finished chunk survives an interruption
            bar.update(sum(len(docs[j]) for j in range(*bounds[i])))
    finally:
        if pool is not None:
            pool.terminate()
        bar.close()
    n_bytes = _assemble(paths, out_dir / f"{name}.bin")
    return {
        "tokens": n_bytes // np.dtype(_WORKER[2]).itemsize,
        "documents": len(docs),
        "bytes": sum(len(d.encode("utf-8", errors="surrogatepass")) for d in docs),
        "docs_sha256": hashlib.sha256(b"".join(hashes)).hexdigest(),
    }


def _atomic_write_array(path: Path, tokens: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tokens.tofile(tmp)
    os.replace(tmp, path)


def _assemble(parts: list[Path], dest: Path) -> int:
    """Concatenate the part files into `dest` (temp file + rename); return the byte count."""
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
        out.flush()
        os.fsync(out.fileno())
    size = tmp.stat().st_size
    os.replace(tmp, dest)
    return size


def write_shards(
    docs_train: Sequence[str],
    docs_val: Sequence[str],
    tokenizer: TokenizerLike,
    out_dir: str | Path,
    workers: int | None = None,
    chunk_bytes: int = 1 << 20,
    tokenizer_hash: str | None = None,
) -> dict[str, Any]:
    """Tokenize both splits into `out_dir/{train,val}.bin` + `manifest.json`; return the manifest.

    workers: processes (default: CPU count, at most 8); tokenizer_hash: sha256 of the tokenizer.json if the
    caller knows it (otherwise computed with `tokenizer.save`). Re-running with the same inputs is a no-op;
    an interrupted run resumes from its finished chunks.
    """
    global _WORKER
    out_dir = Path(out_dir)
    if EOT not in tokenizer.special_tokens:
        raise ValueError(f"tokenizer has no {EOT} special token (has {sorted(tokenizer.special_tokens)}); "
                         f"train it with special_tokens=['{EOT}']")  # fmt: skip
    eot, vocab = tokenizer.special_tokens[EOT], int(tokenizer.vocab_size)
    dtype = token_dtype(vocab)
    tok_hash = tokenizer_hash or tokenizer_sha256(tokenizer)
    splits = {"train": docs_train, "val": docs_val}
    digests = {n: hashlib.sha256(b"".join(_doc_hash(d) for d in docs)).hexdigest() for n, docs in splits.items()}
    old = _read_manifest(out_dir)
    same_docs = old is not None and all(old["splits"].get(n, {}).get("docs_sha256") == digests[n] for n in splits)
    if same_docs and old["tokenizer_sha256"] == tok_hash and old["dtype"] == dtype.name:
        return old  # already written from the same documents and tokenizer
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)  # from here on the old shards are not valid
    key = f"{tok_hash}:{dtype.str}:{eot}"
    _WORKER = (tokenizer, eot, dtype)
    try:
        stats = {n: _write_split(n, docs, out_dir, key, workers or min(os.cpu_count() or 1, 8), chunk_bytes)
                 for n, docs in splits.items()}  # fmt: skip
    finally:
        _WORKER = None
    manifest = {
        "format": FORMAT,
        "dtype": dtype.name,
        "vocab_size": vocab,
        "eot_id": eot,
        "tokenizer_sha256": tok_hash,
        "splits": stats,
    }
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    shutil.rmtree(out_dir / ".parts", ignore_errors=True)
    return manifest


def _read_manifest(out_dir: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


class ShardDataset:
    """One split of a shard directory: `.tokens` (read-only np.memmap), `.n_bytes`, `.manifest`."""

    def __init__(self, out_dir: str | Path, split: str) -> None:
        out_dir = Path(out_dir)
        manifest = _read_manifest(out_dir)
        if manifest is None:
            raise FileNotFoundError(f"{out_dir}/manifest.json: missing or not an lmstack shard manifest; "
                                    "run `lmstack prepare-data` (an interrupted run leaves no manifest)")  # fmt: skip
        if split not in manifest["splits"]:
            raise ValueError(f"split={split!r}: {out_dir} has splits {sorted(manifest['splits'])}")
        info = manifest["splits"][split]
        dtype = np.dtype(manifest["dtype"])
        path = out_dir / f"{split}.bin"
        size = path.stat().st_size if path.exists() else -1
        if size != info["tokens"] * dtype.itemsize:
            raise ValueError(f"{path}: {size} bytes, manifest says {info['tokens']} {dtype.name} tokens; "
                             "the shards are corrupted or from another run: prepare them again")  # fmt: skip
        self.manifest = manifest
        self.split = split
        self.n_bytes: int = info["bytes"]
        self.n_documents: int = info["documents"]
        self.tokens = np.memmap(path, dtype=dtype, mode="r") if size > 0 else np.zeros(0, dtype=dtype)

    def __len__(self) -> int:
        return len(self.tokens)
