"""WordPiece encoding (BERT): normalize -> split on whitespace and punctuation -> greedy longest-match-first pieces.

Follows the BERT tokenizer (Devlin et al. 2019; Google's `tokenization.py`) as Hugging Face `tokenizers` runs it
from a tokenizer.json with a `WordPiece` model, `BertNormalizer`, `BertPreTokenizer` and a `[CLS] A [SEP] B [SEP]`
template:

1. Special tokens (`[CLS]`, `[MASK]`, ...) written in the text are cut out first and map to their ids.
2. Normalize: drop NUL, U+FFFD and control characters, map whitespace to " " (clean_text); put spaces around CJK
   ideographs (each becomes its own word); strip accents (NFD, drop non-spacing marks; on by default when
   lowercasing); lowercase character by character.
3. Pre-tokenize: split on whitespace (dropped) and around every punctuation character (kept as its own word):
   "Don't stop!" -> ["don", "'", "t", "stop", "!"].
4. WordPiece: each word becomes the longest vocabulary prefix, then the longest "##"-prefixed piece of the rest,
   and so on: "unaffable" -> ["una", "##ffa", "##ble"]. A word with no segmentation, or longer than
   `max_input_chars_per_word`, becomes one [UNK].

    tok = WordPieceTokenizer.load(model_dir)           # tokenizer.json (WordPiece model)
    tok.encode("The cat sat.")                         -> [1996, 4937, 2938, 1012]
    ids, types = tok.encode_for_model("q?", "passage", max_length=256)   # [CLS] q [SEP] passage [SEP]

`decode(encode(s)) == s` does not hold (lowercasing, accents and spacing are lost); `decode` joins "##" pieces and
applies BERT's cleanup (" ." -> ".") piece by piece. Tests tie `encode` and `decode` to `tokenizers` on the real
all-MiniLM-L6-v2 tokenizer.json.
Left out: training a WordPiece vocabulary (issue 16), character offsets, `tokenize_chinese_chars` edge ranges of
newer Unicode versions, Rust-vs-Python Unicode table differences in very new code points.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

# Rust's char::is_whitespace (the Unicode White_Space property), which `tokenizers` uses; Python's str.isspace
# also counts U+001C..U+001F, which BERT treats as control characters.
WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(map(chr, range(0x2000, 0x200B)))
)
ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)  # fmt: skip
DECODE_CLEANUP = (
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
    (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
)  # fmt: skip


def is_control(c: str) -> bool:
    """BERT's control characters: Unicode category C* except tab, newline and carriage return (whitespace)."""
    return c not in "\t\n\r" and unicodedata.category(c)[0] == "C"


def is_punctuation(c: str) -> bool:
    """ASCII punctuation (including symbols like $ + < = > ^ ` | ~) or any Unicode P* character."""
    return c in ASCII_PUNCT or unicodedata.category(c)[0] == "P"


def is_cjk(c: str) -> bool:
    cp = ord(c)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def bert_normalize(
    text: str, lowercase: bool = True, strip_accents: bool | None = None, clean_text: bool = True, cjk: bool = True
) -> str:
    """BertNormalizer: clean -> space out CJK -> strip accents -> lowercase (in that order)."""
    if clean_text:
        text = "".join(
            " " if c in WHITESPACE else c for c in text if not (c == "\x00" or c == "\ufffd" or is_control(c))
        )
    if cjk:
        text = "".join(f" {c} " if is_cjk(c) else c for c in text)
    if strip_accents if strip_accents is not None else lowercase:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    if lowercase:
        text = "".join(c.lower() for c in text)  # per character, as Rust's char::to_lowercase (no final sigma)
    return text


def bert_pre_tokenize(text: str) -> list[str]:
    """Split on whitespace (removed) and around each punctuation character (isolated)."""
    words: list[str] = []
    current: list[str] = []
    for c in text:
        if c in WHITESPACE or is_punctuation(c):
            if current:
                words.append("".join(current))
                current = []
            if c not in WHITESPACE:
                words.append(c)
        else:
            current.append(c)
    if current:
        words.append("".join(current))
    return words


def wordpiece(word: str, vocab: dict[str, int], prefix: str = "##", max_chars: int = 100) -> list[str] | None:
    """Greedy longest-match-first segmentation of one word; None when it cannot be segmented (-> [UNK]).

    >>> wordpiece("unaffable", {"un": 0, "una": 1, "##ffa": 2, "##ble": 3})
    ['una', '##ffa', '##ble']
    """
    if len(word) > max_chars:
        return None
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:  # shrink from the right until a vocabulary entry matches
            piece = word[start:end] if start == 0 else prefix + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return None
        pieces.append(piece)
        start = end
    return pieces


class WordPieceTokenizer:
    """BERT's tokenizer; build with `load` (a tokenizer.json or its directory) or from a vocabulary."""

    def __init__(
        self,
        vocab: dict[str, int],
        special_tokens: list[str] | None = None,
        unk_token: str = "[UNK]",
        prefix: str = "##",
        max_chars: int = 100,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        clean_text: bool = True,
        cjk: bool = True,
    ) -> None:
        self.vocab = dict(vocab)
        self.inverse = {i: t for t, i in self.vocab.items()}
        self.unk_token, self.prefix, self.max_chars = unk_token, prefix, max_chars
        self.normalizer = dict(lowercase=lowercase, strip_accents=strip_accents, clean_text=clean_text, cjk=cjk)
        names = special_tokens if special_tokens is not None else ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        missing = [s for s in names + [unk_token] if s not in self.vocab]
        if missing:
            raise ValueError(f"special token(s) {missing} are not in the vocabulary")
        self.special_tokens = {s: self.vocab[s] for s in names}
        by_length = sorted(self.special_tokens, key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, by_length))) if by_length else None
        self._cache: dict[str, list[int]] = {}

    # ---- ids of the special tokens --------------------------------------------------------------------

    def _id(self, name: str) -> int | None:
        return self.vocab.get(name)

    @property
    def cls_id(self) -> int:
        return self.vocab["[CLS]"]

    @property
    def sep_id(self) -> int:
        return self.vocab["[SEP]"]

    @property
    def pad_id(self) -> int:
        return self.vocab.get("[PAD]", 0)

    @property
    def mask_id(self) -> int | None:
        return self._id("[MASK]")

    @property
    def unk_id(self) -> int:
        return self.vocab[self.unk_token]

    @property
    def vocab_size(self) -> int:
        return max(self.vocab.values()) + 1

    # ---- encoding -------------------------------------------------------------------------------------

    def _encode_word(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is None:
            pieces = wordpiece(word, self.vocab, self.prefix, self.max_chars)
            ids = [self.unk_id] if pieces is None else [self.vocab[p] for p in pieces]
            self._cache[word] = ids
        return ids

    def _encode_ordinary(self, text: str) -> list[int]:
        out: list[int] = []
        for word in bert_pre_tokenize(bert_normalize(text, **self.normalizer)):
            out += self._encode_word(word)
        return out

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text` (special-token text maps to its id); with `add_special_tokens`, [CLS] ... [SEP]."""
        out: list[int] = []
        start = 0
        for m in self._special_re.finditer(text) if self._special_re else ():
            out += self._encode_ordinary(text[start : m.start()])
            out.append(self.special_tokens[m.group()])
            start = m.end()
        out += self._encode_ordinary(text[start:])
        return [self.cls_id, *out, self.sep_id] if add_special_tokens else out

    def encode_batch(self, texts: list[str], add_special_tokens: bool = False) -> list[list[int]]:
        return [self.encode(t, add_special_tokens) for t in texts]

    def tokenize(self, text: str) -> list[str]:
        """The pieces of `text` as strings (for display)."""
        return [self.inverse[i] for i in self.encode(text)]

    def encode_for_model(
        self, text: str, pair: str | None = None, max_length: int = 512
    ) -> tuple[list[int], list[int]]:
        """`[CLS] text [SEP]` or `[CLS] text [SEP] pair [SEP]` within `max_length` tokens, and the token types
        (0 for the first segment, 1 for the second). Truncation removes tokens from the end of the longer segment
        one at a time (BERT's `_truncate_seq_pair`)."""
        a = self.encode(text)
        b = self.encode(pair) if pair is not None else None
        budget = max_length - (3 if b is not None else 2)
        if budget < 0:
            raise ValueError(f"max_length={max_length} leaves no room for the special tokens")
        if b is None:
            a = a[:budget]
            return [self.cls_id, *a, self.sep_id], [0] * (len(a) + 2)
        while len(a) + len(b) > budget:
            if len(a) > len(b):
                a.pop()
            else:
                b.pop()
        ids = [self.cls_id, *a, self.sep_id, *b, self.sep_id]
        return ids, [0] * (len(a) + 2) + [1] * (len(b) + 1)

    # ---- decoding -------------------------------------------------------------------------------------

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Join pieces: "##" pieces attach to the previous one, others are separated by a space; then cleanup."""
        special = set(self.special_tokens.values())
        parts: list[str] = []
        for i in ids:
            if i not in self.inverse:
                raise ValueError(f"token id {i!r} is not in this tokenizer (vocab_size={self.vocab_size})")
            if skip_special_tokens and i in special:
                continue
            piece = self.inverse[i]
            if piece.startswith(self.prefix):
                piece = piece[len(self.prefix) :]
            elif parts:
                piece = " " + piece
            for old, new in DECODE_CLEANUP:  # per piece, as `tokenizers` does: "don ' t" keeps its spaces
                piece = piece.replace(old, new)
            parts.append(piece)
        return "".join(parts)

    # ---- files ----------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> WordPieceTokenizer:
        """From a tokenizer.json with a WordPiece model (or the directory holding it)."""
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {file}")
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{file}: not valid JSON: {e}") from None
        model = doc.get("model") if isinstance(doc, dict) else None
        if not isinstance(model, dict) or model.get("type") != "WordPiece":
            got = model.get("type") if isinstance(model, dict) else None
            raise ValueError(f"{file}: model.type is {got!r}, expected 'WordPiece'")
        norm = doc.get("normalizer") or {}
        if norm and norm.get("type") != "BertNormalizer":
            raise ValueError(f"{file}: normalizer {norm.get('type')!r} is not supported (BertNormalizer)")
        pre = (doc.get("pre_tokenizer") or {}).get("type")
        if pre not in ("BertPreTokenizer", None):
            raise ValueError(f"{file}: pre_tokenizer {pre!r} is not supported (BertPreTokenizer)")
        specials = [t["content"] for t in doc.get("added_tokens") or [] if t.get("special")]
        return cls(
            model["vocab"],
            special_tokens=specials,
            unk_token=model.get("unk_token", "[UNK]"),
            prefix=model.get("continuing_subword_prefix", "##"),
            max_chars=model.get("max_input_chars_per_word", 100),
            lowercase=norm.get("lowercase", False) if norm else False,
            strip_accents=norm.get("strip_accents"),
            clean_text=norm.get("clean_text", True) if norm else False,
            cjk=norm.get("handle_chinese_chars", True) if norm else False,
        )

    def to_hf_json(self) -> dict[str, Any]:
        """The tokenizer.json document `tokenizers` loads (WordPiece model, BERT normalizer / pre-tokenizer)."""
        n = self.normalizer
        template = {
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {s: {"id": s, "ids": [self.vocab[s]], "tokens": [s]} for s in ("[CLS]", "[SEP]")},
        }  # fmt: skip
        added = [
            {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
             "special": True}
            for s, i in sorted(self.special_tokens.items(), key=lambda kv: kv[1])
        ]  # fmt: skip
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            "normalizer": {
                "type": "BertNormalizer",
                "clean_text": n["clean_text"],
                "handle_chinese_chars": n["cjk"],
                "strip_accents": n["strip_accents"],
                "lowercase": n["lowercase"],
            },
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {"type": "TemplateProcessing", **template},
            "decoder": {"type": "WordPiece", "prefix": self.prefix, "cleanup": True},
            "model": {
                "type": "WordPiece",
                "unk_token": self.unk_token,
                "continuing_subword_prefix": self.prefix,
                "max_input_chars_per_word": self.max_chars,
                "vocab": dict(sorted(self.vocab.items(), key=lambda kv: kv[1])),
            },
        }

    def save(self, directory: str | Path) -> None:
        """Write `directory/tokenizer.json` atomically."""
        from lmstack.common.atomic import atomic_write_text

        Path(directory).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(directory) / "tokenizer.json", json.dumps(self.to_hf_json(), ensure_ascii=False))

    def __repr__(self) -> str:
        return f"WordPieceTokenizer(vocab_size={self.vocab_size}, lowercase={self.normalizer['lowercase']})"
