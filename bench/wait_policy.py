"""Benchmark: how much of batch-1 decode speed on this VM is the OpenMP wait policy, for every engine compared.

Claim (issue 10's "what still separates us from llama.cpp, with its cause"): a batch-1 decode step opens one
OpenMP parallel region per matrix product (~120 for SmolLM2-135M). Under `OMP_WAIT_POLICY=PASSIVE` (what
the benchmarks and `make` use here, for steady training on shared cores) the second thread sleeps between
regions and every region pays for waking it. llama.cpp is built with OpenMP, so it reads the same variables. The
question is whether that cost separates the engines or taxes them alike: each runs once under PASSIVE and once
under a bounded spin (`GOMP_SPINCOUNT`, libgomp's busy-wait before a thread sleeps), and the ratios between
engines are compared under both.

Method: for each policy, a fresh process per engine run (the policy is read once, when the OpenMP runtime
loads), policies alternating over rounds; llama.cpp via `llama-bench -p 0 -n 64 -t 2` on the Q4_1 GGUF that
`bench/quant.py` wrote; lmstack and `transformers` in one child per round: marginal tokens/s of 64 greedy tokens
after a 16-token prompt (as `bench/quant.py` measures). Needs `bench/quant.py` to have run once (its cached
int4 model and GGUF files).
Run: `flock /tmp/bench.lock .venv/bin/python bench/wait_policy.py [--rounds N]`; writes docs/benchmarks.md
(section "wait_policy").
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench.report import table, write_section  # noqa: E402
from lmstack.common.home import lmstack_home  # noqa: E402

SPIN = "30000"  # busy-wait iterations a libgomp thread spends on an empty queue before it sleeps
POLICIES = {"PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}, f"GOMP_SPINCOUNT={SPIN}": {"GOMP_SPINCOUNT": SPIN}}
ROUNDS = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
CACHE = lmstack_home() / "bench" / "quant" / "smollm2-135m"
INT4 = "lmstack int4 (g32 float zero, int8 head)"
OURS = {"lmstack fp32": ("", "float32"), INT4: ("rtn-g32-fz-h8", None)}

CHILD = """
import json, sys, time, statistics, torch
torch.set_num_threads(2)
from lmstack.generate import SamplingParams, generate
from lmstack.generate.fast_forward import decode_layout
from lmstack.model import load_model
import transformers
base, runs = sys.argv[1], json.loads(sys.argv[2])
prompt = torch.randint(3, 49152, (1, 16), generator=torch.Generator().manual_seed(0))
def ours(path, dtype):
    model = decode_layout(load_model(path, dtype=dtype)[0])
    return lambda n: generate(model, prompt.tolist(), SamplingParams(max_new_tokens=n, temperature=0, ignore_eos=True))
hf = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
hf.generation_config.eos_token_id = None
def run_hf(n):
    with torch.inference_mode():
        hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                    do_sample=False, pad_token_id=0)
fns = {name: ours(path or base, dtype) for name, (path, dtype) in runs.items()} | {"transformers fp32": run_hf}
out = {}
for name, fn in fns.items():
    fn(4)
    speeds = []
    for _ in range(2):
        t = time.perf_counter(); fn(1); t1 = time.perf_counter() - t
        t = time.perf_counter(); fn(65); speeds.append(64 / (time.perf_counter() - t - t1))
    out[name] = statistics.median(speeds)
print(json.dumps(out))
"""


def environment(policy: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    return {**env, **policy, "PYTHONPATH": str(ROOT)}


def main() -> None:
    from llama_cpp import build

    from lmstack.model.local_models import resolve_model

    gguf, int4 = CACHE / "model-q4_1.gguf", CACHE / "rtn-g32-fz-h8"
    if not gguf.is_file() or not (int4 / "config.json").is_file():
        sys.exit(f"wait_policy: run bench/quant.py first (needs {gguf} and {int4})")
    bench = build()["llama-bench"]
    base = str(resolve_model("smollm2-135m"))
    runs = {name: (str(CACHE / d) if d else "", dtype) for name, (d, dtype) in OURS.items()}
    speeds: dict[str, dict[str, list[float]]] = {}
    for r in range(ROUNDS):
        for label in POLICIES if r % 2 == 0 else list(POLICIES)[::-1]:
            env = environment(POLICIES[label])
            done = subprocess.run([str(bench), "-m", str(gguf), "-p", "0", "-n", "64", "-t", "2", "-r", "2", "-o",
                                   "json"], env=env, capture_output=True, text=True, check=True)  # fmt: skip
            result = {"llama.cpp Q4_1": json.loads(done.stdout)[0]["avg_ts"]}
            child = subprocess.run([sys.executable, "-c", CHILD, base, json.dumps(runs)], env=env,
                                   capture_output=True, text=True, check=True)  # fmt: skip
            result |= json.loads(child.stdout.strip().splitlines()[-1])
            for engine, tps in result.items():
                speeds.setdefault(engine, {}).setdefault(label, []).append(tps)
            print(f"[wait_policy] round {r} {label}: {result}", file=sys.stderr)
    passive, spin = POLICIES
    rows = []
    for engine, by in speeds.items():
        p, s = statistics.median(by[passive]), statistics.median(by[spin])
        rows.append([engine, f"{p:.1f}", f"{s:.1f}", f"{s / p:.2f}"])
    q4 = {lab: statistics.median(speeds["llama.cpp Q4_1"][lab]) for lab in POLICIES}
    ours = {lab: statistics.median(speeds[INT4][lab]) for lab in POLICIES}
    hf = {lab: statistics.median(speeds["transformers fp32"][lab]) for lab in POLICIES}
    md = [
        "### Batch-1 decode under two OpenMP wait policies (SmolLM2-135M, 2 threads, tokens/s)\n",
        table(["engine", passive, spin, "spin / passive"], rows),
        f"\nlmstack int4 / llama.cpp Q4_1: {ours[passive] / q4[passive]:.2f}x under PASSIVE, "
        f"{ours[spin] / q4[spin]:.2f}x when both spin. lmstack int4 / transformers fp32: "
        f"{ours[passive] / hf[passive]:.2f}x and {ours[spin] / hf[spin]:.2f}x. Medians of {ROUNDS} rounds per "
        "policy; each row of a round is a fresh process (llama-bench) or one child per round (lmstack and "
        "transformers), policies alternating. `bench/quant.py` (and every other benchmark here) runs under PASSIVE.",
    ]
    body = "\n".join(md)
    print(body)
    write_section("wait_policy", body)


if __name__ == "__main__":
    main()
