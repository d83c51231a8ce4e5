"""`lmstack generate / chat --adapter DIR`: the adapter changes the output exactly as applying it by hand does."""

from __future__ import annotations

import builtins

import pytest

from lmstack.cli import main
from lmstack.finetune.lora import apply_lora, merge_lora
from lmstack.finetune.peft_format import lora_config, save_lora, save_prompt_adapter
from lmstack.finetune.prefix_tuning import PrefixTuning
from lmstack.model import Transformer
from tests.finetune.test_lora import randomize_B
from tests.finetune.tiny import tiny_base


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    base = tiny_base(d / "base")
    from lmstack.tokenizer import Tokenizer

    tok = Tokenizer.load(base)
    model = Transformer.from_pretrained(base)
    apply_lora(model, "all-linear", r=4, alpha=8)
    randomize_B(model, seed=3)
    save_lora(model, d / "lora", lora_config("all-linear", 4, 8, 0.0, False, str(base)))
    merge_lora(model)
    model.save_pretrained(d / "merged", tokenizer=tok)
    prefix = PrefixTuning(Transformer.from_pretrained(base), 4, init_std=0.5, seed=1)
    save_prompt_adapter(prefix, d / "prefix", str(base))
    return d


def run(capsys, *args: str) -> str:
    assert main(["generate", "3 + 4 =", "--sampling.temperature=0", "--sampling.max_new_tokens=8", *args]) == 0
    return capsys.readouterr().out


def test_generate_with_lora_adapter_equals_merged_model(dirs, capsys):
    plain = run(capsys, f"--model={dirs / 'base'}")
    adapted = run(capsys, f"--model={dirs / 'base'}", f"--adapter={dirs / 'lora'}")
    assert adapted == run(capsys, f"--model={dirs / 'merged'}") != plain


def test_generate_with_prefix_adapter_equals_wrapper(dirs, capsys):
    from lmstack.finetune.peft_format import load_adapter
    from lmstack.generate import SamplingParams, generate
    from lmstack.model import load_model

    adapted = run(capsys, f"--model={dirs / 'base'}", f"--adapter={dirs / 'prefix'}")
    model, tok = load_model(dirs / "base")
    wrapper = load_adapter(model, dirs / "prefix")
    out = generate(wrapper, [tok.encode("3 + 4 =")], SamplingParams(max_new_tokens=8, temperature=0))[0]
    assert adapted == tok.decode(out) + "\n" != run(capsys, f"--model={dirs / 'base'}")


def test_chat_takes_adapter(dirs, capsys, monkeypatch):
    lines = iter(["3 + 4 =", "/exit"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(lines))
    args = [
        "chat",
        f"--model={dirs / 'base'}",
        f"--adapter={dirs / 'lora'}",
        "--sampling.temperature=0",
        "--sampling.max_new_tokens=4",
    ]
    assert main(args) == 0
    assert "bot>" in capsys.readouterr().out


def test_bad_adapter_dir_is_a_one_line_error(dirs, capsys):
    assert main(["generate", "x", f"--model={dirs / 'base'}", f"--adapter={dirs}"]) == 2
    assert "not a PEFT adapter" in capsys.readouterr().err
