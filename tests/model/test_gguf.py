"""GGUF import on tiny files written here the way llama.cpp's converter writes them (fast).

A random tiny `transformers` Llama is written to GGUF with llama.cpp's Q/K row permutation (re-derived below
from its converter's description, not imported), some tensors quantized; `convert_gguf` must give back the
original weights (exactly for F32, within quantization error otherwise) and the same logits as
`transformers`' own GGUF loader (an independent implementation of dequantization and the permutation).
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from lmstack.model.gguf import convert_gguf, unpermute_qk

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n"]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def byte_chars() -> list[str]:
    """GPT-2's byte -> printable-char map, in byte order (the 256 base tokens of a byte-level BPE)."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    # HF row h·hd + j·(hd/2) + i  ->  GGUF row h·hd + 2·i + j (rotary pairs become neighbours)
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_llama(tie: bool, seed: int = 0, merges: list[str] = MERGES) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(SPECIALS) + 256 + len(merges), hidden_size=64, intermediate_size=96,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                      rope_theta=10000.0, max_position_embeddings=64, tie_word_embeddings=tie,
                      bos_token_id=1, eos_token_id=2)  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norms so a mixed-up norm tensor shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


GGUF_NAMES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
              "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}  # fmt: skip


def gguf_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    _, _, i, rest = hf.split(".", 3)
    return f"blk.{i}.{GGUF_NAMES[rest.removesuffix('.weight')]}.weight"


def write_gguf(path: Path, model: torch.nn.Module, qtype: str = "F32", arch: str = "llama",
               tok_model: str = "gpt2", pre: str = "smollm", merges: list[str] = MERGES,
               rope_dims: int | None = None) -> Path:  # fmt: skip
    """Write `model` as llama.cpp would: metadata, byte-level BPE vocab, permuted Q/K, matrices as `qtype`."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(rope_dims or cfg.hidden_size // cfg.num_attention_heads)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model(tok_model)
    w.add_tokenizer_pre(pre)
    w.add_token_list(SPECIALS + byte_chars() + [m.replace(" ", "") for m in merges])
    w.add_token_types([3] * len(SPECIALS) + [1] * (256 + len(merges)))
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template(TEMPLATE)
    for name, p in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        a = p.detach().numpy().astype(np.float32)
        if "q_proj" in name:
            a = llama_cpp_permute(a, cfg.num_attention_heads)
        elif "k_proj" in name:
            a = llama_cpp_permute(a, cfg.num_key_value_heads)
        kind = "F32" if a.ndim == 1 else ("Q8_0" if name == "model.embed_tokens.weight" and qtype != "F32" else qtype)
        if kind == "F32":
            w.add_tensor(gguf_name(name), a)
        else:
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType[kind])
            w.add_tensor(gguf_name(name), q, raw_dtype=gguf.GGMLQuantizationType[kind])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_unpermute_inverts_llama_cpp_permute() -> None:
    rng = np.random.default_rng(0)
    for heads, hd, cols in [(1, 4, 1), (4, 16, 8), (3, 64, 5)]:
        w = rng.standard_normal((heads * hd, cols))
        assert not np.array_equal(llama_cpp_permute(w, heads), w)
        np.testing.assert_array_equal(unpermute_qk(llama_cpp_permute(w, heads), heads), w)


@pytest.mark.parametrize("tie", [True, False])
def test_f32_roundtrip_is_exact(tmp_path: Path, tie: bool) -> None:
    from safetensors.torch import load_file

    model = tiny_llama(tie)
    out = convert_gguf(write_gguf(tmp_path / "m.gguf", model), tmp_path / "hf")
    got = load_file(out / "model.safetensors")
    want = {k: v for k, v in model.state_dict().items() if not (tie and k == "lm_head.weight")}
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=k)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is tie and cfg["num_key_value_heads"] == 2 and cfg["rms_norm_eps"] == 1e-5


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1", "F16"])
def test_matches_transformers_gguf_loader(tmp_path: Path, qtype: str) -> None:
    from transformers import AutoModelForCausalLM

    tie = qtype != "Q4_1"
    model = tiny_llama(tie)
    path = write_gguf(tmp_path / "m.gguf", model, qtype=qtype)
    out = convert_gguf(path, tmp_path / "hf")
    ours = AutoModelForCausalLM.from_pretrained(out).eval()
    ref = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours(ids).logits, ref(ids).logits
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)  # same dequantized weights: equal up to fp32 rounding
    # and each weight is the original up to quantization error; rows left in GGUF order would be off by ~140 %
    tol = {"F32": 1e-7, "F16": 1e-3, "Q8_0": 0.01, "Q4_0": 0.2, "Q4_1": 0.2}
    for k, want in model.state_dict().items():
        stored = "F32" if want.ndim == 1 else "Q8_0" if "embed" in k or (k == "lm_head.weight" and tie) else qtype
        got = ours.state_dict()[k]
        assert (got - want).norm() / want.norm() < tol[stored], k


def test_tokenizer_matches_transformers_gguf_tokenizer(tmp_path: Path, edge_strings: list[str]) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    path = write_gguf(tmp_path / "m.gguf", tiny_llama(tie=True))
    out = convert_gguf(path, tmp_path / "hf")
    ours = Tokenizer.from_file(str(out / "tokenizer.json"))
    ref = AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    for s in edge_strings + ["the then in 2026 <|im_start|>hi<|im_end|>"]:
        ids = ours.encode(s).ids
        assert ids == ref.encode(s, add_special_tokens=False), s
        assert ours.decode(ids, skip_special_tokens=False) == s
    tc = json.loads((out / "tokenizer_config.json").read_text())
    assert tc["chat_template"] == TEMPLATE and tc["bos_token"] == "<|im_start|>" and tc["eos_token"] == "<|im_end|>"
    hf_tok = AutoTokenizer.from_pretrained(out)
    chat = hf_tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n"


@pytest.mark.parametrize("pre", ["smollm", "gpt-2"])
def test_smollm_pre_tokenizer_splits_digits(tmp_path: Path, pre: str) -> None:
    # The vocabulary has a "12" token; the smollm pre-tokenizer splits digits one by one before BPE, GPT-2's does
    # not. (transformers' GGUF tokenizer ignores tokenizer.ggml.pre and merges "12" either way, so it is no
    # reference here; the real SmolLM2 vocabulary has no multi-digit tokens, so there the two agree.)
    from tokenizers import Tokenizer

    merges = MERGES + ["1 2"]
    path = write_gguf(tmp_path / "m.gguf", tiny_llama(True, merges=merges), pre=pre, merges=merges)
    tok = Tokenizer.from_file(str(convert_gguf(path, tmp_path / "hf") / "tokenizer.json"))
    one, two, twelve = len(SPECIALS) + ord("1"), len(SPECIALS) + ord("2"), tok.token_to_id("12")
    assert tok.encode("x12").ids[1:] == ([one, two] if pre == "smollm" else [twelve])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(arch="qwen2"), "architecture 'qwen2' is not supported"),
        (dict(qtype="Q5_0"), "type Q5_0; supported"),
        (dict(tok_model="llama"), "tokenizer.ggml.model='llama' is not supported"),
        (dict(pre="deepseek-coder"), "tokenizer.ggml.pre='deepseek-coder' is not supported"),
        (dict(rope_dims=8), "rope.dimension_count=8 != head dim 16: partial rotary"),
    ],
)
def test_unsupported_input_names_it_and_leaves_old_dir(tmp_path: Path, kwargs: dict, match: str) -> None:
    path = write_gguf(tmp_path / "m.gguf", tiny_llama(tie=True), **kwargs)
    old = tmp_path / "hf"
    old.mkdir()
    (old / "keep.txt").write_text("previous conversion")
    with pytest.raises(ValueError, match=match):
        convert_gguf(path, old, overwrite=True)
    assert (old / "keep.txt").read_text() == "previous conversion"


def test_missing_or_bad_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        convert_gguf(tmp_path / "nope.gguf", tmp_path / "out")
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="bad.gguf"):
        convert_gguf(tmp_path / "bad.gguf", tmp_path / "out")


def test_convert_command_and_from_pretrained_read_gguf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `lmstack convert --from X.gguf --to DIR` and `Transformer.from_pretrained(X.gguf)` both go through convert_gguf
    from transformers import AutoModelForCausalLM

    from lmstack.cli import main as cli_main
    from lmstack.model import Transformer

    monkeypatch.setenv("LMSTACK_HOME", str(tmp_path / "home"))
    path = write_gguf(tmp_path / "m.gguf", tiny_llama(tie=False), qtype="Q8_0")
    assert cli_main(["convert", "--from", str(path), "--to", str(tmp_path / "hf")]) == 0
    ref = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ours = Transformer.from_pretrained(path)
    ids = torch.randint(0, ref.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, rtol=0, atol=1e-5)
