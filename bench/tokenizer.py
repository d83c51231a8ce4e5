"""Benchmark: BPE training time and encode throughput of lmstack's tokenizer, beside its anchors.

Claims (issue 3): training a 4,096-token vocabulary on the Shakespeare corpus (5 MB) within 3x of Hugging Face
`tokenizers`' Rust BpeTrainer and >= 100x faster than recounting all pairs after every merge (what minbpe
does); encode >= 0.5x tiktoken's single-thread throughput from the same ranks, with identical ids.

Method: one process; the compared runs alternate (ours, anchor, ours, anchor, ...), median of REPEATS. The
recount-per-merge trainer (written here, as in minbpe: all chunks, one pass per merge) is timed for its first
RECOUNT_MERGES merges and extrapolated linearly to 3,840 merges; a merge costs time proportional to the ids
left, which fall from 5.06M bytes to ~1.5M tokens, so this overstates its time by at most ~3.4x. Encode: our
`encode_ordinary` with an empty chunk cache ("cold", the first pass over a text) and with the cache filled by
a previous pass ("warm"), and `encode_batch` (processes) vs tiktoken's `encode_ordinary` /
`encode_ordinary_batch` (threads); encode ratios are medians of per-round ratios (see bench_encode). Peak
memory: the high-water RSS of a fresh subprocess during training minus its RSS after loading the corpus.
Run: `OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/tokenizer.py [--quick]`; writes docs/benchmarks.md.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import table, write_section  # noqa: E402
from lmstack.data.corpus import load_corpus  # noqa: E402
from lmstack.tokenizer import Tokenizer  # noqa: E402
from lmstack.tokenizer.hf_format import onig_compatible  # noqa: E402
from lmstack.tokenizer.patterns import GPT4, make_splitter  # noqa: E402
from lmstack.tokenizer.references import cl100k  # noqa: E402
from lmstack.tokenizer.trainer import merge_word  # noqa: E402

T = TypeVar("T")
VOCAB = 4096
THREADS = 2
QUICK = "--quick" in sys.argv
REPEATS = 1 if QUICK else 3
ENCODE_REPEATS = 1 if QUICK else 7
RECOUNT_MERGES = 3 if QUICK else 10


def timed(fn: Callable[..., T], *args: object) -> tuple[float, T]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def train_ours(texts: list[str]) -> Tokenizer:
    return Tokenizer.train(texts, VOCAB, "gpt4", show_progress=False)


def train_hf(texts: list[str]) -> "tokenizers.Tokenizer":  # noqa: F821
    from tokenizers import Regex, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(onig_compatible(GPT4)), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    hf.train_from_iterator(texts, trainer)
    return hf


def recount_per_merge(texts: list[str], merges: int) -> tuple[float, float]:
    """minbpe's loop: every chunk as an id list; each merge recounts all pairs, then rewrites all chunks.
    Returns (set-up seconds, seconds per merge over the first `merges`)."""
    start = time.perf_counter()
    split = make_splitter([GPT4])
    chunks = [list(c.encode("utf-8")) for t in texts for c in split(t)]
    setup = time.perf_counter() - start
    start = time.perf_counter()
    for k in range(merges):
        stats: dict[tuple[int, int], int] = {}
        for ids in chunks:
            for pair in zip(ids, ids[1:]):
                stats[pair] = stats.get(pair, 0) + 1
        a, b = max(stats, key=stats.get)
        chunks = [merge_word(ids, a, b, 256 + k) for ids in chunks]
    return setup, (time.perf_counter() - start) / merges


def peak_rss_mb(which: str, corpora: tuple[str, ...] = ("shakespeare",)) -> float:
    """Peak RSS growth (MB) of a fresh process while it trains `which`: the kernel's high-water mark (VmHWM),
    reset after the corpus is loaded (write 5 to /proc/self/clear_refs), minus the RSS at that moment."""
    code = f"""
import gc, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from bench.tokenizer import load_text, train_hf, train_ours
def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))
texts = load_text({corpora!r})
gc.collect()
open("/proc/self/clear_refs", "w").write("5")
rss = status("VmRSS:")
{"train_ours" if which == "ours" else "train_hf"}(texts)
print((status("VmHWM:") - rss) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def load_text(corpora: tuple[str, ...] = ("shakespeare",)) -> list[str]:
    return [doc for name in corpora for doc in load_corpus(name)]


def mixed_script_text() -> tuple[str, list[str]]:
    """Non-ASCII text (the split cannot take the ASCII fast path): 20,000 random picks of the 9 SENTENCES."""
    import random

    rng = random.Random(0)
    docs = [" ".join(rng.choice(list(SENTENCES.values())) for _ in range(500)) for _ in range(40)]
    return " ".join(docs), docs


def bench_training(texts: list[str]) -> tuple[str, dict]:
    ours_s, hf_s = [], []
    for _ in range(REPEATS):
        t, ours = timed(train_ours, texts)
        ours_s.append(t)
        t, hf = timed(train_hf, texts)
        hf_s.append(t)
    setup, per_merge = recount_per_merge(texts, RECOUNT_MERGES)
    recount = setup + per_merge * (VOCAB - 256)
    n_ours = sum(len(ours.encode_ordinary(t)) for t in texts)
    n_hf = sum(len(e.ids) for e in hf.encode_batch(texts, add_special_tokens=False))
    n_bytes = sum(len(t.encode()) for t in texts)
    mem = {"ours": peak_rss_mb("ours"), "hf": peak_rss_mb("hf")}
    o, h = statistics.median(ours_s), statistics.median(hf_s)
    rows = [
        ["lmstack (incremental counts + heap)", o, 1.0, n_bytes / n_ours, mem["ours"]],
        ["HF tokenizers BpeTrainer (Rust)", h, h / o, n_bytes / n_hf, mem["hf"]],
        [f"recount per merge (minbpe-style; {RECOUNT_MERGES} merges timed, extrapolated, <= 3.4x high)", recount,
         recount / o, "-", "-"],
    ]  # fmt: skip
    md = table(["trainer", "seconds", "time / ours", "bytes/token", "peak RSS growth (MB)"], rows)
    return md, {"ours_s": o, "hf_s": h, "recount_s": recount, "mem": mem}


def bench_encode(name: str, tok: Tokenizer, text: str, docs: list[str]) -> list[list[object]]:
    """MB/s (median) and speed relative to tiktoken 1 thread: the median of the per-round ratios, each round
    timing every encoder back to back, so load changes between rounds cancel."""
    import tiktoken

    ref = tiktoken.Encoding(name, pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks, special_tokens={})
    mb = len(text.encode()) / 1e6
    keys = ("cold", "warm", "tik", "batch", "batch_warm", "tik_batch")
    times: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(ENCODE_REPEATS):
        tok._cache.clear()
        t, ours = timed(tok.encode_ordinary, text)
        times["cold"].append(t)
        times["warm"].append(timed(tok.encode_ordinary, text)[0])
        t, theirs = timed(ref.encode_ordinary, text)
        times["tik"].append(t)
        assert ours == theirs, f"{name}: ids differ from tiktoken"
        tok._cache.clear()
        t, batch = timed(tok.encode_batch, docs, THREADS)
        times["batch"].append(t)
        tok.encode_ordinary(text)  # a full cache (the cold batch left only the caller's chunks in it)
        times["batch_warm"].append(timed(tok.encode_batch, docs, THREADS)[0])
        times["tik_batch"].append(timed(lambda: ref.encode_ordinary_batch(docs, num_threads=THREADS))[0])
        assert batch == ref.encode_ordinary_batch(docs, num_threads=THREADS), f"{name}: batch ids differ"
        del ours, theirs, batch

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    def row(key: str, label: str, single: str | None = None) -> list[object]:
        return [
            name,
            label,
            mb / statistics.median(times[key]),
            ratio("tik", key),
            ratio(single, key) if single else "-",
        ]

    return [
        row("cold", "ours encode_ordinary, cold cache"),
        row("warm", "ours encode_ordinary, warm cache"),
        row("tik", "tiktoken encode_ordinary (1 thread)"),
        row("batch", f"ours encode_batch ({THREADS} processes, cold cache)", "cold"),
        row("batch_warm", f"ours encode_batch ({THREADS} processes, warm cache)", "warm"),
        row("tik_batch", f"tiktoken encode_ordinary_batch ({THREADS} threads)", "tik"),
    ]


def bench_scaling() -> str:
    """Time and peak memory of our trainer on the largest corpora cached here, to extrapolate to 100 MB."""
    rows = []
    for corpora in (("shakespeare",), ("shakespeare", "kjv", "austen", "mobydick", "pydocs")):
        try:
            texts = load_text(corpora)
        except (ValueError, FileNotFoundError) as e:
            rows.append([" + ".join(corpora), f"unavailable: {e}", "-", "-"])
            continue
        mb = sum(len(t.encode()) for t in texts) / 1e6
        seconds = timed(train_ours, texts)[0]
        rows.append([" + ".join(corpora), f"{mb:.1f}", seconds, peak_rss_mb("ours", corpora)])
    return table(["corpus", "MB", f"train {VOCAB} (s)", "peak RSS growth (MB)"], rows)


def main() -> None:
    texts = load_text()
    n_mb = sum(len(t.encode()) for t in texts) / 1e6
    train_md, res = bench_training(texts)
    ours = train_ours(texts)
    text = "".join(texts)
    rows = bench_encode("ours-4096", ours, text, texts) + bench_encode("cl100k", cl100k(), text, texts)
    rows += bench_encode("cl100k, mixed scripts", cl100k(), *mixed_script_text())
    enc_md = table(["ranks", "encoder", "MB/s", "speed vs tiktoken 1 thread", "batch vs 1 process, same cache"], rows)
    scale_md = bench_scaling()
    body = f"""### Tokenizer (`bench/tokenizer.py`)

Training a {VOCAB}-token byte-level BPE (GPT-4 split regex, no special tokens) on the Shakespeare corpus
({n_mb:.2f} MB, 42 documents); median of {REPEATS} interleaved runs. Targets: within 3x of HF (ratio >= 0.33)
and >= 100x faster than recount-per-merge.

{train_md}

Encoding the same {n_mb:.2f} MB with our trained ranks and with cl100k_base, and 1.6 MB of mixed-script text
(English, French, German, Russian, Arabic, Hindi, Chinese, Japanese, code) with cl100k_base; ids identical to
tiktoken built from the same ranks and pattern (asserted in every run). {ENCODE_REPEATS} rounds, each timing
every encoder back to back; the speed column is the median of the per-round ratios. Target: >= 0.5x tiktoken
single-thread.

{enc_md}

Scaling of our trainer (memory is O(distinct chunks), which grows sub-linearly with the text):

{scale_md}

Ratios from interleaved runs are the claim; absolute times move with the machine's load (tiktoken's own 2-thread
scaling, last column of its row, shows how much of a second core a run had). What limits us: with a warm chunk
cache, encoding is the regex split plus one dict lookup per chunk; Shakespeare is pure ASCII, so the split runs on
the stdlib `re` twin of the pattern (~2x faster than the `regex` module), which is how a warm encode passes
tiktoken. Non-ASCII text uses `regex` (the mixed-script rows). A cold cache adds the Python merge loop once per
distinct chunk (~38k in Shakespeare). `encode_batch` forks one worker; it and the caller take texts, longest
first, from a shared counter, and the worker sends each text's ids as raw int32 bytes
(lmstack/tokenizer/batch.py). The last column compares it with one process starting from the same cache: cold,
both merge as they go (the worker merges the chunks of its texts again, ~1.4x the merge work in all); warm, the
worker inherits the caller's full cache by fork. What 2 cores cannot give back: two busy cores run this code ~15 %
slower each than one alone (a plain Python loop too); the caller turns the worker's ids into Python ints (~40 ms
per 2.5 MB of text); and the worker repacks each inherited cache entry once. Garbage collection is off in both
processes while the batch runs: a full collection in either touches every object they share since the fork, and
the copy-on-write faults made every other round ~40 % slower (rounds alternated 1.85x / 1.16x before). tiktoken's
2-thread batch runs Rust threads that share one cache and release the GIL.
Training (quiet moment, 1 thread): splitting + counting 5 MB takes 0.3 s, the 3,840 incremental merges over
the 37,714 distinct chunks ~1.3 s (0.34 ms per merge, pure Python).
"""
    print(body)
    if not QUICK:
        write_section("tokenizer", body)


# ---- pitfalls (docs/tokenizer.md): `python bench/tokenizer.py --pitfalls DIR` prints these tables -------------

SENTENCES = {  # one sentence, translated; bytes/token shows what each script costs
    "English": "The weather is nice today, so I would like to take a walk in the park.",
    "French": "Il fait beau aujourd'hui, alors j'aimerais me promener dans le parc.",
    "German": "Heute ist schönes Wetter, deshalb möchte ich im Park spazieren gehen.",
    "Russian": "Сегодня хорошая погода, поэтому я хотел бы погулять в парке.",
    "Arabic": "الطقس جميل اليوم، لذلك أود أن أتمشى في الحديقة.",
    "Hindi": "आज मौसम अच्छा है, इसलिए मैं पार्क में टहलना चाहूँगा।",
    "Chinese": "今天天气很好，所以我想去公园散步。",
    "Japanese": "今日は天気がいいので、公園を散歩したいです。",
    "Python code": "def mean(xs: list[float]) -> float:\n    return sum(xs) / len(xs)\n",
}
NUMBERS = ["7", "42", "1000", "10000", "123456789", "3.14159", "1,000,000", "2026-11-25", "12 + 30 = 42"]


def pitfalls(directory: str) -> str:
    from lmstack.tokenizer.references import gpt2, o200k
    from lmstack.tokenizer.stats import pieces_line

    toks = {"ours": Tokenizer.load(directory), "gpt2": gpt2(), "cl100k": cl100k(), "o200k": o200k()}
    rows = []
    for lang, text in SENTENCES.items():
        n = len(text.encode())
        rows.append([lang, len(text), n, *[f"{len(t.encode_ordinary(text))} ({n / len(t.encode_ordinary(text)):.2f})"
                                          for t in toks.values()]])  # fmt: skip
    lang_md = table(["text", "chars", "UTF-8 bytes", *[f"{k} tokens (bytes/token)" for k in toks]], rows)
    num_rows = [[f"`{s}`", *[f"`{pieces_line(t, s)}`" for t in toks.values()]] for s in NUMBERS]
    num_md = table(["number", *toks], num_rows)
    return f"{lang_md}\n\n{num_md}\n"


if __name__ == "__main__":
    if "--pitfalls" in sys.argv:
        print(pitfalls(sys.argv[sys.argv.index("--pitfalls") + 1]))
    else:
        main()
