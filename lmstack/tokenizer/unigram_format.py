"""Adapter: a `UnigramTokenizer` as files: HF `tokenizer.json` (model "Unigram") and sentencepiece `.model`.

tokenizer.json reproduces our normalization with HF's own blocks: normalizer `Prepend("▁")` + `Replace(" ",
"▁")` (sentencepiece's identity rule with the dummy prefix), no pre-tokenizer (Viterbi over the whole string,
as sentencepiece does), model `Unigram(vocab=[[piece, score], ...], unk_id, byte_fallback)`, and the decoder
`Replace("▁", " ")`, `ByteFallback`, `Fuse`, `Strip(1 leading space)`. Special tokens are `added_tokens`.

A sentencepiece model file is a protobuf `ModelProto` (sentencepiece_model.proto): repeated field 1 = pieces
{1: piece, 2: score (float32), 3: type (1 normal, 2 unknown, 3 control, 6 byte)}, field 2 = TrainerSpec (3:
model_type, 1 = unigram; 35: byte_fallback), field 3 = NormalizerSpec (1: name, 3: add_dummy_prefix,
4: remove_extra_whitespaces). The few lines of protobuf wire format needed (varints, length-delimited bytes,
32-bit floats) are written out below; no protobuf dependency. Reading accepts only what our tokenizer
reproduces exactly (unigram, identity normalization, no whitespace collapsing) and names anything else.
Left out: user-defined pieces, the nmt_nfkc normalization tables, BPE-type sentencepiece models.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from lmstack.common.atomic import atomic_write_bytes, atomic_write_text
from lmstack.tokenizer.unigram import BYTE_PIECES, SPACE, UnigramTokenizer

NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6  # sentencepiece piece types


# ---- HF tokenizer.json ---------------------------------------------------------------------------------------


def to_hf_json(tok: UnigramTokenizer) -> dict[str, Any]:
    """The `tokenizer.json` document `tokenizers.Tokenizer.from_str` reads back with identical ids."""
    unk = tok.pieces[tok.unk_id][0]
    specials = {unk: tok.unk_id, **tok.special_tokens}
    added = [
        {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True}
        for s, i in sorted(specials.items(), key=lambda kv: kv[1])
    ]  # fmt: skip
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Prepend", "prepend": SPACE},
                {"type": "Replace", "pattern": {"String": " "}, "content": SPACE},
            ],
        },
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ],
        },
        "model": {
            "type": "Unigram",
            "unk_id": tok.unk_id,
            "vocab": [[p, s] for p, s in tok.pieces],
            "byte_fallback": tok.byte_fallback,
        },
    }


def from_hf_json(doc: dict[str, Any], where: str, config: dict | None = None) -> UnigramTokenizer:
    """A Unigram `tokenizer.json` (ours, or HF's with the same normalizer) -> UnigramTokenizer."""
    model = doc.get("model") or {}
    if model.get("type") != "Unigram":
        raise ValueError(f"{where}: model.type is {model.get('type')!r}, expected 'Unigram'")
    if doc.get("pre_tokenizer") is not None and doc["pre_tokenizer"].get("type") != "Metaspace":
        raise ValueError(f"{where}: pre_tokenizer {doc['pre_tokenizer'].get('type')!r} is not supported")
    pieces = [(p, float(s)) for p, s in model["vocab"]]
    unk_id = model.get("unk_id")
    if unk_id is None:
        raise ValueError(f"{where}: model.unk_id is null; a Unigram tokenizer here needs an unknown piece")
    special = {t["content"]: int(t["id"]) for t in doc.get("added_tokens") or [] if int(t["id"]) != unk_id}
    return UnigramTokenizer(pieces, unk_id, special, bool(model.get("byte_fallback")), config)


def unigram_config(tok: UnigramTokenizer) -> dict[str, Any]:
    """tokenizer_config.json: the special tokens' roles, for `transformers.AutoTokenizer`."""
    cfg = dict(tok.config)
    names = {v: k for k, v in tok.special_tokens.items()}
    cfg.update(
        tokenizer_class="PreTrainedTokenizerFast",
        unk_token=tok.pieces[tok.unk_id][0],
        eos_token=names.get(tok.eos_id),
        bos_token=names.get(tok.bos_id),
        pad_token=names.get(tok.pad_id),
        clean_up_tokenization_spaces=False,
    )
    return cfg


# ---- sentencepiece .model (protobuf) ---------------------------------------------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32/int64 are written as 10-byte two's complement, as protobuf does
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, value: int | float | bytes | str) -> bytes:
    """One protobuf field: int -> varint (wire type 0), float -> fixed32 (5), bytes/str -> length-delimited (2)."""
    if isinstance(value, float):
        return _varint(number << 3 | 5) + struct.pack("<f", value)
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode("utf-8") if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _parse(data: bytes) -> list[tuple[int, Any]]:
    """A protobuf message -> [(field number, int | float | bytes)] in order (64-bit fields kept as bytes)."""
    out, i = [], 0

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            b = data[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value: Any = varint()
        elif wire == 2:
            n = varint()
            value, i = data[i : i + n], i + n
        elif wire == 5:
            value, i = struct.unpack("<f", data[i : i + 4])[0], i + 4
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        else:
            raise ValueError(f"protobuf wire type {wire} at byte {i} is not supported")
        out.append((number, value))
    return out


def to_sentencepiece(tok: UnigramTokenizer) -> bytes:
    """The `ModelProto` bytes `sentencepiece.SentencePieceProcessor(model_proto=...)` loads."""
    kinds = {tok.unk_id: UNKNOWN, **{i: CONTROL for i in tok.special_tokens.values()}}
    if tok.byte_fallback:
        kinds.update({i: BYTE for i, (p, _) in enumerate(tok.pieces) if p in BYTE_PIECES})
    out = bytearray()
    for i, (piece, score) in enumerate(tok.pieces):
        body = _field(1, piece) + _field(2, float(score))
        body += _field(3, kinds[i]) if i in kinds else b""
        out += _field(1, body)
    roles = {40: tok.unk_id, 41: tok.bos_id, 42: tok.eos_id, 43: tok.pad_id}  # TrainerSpec unk/bos/eos/pad ids
    trainer = _field(3, 1) + _field(35, int(tok.byte_fallback))
    trainer += b"".join(_field(f, -1 if i is None else i) for f, i in roles.items())
    out += _field(2, trainer)
    out += _field(3, _field(1, "identity") + _field(2, b"") + _field(3, 1) + _field(4, 0) + _field(5, 1))
    return bytes(out)


def from_sentencepiece(data: bytes, where: str) -> UnigramTokenizer:
    """A sentencepiece unigram model with identity normalization -> UnigramTokenizer (control pieces become
    special tokens)."""
    fields = _parse(data)
    trainer = dict(_parse(next((v for n, v in fields if n == 2), b"")))
    norm = dict(_parse(next((v for n, v in fields if n == 3), b"")))
    if trainer.get(3, 1) != 1:
        raise ValueError(f"{where}: model_type {trainer[3]} is not unigram (1)")
    name = norm.get(1, b"nmt_nfkc").decode()
    if name != "identity" or norm.get(4, 1) or not norm.get(3, 1) or not norm.get(5, 1):
        raise ValueError(
            f"{where}: normalization {name!r} (remove_extra_whitespaces={norm.get(4, 1)}) is not supported; "
            "train with normalization_rule_name=identity, remove_extra_whitespaces=false"
        )
    pieces, special, unk_id = [], {}, None
    for i, (_, body) in enumerate((n, v) for n, v in fields if n == 1):
        p = dict(_parse(body))
        piece, kind = p[1].decode("utf-8"), p.get(3, NORMAL)
        pieces.append((piece, float(p.get(2, 0.0))))
        if kind == UNKNOWN:
            unk_id = i
        elif kind == CONTROL:
            special[piece] = i
        elif kind not in (NORMAL, BYTE):
            raise ValueError(f"{where}: piece {piece!r} has type {kind} (user-defined/unused not supported)")
    if unk_id is None:
        raise ValueError(f"{where}: no unknown piece")
    return UnigramTokenizer(pieces, unk_id, special, bool(trainer.get(35, 0)))


# ---- a directory -------------------------------------------------------------------------------------------


def save_unigram(tok: UnigramTokenizer, directory: Path) -> None:
    """tokenizer.json + tokenizer_config.json + tokenizer.model, each written atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / "tokenizer.json", json.dumps(to_hf_json(tok), ensure_ascii=False, indent=1) + "\n")
    cfg = json.dumps(unigram_config(tok), ensure_ascii=False, indent=2) + "\n"
    atomic_write_text(directory / "tokenizer_config.json", cfg)
    atomic_write_bytes(directory / "tokenizer.model", to_sentencepiece(tok))


def load_unigram(path: Path, config: dict | None = None) -> UnigramTokenizer:
    """A tokenizer.json (HF Unigram) or a sentencepiece .model file."""
    if path.suffix == ".model":
        return from_sentencepiece(path.read_bytes(), str(path))
    from lmstack.tokenizer.hf_format import read_json

    return from_hf_json(read_json(path), str(path), config)
