"""The optimizer-step loop the pairwise recipes (reward model, DPO, ORPO) share: a seeded batch of pairs per step,
the LR schedule, a progress bar, JSON-lines logging, a finite-loss check, periodic evaluation and checkpoints.
Each recipe passes what differs: its step, its evaluation and how it saves."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from lmstack.align.batching import batch_indices
from lmstack.common.log import progress


def pair_loop(
    run: Any,
    state: dict[str, Any],
    n_pairs: int,
    step: Callable[[list[int], float], dict[str, float]],
    evaluate: Callable[[], dict[str, float]],
    save: Callable[[], None],
    show: str,
    show_eval: str | None = None,
) -> None:
    """Optimizer steps until the budget is spent; mutates `state` (step, elapsed_s).

    step(indices, lr) trains on the pairs `indices` (a pure function of (seed, step)) and returns its metrics;
    `show` (and `show_eval`, from the evaluation) name the metrics on the progress bar."""
    cfg, schedule = run.cfg, run.cfg.lr_schedule()
    bar = progress(total=cfg.max_steps, initial=state["step"], unit="step")
    while state["step"] < cfg.max_steps and not (cfg.stop_after and state["step"] >= cfg.stop_after):
        idx = batch_indices(n_pairs, cfg.batch_size, state["step"], cfg.seed)
        t0 = time.perf_counter()
        m = step(idx, schedule.lr((state["step"] + 1) / cfg.max_steps))
        state.update(step=state["step"] + 1, elapsed_s=state["elapsed_s"] + time.perf_counter() - t0)
        bar.update(1)
        bar.set_postfix(loss=f"{m['loss']:.3f}", **{show: f"{m[show]:.3f}"}, refresh=False)
        if state["step"] % cfg.log_every == 0 or state["step"] == 1:
            run.log.log(step=state["step"], elapsed_s=state["elapsed_s"], **m)
        if not math.isfinite(m["loss"]):
            raise FloatingPointError(f"loss is {m['loss']} at step {state['step']}; lower --lr")
        n, done = state["step"], state["step"] >= cfg.max_steps
        if cfg.eval_every and n % cfg.eval_every == 0 and not done:
            ev = evaluate()
            run.log.log(step=n, **ev)
            if show_eval:
                bar.set_postfix(loss=f"{m['loss']:.3f}", **{show_eval: f"{ev[show_eval]:.3f}"}, refresh=False)
        if cfg.ckpt_every and n % cfg.ckpt_every == 0 and not done:
            save()
    bar.close()
