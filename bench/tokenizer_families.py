"""Benchmark: byte-level BPE vs WordPiece vs Unigram at the same vocabulary size, trained on the same corpus.

Claim (issue 16): a comparison of the three tokenizer families on the embedded corpora: compression (bytes/token)
and fertility (tokens per word) on held-out English, fertility and [UNK] rate on non-English text, training time.
Method: each family trains on the first TRAIN_CHARS characters (1 MB) of the Shakespeare training split at VOCAB
tokens with lmstack's trainers (BPE: byte-level, GPT-4 split; WordPiece: BERT normalization + likelihood merges,
twice: the default count-weighted likelihood gain and the unweighted "pmi" score; Unigram: EM + pruning, byte
fallback). English: the Shakespeare validation split. Non-English: the translated message catalogs (gettext .mo
files) that Debian ships under /usr/share/locale for de, fr, es, ru, ja and zh_CN (the messages of grep, sed, vim,
...), read with the standard library's `gettext`; words = whitespace-separated (for ja / zh, which do not separate
words, tokens per character is shown instead). One process, one run per family (training times are single runs
on a shared 2-core machine: +-20%).
Run: `OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/tokenizer_families.py [--quick]`; writes docs/benchmarks.md
(section "tokenizer_families").
"""

from __future__ import annotations

import gettext
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import table, write_section  # noqa: E402
from lmstack.data.corpus import load_corpus  # noqa: E402
from lmstack.tokenizer import Tokenizer  # noqa: E402
from lmstack.tokenizer.unigram import UnigramTokenizer  # noqa: E402
from lmstack.tokenizer.wordpiece import WordPieceTokenizer, bert_normalize, bert_pre_tokenize  # noqa: E402
from lmstack.tokenizer.wordpiece_trainer import BERT_SPECIALS, train_wordpiece  # noqa: E402

QUICK = "--quick" in sys.argv
VOCAB = 4096
TRAIN_CHARS = 1_000_000  # the pure-Python Unigram EM is the slow one: ~1 min per MB on a quiet core
LANGS = ("de", "fr", "es", "ru", "ja", "zh_CN")
SPACELESS = ("ja", "zh_CN")


def catalog_texts(lang: str, limit: int = 3000) -> list[str]:
    """Translated messages of every gettext catalog shipped for `lang` (deduplicated, format codes kept)."""
    seen: dict[str, None] = {}
    for root in (Path("/usr/share/locale") / lang / "LC_MESSAGES", Path("/usr/share/vim/vim90/lang") / lang):
        for mo in sorted(root.rglob("*.mo")):
            try:
                with mo.open("rb") as f:
                    cat = gettext.GNUTranslations(f)._catalog  # msgid -> msgstr
            except (OSError, UnicodeDecodeError, ValueError):
                continue
            for key, value in cat.items():
                if key and isinstance(value, str) and value.strip():
                    seen.setdefault(value.strip(), None)
    return list(seen)[:limit]


def encode_all(tok: object, texts: list[str]) -> list[list[int]]:
    if isinstance(tok, WordPieceTokenizer):
        return [tok.encode(t) for t in texts]
    return [tok.encode(t, disallowed_special=()) for t in texts]  # type: ignore[attr-defined]


def train_all(docs: list[str]) -> dict[str, tuple[object, float]]:
    out = {}
    t0 = time.perf_counter()
    out["byte-level BPE"] = (Tokenizer.train(docs, VOCAB, "gpt4", ["<|endoftext|>"], show_progress=False),)
    out["byte-level BPE"] += (time.perf_counter() - t0,)
    for score in ("likelihood", "pmi"):
        t0 = time.perf_counter()
        words = Counter(w for d in docs for w in bert_pre_tokenize(bert_normalize(d)))
        vocab = train_wordpiece(words, VOCAB, BERT_SPECIALS, show_progress=False, score=score)
        tok = WordPieceTokenizer({p: i for i, p in enumerate(vocab)})
        out[f"WordPiece ({score})"] = (tok, time.perf_counter() - t0)
    t0 = time.perf_counter()
    out["Unigram"] = (UnigramTokenizer.train(docs, VOCAB, special_tokens=["<|endoftext|>"], show_progress=False),)
    out["Unigram"] += (time.perf_counter() - t0,)
    return out


def main() -> None:
    text = "".join(load_corpus("shakespeare", "train"))[:TRAIN_CHARS]
    docs = [text[i : i + 50_000] for i in range(0, len(text), 50_000)]
    val = load_corpus("shakespeare", "val")
    if QUICK:
        docs, val = docs[:4], val[:1]
    foreign = {lang: catalog_texts(lang) for lang in LANGS}
    toks = train_all(docs)
    rows = []
    for name, (tok, seconds) in toks.items():
        ids = encode_all(tok, val)
        n_tok = sum(map(len, ids))
        n_bytes = sum(len(t.encode()) for t in val)
        n_words = sum(len(t.split()) for t in val)
        row: list[object] = [name, tok.vocab_size, round(seconds, 1), n_bytes / n_tok, n_tok / n_words]
        unk = getattr(tok, "unk_id", None) if isinstance(tok, WordPieceTokenizer) else None
        n_unk = 0
        for lang in LANGS:
            texts = foreign[lang]
            enc = encode_all(tok, texts)
            n = sum(map(len, enc))
            units = sum(len(t) for t in texts) if lang in SPACELESS else sum(len(t.split()) for t in texts)
            row.append(n / max(units, 1))
            n_unk += sum(i == unk for e in enc for i in e) if unk is not None else 0
        total = sum(len(e) for lang in LANGS for e in encode_all(tok, foreign[lang]))
        row.append(f"{n_unk / total:.1%}")
        rows.append(row)
        print(row, flush=True)
    head = ["tokenizer", "vocab", "train s", "bytes/token (en)", "tokens/word (en)"]
    head += [f"tokens/{'char' if lang in SPACELESS else 'word'} ({lang})" for lang in LANGS] + ["[UNK] share (non-en)"]
    sizes = ", ".join(f"{lang} {len(foreign[lang])}" for lang in LANGS)
    body = (
        f"Trained on the first {sum(len(d.encode()) for d in docs) / 1e6:.1f} MB of the Shakespeare training split "
        f"at {VOCAB} tokens each; English = its validation split; non-English = translated message catalogs under "
        f"/usr/share/locale (messages: {sizes}). Higher bytes/token and lower tokens/word are better.\n\n"
        + table(head, rows)
    )
    write_section("tokenizer_families", body)
    print(body)


if __name__ == "__main__":
    main()
