"""Run reports: `report.json` (machine-readable figures), `report.md` (the same for people) and a loss-curve PNG.

The curve is read back from the run's `metrics.jsonl` (written by `pretrain.py`): training loss per logged step
and validation loss per evaluation, both in nats per token against tokens seen, with the final full-split
validation loss marked. Everything is written atomically.
Leaves out: HTML reports, comparisons across runs (see docs/log.md for those).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import yaml

from lmstack.common.atomic import atomic_write_bytes, atomic_write_text
from lmstack.common.log import read_jsonl

REQUIRED = ("val_bpb", "val_loss", "params", "tokens_seen", "tokens_per_s", "wall_s", "train_s")


def plot_losses(metrics: list[dict[str, Any]], path: Path, title: str) -> None:
    """Train loss and validation loss (nats/token) against tokens seen, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    train = [(m["tokens_seen"], m["loss"]) for m in metrics if "loss" in m and "tokens_seen" in m]
    val = [(m["tokens_seen"], m["val_loss"]) for m in metrics if "val_loss" in m and not m.get("final")]
    final = [m for m in metrics if m.get("final")]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train), lw=1, alpha=0.8, label="train loss (batch)")
    if val:
        ax.plot(*zip(*val), "o-", ms=3, label="val loss (periodic estimate)")
    if final and train:
        ax.plot([train[-1][0]], [final[-1]["val_loss"]], "r*", ms=10, label="val loss (whole split)")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def write_report(run_dir: str | Path, figures: dict[str, Any], config: dict[str, Any], extra: dict[str, Any]) -> Path:
    """Write report.json, report.md and loss.png into `run_dir`; return the markdown path.

    figures: flat numbers, must include REQUIRED; config: the resolved run config;
    extra: {"data": {...}, "tokenizer": {...}, "timings": {...}, "samples": [str, ...]} sections.
    """
    run_dir = Path(run_dir)
    missing = [k for k in REQUIRED if k not in figures]
    assert not missing, f"report figures lack {missing}"
    metrics_file = run_dir / "metrics.jsonl"
    metrics = read_jsonl(metrics_file) if metrics_file.is_file() else []
    plot_losses(metrics, run_dir / "loss.png", f"{run_dir.name}: val {figures['val_bpb']:.3f} bits/byte")
    record = {**figures, **{k: v for k, v in extra.items() if k != "samples"}, "samples": extra.get("samples", [])}
    record["config"] = config
    atomic_write_text(run_dir / "report.json", json.dumps(record, indent=1, default=str) + "\n")
    md = [f"# Run report: {run_dir.name}", "", "## Result", "", "| figure | value |", "|---|---|"]
    md += [f"| {k} | {_fmt(v)} |" for k, v in figures.items()]
    for section in ("timings", "data", "tokenizer"):
        if section in extra:
            md += ["", f"## {section.capitalize()}", "", "| | |", "|---|---|"]
            md += [f"| {k} | {_fmt(v)} |" for k, v in extra[section].items()]
    md += ["", "## Loss curve", "", "![loss curve](loss.png)", ""]
    md += ["Training loss per logged batch and the periodic validation estimate (a prefix of the split), in nats",
           "per token; the star is the final loss over the whole validation split.", ""]  # fmt: skip
    md += ["## Samples", ""]
    for s in extra.get("samples", []):
        md += ["```text", s.strip("\n"), "```", ""]
    md += ["## Config", "", "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(md))
    return path
