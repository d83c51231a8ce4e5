"""Training curves of an alignment run, read back from its metrics.jsonl and drawn as one PNG.

Each panel plots some metric keys against the optimizer step: per-step values (noisy: one batch each) as thin
lines, held-out evaluations (records logged at evaluation steps, including step 0 = before training and the
final one) as markers. GRPO's panel is the reward curve the issue asks for: mean sampled reward per step and the
mean greedy reward on held-out prompts.
Left out: smoothing, wall-clock axes, comparing several runs in one figure (docs/align.md does that by hand).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from lmstack.common.atomic import atomic_write_bytes
from lmstack.common.log import read_jsonl


def plot_curves(run_dir: str | Path, panels: list[tuple[str, list[str]]], title: str) -> Path:
    """Write <run_dir>/curves.png: one panel per (y label, metric keys); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    metrics: list[dict[str, Any]] = read_jsonl(run_dir / "metrics.jsonl")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), dpi=110, squeeze=False)
    for ax, (label, keys) in zip(axes[0], panels):
        for key in keys:
            points = [(m["step"], m[key]) for m in metrics if key in m and "step" in m]
            if not points:
                continue
            held_out = key.startswith(("eval_", "pref_", "logp_margin"))
            style = dict(marker="o", ms=4, lw=1.5) if held_out else dict(lw=0.8, alpha=0.8)
            ax.plot(*zip(*points), label=key, **style)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path = run_dir / "curves.png"
    atomic_write_bytes(path, buf.getvalue())
    return path
