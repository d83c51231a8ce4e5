"""An 8-bit per-channel LM head shares its int8 table with a tied input embedding (`lmstack.quant.embedding`):
lookups equal the head's dequantized rows, `lmstack quantize --head_bits 8` writes a checkpoint that reloads with
one int8 table, the saved float fallback holds the same values, and the decoding forward covers it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmstack.cli import main as cli
from lmstack.generate.fast_forward import FastForward, decode_layout
from lmstack.model import load_model
from lmstack.quant import QuantLinear
from lmstack.quant.embedding import QuantEmbedding, can_share_table
from lmstack.quant.rtn import QuantSpec, quantize_rtn
from lmstack.quant.swap import dequantize_model
from tests.generate.test_fast_forward import reference, run
from tests.quant.test_quantize import _cfg


def _head(spec: QuantSpec, kernel: str = "auto") -> QuantLinear:
    w = torch.randn(300, 64, generator=torch.Generator().manual_seed(0))
    return QuantLinear(quantize_rtn(w, spec), kernel=kernel)


@pytest.mark.parametrize("kernel", ["auto", "dequant"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_lookups_equal_the_heads_dequantized_rows(kernel: str, dtype: torch.dtype) -> None:
    head = _head(QuantSpec(8, -1, True), kernel)
    assert head.path == ("int8pack_mm" if kernel == "auto" else "dequant")
    embed = QuantEmbedding(head, dtype)
    assert embed.table.data_ptr() == head.weight.data_ptr()  # shared, not copied
    ids = torch.tensor([[0, 5, 299, 5], [17, 1, 2, 3]])
    got = embed(ids)
    assert got.shape == (2, 4, 64) and got.dtype == dtype
    assert torch.equal(got, head.dequantized(dtype)[ids])


@pytest.mark.parametrize("spec", [QuantSpec(4, -1, True), QuantSpec(8, 32, True), QuantSpec(8, -1, False)], ids=str)
def test_only_an_int8_per_channel_head_can_share(spec: QuantSpec) -> None:
    head = _head(spec)
    # an asymmetric per-channel int8 head (dequant path, uint8 q and zero points) can share; the others cannot
    assert can_share_table(head) == (spec.group_size == -1 and spec.bits == 8)
    if not can_share_table(head):
        with pytest.raises(ValueError, match="8-bit per-channel"):
            QuantEmbedding(head, torch.float32)


@pytest.mark.parametrize("method,grid", [("rtn", {}), ("gptq", {}), ("rtn", dict(sym=False, float_zero=True))],
                         ids=["rtn", "gptq", "rtn-float-zero"])  # fmt: skip
def test_head_bits_8_shares_the_table_and_reloads(
    tmp_path: Path, tiny_model_dir: Path, calib_file: Path, method: str, grid: dict
) -> None:
    from lmstack.quant.quantize import quantize

    kw = dict(method=method, head_bits=8, **grid)
    quantize(_cfg(tiny_model_dir, calib_file, tmp_path / "shared", **kw))
    quantize(_cfg(tiny_model_dir, calib_file, tmp_path / "float", shared_table=False, **kw))
    shared, _ = load_model(tmp_path / "shared")
    separate, _ = load_model(tmp_path / "float")
    assert isinstance(shared.embed, QuantEmbedding) and type(separate.embed) is torch.nn.Embedding
    assert shared.lm_head.spec == QuantSpec(8, -1, True) and shared.blocks[0].attn.q_proj.spec.bits == 4
    assert shared.embed.table.data_ptr() == shared.lm_head.weight.data_ptr()
    qc = json.loads((tmp_path / "shared" / "config.json").read_text())["quantization_config"]
    head = {"bits": 8, "group_size": -1, "sym": True} | ({"zero_point": "int"} if grid else {})  # not the blocks'
    assert qc["bits"] == 4 and qc["dynamic"] == {"+:lm_head": head}
    assert shared.blocks[0].attn.q_proj.spec.float_zero == bool(grid)
    assert qc["meta"]["embedding"] == "lm_head"
    # the saved float table (for loaders that do not share) holds exactly the values the lookups give
    saved = load_file(tmp_path / "shared" / "model.safetensors")["model.embed_tokens.weight"]
    ids = torch.arange(300)
    assert torch.equal(shared.embed(ids), saved)
    # the same integers either way; sharing drops the float table from memory
    assert torch.equal(shared.lm_head.weight, separate.lm_head.weight)
    own = lambda m: sum(t.untyped_storage().nbytes() for t in {t.untyped_storage().data_ptr(): t for t in  # noqa: E731
                        [*m.parameters(), *m.buffers()]}.values())  # fmt: skip
    assert own(separate) - own(shared) == 300 * 64 * 2 - 300 * 2  # the bf16 table, less the lookup's bf16 scales


def test_float_fallback_loads_the_same_model(tmp_path: Path, tiny_model_dir: Path, calib_file: Path) -> None:
    """A loader that ignores meta.embedding reads the saved float table: the same logits, bit for bit."""
    from lmstack.quant.quantize import quantize

    out = tmp_path / "q"
    quantize(_cfg(tiny_model_dir, calib_file, out, method="rtn", head_bits=8))
    shared, _ = load_model(out)
    cfg = json.loads((out / "config.json").read_text())
    del cfg["quantization_config"]["meta"]["embedding"]
    (out / "config.json").write_text(json.dumps(cfg))
    plain, _ = load_model(out)
    assert type(plain.embed) is torch.nn.Embedding
    x = torch.randint(0, 300, (2, 10))
    with torch.no_grad():
        assert torch.equal(shared(x).logits, plain(x).logits)


def test_dequantized_model_is_tied_again_and_fast_forward_covers_it(
    tmp_path: Path, tiny_model_dir: Path, calib_file: Path
) -> None:
    from lmstack.quant.quantize import quantize

    quantize(_cfg(tiny_model_dir, calib_file, tmp_path / "q", method="rtn", bits=8, group_size=-1))  # all int8
    model, _ = load_model(tmp_path / "q", dtype="float32")
    assert isinstance(model.embed, QuantEmbedding)
    fast = FastForward.of(model)
    assert fast is not None
    for got, want in zip(run(fast, model), run(reference(model), model)):
        assert torch.equal(got, want)
    laid_out = FastForward.of(decode_layout(model))
    for got, want in zip(run(laid_out, model), run(reference(model), model)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    table = model.embed(torch.arange(300))
    dequantize_model(model)
    assert model.embed.weight is model.lm_head.weight and torch.equal(model.embed.weight, table)


@pytest.mark.parametrize(
    "args,match",
    [(["--head_bits=3"], "--head_bits=3"), (["--head_bits=8", "--head=false"], "--head_bits"),
     (["--head_bits=8", "--method=nf4"], "--method nf4")],
)  # fmt: skip
def test_bad_head_bits_is_one_clear_line(tmp_path: Path, tiny_model_dir: Path, args: list, match: str, capsys):
    assert cli(["quantize", f"--model={tiny_model_dir}", f"--out_dir={tmp_path / 'o'}", *args]) != 0
    assert match in capsys.readouterr().err


def test_shared_table_needs_an_int8_head_in_the_checkpoint(tmp_path: Path, tiny_model_dir: Path, calib_file: Path):
    from lmstack.quant.quantize import quantize

    out = tmp_path / "q"
    quantize(_cfg(tiny_model_dir, calib_file, out, method="rtn", bits=4, head_bits=4))  # 4-bit head: nothing shared
    cfg = json.loads((out / "config.json").read_text())
    assert "embedding" not in cfg["quantization_config"]["meta"]
    cfg["quantization_config"]["meta"]["embedding"] = "lm_head"
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="meta.embedding='lm_head' needs an 8-bit per-channel"):
        load_model(out)


@pytest.mark.parametrize(
    "kw,head_bits",
    [(dict(method="rtn", bits=4), 8), (dict(method="gptq"), 8), (dict(method="awq", bits=4), 8),
     (dict(method="rtn", bits=4, head=False), 4), (dict(method="rtn", bits=8), 8), (dict(method="nf4"), 4),
     (dict(method="smoothquant"), 8), (dict(method="rtn", bits=4, head_bits=4), 4)],
)  # fmt: skip
def test_a_4_bit_run_quantizes_the_head_to_8_bits_by_default(kw: dict, head_bits: int) -> None:
    from lmstack.quant.quantize import QuantizeConfig

    assert QuantizeConfig(out_dir="x", **kw).head_bits == head_bits
