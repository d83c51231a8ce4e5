"""`UnigramTokenizer`: the SentencePiece unigram language-model tokenizer (Kudo 2018; Kudo & Richardson 2018).

Model: a list of pieces with log-probability scores. Encoding a text:
  1. normalize as SentencePiece does with the `identity` rule: every space becomes U+2581 "▁" and one "▁" is
     prepended (the "dummy prefix", so "world" at the start of a text and " world" inside it are one piece);
  2. cut before each "▁" into words (valid because no piece has "▁" anywhere but at its start; a vocabulary
     that breaks this is segmented whole) and find each word's most likely segmentation with Viterbi over the
     piece lattice (lattice.py); words repeat, so word -> ids is cached;
  3. a character no piece spells is the unknown edge: with `byte_fallback` it becomes the ids of its UTF-8
     bytes (pieces "<0x00>" .. "<0xFF>", so every string encodes and decodes back exactly), else `unk_id`
     (consecutive unknown characters fuse into one `unk_id`, as sentencepiece and HF do).
`sample_encode` draws a segmentation instead (subword regularization: P(seg) ~ exp(theta * score(seg))).
Decoding joins pieces, turns byte pieces back into bytes, "▁" into spaces, and drops the dummy prefix, so
`decode(encode(s)) == s` with byte fallback, except that a literal "▁" in `s` comes back as a space (as in
sentencepiece).

Equal, id for id, to HF `tokenizers`' `Unigram` model (as `to_hf_json` writes it) and to `sentencepiece` on the
same pieces and scores (tests/tokenizer/test_unigram.py). Special tokens follow tiktoken's allowed/disallowed
rules (special.py); sentencepiece's control pieces (<unk>, <s>, </s>) are special tokens here.
Left out: NFKC and the other sentencepiece normalization rules (identity only), whitespace collapsing
(`remove_extra_whitespaces`), treating whitespace as a suffix, n-best encoding.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from pathlib import Path

from lmstack.tokenizer.lattice import build_lattice, make_trie, sample, viterbi
from lmstack.tokenizer.special import SpecialSet, SpecialTokens
from lmstack.tokenizer.tokenizer import BOS_NAMES, CACHE_MAX, EOS_NAMES, replace_surrogates

SPACE = "\u2581"  # "▁", SentencePiece's visible space
UNK_PENALTY = 10.0  # the unknown edge scores min(piece scores) - 10, as in sentencepiece and HF tokenizers
BYTE_PIECES = [f"<0x{b:02X}>" for b in range(256)]
WORD_PATTERN = re.compile(f"{SPACE}[^{SPACE}]*|[^{SPACE}]+")  # "▁a▁▁b" -> "▁a", "▁", "▁b"


class UnigramTokenizer:
    """Pieces with scores; see the module docstring. Build with `UnigramTokenizer.train` or `load`."""

    def __init__(
        self,
        pieces: list[tuple[str, float]],
        unk_id: int = 0,
        special_tokens: dict[str, int] | None = None,
        byte_fallback: bool = True,
        config: dict | None = None,
    ) -> None:
        self.pieces = [(str(p), float(s)) for p, s in pieces]
        self.unk_id, self.byte_fallback = unk_id, byte_fallback
        self._special = SpecialTokens(special_tokens or {})
        self.special_tokens = self._special.tokens
        self.config = dict(config or {})
        if not 0 <= unk_id < len(self.pieces):
            raise ValueError(f"unk_id={unk_id} is not an id of the {len(self.pieces)} pieces")
        ids = {p: i for i, (p, _) in enumerate(self.pieces)}
        self._byte_ids = [ids.get(b, -1) for b in BYTE_PIECES]
        if byte_fallback and -1 in self._byte_ids:
            missing = BYTE_PIECES[self._byte_ids.index(-1)]
            raise ValueError(f"byte_fallback needs the 256 pieces <0x00>..<0xFF>; {missing} is missing")
        reserved = {unk_id, *self.special_tokens.values(), *(i for i in self._byte_ids if i >= 0)}
        self._vocab = {p: (i, s) for i, (p, s) in enumerate(self.pieces) if i not in reserved}  # matchable pieces
        self._trie = make_trie(self._vocab)
        self._unk_score = min((s for _, s in self._vocab.values()), default=0.0) - UNK_PENALTY
        self._split_words = not any(SPACE in p[1:] for p in self._vocab)
        self._cache: dict[str, list[int]] = {}

    # ---- construction -------------------------------------------------------------------------------------

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, **kwargs: object) -> UnigramTokenizer:
        """EM training with pruning (unigram_trainer.py); keyword arguments go to `train_unigram`."""
        from lmstack.tokenizer.unigram_trainer import train_unigram

        return train_unigram(texts, vocab_size, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path) -> UnigramTokenizer:
        """A directory with tokenizer.json (HF Unigram) or a tokenizer.json / sentencepiece .model file."""
        from lmstack.tokenizer.persist import load_tokenizer
        from lmstack.tokenizer.tokenizer import Tokenizer

        tok = load_tokenizer(Tokenizer, Path(path))
        if not isinstance(tok, cls):
            raise ValueError(f"{path}: holds a {type(tok).__name__}, not a Unigram tokenizer")
        return tok

    def save(self, directory: str | Path) -> None:
        """Write tokenizer.json (HF `tokenizers` Unigram), tokenizer_config.json and tokenizer.model
        (sentencepiece)."""
        from lmstack.tokenizer.unigram_format import save_unigram

        save_unigram(self, Path(directory))

    # ---- encoding ---------------------------------------------------------------------------------------

    def normalize(self, text: str) -> str:
        """sentencepiece `identity` normalization with the dummy prefix: "a b" -> "▁a▁b"; "" stays ""."""
        return SPACE + text.replace(" ", SPACE) if text else ""

    def _words(self, normalized: str) -> list[str]:
        return WORD_PATTERN.findall(normalized) if self._split_words else [normalized] if normalized else []

    def _edges_to_ids(self, word: str, path: list[tuple[int, int, float]]) -> list[int]:
        """Lattice edges -> ids: unknown edges become byte ids (byte_fallback) or one fused unk id per run."""
        out: list[int] = []
        for k, (s, i, _) in enumerate(path):
            if i >= 0:
                out.append(i)
            elif self.byte_fallback:
                out += [self._byte_ids[b] for b in word[s].encode("utf-8")]
            elif not (k and path[k - 1][1] < 0):  # fuse a run of unknown characters
                out.append(self.unk_id)
        return out

    def _encode_word(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is None:
            ids = self._edges_to_ids(word, viterbi(build_lattice(word, self._trie, self._unk_score)))
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[word] = ids
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode treating special-token text as ordinary text (Viterbi: the most likely segmentation)."""
        text = replace_surrogates(text) if not text.isascii() else text
        out: list[int] = []
        for word in self._words(self.normalize(text)):
            out += self._encode_word(word)
        return out

    def encode(
        self, text: str, allowed_special: SpecialSet = frozenset(), disallowed_special: SpecialSet = "all"
    ) -> list[int]:
        """tiktoken semantics for special tokens (special.py); each ordinary segment gets its own dummy prefix,
        as HF `tokenizers` normalizes the text between added tokens."""
        allowed, disallowed = self._special.resolve(allowed_special, disallowed_special)
        self._special.check_disallowed(text, disallowed)
        if not allowed:
            return self.encode_ordinary(text)
        out: list[int] = []
        for k, segment in enumerate(self._special.split(text, allowed)):
            if k % 2:
                out.append(self.special_tokens[segment])
            elif segment:
                out += self.encode_ordinary(segment)
        return out

    def sample_encode(self, text: str, theta: float = 1.0, seed: int | random.Random = 0) -> list[int]:
        """Subword regularization: a segmentation drawn with P(seg) ~ exp(theta * score(seg)) per word
        (theta -> infinity gives Viterbi, theta = 0 every segmentation equally likely)."""
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        out: list[int] = []
        for word in self._words(self.normalize(replace_surrogates(text))):
            edges = build_lattice(word, self._trie, self._unk_score)
            out += self._edges_to_ids(word, sample(edges, theta, rng))
        return out

    def encode_batch(
        self,
        texts: list[str],
        num_workers: int | None = None,
        allowed_special: SpecialSet = frozenset(),
        disallowed_special: SpecialSet = "all",
    ) -> list[list[int]]:
        """Encode many texts (one process: the word cache makes repeated words free)."""
        return [self.encode(t, allowed_special, disallowed_special) for t in texts]

    # ---- decoding ---------------------------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Ids -> UTF-8 bytes with "▁" as a space, dummy prefix kept (what streaming decoders concatenate)."""
        out = bytearray()
        specials = {i: s for s, i in self.special_tokens.items()}
        byte_of = {i: b for b, i in enumerate(self._byte_ids) if i >= 0}
        for i in ids:
            if not isinstance(i, int) or not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i!r} is not in this tokenizer (vocab_size={self.vocab_size})")
            if i in byte_of:
                out.append(byte_of[i])
            elif i in specials:
                out += specials[i].encode("utf-8")
            elif i == self.unk_id:
                out += " \u2047 ".encode()  # sentencepiece's default surface for <unk>: " ⁇ "
            else:
                out += self.pieces[i][0].replace(SPACE, " ").encode("utf-8")
        return bytes(out)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text, the dummy prefix's space removed; invalid UTF-8 from byte pieces becomes U+FFFD."""
        text = self.decode_bytes(list(ids)).decode("utf-8", errors="replace")
        return text[1:] if text.startswith(" ") else text

    def id_to_piece(self, i: int) -> str:
        return self.pieces[i][0]

    def id_to_bytes(self, i: int) -> bytes:
        return self.decode_bytes([i])

    # ---- vocabulary -------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def _named_id(self, key: str, fallbacks: tuple[str, ...]) -> int | None:
        name = self.config.get(key)
        name = name.get("content") if isinstance(name, dict) else name
        if name in self.special_tokens:
            return self.special_tokens[name]
        return next((self.special_tokens[n] for n in fallbacks if n in self.special_tokens), None)

    @property
    def eos_id(self) -> int | None:
        return self._named_id("eos_token", EOS_NAMES)

    @property
    def bos_id(self) -> int | None:
        return self._named_id("bos_token", BOS_NAMES)

    @property
    def pad_id(self) -> int | None:
        return self._named_id("pad_token", ("<pad>",))

    def __repr__(self) -> str:
        return f"UnigramTokenizer(vocab_size={self.vocab_size}, byte_fallback={self.byte_fallback})"
