"""`lmstack report --model DIR`: one page per model gathering every stage that touched it.

    lmstack report --model runs/speedrun_cpu/checkpoint
    -> runs/speedrun_cpu/card/card.md, card.json, loss.png, evals.png, <stage>_curve.png

Sections, each shown only when its source exists on disk:
  - model: architecture, parameters, fingerprint (config.json + weights + tokenizer);
  - lineage (`lineage.py`): this model's run and the runs it started from, with each one's config and the figures
    it wrote (`report.json`, `results.json`, `*_results.json`: the flat numbers) and its training curve
    (`metrics.jsonl`); for pretraining the train / validation loss curve (`lmstack.train.report.plot_losses`);
  - evaluations: every task result cached for these exact weights (`cache.py`, written by `lmstack eval`) with 95%
    intervals and contamination flags, plus a bar chart;
  - deltas: for each stage against the one it started from, the change of every evaluation (same task, same
    settings) and of every shared figure — what fine-tuning, alignment or quantization bought or cost;
  - decode speed: prefill and decode tokens/s measured now with `generate` (batch 1, greedy).
Left out: HTML, comparisons across unrelated models (run `lmstack eval` on each and compare the tables).
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lmstack.common.atomic import atomic_write_bytes, atomic_write_text
from lmstack.common.log import info, read_jsonl
from lmstack.eval import cache
from lmstack.eval.lineage import Stage, lineage


@dataclass
class ReportConfig:
    model: str = ""  # the model to report on: an HF model directory (a run's checkpoint/) or a local model name
    out_dir: str = ""  # where card.md / card.json / PNGs go ("" = <run dir>/card, or runs/report/<name>)
    speed: bool = True  # measure prefill / decode tokens per second now
    speed_tokens: int = 32  # new tokens generated for the decode-speed measurement
    device: str = "auto"  # auto | cpu | cuda[:N] | mps (for the speed measurement)
    overwrite: bool = False  # write into a non-empty --out_dir that holds no earlier card

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("--model is required: a model directory (e.g. runs/speedrun_cpu/checkpoint) or name")
        if self.speed_tokens < 1:
            raise ValueError(f"--speed_tokens={self.speed_tokens}: expected >= 1")


def flat_figures(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers in a results JSON, nested keys joined with '.', skipping lists and the embedded config."""
    out: dict[str, float] = {}
    for k, v in data.items():
        if k in ("config", "samples", "items"):
            continue
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[prefix + k] = v
        elif isinstance(v, dict):
            out.update(flat_figures(v, f"{prefix}{k}."))
    return out


def final_metrics(metrics: list[dict[str, Any]]) -> dict[str, float]:
    """The last logged value of every numeric key in a metrics.jsonl."""
    last: dict[str, float] = {}
    for rec in metrics:
        for k, v in rec.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "t":
                last[k] = v
    return last


def before_after(final: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Measures a stage logged both before and after it ran (`before_x` and `after_x`): x -> (before, after)."""
    return {
        k[7:]: (final[k], final["after_" + k[7:]])
        for k in final
        if k.startswith("before_") and "after_" + k[7:] in final
    }


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def plot_curve(metrics: list[dict[str, Any]], title: str) -> bytes | None:
    """Loss-like series against step for a stage that is not pretraining (any numeric key with 'loss' in it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for m in metrics for k, v in m.items() if "loss" in k and isinstance(v, (int, float))})
    series = {k: [(m["step"], m[k]) for m in metrics if k in m and "step" in m and not m.get("final")] for k in keys}
    series = {k: v for k, v in series.items() if len(v) > 1}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    for k, pts in series.items():
        ax.plot(*zip(*pts), lw=1, label=k)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def plot_evals(evals: list[dict[str, Any]], title: str) -> bytes:
    """Headline score per task with its 95% interval as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [e["task"] for e in evals]
    vals = [e["metrics"][e["headline"]] for e in evals]
    lo = [v - e.get("ci", {}).get(e["headline"], (v, v))[0] for v, e in zip(vals, evals)]
    hi = [e.get("ci", {}).get(e["headline"], (v, v))[1] - v for v, e in zip(vals, evals)]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names)), 3.5), dpi=110)
    ax.bar(names, vals, yerr=[lo, hi], capsize=4, color="#4c78a8")
    for i, e in enumerate(evals):
        chance = e["metrics"].get("chance")
        if chance is not None:
            ax.plot([i - 0.4, i + 0.4], [chance, chance], "k--", lw=1)
    ax.set_ylabel("score (headline metric)")
    ax.set_title(title + " (dashed: chance)")
    ax.tick_params(axis="x", rotation=30)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def decode_speed(model_dir: Path, device: str, new_tokens: int) -> dict[str, float]:
    """Prefill and decode throughput (tokens/s, batch 1, greedy) on a fixed prompt of up to 64 tokens; best of 2."""
    from lmstack.generate import GenerationStats, SamplingParams, generate
    from lmstack.model import load_model

    model, tok = load_model(model_dir, device=device)
    n_prompt = min(64, model.config.max_seq_len // 2)
    prompt = (tok.encode("The history of the region is long and varied, and it begins with ") * 64)[:n_prompt]
    new = max(2, min(new_tokens, model.config.max_seq_len - n_prompt))
    params = SamplingParams(max_new_tokens=new, temperature=0.0, ignore_eos=True)
    best: dict[str, float] = {}
    for _ in range(2):
        t = time.perf_counter()
        generate(model, [prompt], params.replace(max_new_tokens=1))
        prefill_s = time.perf_counter() - t
        stats = GenerationStats()
        t = time.perf_counter()
        generate(model, [prompt], params, stats=stats)
        decode_s = max(time.perf_counter() - t - prefill_s, 1e-9)
        run = {"prefill_tokens_per_s": len(prompt) / prefill_s,
               "decode_tokens_per_s": max(stats.new_tokens - 1, 1) / decode_s}  # fmt: skip
        best = {k: max(v, best.get(k, 0.0)) for k, v in run.items()}
    return {**best, "device": str(next(model.parameters()).device), "prompt_tokens": len(prompt),
            "new_tokens": params.max_new_tokens}  # fmt: skip


def evaluations(model_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    """The model's fingerprint and its cached results for the current version of each task."""
    from lmstack.eval.tasks import TASKS

    fp = cache.fingerprint(model_dir)

    def is_current(r: dict[str, Any]) -> bool:
        return r.get("task") in TASKS and r.get("settings", {}).get("task_version", 1) == TASKS[r["task"]].version

    current = [r for r in cache.all_results(fp) if is_current(r)]
    return fp, sorted(current, key=lambda r: r["task"])


def eval_key(r: dict[str, Any]) -> str:
    return r["task"] + json.dumps(r.get("settings", {}), sort_keys=True)


def deltas(child: list[dict[str, Any]], parent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Score changes between two models on the evaluations both have with identical settings."""
    by_key = {eval_key(r): r for r in parent}
    out = []
    for r in child:
        p = by_key.get(eval_key(r))
        if p is not None:
            h = r["headline"]
            out.append({"task": r["task"], "metric": h, "parent": p["metrics"][h], "model": r["metrics"][h],
                        "delta": r["metrics"][h] - p["metrics"][h]})  # fmt: skip
    return out


def _stage_kind(s: Stage) -> str:
    if "report.json" in s.results and "val_bpb" in s.results["report.json"]:
        return "pretraining"
    return str(s.config.get("stage", "")) or ("run" if s.run_dir else "model")


def render(cfg: ReportConfig) -> Path:
    from lmstack.model.loader import model_path

    model_dir = Path(model_path(cfg.model)).resolve()
    stages = lineage(model_dir)
    here = stages[0]
    out = (
        Path(cfg.out_dir)
        if cfg.out_dir
        else (here.run_dir / "card" if here.run_dir else Path("runs/report") / model_dir.name)
    )
    if out.is_dir() and any(out.iterdir()) and not (out / "card.md").is_file() and not cfg.overwrite:
        raise ValueError(f"--out_dir: {out} is not empty and holds no earlier card; choose another or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((model_dir / "config.json").read_text())
    fp, evals = evaluations(model_dir)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    card: dict[str, Any] = {"model": {"path": str(model_dir), "fingerprint": fp, "config": config},
                            "generated": now, "stages": []}  # fmt: skip
    md = [
        f"# Report card: {here.name}",
        "",
        f"`{model_dir}` · fingerprint `{fp[:16]}` · generated {card['generated']}",
        "",
    ]
    md += ["## Model", "", "| | |", "|---|---|"]
    for k in ("model_type", "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
              "intermediate_size", "vocab_size", "max_position_embeddings", "torch_dtype"):  # fmt: skip
        if k in config:
            md.append(f"| {k} | {config[k]} |")
    if "quantization_config" in config:
        md.append(f"| quantization | {json.dumps(config['quantization_config'])[:120]} |")
    md += ["", "## Lineage", "", "| # | stage | run directory | started from |", "|---|---|---|---|"]
    for i, s in enumerate(stages):
        md.append(f"| {i} | {_stage_kind(s)} | `{s.run_dir or s.model_dir}` | {s.parent or '-'} |")
    stage_evals = {0: evals}
    for i, s in enumerate(stages):
        md += _stage_section(i, s, out, card, stages)
        if i > 0:
            try:
                stage_evals[i] = evaluations(s.model_dir)[1]
            except FileNotFoundError:
                stage_evals[i] = []
    md += _eval_section(evals, out, here.name)
    card["evaluations"] = [{k: v for k, v in e.items() if k not in ("items", "texts")} for e in evals]
    delta_rows = []
    for i in range(len(stages) - 1):
        for d in deltas(stage_evals.get(i, []), stage_evals.get(i + 1, [])):
            delta_rows.append({"stage": stages[i].name, "from": stages[i + 1].name, **d})
    card["deltas"] = delta_rows
    if delta_rows:
        md += [
            "",
            "## Deltas against the model each stage started from",
            "",
            "| stage | from | task | metric | before | after | change |",
            "|---|---|---|---|---|---|---|",
        ]
        md += [f"| {d['stage']} | {d['from']} | {d['task']} | {d['metric']} | {d['parent']:.3f} | {d['model']:.3f} | "
               f"{d['delta']:+.3f} |" for d in delta_rows]  # fmt: skip
    if cfg.speed:
        info("report: measuring decode speed")
        card["speed"] = decode_speed(model_dir, cfg.device, cfg.speed_tokens)
        sp = card["speed"]
        md += ["", "## Decode speed", "",
               f"Batch 1, greedy, {sp['prompt_tokens']}-token prompt, {sp['new_tokens']} new tokens on {sp['device']}, "
               "best of 2 (measured while this card was made; a shared machine makes it noisy):", "",
               "| prefill tokens/s | decode tokens/s |", "|---|---|",
               f"| {sp['prefill_tokens_per_s']:.0f} | {sp['decode_tokens_per_s']:.1f} |"]  # fmt: skip
    atomic_write_text(out / "card.json", json.dumps(card, indent=1, default=str) + "\n")
    atomic_write_text(out / "card.md", "\n".join(md) + "\n")
    return out / "card.md"


def _stage_section(i: int, s: Stage, out: Path, card: dict[str, Any], stages: list[Stage]) -> list[str]:
    """Markdown for one lineage stage: its figures, final logged metrics and curve."""
    from lmstack.train.report import plot_losses

    entry: dict[str, Any] = {"name": s.name, "kind": _stage_kind(s), "run_dir": str(s.run_dir or ""),
                             "parent": s.parent, "figures": {}}  # fmt: skip
    card["stages"].append(entry)
    if s.run_dir is None:
        return []
    md = ["", f"## Stage {i}: {entry['kind']} — `{s.name}`", ""]
    for fname, data in s.results.items():
        figs = flat_figures(data)
        entry["figures"][fname] = figs
        if figs:
            md += [f"Figures from `{fname}`:", "", "| figure | value |", "|---|---|"]
            md += [f"| {k} | {v:,.4g} |" for k, v in figs.items()] + [""]
    metrics_file = s.run_dir / "metrics.jsonl"
    if metrics_file.is_file():
        metrics = read_jsonl(metrics_file)
        entry["final_metrics"] = final_metrics(metrics)
        pairs = before_after(entry["final_metrics"])
        entry["before_after"] = pairs
        if pairs:
            md += ["What this stage changed (`before_*` / `after_*` in its metrics.jsonl):", "",
                   "| measure | before | after | change |", "|---|---|---|---|"]  # fmt: skip
            md += [f"| {k} | {b:.4g} | {a:.4g} | {a - b:+.4g} |" for k, (b, a) in pairs.items()] + [""]
        png = f"stage{i}_curve.png"
        if entry["kind"] == "pretraining":
            bpb = s.results["report.json"]["val_bpb"]
            plot_losses(metrics, out / png, f"{s.name}: val {bpb:.3f} bits/byte")
            md += [f"![training curve]({png})", ""]
        else:
            img = plot_curve(metrics, s.name)
            if img is not None:
                atomic_write_bytes(out / png, img)
                md += [f"![training curve]({png})", ""]
    keys = ("corpus", "data", "method", "n_layers", "d_model", "n_heads", "seq_len", "batch_size", "lr", "max_steps",
            "train_seconds", "bits", "group_size")  # fmt: skip
    flat = {f"{k}.{k2}" if isinstance(v, dict) else k: v2 for k, v in s.config.items()
            for k2, v2 in (v.items() if isinstance(v, dict) else [(k, v)])}  # fmt: skip
    shown = {k: v for k, v in flat.items() if k.split(".")[-1] in keys} or dict(list(flat.items())[:10])
    if shown:
        md += ["Config (excerpt; full in `config.yaml`): " + ", ".join(f"`{k}={v}`" for k, v in shown.items()), ""]
    return md


def _eval_section(evals: list[dict[str, Any]], out: Path, name: str) -> list[str]:
    md = ["", "## Evaluations", ""]
    if not evals:
        return md + ["None cached for these weights yet: run `lmstack eval --model <this model> --tasks ...`.", ""]
    md += ["| task | metric | score | 95% CI | n | few-shot | contamination |", "|---|---|---|---|---|---|---|"]
    for e in evals:
        h = e["headline"]
        ci = e.get("ci", {}).get(h)
        c = e.get("contamination", {})
        cont = (
            f"{c['flagged']}/{c['checked']} items flagged ({', '.join(c.get('sources', []))})"
            if c.get("checked")
            else "not checked"
        )
        md.append(f"| {e['task']} | {h} | {e['metrics'][h]:.3f} | {f'{ci[0]:.3f}–{ci[1]:.3f}' if ci else '-'} | "
                  f"{e.get('n', '-')} | {e.get('num_fewshot', '-')} | {cont} |")  # fmt: skip
    from lmstack.eval.tasks import TASKS

    scores = [e for e in evals if e["task"] in TASKS and TASKS[e["task"]].higher_is_better]  # accuracies, pass@k
    if not scores:
        return md + [""]
    atomic_write_bytes(out / "evals.png", plot_evals(scores, name))
    return md + ["", "![evaluation scores with 95% intervals](evals.png)", ""]


def main(cfg: ReportConfig) -> int:
    path = render(cfg)
    print(f"report card: {path}")
    return 0


if __name__ == "__main__":
    import sys

    from lmstack.cli import main as cli_main

    sys.exit(cli_main(["report", *sys.argv[1:]]))
