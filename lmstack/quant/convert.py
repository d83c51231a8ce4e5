"""`lmstack convert --from SRC --to DST`: the convert command, extended with the targets that need lmstack.quant.

    lmstack convert --from smollm2-135m --to smol-q4_0.gguf --gguf_type q4_0    # GGUF for llama.cpp / ollama
    lmstack convert --from runs/smol-gptq4 --to runs/smol-dequant                # quantized -> float HF dir
    lmstack convert --from model.gguf --to hf_dir                                # as before (lmstack.model.convert)

Why here: `lmstack/model/convert.py` owns HF <-> GGUF-import conversion, but the model stage sits left of quant
and may not import it (tests/test_layering.py), while a GGUF *export* needs the block quantizers of
`gguf_blocks.py` and a quantized source needs `swap.dequantize_model`. So the CLI row points here; this module
handles a `.gguf` destination and a quantized source, and hands every other case to `lmstack.model.convert.main`
unchanged (same flags, same behaviour).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmstack.model import convert as model_convert
from lmstack.quant.gguf_export import TYPES


@dataclass
class ConvertConfig(model_convert.ConvertConfig):
    gguf_type: str = "f16"  # tensor type when --to ends in .gguf: f32 | f16 | q8_0 | q4_0 | q4_1
    overwrite: bool = False  # replace an existing .gguf file

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gguf_type not in TYPES:
            raise ValueError(f"--gguf_type={self.gguf_type!r}: expected one of {', '.join(TYPES)}")


def is_quantized(src: Path) -> bool:
    cfg = src / "config.json"
    return src.is_dir() and cfg.is_file() and "quantization_config" in json.loads(cfg.read_text())


def main(cfg: ConvertConfig) -> int | None:
    if not cfg.src or not cfg.dst:
        return model_convert.main(cfg)  # its errors name the missing flag
    dst = Path(cfg.dst).expanduser()
    if dst.suffix == ".gguf":
        from lmstack.model import load_model
        from lmstack.quant.gguf_export import export_gguf
        from lmstack.quant.swap import dequantize_model

        if dst.exists() and not cfg.overwrite:
            raise ValueError(f"--to: {dst} already exists; pass --overwrite to replace it")
        model, tok = load_model(cfg.src, device="cpu", dtype="float32")
        export_gguf(dequantize_model(model), tok, dst, cfg.gguf_type, name=Path(cfg.src).name)
        print(dst)
        return 0
    if is_quantized(Path(cfg.src).expanduser()):
        from lmstack.model import load_model
        from lmstack.quant.swap import dequantize_model

        model, tok = load_model(cfg.src, device="cpu", dtype=cfg.dtype or "float32")
        dequantize_model(model, dtype=next(model.parameters()).dtype)
        model.config.tie_embeddings = model.lm_head.weight is model.embed.weight  # a quantized head was untied
        model.save_pretrained(dst, tokenizer=tok, max_shard_bytes=cfg.max_shard_mb * 2**20 or None)
        print(dst)
        return 0
    return model_convert.main(cfg)


if __name__ == "__main__":
    import sys

    from lmstack.cli import main as cli

    sys.exit(cli(["convert", *sys.argv[1:]]))
