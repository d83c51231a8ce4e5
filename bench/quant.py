"""Benchmark: quantization end to end (quality, memory, speed) on SmolLM2-135M and the CPU speedrun model, beside
`transformers` fp32 and llama.cpp (F32 / Q8_0 / Q4_0 / Q4_1 GGUF files written by `lmstack convert`).

Claims (issue 10): GPTQ-4bit perplexity (`--fp_target`: each layer aimed at the float model's outputs) within 5%
of fp32 and clearly better than RTN-4bit; int4 weight memory <= 0.3x fp32; INT8 decode >= 2x `transformers` fp32
at batch 1; INT4 decode >= 0.5x llama.cpp Q4_1.

Method. Quantized variants are made once with `lmstack quantize` and cached in
`$LMSTACK_HOME/bench/quant/<model>/<variant>/` (delete a directory to redo it; all are redone when the source
model's files change, e.g. after `make demo` retrains the speedrun model); the GGUF files with
`lmstack convert --to x.gguf`. Then, in one process:
- quality: perplexity and bits-per-byte on the first 8192 tokens of the gutenberg val split (never used for
  calibration: GPTQ / AWQ / SmoothQuant calibrate on its train split). llama.cpp rows are scored by our evaluator on
  the GGUF file's dequantized weights (the exact weights llama.cpp holds; llama.cpp additionally rounds activations
  to 8 bits inside its quantized matmuls, which this does not capture);
- weight memory: bytes of every parameter and buffer (unique storages) of the loaded model;
- speed, interleaved rounds (each round runs every row once; medians over rounds): prefill tokens/s (one forward
  of a 128-token prompt) and decode tokens/s at batch 1 and 8 (greedy, EOS ignored, the marginal cost of 64 extra
  tokens after a 16-token prompt); llama.cpp via `llama-bench -p 128 -n 64 -t 2` in the same rounds (batch 1);
- load time and peak resident memory: a fresh subprocess per row loads the model and generates 8 tokens
  (`VmHWM` of /proc/self/status: `ru_maxrss` survives exec, so a child of a big parent reports the parent's
  peak; llama.cpp: `llama-simple` under /usr/bin/time).
2 torch threads, OMP_WAIT_POLICY=PASSIVE. The machine is shared with other engineers' jobs: absolute numbers are
noisy (see the note the script writes), ratios from interleaved rounds are the claim.
Run: `flock /tmp/bench.lock .venv/bin/python bench/quant.py [--quick] [--no-llama]`; writes docs/benchmarks.md
(section "quant") and docs/img/quant.png. llama.cpp is built once by bench/llama_cpp.py (10+ minutes).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.report import table, write_section  # noqa: E402
from lmstack.common.home import lmstack_home  # noqa: E402

THREADS = 2
QUICK = "--quick" in sys.argv
NO_LLAMA = "--no-llama" in sys.argv
IMG = ROOT / "docs" / "img" / "quant.png"
PY = sys.executable
EVAL_TOKENS = 4096 if QUICK else 8192
ROUNDS = 2 if QUICK else 3

# variant -> (cache directory, `lmstack quantize` flags); None: the float model itself, in the given dtype.
# The int4 rows keep the LM head in floating point (tied to the bf16 embedding: no extra memory); quantizing the
# tied head too costs SmolLM2 ~15% perplexity at 4 bits (docs/quant.md). "int8 head" quantizes it to int8 per
# channel instead, and the input embedding reads that int8 table (`--head_bits 8`, lmstack/quant/embedding.py), as
# the int8 row does by default.
INT4 = ["--bits=4", "--group_size=32", "--sym=false", "--head=false"]
VARIANTS: dict[str, tuple[str, list[str]] | None] = {
    "fp32": None,
    "bf16": None,
    "int8 (RTN, per channel)": ("rtn-int8", ["--method=rtn", "--bits=8"]),
    "W8A8 (SmoothQuant)": ("smoothquant", ["--method=smoothquant"]),
    "int4 RTN (g32 asym)": ("rtn-g32-asym-nohead", ["--method=rtn", *INT4]),
    "int4 GPTQ (g32 asym, act-order, mse, float target)": ("gptq-g32-asym-ao-mse-fpt-nohead",
        ["--method=gptq", "--act_order=true", "--mse=true", "--fp_target=true", *INT4]),
    "int4 GPTQ (the same, float layer target)": ("gptq-g32-asym-ao-mse-nohead",
        ["--method=gptq", "--act_order=true", "--mse=true", *INT4]),
    "int4 AWQ (g32 asym)": ("awq-g32-asym-nohead", ["--method=awq", *INT4]),
    "int4 RTN (g32, float zero)": ("rtn-g32-fz-nohead", ["--method=rtn", "--float_zero=true", *INT4]),
    "int4 GPTQ (g32, float zero)": ("gptq-g32-fz-nohead", ["--method=gptq", "--float_zero=true", *INT4]),
    "int4 RTN (g32, float zero), int8 head": ("rtn-g32-fz-h8",
        ["--method=rtn", "--float_zero=true", *INT4[:-1], "--head_bits=8"]),
    "NF4 (double quant)": ("nf4", ["--method=nf4"]),
}  # fmt: skip
GPTQ_ROW = "int4 GPTQ (g32 asym, act-order, mse, float target)"
GGUF_TYPES = ["f32", "q8_0", "q4_0", "q4_1"]


@dataclass
class Row:
    name: str
    kind: str  # "lmstack" | "hf" | "llama.cpp"
    path: Path
    dtype: str | None = None
    ppl: float = float("nan")
    bpb: float = float("nan")
    weight_mb: float = float("nan")
    load_s: float = float("nan")
    rss_mb: float = float("nan")
    note: str = ""


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(THREADS)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{done.stderr[-3000:]}")
    return done


def source_stamp(base: Path) -> dict[str, list[int]]:
    """Size and modification time of the source model's files: a retrained model invalidates its variants."""
    files = sorted(base.glob("*.safetensors")) + [base / "config.json"]
    return {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()}


def forget_stale(cache: Path, base: Path) -> None:
    """Remove the variants and GGUF files this benchmark made from an older version of the source model."""
    import shutil

    stamp_file, stamp = cache / "source.json", source_stamp(base)
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) != stamp:
        print(f"[quant] {base} changed since its variants were made: making them again", file=sys.stderr)
        for directory, _ in filter(None, VARIANTS.values()):
            shutil.rmtree(cache / directory, ignore_errors=True)
        for kind in GGUF_TYPES:
            (cache / f"model-{kind}.gguf").unlink(missing_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(json.dumps(stamp))


def prepare(model: str, base: Path) -> list[Row]:
    """Quantized variants and GGUF files (made once, cached, remade when the source model changes), as rows."""
    cache = lmstack_home() / "bench" / "quant" / slug(model)
    forget_stale(cache, base)
    rows = []
    for name, variant in VARIANTS.items():
        if variant is None:
            rows.append(Row(name, "lmstack", base, dtype={"fp32": "float32", "bf16": "bfloat16"}[name]))
            continue
        directory, flags = variant
        out = cache / directory
        if not (out / "quantize.json").is_file():
            print(f"[quant] {model}: lmstack quantize {' '.join(flags)}", file=sys.stderr)
            t = time.perf_counter()
            run([PY, "-m", "lmstack.cli", "quantize", f"--model={base}", f"--out_dir={out}", "--overwrite",
                 "--eval_tokens=0", f"--threads={THREADS}", *flags])  # fmt: skip
            print(f"[quant]   {time.perf_counter() - t:.0f} s", file=sys.stderr)
        report = json.loads((out / "quantize.json").read_text())
        rows.append(Row(name, "lmstack", out, note=f"quantized in {report['quantize_s']:.0f} s"))
    rows.append(Row("transformers fp32", "hf", base))
    if not NO_LLAMA:
        for kind in GGUF_TYPES:
            f = cache / f"model-{kind}.gguf"
            if not f.is_file():
                run([PY, "-m", "lmstack.cli", "convert", f"--from={base}", f"--to={f}", f"--gguf_type={kind}"])
            rows.append(Row(f"llama.cpp {kind.upper()}", "llama.cpp", f))
    return rows


def load(row: Row):
    """(model, tokenizer) for an lmstack / HF row (llama.cpp rows: our model on the GGUF's dequantized weights)."""
    from lmstack.model import load_model

    if row.kind == "hf":
        import transformers

        from lmstack.tokenizer import Tokenizer

        hf = transformers.AutoModelForCausalLM.from_pretrained(row.path, dtype=torch.float32).eval()
        return hf, Tokenizer.load(row.path)
    from lmstack.generate.fast_forward import decode_layout

    model, tok = load_model(row.path, dtype=row.dtype if row.kind == "lmstack" else "float32")
    return decode_layout(model), tok  # what `lmstack generate` / `chat` do to the model they load


def weight_bytes(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def quality(model, tok) -> tuple[float, float]:
    from lmstack.quant.calibration import heldout_tokens
    from lmstack.train.evaluate import evaluate

    tokens, n_bytes = heldout_tokens(tok, "gutenberg", EVAL_TOKENS)
    with torch.inference_mode():
        out = evaluate(model, tokens, n_bytes, 512, batch_size=4)
    return out["val_ppl"], out["val_bpb"]


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def decode(model, kind: str, prompt: torch.Tensor, n: int) -> None:
    """Greedy decoding of exactly n tokens per row (EOS ignored), by lmstack or by `transformers.generate`."""
    from lmstack.generate import SamplingParams, generate

    if kind == "hf":
        model.generation_config.eos_token_id = None
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                       do_sample=False, pad_token_id=0)  # fmt: skip
    else:
        generate(model, prompt.tolist(), SamplingParams(max_new_tokens=n, temperature=0, ignore_eos=True))


def speed(model, kind: str, vocab: int) -> dict[str, float]:
    """prefill tok/s (B=1, 128 tokens) and decode tok/s at batch 1 and 8 (marginal cost of 64 tokens)."""
    from lmstack.generate import ContiguousKVCache

    g = torch.Generator().manual_seed(0)
    out = {}
    with torch.inference_mode():
        ids = torch.randint(3, vocab, (1, 128), generator=g)
        if kind == "hf":
            out["prefill"] = 128 / timed(lambda: model(ids))
        else:
            cache = ContiguousKVCache.for_model(model, 1, max_len=129)
            out["prefill"] = 128 / timed(lambda: model(ids, positions=torch.arange(128)[None], cache=cache))
        for B in (1, 8):
            prompt = torch.randint(3, vocab, (B, 16), generator=g)
            t1 = timed(lambda p=prompt: decode(model, kind, p, 1))
            t65 = timed(lambda p=prompt: decode(model, kind, p, 65))
            out[f"decode_b{B}"] = B * 64 / max(t65 - t1, 1e-9)
    return out


def llama_bench(binary: Path, gguf: Path) -> dict[str, float]:
    done = run([str(binary), "-m", str(gguf), "-p", "128", "-n", "64", "-t", str(THREADS), "-r", "2", "-o", "json"])
    results = json.loads(done.stdout)
    pp = next(r["avg_ts"] for r in results if r["n_prompt"] > 0)
    tg = next(r["avg_ts"] for r in results if r["n_gen"] > 0)
    return {"prefill": pp, "decode_b1": tg}


PROBE = """
import sys, time, torch
torch.set_num_threads({threads})
t = time.perf_counter()
{load}
load_s = time.perf_counter() - t
{gen}
print(load_s, [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")][0] / 1024)
"""


def footprint(row: Row, llama: dict[str, Path] | None) -> tuple[float, float]:
    """(load seconds, peak RSS MB) of a fresh process that loads the model and generates 8 tokens."""
    if row.kind == "llama.cpp":
        cmd = ["/usr/bin/time", "-f", "RSS %M", str(llama["llama-simple"]), "-m", str(row.path), "-n", "8",
               "The capital of France is"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        rss = float(done.stderr.rsplit("RSS ", 1)[1].split()[0]) / 1024
        load_ms = [ln for ln in done.stderr.splitlines() if "load time" in ln]
        load_s = float(load_ms[0].split("=")[1].split("ms")[0]) / 1000 if load_ms else float("nan")
        return load_s, rss
    if row.kind == "hf":
        load = f"import transformers; m = transformers.AutoModelForCausalLM.from_pretrained({str(row.path)!r})"
        gen = "m.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=8, do_sample=False)"
    else:
        load = f"from lmstack.model import load_model; m, _ = load_model({str(row.path)!r}, dtype={row.dtype!r})"
        gen = ("from lmstack.generate import generate, SamplingParams; "
               "generate(m, [[1, 2, 3]], SamplingParams(max_new_tokens=8, temperature=0))")  # fmt: skip
    done = run([PY, "-c", PROBE.format(threads=THREADS, load=load, gen=gen)])
    load_s, rss = done.stdout.split()[-2:]
    return float(load_s), float(rss)


def baseline_rss() -> float:
    """Peak RSS of a process that only imports torch and lmstack (what every lmstack row pays before weights)."""
    code = (
        "import torch, lmstack.model; "
        "print([int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmHWM')][0] / 1024)"
    )
    return float(run([PY, "-c", code]).stdout.split()[-1])


def llama_parity(llama: dict[str, Path], gguf: Path, prompt: str, n: int = 16) -> tuple[str, str]:
    """Greedy continuation by llama.cpp and by lmstack on the same GGUF's dequantized weights."""
    from lmstack.generate import SamplingParams, generate_text
    from lmstack.model import load_model

    done = run([str(llama["llama-simple"]), "-m", str(gguf), "-n", str(n), prompt])
    theirs = done.stdout.split(prompt, 1)[-1].strip()
    model, tok = load_model(gguf, dtype="float32")
    ours = generate_text(model, tok, [prompt], SamplingParams(max_new_tokens=n, temperature=0, ignore_eos=True))[0]
    return theirs, ours.strip()


def profile_step(model, vocab: int) -> list[list[object]]:
    """Where a batch-1 decode step's time goes (torch profiler, self CPU time by operator family)."""
    from torch.profiler import ProfilerActivity, profile

    from lmstack.generate import ContiguousKVCache

    ids = torch.randint(3, vocab, (1, 32))
    with torch.inference_mode():
        cache = ContiguousKVCache.for_model(model, 1, max_len=64)
        model(ids, positions=torch.arange(32)[None], cache=cache)
        t = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(16):
                model(ids[:, :1], positions=torch.tensor([[32 + i]]), cache=cache)
        wall = (time.perf_counter() - t) / 16 * 1e3
    groups: dict[str, float] = {}
    for e in prof.key_averages():
        name = e.key
        fam = ("matmul (quantized kernels)" if "pack_mm" in name or "_int_mm" in name
               else "matmul (float)" if name in ("aten::mm", "aten::addmm", "aten::bmm")
               else "attention (SDPA)" if "scaled_dot_product" in name else "other operators")  # fmt: skip
        groups[fam] = groups.get(fam, 0.0) + e.self_cpu_time_total / 1e3 / 16
    ops = sum(groups.values())
    rows = [[k, round(v, 2)] for k, v in sorted(groups.items(), key=lambda kv: -kv[1])]
    rows.append(["Python and dispatch (wall - operators, under the profiler)", round(wall - ops, 2)])
    rows.append(["total per step (profiled)", round(wall, 2)])
    return rows


def kernel_rows(shapes: list[tuple[str, int, int]]) -> list[list[object]]:
    """Single-thread CPU time (us, `time.thread_time`: steadier than wall time on a shared machine) of one
    batch-1 forward of each layer type at the model's shapes: nn.Linear fp32 / bf16 and QuantLinear paths."""
    from lmstack.quant.linear import QuantLinear
    from lmstack.quant.rtn import QuantSpec, quantize_rtn

    def cpu_us(fn, x: torch.Tensor) -> float:
        for _ in range(3):
            fn(x)
        runs = []
        for _ in range(7):
            t = time.thread_time()
            for _ in range(10):
                fn(x)
            runs.append((time.thread_time() - t) / 10 * 1e6)
        return statistics.median(runs)

    rows, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for label, N, K in shapes:
                w = torch.randn(N, K) * 0.02
                lin = torch.nn.Linear(K, N, bias=False)
                lin.weight.data = w
                int4 = QuantLinear(quantize_rtn(w, QuantSpec(4, 32, False)))
                int8 = QuantLinear(quantize_rtn(w, QuantSpec(8, -1, True)))
                w8a8 = QuantLinear(quantize_rtn(w, QuantSpec(8, -1, True)), act_quant=True)
                x = torch.randn(1, K)
                xb = x.bfloat16()
                rows.append([f"{label} ({N} x {K})", round(cpu_us(lin, x)), round(cpu_us(lin.bfloat16(), xb)),
                             round(cpu_us(int4, xb)), round(cpu_us(int8, xb)), round(cpu_us(w8a8, x))])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return rows


def bench_model(model: str, base: Path, llama: dict[str, Path] | None) -> str:
    from lmstack.quant import kernel_report

    rows = prepare(model, base)
    rows = [r for r in rows if r.kind != "llama.cpp" or llama is not None]
    loaded = {}
    for r in rows:
        m, tok = load(r)
        r.ppl, r.bpb = quality(m, tok)
        if r.kind != "llama.cpp":
            r.weight_mb = weight_bytes(m) / 2**20
            kr = kernel_report(m)
            r.note = ", ".join([r.note] * bool(r.note) + [f"{k}: {v}" for k, v in kr.items()])
            loaded[r.name] = m
        else:
            r.weight_mb = r.path.stat().st_size / 2**20
        vocab = (m.config.vocab_size if hasattr(m.config, "vocab_size") else 0) or tok.vocab_size
        print(f"[quant] {model} {r.name}: ppl {r.ppl:.3f}", file=sys.stderr)
    speeds: dict[str, list[dict[str, float]]] = {r.name: [] for r in rows}
    for rnd in range(ROUNDS):
        for r in rows:
            if r.kind == "llama.cpp":
                speeds[r.name].append(llama_bench(llama["llama-bench"], r.path))
            else:
                speeds[r.name].append(speed(loaded[r.name], r.kind, vocab))
            print(f"[quant] round {rnd} {r.name}: {speeds[r.name][-1]}", file=sys.stderr)
    for r in rows:
        r.load_s, r.rss_mb = footprint(r, llama)
    med = {n: {k: statistics.median(s[k] for s in v) for k in v[0]} for n, v in speeds.items()}
    fp32 = next(r for r in rows if r.name == "fp32")
    hf = med["transformers fp32"]["decode_b1"]
    table_rows = []
    for r in rows:
        s = med[r.name]
        table_rows.append([
            r.name, f"{r.ppl:.3f}", f"{100 * (r.ppl / fp32.ppl - 1):+.1f}%", f"{r.bpb:.4f}", f"{r.weight_mb:.0f}",
            f"{r.weight_mb / fp32.weight_mb:.2f}", f"{r.rss_mb:.0f}", f"{r.load_s:.2f}", f"{s['prefill']:.0f}",
            f"{s['decode_b1']:.1f}", f"{s['decode_b1'] / hf:.2f}",
            f"{s['decode_b8']:.0f}" if "decode_b8" in s else "-", r.note,
        ])  # fmt: skip
    header = ["variant", "ppl", "vs fp32", "bits/byte", "weights MB", "x fp32", "peak RSS MB", "load s",
              "prefill tok/s", "decode tok/s b1", "x HF b1", "decode tok/s b8", "kernels / notes"]  # fmt: skip
    md = [f"### {model}\n", table(header, table_rows)]
    c = loaded["fp32"].config
    shapes = [("q/o", c.n_heads * c.head_dim, c.d_model), ("k/v", c.n_kv_heads * c.head_dim, c.d_model),
              ("gate/up", c.d_ff, c.d_model), ("down", c.d_model, c.d_ff),
              ("LM head", c.vocab_size, c.d_model)]  # fmt: skip
    md.append("\nOne batch-1 layer forward, single-thread CPU time (us; thread time, steadier than wall time here):\n")
    md.append(table(["layer", "fp32 Linear", "bf16 Linear", "int4 g32 (int4pack_mm)", "int8 (int8pack_mm)",
                     "W8A8 (int_mm)"], kernel_rows(shapes)))  # fmt: skip
    int4 = loaded.get(GPTQ_ROW)
    if int4 is not None:
        md.append("\nWhere one batch-1 decode step of int4 GPTQ goes (ms, torch profiler, self CPU time):\n")
        md.append(table(["part", "ms"], profile_step(int4, vocab)))
    if llama is not None:
        gguf = next(r.path for r in rows if r.name == "llama.cpp F32")
        theirs, ours = llama_parity(llama, gguf, "The capital of France is")
        same = "same" if theirs == ours else "DIFFERENT"
        md.append(f"\nGreedy continuation of 'The capital of France is' from our exported F32 GGUF: llama.cpp "
                  f"{theirs!r}; lmstack on the same weights {ours!r} ({same}).")  # fmt: skip
    plot(model, rows, med)
    return "\n".join(md)


def plot(model: str, rows: list[Row], med: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in rows:
        colour = {"lmstack": "C0", "hf": "C2", "llama.cpp": "C3"}[r.kind]
        a.scatter(r.weight_mb, r.ppl, color=colour)
        a.annotate(r.name, (r.weight_mb, r.ppl), fontsize=7)
    a.set_xlabel("weight memory (MB)")
    a.set_ylabel("held-out perplexity")
    a.set_xscale("log")
    a.set_title(f"{model}: quality vs memory")
    names = [r.name for r in rows]
    b.barh(names, [med[n]["decode_b1"] for n in names],
           color=[{"lmstack": "C0", "hf": "C2", "llama.cpp": "C3"}[r.kind] for r in rows])  # fmt: skip
    b.set_xlabel("decode tokens/s, batch 1, 2 threads")
    b.set_title("decode speed")
    b.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    IMG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG.with_name(f"quant_{slug(model)}.png"), dpi=110)


def main() -> None:
    torch.set_num_threads(THREADS)
    from lmstack.model.local_models import resolve_model

    llama = None
    if not NO_LLAMA:
        sys.path.insert(0, str(ROOT / "bench"))
        from llama_cpp import build

        llama = build()
        print(f"[quant] llama.cpp binaries: {llama['llama-bench'].parent}", file=sys.stderr)
    models = {"smollm2-135m": Path(resolve_model("smollm2-135m"))}
    speedrun = ROOT / "runs" / "speedrun_cpu" / "checkpoint"
    if (speedrun / "config.json").is_file():
        models["speedrun (CPU, Shakespeare)"] = speedrun
    sections = [bench_model(name, path, llama) for name, path in models.items()]
    rss0 = baseline_rss()
    note = (
        f"\nPeak RSS includes the Python + torch runtime ({rss0:.0f} MB for `import torch, lmstack.model` alone). "
        f"Speeds are medians of {ROUNDS} interleaved rounds; decode = marginal tokens/s of 64 new tokens "
        f"(greedy, EOS ignored); {THREADS} threads; lmstack int4 / int8 rows compute in bfloat16 (the fused CPU "
        "kernels take bf16 activations); llama.cpp rows: `llama-bench -p 128 -n 64` (batch 1 only), perplexity "
        "by our evaluator on the GGUF's dequantized weights. The machine is shared: absolute numbers are noisy."
    )
    body = "\n\n".join(sections) + "\n" + note
    print(body)
    write_section("quant", body)


if __name__ == "__main__":
    main()
