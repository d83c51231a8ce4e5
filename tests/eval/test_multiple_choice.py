"""Multiple-choice scoring: prompts, few-shot selection, raw vs length-normalized choice, the task runner."""

from __future__ import annotations

import pytest

from lmstack.eval.datasets import MCItem
from lmstack.eval.loglikelihood import Loglik
from lmstack.eval.multiple_choice import PROMPTS, evaluate_mc, fewshot_prefix, load_items, score_items


def test_prompt_formats() -> None:
    it = MCItem("x/0", "Where is Paris?", ["France", "Peru"], 0, source_prompt="Where is Paris?\nA. France\nAnswer:")
    assert PROMPTS["social_iqa"](it) == ("Q: Where is Paris?\nA:", [" France", " Peru"])
    assert PROMPTS["mmlu"](it) == ("Question: Where is Paris?\nAnswer:", [" France", " Peru"])
    assert PROMPTS["mmlu_letters"](it)[1] == [" A", " B"]
    lq = MCItem("l/0", "Which?", ["a", "b", "c", "d"], 1, passage="P.")
    assert PROMPTS["logiqa"](lq)[0] == "Passage: P.\nQuestion: Which?\nChoices:\nA. a\nB. b\nC. c\nD. d\nAnswer:"


def test_fewshot_excludes_the_item_and_is_deterministic() -> None:
    items = load_items("social_iqa")[:6]
    for i in range(6):
        prefix = fewshot_prefix("social_iqa", items, i, 3, seed=7)
        assert prefix.count("Q: ") == 3 and items[i].question not in prefix
        assert prefix == fewshot_prefix("social_iqa", items, i, 3, seed=7)
        assert prefix.endswith("\n\n")
    assert fewshot_prefix("social_iqa", items, 0, 0, seed=7) == ""
    with pytest.raises(ValueError, match="QuaRTz ships 4"):
        fewshot_prefix("quartz", load_items("quartz"), 0, 5, seed=0)


def test_raw_versus_length_normalized_choice() -> None:
    items = [MCItem("t/0", "q", ["a", "much longer option"], 1)]
    # raw: -3 > -10 picks the short one; per character: -3/2 = -1.5 < -10/19 = -0.53 picks the long one
    out = score_items("quartz", items, [0], [Loglik(-3.0, False, 1), Loglik(-10.0, False, 4)])
    rec = out["items"][0]
    assert (rec["pred"], rec["pred_norm"]) == (0, 1)
    assert out["metrics"]["acc"] == 0.0 and out["metrics"]["acc_norm"] == 1.0 and out["metrics"]["chance"] == 0.5
    assert rec["confidence"] == pytest.approx(1 / (1 + 2.718281828**-7), rel=1e-6)


def test_evaluate_mc_on_a_tiny_model(tiny_model_dir) -> None:
    from lmstack.model import load_model

    model, tok = load_model(tiny_model_dir, device="cpu")
    out = evaluate_mc(model, tok, "mmlu_letters", limit=5, num_fewshot=1)
    assert len(out["items"]) == 5 and 0.0 <= out["metrics"]["acc"] <= 1.0
    assert all(len(r["logliks"]) == 4 for r in out["items"]) and set(out["texts"]) == {f"mmlu/{i}" for i in range(5)}
    lo, hi = out["ci"]["acc"]
    assert lo <= out["metrics"]["acc"] <= hi
