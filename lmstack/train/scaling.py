"""Scaling laws: sweep model sizes x token budgets, fit L(N, D) = E + A / N^alpha + B / D^beta, find the frontier.

    lmstack scaling                                   # the default ~15-minute CPU sweep on shakespeare
    lmstack scaling --models=2x64,4x128 --budgets=100000,200000 --out_dir=runs/scaling_toy

Follows Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models", Chinchilla), approach 3: each
(N, D) run trains with its own cosine schedule to its own budget; the parametric loss is fitted in log space,

    minimise  sum_i Huber_delta( LSE(e, a - alpha log N_i, b - beta log D_i) - log L_i ),   E = e^e, A = e^a, B = e^b

with delta = 1e-3, by L-BFGS from a grid of starting points (the best fit wins). With compute C = 6 N D
(Kaplan et al. 2020), minimising L subject to 6 N D = C gives the compute-optimal allocation

    N_opt(C) = G (C / 6)^(beta / (alpha + beta)),   D_opt(C) = (C / 6) / N_opt(C),
    G = (alpha A / (beta B))^(1 / (alpha + beta))

and the tokens-per-parameter ratio D_opt / N_opt, which Chinchilla puts at ~20 for its fit. N counts
non-embedding parameters (Kaplan's convention: at this tiny scale the embedding table would dominate N).
scipy is not a dependency, so the fit runs on torch's L-BFGS in float64.
Leaves out: approaches 1 and 2 of Hoffmann et al. (IsoFLOP profiles), learning-rate tuning per size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmstack.common.atomic import atomic_write_bytes, atomic_write_text
from lmstack.common.log import info, read_jsonl
from lmstack.model import ModelConfig
from lmstack.train.corpus_shards import corpus_shards
from lmstack.train.pretrain import PretrainConfig, train

CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al. 2022, eq. 10


@dataclass
class ScalingConfig:
    out_dir: str = "runs/scaling"  # runs/, results.jsonl, fit.json, scaling.png, report.md go here
    corpus: str = "shakespeare"  # corpus to sweep on
    vocab_size: int = 1024  # BPE vocabulary shared by every run
    # model sizes as LAYERSxWIDTH (heads = width / 32)
    models: list[str] = field(default_factory=lambda: ["2x64", "3x96", "4x128", "4x192"])
    # training tokens per run
    budgets: list[int] = field(default_factory=lambda: [100_000, 200_000, 400_000])
    seq_len: int = 128  # tokens per window
    batch_size: int = 16  # sequences per step
    lr: float = 3e-3  # peak learning rate (cosine to 10%)
    dtype: str = "bfloat16"  # float32 | bfloat16 (autocast)
    eval_tokens: int = 65536  # validation tokens scored per run (0 = the whole split)
    seed: int = 1337  # model init and batch order
    fit_only: bool = False  # refit and replot results.jsonl without training

    def __post_init__(self) -> None:
        for m in self.models:
            parse_model(m)
        if not self.models or not self.budgets:
            raise ValueError("--models and --budgets: each needs at least one value")
        if any(b < self.seq_len * self.batch_size for b in self.budgets):
            raise ValueError(f"--budgets: each must be >= one step of {self.seq_len * self.batch_size} tokens")
        if self.eval_tokens < 0:
            raise ValueError(f"--eval_tokens: got {self.eval_tokens}, expected >= 0")


def parse_model(spec: str) -> tuple[int, int]:
    """'4x128' -> (4 layers, width 128); the width must be a multiple of 32 (32-wide heads)."""
    try:
        layers, width = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise ValueError(f"--models: {spec!r} is not LAYERSxWIDTH (e.g. 4x128)") from None
    if layers < 1 or width < 32 or width % 32:
        raise ValueError(f"--models: {spec!r}: need >= 1 layer and a width that is a multiple of 32")
    return layers, width


# ---- the fit --------------------------------------------------------------------------------------------------


def predict(p: dict[str, float], n: Any, d: Any) -> Any:
    """L(N, D) = E + A / N^alpha + B / D^beta (works on floats and numpy/torch arrays)."""
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]


def _huber(r: torch.Tensor, delta: float) -> torch.Tensor:
    return torch.where(r.abs() <= delta, 0.5 * r**2, delta * (r.abs() - 0.5 * delta))


def fit(n: list[float], d: list[float], loss: list[float], delta: float = 1e-3, refine: int = 3) -> dict[str, float]:
    """Fit E, A, B, alpha, beta to observed losses (Hoffmann et al. 2022, approach 3); returns them + the objective.

    The objective is evaluated on a grid of 10,584 starting points at once, and L-BFGS refines the `refine`
    best of them (Hoffmann et al. refine every grid point; the best few reach the same minimum much faster).
    """
    log_n, log_d, log_l = (torch.tensor(v, dtype=torch.float64).log() for v in (n, d, loss))

    def objective(x: torch.Tensor) -> torch.Tensor:  # x: (..., 5) = e, a, b, alpha, beta -> (...,)
        e, a, b, alpha, beta = (v[..., None] for v in x.unbind(-1))
        terms = torch.stack(torch.broadcast_tensors(e, a - alpha * log_n, b - beta * log_d))  # (3, ..., runs)
        return _huber(torch.logsumexp(terms, dim=0) - log_l, delta).sum(-1)  # log predicted L vs log observed L

    axes = [torch.linspace(-1, 1.5, 6), torch.linspace(0, 12, 7), torch.linspace(0, 12, 7),
            torch.linspace(0.05, 1.0, 6), torch.linspace(0.05, 1.0, 6)]  # fmt: skip
    starts = torch.cartesian_prod(*axes).double()  # (6 * 7 * 7 * 6 * 6, 5)
    with torch.no_grad():
        order = torch.nan_to_num(objective(starts), nan=math.inf).argsort()
    best: dict[str, float] | None = None
    for i in order[:refine].tolist():
        x = starts[i].clone().requires_grad_(True)
        opt = torch.optim.LBFGS([x], lr=1.0, max_iter=300, tolerance_grad=1e-14, tolerance_change=1e-16,
                                line_search_fn="strong_wolfe")  # fmt: skip

        def closure(x: torch.Tensor = x, opt: torch.optim.LBFGS = opt) -> torch.Tensor:
            opt.zero_grad()
            value = objective(x)
            value.backward()
            return value

        opt.step(closure)
        with torch.no_grad():
            value = float(objective(x))
        if math.isfinite(value) and (best is None or value < best["objective"]):
            e, a, b, alpha, beta = x.detach().tolist()
            best = {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta,
                    "objective": value}  # fmt: skip
    assert best is not None, "no starting point gave a finite fit"
    return best


def compute_optimal(p: dict[str, float], compute: float) -> dict[str, float]:
    """N_opt, D_opt and D_opt / N_opt at `compute` FLOPs (C = 6 N D)."""
    a, b = p["alpha"], p["beta"]
    g = (a * p["A"] / (b * p["B"])) ** (1 / (a + b))
    n_opt = g * (compute / 6) ** (b / (a + b))
    d_opt = compute / 6 / n_opt
    return {"compute": compute, "n_opt": n_opt, "d_opt": d_opt, "tokens_per_param": d_opt / n_opt,
            "loss": predict(p, n_opt, d_opt)}  # fmt: skip


# ---- the sweep -------------------------------------------------------------------------------------------------


def run_one(cfg: ScalingConfig, data_dir: Path, spec: str, budget: int) -> dict[str, Any]:
    layers, width = parse_model(spec)
    steps = max(1, budget // (cfg.seq_len * cfg.batch_size))
    pcfg = PretrainConfig(
        data_dir=str(data_dir), out_dir=str(Path(cfg.out_dir) / "runs" / f"{spec}_{budget}"), overwrite=True,
        model=ModelConfig(n_layers=layers, d_model=width, n_heads=width // 32, tie_embeddings=True),
        seq_len=cfg.seq_len, batch_size=cfg.batch_size,
        max_steps=steps, lr=cfg.lr, warmup_frac=0.05, dtype=cfg.dtype, eval_every=0, seed=cfg.seed,
        final_eval_tokens=cfg.eval_tokens, sample_tokens=1, log_every=max(1, steps // 20),
    )  # fmt: skip
    result = train(pcfg)
    n = non_embedding_params(layers, width, pcfg.model.d_ff)
    return {"model": spec, "budget": budget, "n": n, "d": result["tokens_seen"], "params": result["params"],
            "compute": 6 * n * result["tokens_seen"], "val_loss": result["val_loss"], "val_bpb": result["val_bpb"],
            "train_s": result["train_s"]}  # fmt: skip


def non_embedding_params(layers: int, width: int, d_ff: int) -> int:
    """Attention (4 D^2) + SwiGLU (3 D F) + two RMSNorm gains per block, plus the final norm."""
    return layers * (4 * width * width + 3 * width * d_ff + 2 * width) + width


def main(cfg: ScalingConfig) -> int:
    out = Path(cfg.out_dir)
    results_file = out / "results.jsonl"
    if not cfg.fit_only:
        _, manifest, _ = corpus_shards(cfg.corpus, cfg.vocab_size, "gpt4", out / "data")
        done = {(r["model"], r["budget"]) for r in read_jsonl(results_file)} if results_file.exists() else set()
        todo = [(m, b) for m in cfg.models for b in cfg.budgets if (m, b) not in done]
        info(f"scaling: {len(cfg.models)} sizes x {len(cfg.budgets)} budgets; {len(todo)} runs to do")
        for i, (spec, budget) in enumerate(todo, 1):
            info(f"scaling run {i}/{len(todo)}: {spec}, {budget:,} tokens")
            record = run_one(cfg, out / "data", spec, budget)
            with results_file.open("a") as f:  # one line per finished run: the sweep resumes where it stopped
                f.write(json.dumps(record) + "\n")
    if not results_file.exists():
        raise FileNotFoundError(f"--fit_only: no {results_file}; run the sweep first")
    results = read_jsonl(results_file)
    p = fit([r["n"] for r in results], [r["d"] for r in results], [r["val_loss"] for r in results])
    c_max = max(r["compute"] for r in results)
    frontier = [compute_optimal(p, c_max * f) for f in (0.1, 1.0, 10.0)]
    atomic_write_text(out / "fit.json", json.dumps({"fit": p, "frontier": frontier, "chinchilla": CHINCHILLA,
                                                   "runs": len(results)}, indent=1))  # fmt: skip
    plot(results, p, out / "scaling.png")
    write_markdown(out, results, p, frontier)
    ratio = frontier[1]["tokens_per_param"]
    print(f"fit: E={p['E']:.3f} A={p['A']:.3g} B={p['B']:.3g} alpha={p['alpha']:.3f} beta={p['beta']:.3f}; "
          f"compute-optimal tokens/param at C={c_max:.2e}: {ratio:.1f} (Chinchilla ~20)")  # fmt: skip
    return 0


def plot(results: list[dict[str, Any]], p: dict[str, float], path: Path) -> None:
    """Validation loss vs compute per model size, with the fitted compute-optimal frontier."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for spec in dict.fromkeys(r["model"] for r in results):
        rs = sorted((r for r in results if r["model"] == spec), key=lambda r: r["compute"])
        ax.plot([r["compute"] for r in rs], [r["val_loss"] for r in rs], "o-", label=f"{spec} (N={rs[0]['n']:,})")
    cs = np.geomspace(min(r["compute"] for r in results) / 2, max(r["compute"] for r in results) * 4, 50)
    ax.plot(cs, [compute_optimal(p, c)["loss"] for c in cs], "k--", label="fitted frontier")
    ax.set_xscale("log")
    ax.set_xlabel("compute C = 6 N D (FLOPs)")
    ax.set_ylabel("validation loss (nats / token)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_markdown(out: Path, results: list[dict[str, Any]], p: dict[str, float], frontier: list[dict]) -> None:
    lines = [
        "# Scaling sweep",
        "",
        "| model | N (non-emb.) | D tokens | C | val loss | val bpb |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['model']} | {r['n']:,} | {r['d']:,} | {r['compute']:.2e} | {r['val_loss']:.3f} | "
              f"{r['val_bpb']:.3f} |" for r in results]  # fmt: skip
    law = f"{p['E']:.3f} + {p['A']:.3g} / N^{p['alpha']:.3f} + {p['B']:.3g} / D^{p['beta']:.3f}"
    lines += ["", f"Fit: L(N, D) = {law}", "", "| C (FLOPs) | N_opt | D_opt | tokens / param | predicted loss |",
              "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {f['compute']:.2e} | {f['n_opt']:,.0f} | {f['d_opt']:,.0f} | {f['tokens_per_param']:.1f} | "
              f"{f['loss']:.3f} |" for f in frontier]  # fmt: skip
    lines += ["", "Chinchilla (Hoffmann et al. 2022): ~20 tokens per parameter.", "", "![scaling](scaling.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
