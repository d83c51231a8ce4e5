"""`lmstack convert --from SRC --to DST`: model directory / GGUF file / model name -> HF model directory.

- SRC a `.gguf` file: `lmstack.model.gguf.convert_gguf` writes DST (config, fp32 safetensors, tokenizer files).
- SRC a directory (HF or ours) or a local model name: load with `Transformer.from_pretrained` (every tensor
  checked against the config), optionally cast, and write DST with `save_pretrained`; tokenizer and chat
  template files next to the weights are copied along. Exporting an lmstack-trained model gives a directory
  `transformers.AutoModelForCausalLM.from_pretrained` loads (for GPT-2/Llama/Mistral/Qwen2/Mixtral shapes).
Each file is written atomically; only the files of the model are written (save_target.py): DST may be new, empty
or a previous lmstack save; any other non-empty directory needs `--overwrite`, which still touches no other
file. `--to .` follows the same rule.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)


@dataclass
class ConvertConfig:
    src: str = field(default="", metadata={"flag": "from"})  # source: HF/lmstack directory, .gguf file or model name
    dst: str = field(
        default="", metadata={"flag": "to"}
    )  # destination directory (HF format); only its model files change
    dtype: str = ""  # cast weights to float32 | bfloat16 | float16 on the way; "" keeps the source dtype
    max_shard_mb: int = 0  # split model.safetensors into shards of at most this many MB (+ index); 0 = one file
    overwrite: bool = False  # write into a non-empty directory that is not an lmstack save (other files are kept)

    def __post_init__(self) -> None:
        if self.dtype not in ("", "float32", "bfloat16", "float16"):
            raise ValueError(f"--dtype={self.dtype!r}: expected float32, bfloat16 or float16")
        if self.max_shard_mb < 0:
            raise ValueError(f"--max_shard_mb={self.max_shard_mb}: must be >= 0")


class TokenizerFiles:
    """Stands in for a tokenizer in `save_pretrained`: copies the source's tokenizer files into the new directory
    (inside the atomic write, so DST never lacks them)."""

    def __init__(self, source: Path | None) -> None:
        self.source = source

    def save(self, directory: Path) -> None:
        for name in TOKENIZER_FILES if self.source is not None else ():
            if (self.source / name).is_file():
                shutil.copy2(self.source / name, Path(directory) / name)


def main(cfg: ConvertConfig) -> int | None:
    if not cfg.src:
        raise ValueError("--from is required (a model directory, a .gguf file or a model name)")
    if not cfg.dst:
        raise ValueError("--to is required (the output directory)")
    src, dst = Path(cfg.src).expanduser(), Path(cfg.dst).expanduser()
    if src.resolve() == dst.resolve():
        raise ValueError(f"--from and --to are the same path ({src}); write to a new directory")
    from lmstack.model.save_target import check_save_target

    check_save_target(dst, cfg.overwrite, "--to")  # before loading: a refused target fails fast
    if src.is_file() and src.suffix == ".gguf" and not cfg.dtype and not cfg.max_shard_mb:
        from lmstack.model.gguf import convert_gguf

        convert_gguf(src, dst, overwrite=cfg.overwrite)
        print(dst)
        return 0
    from lmstack.model.transformer import Transformer

    model = Transformer.from_pretrained(src, dtype=cfg.dtype or None)
    files = TokenizerFiles(src if src.is_dir() else None)
    model.save_pretrained(dst, tokenizer=files, max_shard_bytes=cfg.max_shard_mb * 2**20 or None,
                          overwrite=cfg.overwrite)  # fmt: skip
    print(dst)
    return 0


if __name__ == "__main__":
    import sys

    from lmstack.common.config import load_config

    sys.exit(main(load_config(ConvertConfig)) or 0)
