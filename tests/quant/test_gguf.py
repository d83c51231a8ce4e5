"""GGUF export: our block quantizers equal the `gguf` package's, and an exported file reads back (by `gguf`,
lmstack's importer and `transformers`) to the same tensors and the same greedy tokens."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from lmstack.cli import main as cli
from lmstack.generate import SamplingParams, generate
from lmstack.model import Transformer
from lmstack.model.gguf import unpermute_qk
from lmstack.quant import gguf_blocks
from lmstack.quant.gguf_export import export_gguf, gguf_name, permute_qk
from tests.quant.conftest import tiny_llama

KINDS = ["Q8_0", "Q4_0", "Q4_1"]


def _edge_rows() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 128)).astype(np.float32)
    x[0, :32] = 0  # an all-zero block
    x[1, :32] = 0.25  # a constant block
    x[2, 7] = 40.0  # a positive outlier
    x[3, 40] = -40.0  # a negative outlier (Q4_0 maps it to -8 exactly)
    x[4] *= 1e-6  # tiny values (fp16 subnormal scales)
    return x


@pytest.mark.parametrize("kind", KINDS)
def test_block_quantizers_equal_the_gguf_package(kind: str) -> None:
    x = _edge_rows()
    ours = gguf_blocks.quantize(x, kind)
    t = gguf.GGMLQuantizationType[kind]
    assert ours.shape == (8, 128 // 32 * gguf_blocks.BLOCK_BYTES[kind])
    np.testing.assert_array_equal(ours, gguf.quants.quantize(x, t))  # the same bytes as ggml's reference
    np.testing.assert_array_equal(gguf_blocks.dequantize(ours, kind), gguf.quants.dequantize(ours, t))
    err = np.abs(gguf_blocks.dequantize(ours, kind) - x).max(axis=1)
    normal = [0, 1, 2, 3, 5, 6, 7]  # row 4's scales underflow fp16 (as in ggml): its blocks read back as ~0
    assert np.all(err[normal] <= np.abs(x[normal]).max(axis=1) / (100 if kind == "Q8_0" else 6))


def test_qk_permutation_inverts_the_importer() -> None:
    w = np.arange(4 * 16 * 3).reshape(64, 3).astype(np.float32)  # 4 heads of hd 16
    np.testing.assert_array_equal(unpermute_qk(permute_qk(w, 4), 4), w)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> tuple[Path, Transformer]:
    model = tiny_llama()
    d = tmp_path_factory.mktemp("gguf")
    model.save_pretrained(d / "fp", tokenizer=tiny_tokenizer)
    for kind in ("f32", "f16", "q8_0", "q4_0", "q4_1"):
        export_gguf(model, tiny_tokenizer, d / f"tiny-{kind}.gguf", kind)
    return d, model


@pytest.mark.parametrize("kind", ["f32", "f16", "q8_0", "q4_0", "q4_1"])
def test_gguf_reader_gets_the_same_tensors(exported, kind: str) -> None:
    d, model = exported
    reader = gguf.GGUFReader(d / f"tiny-{kind}.gguf")
    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors  # tied head: llama.cpp reuses token_embd
    assert reader.fields["tokenizer.ggml.pre"].contents() == "llama-bpe"
    assert len(reader.fields["tokenizer.ggml.tokens"].contents()) == 300
    cfg = model.config
    for name, w in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        t = tensors[gguf_name(name)]
        w = w.numpy()
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            w = permute_qk(w, cfg.n_heads if "q_proj" in name else cfg.n_kv_heads)
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(w.shape)
        if w.ndim == 1 or kind == "f32":
            assert t.tensor_type.name == "F32" and np.array_equal(got, w), name
        elif kind == "f16":
            assert np.array_equal(got, w.astype(np.float16).astype(np.float32)), name
        else:
            expected = gguf_blocks.dequantize(gguf_blocks.quantize(w, kind.upper()), kind.upper())
            assert t.tensor_type.name == kind.upper() and np.array_equal(got, expected), name


def _dequantized_reference(model: Transformer, kind: str) -> Transformer:
    """Our model with every 2-D weight replaced by its GGUF round trip (the weights the file holds)."""
    ref = tiny_llama()
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in ref.parameters():
            if p.dim() == 2 and kind != "f32":
                x = p.numpy()
                back = (x.astype(np.float16).astype(np.float32) if kind == "f16"
                        else gguf_blocks.dequantize(gguf_blocks.quantize(x, kind.upper()), kind.upper()))  # fmt: skip
                p.copy_(torch.from_numpy(back))
    return ref


@pytest.mark.parametrize("kind", ["f32", "q8_0", "q4_0"])
def test_reimport_gives_the_same_greedy_tokens(exported, kind: str) -> None:
    """lmstack's GGUF importer and `transformers`' GGUF loader both rebuild the dequantized model: logits equal
    each other and our dequantized model's; greedy tokens are identical."""
    import transformers

    d, model = exported
    ref = _dequantized_reference(model, kind)
    ours = Transformer.from_pretrained(d / f"tiny-{kind}.gguf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f"tiny-{kind}.gguf", dtype=torch.float32)
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(hf.eval()(ids).logits, ref(ids).logits, rtol=1e-4, atol=1e-4)
    params = SamplingParams(max_new_tokens=12, temperature=0, ignore_eos=True)
    assert generate(ours, ids.tolist(), params) == generate(ref, ids.tolist(), params)


def test_cli_convert_to_gguf_and_back(tmp_path: Path, exported, capsys) -> None:
    d, model = exported
    out = tmp_path / "m.gguf"
    assert cli(["convert", f"--from={d / 'fp'}", f"--to={out}", "--gguf_type=q8_0"]) == 0
    assert gguf.GGUFReader(out).fields["general.file_type"].contents() == 7  # MOSTLY_Q8_0
    assert cli(["convert", f"--from={d / 'fp'}", f"--to={out}"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli(["convert", f"--from={d / 'fp'}", f"--to={out}", "--gguf_type=q3_k"]) == 2
    assert "--gguf_type='q3_k'" in capsys.readouterr().err
    assert cli(["convert", f"--from={out}", f"--to={tmp_path / 'hf'}"]) == 0  # GGUF -> HF still goes to model/


def test_quantized_dir_converts_to_float_and_gguf(tmp_path: Path, tiny_model_dir: Path, calib_file: Path) -> None:
    from lmstack.model import load_model
    from lmstack.quant.swap import dequantize_model

    q = tmp_path / "q"
    assert cli(["quantize", f"--model={tiny_model_dir}", f"--out_dir={q}", "--group_size=32", "--eval_tokens=0",
                "--dtype=float32"]) == 0  # fmt: skip
    assert cli(["convert", f"--from={q}", f"--to={tmp_path / 'float'}"]) == 0
    assert cli(["convert", f"--from={q}", f"--to={tmp_path / 'q.gguf'}", "--gguf_type=f32"]) == 0
    # the default 4-bit recipe: an int8 head whose table the embedding shares, exported tied again (one tensor)
    assert type(load_model(q)[0].embed).__name__ == "QuantEmbedding"
    assert "output.weight" not in {t.name for t in gguf.GGUFReader(tmp_path / "q.gguf").tensors}
    ids = torch.randint(0, 300, (1, 10))
    want = dequantize_model(load_model(q)[0])
    with torch.no_grad():
        for other in (load_model(tmp_path / "float")[0], load_model(tmp_path / "q.gguf")[0]):
            torch.testing.assert_close(other(ids).logits, want(ids).logits, rtol=1e-5, atol=1e-5)


def test_qk_norm_model_exports_as_qwen3_and_reads_back(tmp_path: Path, tiny_tokenizer) -> None:
    """A QK-norm model (the speedrun's shape) is a Qwen3 in GGUF: rows unpermuted (NeoX RoPE), q/k norms as
    `attn_q_norm` / `attn_k_norm`; our importer and `transformers` rebuild the same logits. (head_dim 128:
    transformers' GGUF reader ignores `qwen3.attention.key_length` and assumes Qwen3's 128; llama.cpp reads it.)"""
    import transformers

    model = tiny_llama(qk_norm=True, head_dim=128)
    with torch.no_grad():  # non-trivial norm gains, so a swapped or dropped one shows
        for block in model.blocks:
            block.attn.q_norm.weight.uniform_(0.5, 1.5)
            block.attn.k_norm.weight.uniform_(0.5, 1.5)
    export_gguf(model, tiny_tokenizer, tmp_path / "q.gguf", "f32")
    reader = gguf.GGUFReader(tmp_path / "q.gguf")
    assert reader.fields["general.architecture"].contents() == "qwen3"
    q = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    np.testing.assert_array_equal(q.data.reshape(512, 64), model.blocks[0].attn.q_proj.weight.detach().numpy())
    ours = Transformer.from_pretrained(tmp_path / "q.gguf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="q.gguf", dtype=torch.float32)
    assert ours.config.qk_norm and type(hf).__name__ == "Qwen3ForCausalLM"
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(hf.eval()(ids).logits, model(ids).logits, rtol=1e-4, atol=1e-4)
