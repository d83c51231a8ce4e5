"""Save and load a Tokenizer directory: the files a Hugging Face model directory expects, plus tiktoken ranks.

    tokenizer.json          HF `tokenizers` format (vocab, merges, pre-tokenizer, added tokens): loads in
                            `tokenizers.Tokenizer.from_file` and `transformers.PreTrainedTokenizerFast`
    tokenizer_config.json   chat_template (ChatML), eos/bos token names, tokenizer_class
    tokenizer.tiktoken      `base64(token) rank` per line: the exact tiktoken model (ranks = ids)

For our tokenizers the `merges` written to tokenizer.json are every split (a, b) of every token, ordered by
the token's rank (bpe.splits_of_vocab), with `ignore_merges: true`; HF's merge-ranked BPE then reproduces
tiktoken's token-ranked BPE. On load, a directory with tokenizer.tiktoken is read as ranks (tiktoken
semantics); a tokenizer.json alone is read with its own merge list (HF semantics). Each file is written
atomically; other files in the directory (a model checkpoint) are left alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from lmstack.common.atomic import atomic_write_text
from lmstack.tokenizer.bpe import splits_of_vocab
from lmstack.tokenizer.chat import CHATML_TEMPLATE, IM_END, IM_START
from lmstack.tokenizer.hf_format import (
    TokenizerSpec,
    read_hf_json,
    read_json,
    read_tiktoken_file,
    tiktoken_text,
    to_hf_json,
)

if TYPE_CHECKING:
    from lmstack.tokenizer.tokenizer import Tokenizer

JSON_NAME, CONFIG_NAME, RANKS_NAME = "tokenizer.json", "tokenizer_config.json", "tokenizer.tiktoken"


def _name_of(tok: Tokenizer, i: int | None) -> str | None:
    return None if i is None else tok.decode([i])


def tokenizer_config(tok: Tokenizer) -> dict:
    """tokenizer_config.json: what transformers needs to rebuild the tokenizer and its chat template."""
    cfg = dict(tok.config)
    cfg.update(
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": _name_of(tok, tok.eos_id),
            "bos_token": _name_of(tok, tok.bos_id),
            "clean_up_tokenization_spaces": False,
        }
    )
    if "chat_template" not in cfg and IM_START in tok.special_tokens and IM_END in tok.special_tokens:
        cfg["chat_template"] = CHATML_TEMPLATE
    return cfg


def save_tokenizer(tok: Tokenizer, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    by_rank = tok.merges is None
    merges = splits_of_vocab(tok.mergeable_ranks) if by_rank else tok.merges
    spec = TokenizerSpec(tok.mergeable_ranks, tok.split_stages, tok.special_tokens, merges, tok.ignore_merges)
    atomic_write_text(directory / JSON_NAME, json.dumps(to_hf_json(spec), ensure_ascii=False, indent=1) + "\n")
    atomic_write_text(directory / CONFIG_NAME, json.dumps(tokenizer_config(tok), ensure_ascii=False, indent=2) + "\n")
    if by_rank:
        atomic_write_text(directory / RANKS_NAME, tiktoken_text(tok.mergeable_ranks))
    elif (directory / RANKS_NAME).exists():
        (directory / RANKS_NAME).unlink()  # a stale rank file would override the merges on load


def load_tokenizer(cls: type[Tokenizer], path: Path) -> Tokenizer:
    """A byte-level BPE `Tokenizer`; a `UnigramTokenizer` when tokenizer.json's model is "Unigram" (or the path is
    a sentencepiece .model file); a `WordPieceTokenizer` when it is "WordPiece"."""
    if path.suffix == ".model" and path.is_file():
        from lmstack.tokenizer.unigram_format import load_unigram

        return load_unigram(path)
    if path.is_dir():
        json_path, ranks_path = path / JSON_NAME, path / RANKS_NAME
    elif path.exists():
        json_path, ranks_path = path, None
    else:
        raise FileNotFoundError(f"tokenizer not found: {path} (expected a directory or a tokenizer.json)")
    config_path = json_path.parent / CONFIG_NAME
    config = read_json(config_path) if config_path.is_file() else {}
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object")
    jinja = json_path.parent / "chat_template.jinja"  # transformers >= 4.50 saves the template beside the config
    if "chat_template" not in config and jinja.is_file():
        config["chat_template"] = jinja.read_text(encoding="utf-8")
    doc = read_json(json_path)
    kind = doc["model"].get("type") if isinstance(doc, dict) and isinstance(doc.get("model"), dict) else None
    if kind == "Unigram":
        from lmstack.tokenizer.unigram_format import load_unigram

        return load_unigram(json_path, config)
    if kind == "WordPiece":
        from lmstack.tokenizer.wordpiece import WordPieceTokenizer

        return WordPieceTokenizer.load(json_path)
    spec = read_hf_json(json_path)
    if ranks_path is not None and ranks_path.is_file():
        ranks = read_tiktoken_file(ranks_path)
        if ranks != spec.ranks:
            raise ValueError(
                f"{ranks_path} ({len(ranks)} tokens) disagrees with {json_path} ({len(spec.ranks)} tokens); "
                "one of them is truncated or from another tokenizer"
            )
        return cls(ranks, spec.stages, spec.special_tokens, config=config)
    return cls(spec.ranks, spec.stages, spec.special_tokens, spec.merges, spec.ignore_merges, config=config)
