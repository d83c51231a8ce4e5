"""The one public model loader: a model name, an HF directory or a `.gguf` file -> (model, tokenizer).

    from lmstack.model import load_model
    model, tok = load_model("smollm2-135m")            # a local model name (`lmstack models`)
    model, tok = load_model("runs/speedrun/model")     # an HF-format directory (ours or a real one)
    model, tok = load_model("SmolLM2.Q4_1.gguf")       # a GGUF file, converted once and cached

Every command that takes `--model` calls this, so the three spellings work everywhere. `model_path` alone gives
the HF directory a spec stands for (converting a GGUF file or a packaged model on first use).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lmstack.model.transformer import Transformer
from lmstack.tokenizer import Tokenizer


def model_path(spec: str | Path) -> Path:
    """The HF-format directory behind `spec`: a directory as is, a .gguf file's cached conversion, or the
    converted directory of a local model name. Errors name the spec and what was expected."""
    from lmstack.model.local_models import REGISTRY, resolve_model

    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"--model {spec}: expected a model directory (config.json + safetensors) or a .gguf file")
        from lmstack.model.gguf import cached_conversion

        return cached_conversion(path)
    if str(spec).lower() not in REGISTRY:
        raise FileNotFoundError(
            f"--model {spec}: not a model directory, .gguf file or local model name ({', '.join(REGISTRY)})"
        )
    return Path(resolve_model(str(spec)))


def load_model(
    spec: str | Path, device: str = "auto", dtype: str | torch.dtype | None = None
) -> tuple[Transformer, Tokenizer]:
    """The model (in eval mode, on `device`, in `dtype` or its own) and the tokenizer saved beside it."""
    from lmstack.common.seed import pick_device

    path = model_path(spec)
    model = Transformer.from_pretrained(path, dtype=dtype or None, device=pick_device(device))
    return model.eval(), Tokenizer.load(path)
