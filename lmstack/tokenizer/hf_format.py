"""Adapter: read and write Hugging Face `tokenizer.json` (byte-level BPE) and tiktoken-style rank files.

`tokenizer.json` stores tokens as *strings*: GPT-2's byte-level trick maps each of the 256 byte values to a
printable Unicode character (printable Latin-1 bytes map to themselves, the other 68 to U+0100 onwards), so
b" hello" is written "Ġhello". The pre-tokenizer section becomes our list of split stages: `Digits` ->
`\\p{N}`, `Split(Regex, Isolated)` -> that regex, `ByteLevel(use_regex=True)` -> the GPT-2 regex.
A tiktoken rank file is one `base64(token) rank` pair per line.

Every reader names the file and the field on error. Left out: normalizers, non-byte-level models (WordPiece,
Unigram, BPE with byte_fallback or continuing-subword prefixes), post-processors (we never add BOS/EOS
implicitly; the HF post_processor, if any, is ignored on load).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex

from lmstack.tokenizer.patterns import DIGITS, GPT2


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (a bijection on 256 values)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:  # control chars, space, DEL, NBSP, soft hyphen: move above U+00FF
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


BYTE_TO_UNICODE = byte_to_unicode()
UNICODE_TO_BYTE = {c: b for b, c in BYTE_TO_UNICODE.items()}


def token_to_str(token: bytes) -> str:
    return "".join(BYTE_TO_UNICODE[b] for b in token)


def str_to_token(s: str, where: str) -> bytes:
    try:
        return bytes(UNICODE_TO_BYTE[c] for c in s)
    except KeyError as e:
        raise ValueError(f"{where}: token {s!r} has character {e.args[0]!r}, not a byte-level BPE symbol") from None


@dataclass
class TokenizerSpec:
    """Everything a Tokenizer needs, as read from disk."""

    ranks: dict[bytes, int]  # token bytes -> id (special tokens excluded)
    stages: list[str]  # split regexes, applied in order
    special_tokens: dict[str, int]  # added tokens: text -> id
    merges: list[tuple[bytes, bytes]] | None  # HF merge order (None: tiktoken ranking by token id)
    ignore_merges: bool  # HF flag: a chunk that is itself a token is emitted whole


# `X{1,3}+` ends an alternative: possessive in Python `regex`/tiktoken, but Oniguruma (HF) reads `{n,m}+` as
# "`X{n,m}` one or more times", so "123456" would stay one chunk. At the end of an alternative, possessive and
# greedy match the same text, so we drop the `+` for HF.
_INTERVAL_POSSESSIVE = regex.compile(r"(\{\d+(?:,\d*)?\})\+(?=\||$)")


def onig_compatible(pattern: str) -> str:
    """Rewrite a split regex so Oniguruma (HF `tokenizers`) splits as Python `regex` does."""
    return _INTERVAL_POSSESSIVE.sub(r"\1", pattern)


def stages_to_pre_tokenizer(stages: list[str]) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for s in stages:
        if s == DIGITS:
            steps.append({"type": "Digits", "individual_digits": True})
        else:
            pat = {"Regex": onig_compatible(s)}
            steps.append({"type": "Split", "pattern": pat, "behavior": "Isolated", "invert": False})
    steps.append({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False})
    return {"type": "Sequence", "pretokenizers": steps}


def pre_tokenizer_to_stages(pre: dict[str, Any] | None, where: str) -> list[str]:
    """The HF pre-tokenizer tree -> split stages; anything we cannot reproduce exactly is an error."""
    if pre is None:
        raise ValueError(f"{where}: pre_tokenizer is null; a byte-level BPE tokenizer needs ByteLevel")
    steps = pre["pretokenizers"] if pre.get("type") == "Sequence" else [pre]
    stages: list[str] = []
    saw_byte_level = False
    for step in steps:
        kind = step.get("type")
        if kind == "Digits":
            stages.append(DIGITS if step.get("individual_digits") else r"\p{N}+")
        elif kind == "Split":
            pat, behavior = step.get("pattern", {}), step.get("behavior")
            if behavior != "Isolated" or step.get("invert"):
                raise ValueError(f"{where}: Split behavior={behavior!r} invert={step.get('invert')} unsupported")
            stages.append(pat["Regex"] if "Regex" in pat else regex.escape(pat.get("String", "")))
        elif kind == "ByteLevel":
            if step.get("add_prefix_space"):
                raise ValueError(f"{where}: ByteLevel add_prefix_space=true is not supported")
            if step.get("use_regex", True):
                stages.append(GPT2)
            saw_byte_level = True
        else:
            raise ValueError(f"{where}: pre_tokenizer type {kind!r} is not supported (Digits, Split, ByteLevel)")
    if not saw_byte_level:
        raise ValueError(f"{where}: no ByteLevel pre-tokenizer; only byte-level BPE is supported")
    if not stages:
        raise ValueError(f"{where}: the pre-tokenizer has no split stage")
    return stages


def to_hf_json(spec: TokenizerSpec) -> dict[str, Any]:
    """The `tokenizer.json` document (format of `tokenizers` >= 0.20: merges as [a, b] pairs)."""
    vocab = {token_to_str(t): i for t, i in sorted(spec.ranks.items(), key=lambda kv: kv[1])}
    added = [
        {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
         "special": True}
        for s, i in sorted(spec.special_tokens.items(), key=lambda kv: kv[1])
    ]  # fmt: skip
    model = {
        "type": "BPE",
        "dropout": None,
        "unk_token": None,
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": False,
        "byte_fallback": False,
        "ignore_merges": spec.ignore_merges,
        "vocab": vocab,
        "merges": [[token_to_str(a), token_to_str(b)] for a, b in spec.merges or []],
    }
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": stages_to_pre_tokenizer(spec.stages),
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "model": model,
    }


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON (truncated or corrupt?): {e}") from None


def _token_id(value: Any, what: str, where: str) -> int:
    """A token id from JSON: a non-negative integer (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: {what} has id {value!r}; expected a non-negative integer")
    return value


def _check_model(model: Any, where: str) -> None:
    if not isinstance(model, dict) or model.get("type") != "BPE":
        got = model.get("type") if isinstance(model, dict) else model
        raise ValueError(f"{where}: model.type is {got!r}, expected 'BPE'")
    if model.get("byte_fallback") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise ValueError(f"{where}: byte_fallback / subword prefixes / suffixes are not byte-level BPE")
    if model.get("dropout"):
        raise ValueError(f"{where}: model.dropout={model['dropout']} (BPE-dropout) is not supported")
    for key in ("vocab", "merges"):
        if key not in model:
            raise ValueError(f"{where}: model.{key} is missing")


def read_hf_json(path: Path) -> TokenizerSpec:
    """Parse a byte-level BPE `tokenizer.json` written by us or by Hugging Face `tokenizers`."""
    doc = read_json(path)
    where = str(path)
    if not isinstance(doc, dict) or "model" not in doc:
        raise ValueError(f"{where}: no 'model' section; not a tokenizer.json")
    model = doc["model"]
    _check_model(model, where)
    if doc.get("normalizer") is not None:
        raise ValueError(f"{where}: normalizer {doc['normalizer'].get('type')!r} is not supported")
    special = {t["content"]: _token_id(t.get("id"), f"added_tokens {t.get('content')!r}", where)
               for t in doc.get("added_tokens") or []}  # fmt: skip
    vocab = {s: _token_id(i, f"model.vocab {s!r}", where) for s, i in model["vocab"].items()}
    by_id = {i: s for s, i in vocab.items()}
    for text, i in special.items():  # an added token may repeat its own vocab entry, never take another's id
        if i in by_id and by_id[i] != text:
            raise ValueError(f"{where}: added token {text!r} has id {i}, which model.vocab gives to {by_id[i]!r}")
    limit = 4 * len(set(vocab.values()) | set(special.values())) + 256
    if max([*vocab.values(), *special.values()], default=0) >= limit:
        biggest = max([*vocab.values(), *special.values()])
        raise ValueError(f"{where}: token id {biggest} is far beyond the vocabulary's {len(vocab)} entries "
                         "(ids must be dense: the embedding table would have that many rows)")  # fmt: skip
    ranks = {str_to_token(s, where): i for s, i in vocab.items() if s not in special}
    merges: list[tuple[bytes, bytes]] = []
    for n, m in enumerate(model["merges"]):
        pair = m.split(" ") if isinstance(m, str) else m
        if len(pair) != 2:
            raise ValueError(f"{where}: model.merges[{n}] = {m!r} is not a pair")
        merges.append((str_to_token(pair[0], where), str_to_token(pair[1], where)))
    stages = pre_tokenizer_to_stages(doc.get("pre_tokenizer"), where)
    return TokenizerSpec(ranks, stages, special, merges, bool(model.get("ignore_merges", False)))


def tiktoken_text(ranks: dict[bytes, int]) -> str:
    """The tiktoken rank file: `base64(token) rank` per line, by rank."""
    lines = [f"{base64.b64encode(t).decode('ascii')} {r}" for t, r in sorted(ranks.items(), key=lambda kv: kv[1])]
    return "\n".join(lines) + "\n"


def read_tiktoken_file(path: Path) -> dict[bytes, int]:
    if not path.is_file():
        raise FileNotFoundError(f"rank file not found: {path}")
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(path.read_text(encoding="ascii", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            ranks[base64.b64decode(parts[0], validate=True)] = int(parts[1])
        except (ValueError, binascii.Error):
            raise ValueError(f"{path}:{n}: expected 'base64-token rank', got {line[:80]!r}") from None
    if not ranks:
        raise ValueError(f"{path}: empty rank file")
    return ranks
