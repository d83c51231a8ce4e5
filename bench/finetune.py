"""Full fine-tune vs LoRA vs QLoRA vs prompt tuning on one model and the same data: trainable parameters, memory,
step time, final loss, held-out exact match. Writes a table and a bar plot (docs/img/finetune_methods.png) and
its section of docs/benchmarks.md.

    flock /tmp/bench.lock python bench/finetune.py [--model smollm2-135m] [--steps 12] [--n_eval 100]

Each method runs in its own process, so its memory is its own: `resident_mb` is the resident set (from /proc)
after the model is built and the method attached (QLoRA: after quantizing and freeing the fp32 weights);
`peak_train_mb` is the kernel's high-water mark (VmHWM) over the training steps, reset (/proc/self/clear_refs)
just before them; `base_weight_mb` is the bytes the frozen base weights occupy as stored. The step time is the
median over the steps after the first two (warm-up). Every method trains `--steps` steps on the same batches of
`arithmetic` (the same order: `step_examples` with seed 0), then is scored on the same held-out problems by
teacher-forced greedy exact match; the LoRA run also decodes them greedily with `lmstack.generate` to check the
two scorers agree. Targets (issue 11): LoRA trainable <= 1 % of full, QLoRA base weights <= 0.3x fp32, LoRA
step time <= full step time. The machine is shared: absolute times are noisy, ratios within one run less so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.report import table, write_section  # noqa: E402

METHODS = ("full", "lora", "qlora", "prompt")
LR = {"full": 2e-5, "lora": 1e-3, "qlora": 1e-3, "prompt": 3e-2}


def peak_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def one(method: str, args: argparse.Namespace) -> dict:
    """Run one method in this process and return its measurements."""
    from lmstack.finetune.builtin_data import load_builtin
    from lmstack.finetune.chat_data import render_all
    from lmstack.finetune.exact_match import greedy_exact_match
    from lmstack.finetune.lora import trainable_report
    from lmstack.finetune.packing import make_batch
    from lmstack.finetune.qlora import base_weight_bytes, release_memory, resident_mb
    from lmstack.finetune.sft import SFTConfig, build, step_examples, train_step
    from lmstack.train.optim import build_optimizer

    torch.set_num_threads(args.threads)
    cfg = SFTConfig(model=args.model, method=method, lr=LR[method], batch_size=args.batch_size, pack=method != "prompt",
                    max_steps=args.steps, num_virtual_tokens=16, r=8, lora_alpha=16,
                    target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])  # fmt: skip
    model, base, tok = build(cfg, "cpu")
    release_memory()
    resident = resident_mb()
    report = trainable_report(model)
    examples, _ = render_all(tok, load_builtin("arithmetic", "train", args.batch_size * args.steps), cfg.max_len)
    held = load_builtin("arithmetic", "held_out", args.n_eval)
    opt = build_optimizer(model, cfg.lr, 0.0)
    Path("/proc/self/clear_refs").write_text("5")  # reset the resident high-water mark
    times, losses = [], []
    for step in range(args.steps):
        batch = make_batch([examples[i] for i in step_examples(len(examples), cfg.batch_size, step, 0)], cfg.pack,
                           cfg.max_len)  # fmt: skip
        t0 = time.perf_counter()
        loss, _ = train_step(model, opt, batch, None, cfg, cfg.lr, "cpu")
        times.append(time.perf_counter() - t0)
        losses.append(loss)
    peak = peak_kb() / 1024
    em = greedy_exact_match(model, tok, held, 16)
    out = {"method": method, "trainable": report["trainable"], "total": report["total"],
           "base_weight_mb": base_weight_bytes(base) / 2**20, "resident_mb": resident, "peak_train_mb": peak,
           "step_s": statistics.median(times[2:] or times), "final_loss": statistics.mean(losses[-3:]),
           "exact_match": em["accuracy"], "heldout_loss": em["answer_loss"]}  # fmt: skip
    if method == "lora" and args.n_generate:
        out["generate_agrees"] = generation_check(model, tok, held[: args.n_generate], em["correct"])
    return out


def generation_check(model: torch.nn.Module, tok: object, held: list, correct: list[bool]) -> float:
    """Fraction of items where real greedy decoding's text-exact verdict equals the teacher-forced one."""
    from lmstack.finetune.chat_data import prompt_and_answer
    from lmstack.generate import SamplingParams, generate

    end = tok.special_tokens["<|im_end|>"]
    prompts = [prompt_and_answer(tok, m)[0] for m in held]
    outs = generate(model.eval(), prompts, SamplingParams(max_new_tokens=8, temperature=0, stop_token_ids=[end]))
    verdicts = [tok.decode(o).strip() == m[-1]["content"] and len(o) < 8 for o, m in zip(outs, held)]
    return sum(v == c for v, c in zip(verdicts, correct)) / max(len(held), 1)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("trainable", "trainable parameters (log)"), ("base_weight_mb", "base weights (MiB)"),
            ("peak_train_mb", "peak resident, training (MiB)"), ("step_s", "step time (s)"),
            ("exact_match", "held-out exact match")]  # fmt: skip
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2))
    for ax, (k, title) in zip(axes, keys):
        ax.bar([r["method"] for r in rows], [r[k] for r in rows], color=["#555", "#1f77b4", "#2ca02c", "#d62728"])
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
        if k == "trainable":
            ax.set_yscale("log")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--n_eval", type=int, default=100)
    ap.add_argument("--n_generate", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", default="", help="internal: run one method and print its JSON")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args)))
        return
    rows = []
    for method in METHODS:
        cmd = [sys.executable, __file__, "--one", method] + [f"--{k}={v}" for k, v in vars(args).items() if k != "one"]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    full = rows[0]
    body = (
        f"`bench/finetune.py`: {args.model}, {args.steps} steps of {args.batch_size} `arithmetic` conversations per "
        f"method (same batches; LoRA/QLoRA r=8 on q/k/v/o, prompt tuning 16 tokens), exact match on {args.n_eval} held-out problems, {args.threads} threads.\n\n"
        + table(
            [
                "method",
                "trainable",
                "% of full",
                "base weights MiB",
                "resident MiB",
                "peak train MiB",
                "step s",
                "final loss",
                "held-out EM",
            ],
            [
                [
                    r["method"],
                    f"{r['trainable']:,}",
                    100 * r["trainable"] / full["trainable"],
                    r["base_weight_mb"],
                    r["resident_mb"],
                    r["peak_train_mb"],
                    r["step_s"],
                    r["final_loss"],
                    r["exact_match"],
                ]
                for r in rows
            ],
        )  # fmt: skip
        + "\n\n"
        + f"LoRA trainable / full: {rows[1]['trainable'] / full['trainable']:.2%} (target <= 1 %); QLoRA base weights / "
        f"fp32: {rows[2]['base_weight_mb'] / full['base_weight_mb']:.2f}x (target <= 0.3x); LoRA step / full step: "
        f"{rows[1]['step_s'] / full['step_s']:.2f}x (target <= 1). Teacher-forced vs generated verdicts agree on "
        f"{rows[1].get('generate_agrees', float('nan')):.0%} of {args.n_generate} items.\n\n![methods](img/finetune_methods.png)"
    )
    plot(rows, Path(__file__).resolve().parent.parent / "docs" / "img" / "finetune_methods.png")
    print(body)
    write_section("finetune", body)


if __name__ == "__main__":
    main()
