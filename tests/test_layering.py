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


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """lmstack modules imported at module level (lazy imports inside functions are how cycles are broken)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmstack") and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("lmstack")}
    return out


def test_no_module_level_import_cycles():
    """e.g. generate/cli.py <-> generate/chat.py used to import each other; shared helpers live where both can."""
    graph = {_module_name(f): _top_level_imports(f) for f in PKG.rglob("*.py")}
    pkgs = {m for m in graph if (PKG.parent / m.replace(".", "/") / "__init__.py").exists()}
    graph = {m: {d for d in deps if d in graph and d not in pkgs and d != m} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> list[str] | None:
        state[m] = 1
        for d in graph.get(m, ()):
            if state.get(d) == 1:
                return stack + [m, d]
            if d not in state and (cycle := visit(d, stack + [m])):
                return cycle
        state[m] = 2
        return None

    for m in graph:
        if m not in state and (cycle := visit(m, [])):
            raise AssertionError(" -> ".join(cycle))


def _all_imports(path: Path) -> set[str]:
    """lmstack modules imported anywhere in the file, except type-only imports under `if TYPE_CHECKING:`."""
    out, todo = set(), [ast.parse(path.read_text())]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmstack") and node.level == 0:
            out.add(node.module)
        todo.extend(ast.iter_child_nodes(node))
    return out


def test_no_two_modules_reach_into_each_other_lazily():
    """Mutual imports are allowed only as a class's method delegating to the module that builds on the class
    (`Transformer.from_pretrained` -> hf.py, which imports Transformer at the top). Two modules that each import
    the other inside functions (generate/cli.py <-> generate/chat.py did) need their shared part moved out."""
    files = {_module_name(f): f for f in PKG.rglob("*.py")}
    top = {m: _top_level_imports(f) for m, f in files.items()}
    every = {m: _all_imports(f) for m, f in files.items()}
    bad = [(a, b) for a in files for b in every[a] if b in files and a < b and a in every[b]
           and b not in top[a] and a not in top[b]]  # fmt: skip
    assert not bad, bad


def test_no_private_names_imported_across_modules():
    """A module uses another's public API (generate/cli.py used to import hf.py's private _gguf_dir)."""
    bad = []
    for f in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmstack"):
                bad += [f"{f.relative_to(PKG)}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad, bad


def test_pinned_test_dependencies_are_imported_plainly():
    """`pytest.importorskip` on a package `make test` installs would turn a broken install into skips."""
    tests = Path(__file__).resolve().parent
    call = "import" + "orskip("  # spelled apart so this file does not match itself
    bad = [str(f.relative_to(tests)) for f in tests.rglob("*.py") if call in f.read_text()]
    assert not bad, bad


def test_transformer_is_a_causal_lm():
    from lmstack.model import CausalLM, ModelConfig, Transformer

    assert isinstance(Transformer(ModelConfig()), CausalLM)
