"""A stage imports only from stages to its left (ARCHITECTURE.md) and from lmstack.common.

Order (left to right): quant sits before finetune (QLoRA's NF4 base weights come from lmstack/quant/), and
generate before align (GRPO's rollouts call lmstack.generate; `generate --adapter` applies finetune's adapters).
Two narrow exceptions, each a lazy import: the model loader (`model/hf.py`, `model/loader.py`) rebuilds
quantized checkpoints through lmstack.quant, and rag sits after generate and serve (the diagram).
"""

from __future__ import annotations

import ast
from pathlib import Path

ORDER = ["tokenizer", "data", "model", "train", "quant", "finetune", "generate", "align", "serve", "rag", "eval"]
PKG = Path(__file__).resolve().parent.parent / "lmstack"


def imported_stages(path: Path) -> set[str]:
    stages = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for n in names:
            parts = n.split(".")
            if parts[0] == "lmstack" and len(parts) > 1 and parts[1] in ORDER:
                stages.add(parts[1])
    return stages


def test_no_import_from_a_stage_to_the_right():
    bad = []
    for stage in ORDER:
        for f in (PKG / stage).rglob("*.py") if (PKG / stage).exists() else []:
            for other in imported_stages(f):
                if stage == "eval" or other == stage:
                    continue  # eval reads everything
                if stage == "rag" and other in ORDER[: ORDER.index("serve") + 1]:
                    continue  # rag sits after generate (ARCHITECTURE.md diagram)
                if stage == "model" and other == "quant" and f.name in ("hf.py", "loader.py"):
                    continue  # the loader rebuilds quantized checkpoints (Transformer.from_pretrained detects them)
                if ORDER.index(other) > ORDER.index(stage):
                    bad.append(f"{f.relative_to(PKG)} imports lmstack.{other}")
    assert not bad, bad


def test_common_imports_no_stage():
    for f in (PKG / "common").rglob("*.py"):
        assert not imported_stages(f), f
