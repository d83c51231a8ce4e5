"""`lmstack eval`: score a model on benchmark tasks; print a table, write results JSON + markdown, cache by model.

    lmstack eval --model smollm2-135m --tasks social_iqa,mmlu,humaneval --limit 200
    lmstack eval --model runs/speedrun_cpu/checkpoint --tasks perplexity,social_iqa --contamination=auto,shakespeare

Per task (`tasks.py` lists them): look the result up in the cache (model fingerprint, task, settings; `cache.py`),
else run it and store it. Then every item's text is checked for 13-gram overlap with the model's own training shards
(found from its run directory, `lineage.py`) and with any corpus or file named in `--contamination`
(`contamination.py`); flagged items are marked in the results and each task also reports its score on the clean
items. Output: `<out_dir>/results.json` (everything, per item), `<out_dir>/results.md` (the table) and the table on
stdout. Scores carry 95% intervals (`confidence.py`). Leaves out: distributed evaluation, model-parallel loading.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lmstack.common.atomic import atomic_write_text
from lmstack.common.config import config_to_dict
from lmstack.common.log import info, progress
from lmstack.common.signals import interruptible
from lmstack.eval import cache
from lmstack.eval.tasks import TASKS, parse_tasks


@dataclass
class EvalConfig:
    model: str = "smollm2-135m"  # a local model name, an HF model directory or a .gguf file
    # comma-separated: social_iqa quartz mmlu mmlu_letters logiqa arithmetic gsm humaneval perplexity
    tasks: str = "social_iqa,mmlu,humaneval"
    limit: int = 0  # items per task (0 = all; arithmetic/gsm generate 100)
    num_fewshot: int = -1  # solved examples before each question (-1 = task default: 0, or 3 for arithmetic/gsm)
    seed: int = 1234  # few-shot example choice, generated problems, sampling
    humaneval_samples: int = 1  # completions per HumanEval problem (1 = greedy pass@1; >= 10 adds pass@10)
    temperature: float = 0.8  # sampling temperature when humaneval_samples > 1
    max_new_tokens: int = 256  # HumanEval completion budget
    humaneval_chat: str = "auto"  # HumanEval prompt: auto (chat format if the tokenizer has ChatML) | on | off
    timeout_s: float = 10.0  # wall-clock limit per HumanEval program
    sandbox: str = "namespaces"  # namespaces (isolated files + network) | rlimits (limits only, when no unshare)
    ppl_corpus: str = "shakespeare"  # perplexity task: a corpus name (its validation split) or comma-separated files
    contamination: str = "auto"  # 13-gram check against: auto (the model's training shards), corpus names, files; none
    ngram: int = 13  # n-gram length of the contamination check
    out_dir: str = ""  # where results.json / results.md go ("" = runs/eval/<model>/<time>)
    overwrite: bool = False  # write results into a non-empty --out_dir that holds no earlier results
    cache: bool = True  # reuse cached task results for the same weights and settings
    device: str = "auto"  # auto | cpu | cuda[:N] | mps
    dtype: str = ""  # float32 | bfloat16 | float16 ("" = the checkpoint's)

    def __post_init__(self) -> None:
        parse_tasks(self.tasks)
        if self.limit < 0:
            raise ValueError(f"--limit={self.limit}: expected >= 0 (0 = every item)")
        if self.humaneval_samples < 1:
            raise ValueError(f"--humaneval_samples={self.humaneval_samples}: expected >= 1")
        if self.ngram < 1:
            raise ValueError(f"--ngram={self.ngram}: expected >= 1")
        if self.humaneval_chat not in ("auto", "on", "off"):
            raise ValueError(f"--humaneval_chat={self.humaneval_chat!r}: expected auto, on or off")
        if self.sandbox not in ("namespaces", "rlimits"):
            raise ValueError(f"--sandbox={self.sandbox!r}: expected 'namespaces' or 'rlimits'")
        if self.timeout_s <= 0:
            raise ValueError(f"--timeout_s={self.timeout_s}: expected > 0")


def settings_of(cfg: EvalConfig, task: str) -> dict[str, Any]:
    settings = {name: getattr(cfg, name) for name in TASKS[task].settings}
    return settings | ({"task_version": TASKS[task].version} if TASKS[task].version > 1 else {})


def model_info(model: Any, spec: str, path: Path, fp: str) -> dict[str, Any]:
    c = model.config
    return {"spec": spec, "path": str(path), "fingerprint": fp, "params": sum(p.numel() for p in model.parameters()),
            "n_layers": c.n_layers, "d_model": c.d_model, "vocab_size": c.vocab_size, "max_seq_len": c.max_seq_len,
            "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}  # fmt: skip


def run_task(task: str, model: Any, tok: Any, cfg: EvalConfig, fp: str) -> dict[str, Any]:
    """A task's result from the cache or a fresh run (then cached)."""
    settings = settings_of(cfg, task)
    if cfg.cache:
        hit = cache.load(fp, task, settings)
        if hit is not None:
            return {**hit, "cached": True}
    t = time.perf_counter()
    result = TASKS[task].run(model, tok, cfg, True)
    result.update(task=task, settings=settings, headline=TASKS[task].headline, seconds=time.perf_counter() - t,
                  n=result.get("n", len(result["items"])), cached=False)  # fmt: skip
    cache.store(fp, task, settings, result)
    return result


def contamination_indexes(cfg: EvalConfig, model_dir: Path, texts: list[str]) -> list[Any]:
    """The n-gram indexes `--contamination` asks for (the training shards found for `auto`)."""
    from lmstack.data.corpus import list_corpora, load_corpus, load_files
    from lmstack.eval.contamination import NgramIndex, shard_documents, short_lengths
    from lmstack.eval.lineage import lineage, training_data_dirs

    specs = [s.strip() for s in cfg.contamination.split(",") if s.strip()]
    if specs == ["none"]:
        return []
    short = short_lengths(texts, cfg.ngram)
    indexes = []
    for spec in specs:
        if spec == "auto":
            for d in training_data_dirs(lineage(model_dir)):
                indexes.append(NgramIndex(shard_documents(d), cfg.ngram, short, name=f"training shards {d}"))
        elif spec in list_corpora():
            indexes.append(NgramIndex(load_corpus(spec), cfg.ngram, short, name=f"corpus {spec}"))
        else:
            indexes.append(NgramIndex(load_files([spec]), cfg.ngram, short, name=f"file {spec}"))
    return indexes


def apply_contamination(result: dict[str, Any], indexes: list[Any]) -> None:
    """Flag each item, summarize per task, and recompute the headline on the clean items."""
    from lmstack.eval.contamination import check_items

    texts = result.get("texts", {})
    if not indexes or not texts:
        result["contamination"] = {"checked": 0, "flagged": 0, "sources": [i.name for i in indexes]}
        return
    found = check_items(texts, indexes)
    for rec in result["items"]:
        o = found.get(rec["id"])
        if o is not None:
            rec["contaminated"], rec["overlap"] = o.flagged, round(o.overlap, 4)
    flagged = [k for k, o in found.items() if o.flagged]
    summary = {"checked": len(found), "flagged": len(flagged), "flagged_ids": flagged[:50],
               "sources": [i.name for i in indexes]}  # fmt: skip
    clean = [r for r in result["items"] if not r.get("contaminated")]
    if flagged and clean:
        summary["clean_" + result["headline"]] = headline_on(result["headline"], clean)
    result["contamination"] = summary


def headline_on(metric: str, records: list[dict[str, Any]]) -> float | None:
    """The headline metric recomputed on a subset of item records."""
    from lmstack.eval.pass_at_k import pass_at_k

    if metric.startswith("pass@"):
        k = int(metric[5:])
        return sum(pass_at_k(r["n"], r["passed"], k) for r in records) / len(records)
    key = {"acc": "correct", "acc_norm": "correct_norm"}.get(metric)
    return sum(r[key] for r in records) / len(records) if key else None


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


def table(results: dict[str, dict[str, Any]]) -> str:
    """The markdown summary: one row per task."""
    rows = ["| task | metric | score | 95% CI | n | shots | other metrics | contamination | time |",
            "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for task, r in results.items():
        h = r["headline"]
        lo_hi = r.get("ci", {}).get(h)
        ci = f"{lo_hi[0]:.3f}–{lo_hi[1]:.3f}" if lo_hi else "-"
        others = ", ".join(f"{k} {_fmt(v)}" for k, v in r["metrics"].items() if k != h)
        if r.get("skipped"):
            others += f", {r['skipped']} items skipped (longer than the model's window)"
        c = r.get("contamination", {})
        cont = f"{c['flagged']}/{c['checked']} flagged" if c.get("checked") else "not checked"
        if c.get(f"clean_{h}") is not None:
            cont += f" (clean {h} {_fmt(c['clean_' + h])})"
        shots = r.get("num_fewshot", "-")
        when = "cached" if r.get("cached") else f"{r['seconds']:.0f} s"
        rows.append(
            f"| {task} | {h} | {_fmt(r['metrics'].get(h))} | {ci} | {r['n']} | {shots} | {others} | {cont} | {when} |"
        )
    return "\n".join(rows)


def out_dir_for(cfg: EvalConfig) -> Path:
    """--out_dir if it is missing, empty or holds earlier results (written without asking, like any lmstack save);
    another non-empty directory needs --overwrite (and even then only results.json / results.md are written)."""
    if cfg.out_dir:
        out = Path(cfg.out_dir)
        if out.is_file():
            raise ValueError(f"--out_dir: {out} is a file; expected a directory")
        busy = out.is_dir() and any(out.iterdir()) and not (out / "results.json").is_file()
        if busy and not cfg.overwrite:
            raise ValueError(f"--out_dir: {out} is not empty and holds no earlier results; choose another directory "
                             "or pass --overwrite (only results.json and results.md are written)")  # fmt: skip
        return out
    name = Path(cfg.model).name.replace(".gguf", "") or "model"
    return Path("runs/eval") / name / datetime.now().strftime("%Y%m%d-%H%M%S")


def main(cfg: EvalConfig) -> int:
    from lmstack.model import load_model, model_path

    names = parse_tasks(cfg.tasks)
    out = out_dir_for(cfg)
    path = model_path(cfg.model)
    fp = cache.fingerprint(path)
    model, tok = load_model(cfg.model, device=cfg.device, dtype=cfg.dtype or None)
    info(f"eval: {cfg.model} ({fp[:12]}) on {', '.join(names)}" + (f", {cfg.limit} items each" if cfg.limit else ""))
    results = {}
    with interruptible():  # SIGTERM like Ctrl-C: finished tasks are already in the cache, a rerun resumes there
        try:
            for task in progress(names, desc="tasks", unit="task"):
                results[task] = run_task(task, model, tok, cfg, fp)
                r = results[task]
                info(f"  {task}: {r['headline']} {_fmt(r['metrics'].get(r['headline']))}"
                     + (" (cached)" if r.get("cached") else f" in {r['seconds']:.0f} s"))  # fmt: skip
        except KeyboardInterrupt:
            info(f"eval: interrupted; {len(results)} finished task(s) are cached, the same command continues")
            return 130
    texts = [t for r in results.values() for t in r.get("texts", {}).values()]
    indexes = contamination_indexes(cfg, path, texts)
    for task, r in results.items():
        apply_contamination(r, indexes)
        cache.store(fp, task, r["settings"], {k: v for k, v in r.items() if k != "cached"})
    record = {"model": model_info(model, cfg.model, path, fp), "config": config_to_dict(cfg),
              "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "tasks": results}  # fmt: skip
    md = table(results)
    atomic_write_text(out / "results.json", json.dumps(record, indent=1, default=str) + "\n")
    atomic_write_text(out / "results.md", f"# Evaluation of {cfg.model}\n\nfingerprint `{fp[:16]}`\n\n{md}\n")
    print(md)
    print(f"\nresults: {out}/results.json, {out}/results.md")
    return 0


if __name__ == "__main__":
    import sys

    from lmstack.cli import main as cli_main

    sys.exit(cli_main(["eval", *sys.argv[1:]]))
