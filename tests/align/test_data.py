"""Preference data (user JSONL with file:line errors, embedded verifiable pairs) and the tasks' rewards."""

from __future__ import annotations

import json

import pytest

from lmstack.align.preferences import encode_pairs, load_pairs, read_jsonl, select, task_pairs
from lmstack.align.tasks import REWARDS, Problem, last_number, make_problems, score_answer, splits
from lmstack.model import load_model


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reads_user_jsonl(tmp_path):
    f = write(tmp_path / "p.jsonl", [json.dumps({"prompt": "2+2?", "chosen": "4", "rejected": "5", "id": 1}), ""])
    [pair] = read_jsonl(f)
    assert (pair.prompt, pair.chosen, pair.rejected) == ("2+2?", "4", "5")


@pytest.mark.parametrize("line,match", [
    ("{not json", "p.jsonl:2: not valid JSON"),
    ('["a", "b"]', "p.jsonl:2: expected an object"),
    ('{"prompt": "a", "chosen": "b"}', "p.jsonl:2: missing field 'rejected'"),
    ('{"prompt": "a", "chosen": 3, "rejected": "c"}', "p.jsonl:2: field 'chosen' must be a non-empty string"),
    ('{"prompt": "", "chosen": "b", "rejected": "c"}', "p.jsonl:2: field 'prompt'"),
])  # fmt: skip
def test_malformed_lines_name_file_and_line(tmp_path, line, match):
    f = write(tmp_path / "p.jsonl", [json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}), line])
    with pytest.raises(ValueError, match=match):
        read_jsonl(f)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="no preference pairs"):
        read_jsonl(write(tmp_path / "e.jsonl", ["", " "]))


def test_user_split_is_fixed_and_disjoint(tmp_path):
    lines = [json.dumps({"prompt": f"q{i}", "chosen": "a", "rejected": "b"}) for i in range(20)]
    f = write(tmp_path / "p.jsonl", lines)
    train, held = load_pairs(str(f), "", 0.25, "chain_sum", 0, 0, seed=1)
    assert len(train) == 15 and len(held) == 5
    assert {p.prompt for p in train}.isdisjoint({p.prompt for p in held})
    assert [p.prompt for p in held] == [p.prompt for p in load_pairs(str(f), "", 0.25, "chain_sum", 0, 0, seed=1)[1]]


def test_embedded_pairs_are_right_versus_wrong_and_held_out_is_unseen():
    train, held = task_pairs("chain_sum", 40, 20, seed=5)
    assert len(train) == 40 and len(held) == 20
    assert {p.prompt for p in train}.isdisjoint({p.prompt for p in held})
    problems = {p.question: p for p in make_problems("chain_sum", 40, 5)}
    for pair in train:
        problem = problems[pair.prompt]
        assert score_answer(problem, pair.chosen) == 1.0  # the oracle answer, checked by reasoning-gym
        assert score_answer(problem, pair.rejected) == 0.0  # a near miss it rejects
    assert task_pairs("chain_sum", 40, 20, seed=5)[1] == held  # deterministic


def test_splits_reject_unknown_task():
    with pytest.raises(ValueError, match="--task"):
        splits("nope", 1, 1, 0)


def test_rewards():
    p = Problem("State the final answer to the following arithmetic problem: 58 + 26 =", "84",
                {"answer": "84", "metadata": {"source_dataset": "chain_sum"}})  # fmt: skip
    assert REWARDS["correct"](p, "58 + 26 = 84.") == 1.0
    assert REWARDS["correct"](p, "84 is wrong, it is 85") == 0.0
    assert REWARDS["exact"](p, " 84") == 1.0
    assert REWARDS["exact"](p, "it is 84") == pytest.approx(2 / 8)  # reasoning-gym's partial credit
    assert REWARDS["format"](p, " 12 ") == 1.0 and REWARDS["format"](p, "12 apples") == 0.0
    assert REWARDS["numeric"](p, "1a2b") == 0.5 and REWARDS["numeric"](p, "") == 0.0
    assert last_number("x -3, then 1,000") == "1,000"


def test_encode_pairs_puts_chosen_first(tiny_policy):
    _, tok = load_model(tiny_policy, device="cpu")
    train, _ = task_pairs("chain_sum", 3, 1, seed=0)
    rows = encode_pairs(tok, train)
    assert rows.input_ids.shape[0] == 6
    sub = select(rows, [2])
    chosen = tok.decode(sub.input_ids[0][sub.completion_mask[0].bool()].tolist())
    rejected = tok.decode(sub.input_ids[1][sub.completion_mask[1].bool()].tolist())
    assert (chosen, rejected) == (train[2].chosen + "<|im_end|>", train[2].rejected + "<|im_end|>")
