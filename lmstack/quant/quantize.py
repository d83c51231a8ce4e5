"""`lmstack quantize`: post-training quantization of a model into a reloadable quantized HF directory.

    lmstack quantize --model smollm2-135m --method gptq --bits 4 --group_size 128 --out_dir runs/smol-gptq4
    lmstack generate "The capital of France is" --model runs/smol-gptq4

Methods: `rtn` (round to nearest, no data), `gptq` (Hessian-guided error compensation, `gptq.py`), `awq`
(activation-aware scales + clipping, `awq.py`) and `smoothquant` (W8A8: smoothed int8 weights, int8 activations
per token, `smoothquant.py`) and `nf4` (4-bit NormalFloat + double quantization, `nf4.py`, saved in the
bitsandbytes layout `transformers` uses: `nf4_checkpoint.py`).
GPTQ and AWQ calibrate block by block (`layerwise.py`) on `--calib_samples` windows of `--calib_seq_len` tokens
from `--calib` (a corpus name or your own .txt/.md/.jsonl files). The output directory holds the GPTQ tensor
layout (`checkpoint.py`) plus `quantize.json` (resolved config, timings, held-out perplexity before / after).

Ctrl-C or SIGTERM during calibration saves the finished blocks to `<out_dir>.partial/` and exits 130;
`--resume` reloads them, replays the calibration text through the finished (quantized) blocks and continues,
giving the same result as an uninterrupted run. The float model is calibrated in float32 on the CPU.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from lmstack.common.atomic import atomic_dir, atomic_write_text
from lmstack.common.config import config_to_dict
from lmstack.common.log import info, progress
from lmstack.common.signals import interruptible
from lmstack.model.transformer import DTYPES
from lmstack.quant.rtn import QuantizedWeight, QuantSpec

METHODS = ("rtn", "gptq", "awq", "smoothquant", "nf4")


@dataclass
class QuantizeConfig:
    model: str = "smollm2-135m"  # model directory, .gguf file or local model name (`lmstack models`)
    out_dir: str = ""  # output directory (an HF model directory with quantized weights); required
    # rtn | gptq | awq | smoothquant (W8A8: int8 weights and per-token int8 activations) | nf4 (QLoRA's NormalFloat)
    method: str = "rtn"
    bits: int = 0  # 4 | 8; 0 = 4, or 8 for smoothquant
    # input columns sharing a scale: 32 | 64 | 128 | ... | -1 (one per output row); 0 = auto: -1 for 8 bits, for 4
    # bits the largest of 128 / 64 / 32 that divides every quantized layer's input width
    group_size: int = 0
    sym: bool = True  # symmetric grid (fixed zero point); false = a zero point per group
    float_zero: bool = False  # with --sym=false: each group's zero point is its fp16 minimum (llama.cpp Q4_1, HQQ)
    head: bool = True  # quantize the LM head too (a tied embedding table stays in --dtype); nf4 never does
    # bits of the LM head: 8 = int8 per channel; 0 = auto: 8 for 4-bit rtn / gptq / awq (a 4-bit head costs ~15 %
    # perplexity on SmolLM2; llama.cpp too keeps its output layer finer), else --bits
    head_bits: int = 0
    # tied embeddings + an 8-bit per-channel head (rtn, gptq): the input embedding reads the head's int8 table
    # instead of keeping a float copy (`embedding.py`); false keeps the float table
    shared_table: bool = True
    act_order: bool = False  # gptq: quantize columns by decreasing Hessian diagonal (GPTQ's desc_act)
    damp: float = 0.01  # gptq: dampening added to the Hessian diagonal, as a fraction of its mean
    true_sequential: bool = True  # gptq: calibrate o / gate-up / down on the outputs of the already quantized stages
    mse: bool = False  # rtn / gptq: per-group range search (shrink to minimise |w - w_hat|^2.4) instead of min / max
    fp_target: bool = False  # gptq: each layer matches the float model's outputs, not the float layer's (GPTAQ)
    alpha: float = 0.5  # smoothquant: migration strength, s = max|x|^alpha / max|w|^(1 - alpha)
    calib: str = "gutenberg"  # calibration text: a corpus name (`lmstack corpus list`) or comma-separated files
    calib_samples: int = 128  # calibration windows
    calib_seq_len: int = 256  # tokens per calibration window
    batch_size: int = 8  # calibration windows per forward
    dtype: str = "bfloat16"  # floating-point tensors of the output (embeddings, norms, biases): bfloat16 | float32
    eval_corpus: str = "gutenberg"  # held-out perplexity is measured on this corpus's val split ("" = skip)
    eval_tokens: int = 8192  # held-out tokens scored before and after quantization (0 = skip)
    seed: int = 0  # calibration window sampling
    threads: int = 0  # torch CPU threads; 0 = all cores
    resume: bool = False  # continue from <out_dir>.partial/ (written on Ctrl-C / SIGTERM)
    overwrite: bool = False  # write into a non-empty directory that holds no lmstack model (other files are kept)
    stop_after_blocks: int = 0  # stop (saving a partial state, as if interrupted) after this many blocks; 0 = off

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"--method={self.method!r}: expected one of {', '.join(METHODS)}")
        self.bits = self.bits or (8 if self.method == "smoothquant" else 4)
        QuantSpec(self.bits, self.group_size or -1, self.sym, self.float_zero)  # validates, naming the flag
        if self.head_bits not in (0, self.bits, 8):
            raise ValueError(f"--head_bits={self.head_bits}: expected 0 (auto), {self.bits} (= --bits) or 8")
        if self.head_bits == 8 != self.bits and self.method in ("nf4", "smoothquant"):
            raise ValueError(f"--head_bits=8: --method {self.method} quantizes every layer alike; leave --head_bits 0")
        if self.head_bits and not self.head:
            raise ValueError("--head_bits: the head is not quantized (--head=false); drop one of the two")
        if not self.head_bits:
            self.head_bits = 8 if self.bits == 4 and self.method in ("rtn", "gptq", "awq") and self.head else self.bits
        if self.method == "smoothquant" and (self.bits, self.group_size, self.sym) not in ((8, 0, True), (8, -1, True)):
            raise ValueError(
                "--method smoothquant quantizes to symmetric per-channel int8: use --bits 8 "
                f"--group_size -1 --sym true (got {self.bits}, {self.group_size}, {self.sym})"
            )
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"--alpha={self.alpha}: expected in [0, 1]")
        if self.dtype not in ("bfloat16", "float32", "float16"):
            raise ValueError(f"--dtype={self.dtype!r}: expected bfloat16, float32 or float16")
        for name in ("calib_samples", "calib_seq_len", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name}={getattr(self, name)}: expected > 0")
        if not 0 <= self.damp < 1:
            raise ValueError(f"--damp={self.damp}: expected in [0, 1)")
        if self.eval_tokens < 0 or self.stop_after_blocks < 0:
            raise ValueError("--eval_tokens and --stop_after_blocks must be >= 0")

    @property
    def spec(self) -> QuantSpec:
        return QuantSpec(self.bits, self.group_size, self.sym, self.float_zero)

    @property
    def head_spec(self) -> QuantSpec:
        """The LM head's grid: the blocks' unless --head_bits 8 asks for symmetric int8 per channel."""
        if self.head_bits == self.bits:
            return self.spec
        return QuantSpec(8, -1, True)


def pick_group_size(bits: int, widths: set[int]) -> int:
    """The default group size: per channel (-1) for 8 bits; for 4 bits the largest of 128 / 64 / 32 dividing every
    width (SmolLM2's 576 = 4.5 x 128 takes 64), else per channel."""
    if bits == 8:
        return -1
    return next((g for g in (128, 64, 32) if all(w % g == 0 for w in widths)), -1)


def quantize_block(
    cfg: QuantizeConfig, block: torch.nn.Module, batches: list, prefix: str, reference: dict | None = None
) -> dict[str, Any]:
    """Quantize one block's linears with the configured method (weights become their dequantized values);
    `reference` = the float block's stage inputs (`layerwise.stage_inputs`) for --fp_target."""
    if cfg.method == "gptq":
        from lmstack.quant.gptq import gptq_block

        args = (cfg.spec, prefix, cfg.damp, cfg.act_order, cfg.true_sequential, cfg.mse, reference)
        return gptq_block(block, batches, *args)
    if cfg.method == "smoothquant":
        from lmstack.quant.smoothquant import smoothquant_block

        return smoothquant_block(block, batches, prefix, cfg.alpha)
    from lmstack.quant.awq import awq_block

    return awq_block(block, batches, cfg.spec, prefix)


def quantize_head(
    cfg: QuantizeConfig, model: torch.nn.Module, batches: list, reference: list | None = None
) -> QuantizedWeight:
    """The LM head: GPTQ / AWQ on the final norm's outputs (AWQ folds its scales into that norm)."""
    from lmstack.quant.layerwise import head_inputs

    stats = head_inputs(model, batches, reference)
    if cfg.method == "gptq":
        from lmstack.quant.gptq import gptq_quantize

        w = stats.float_target(model.lm_head.weight, cfg.damp)
        return gptq_quantize(w, stats.hessian, cfg.head_spec, cfg.damp, cfg.act_order, where="lm_head", mse=cfg.mse)
    pre_norm = not isinstance(model.norm, torch.nn.Identity)
    target = (model.norm, "norm") if pre_norm else None
    if cfg.method == "smoothquant":
        from lmstack.quant.smoothquant import quantize_weight, smooth_stage

        smooth_stage([model.lm_head], stats, target, cfg.alpha)
        return quantize_weight(model.lm_head, "lm_head")
    from lmstack.quant.awq import quantize_layer, scale_stage

    stats = scale_stage([model.lm_head], stats, target, cfg.head_spec)
    return quantize_layer(model.lm_head, stats, cfg.head_spec, "lm_head")


def heldout_ppl(model: Any, tok: Any, cfg: QuantizeConfig) -> dict[str, float] | None:
    """Perplexity and bits-per-byte on the first `eval_tokens` tokens of the eval corpus's val split."""
    if not cfg.eval_tokens or not cfg.eval_corpus:
        return None
    from lmstack.quant.calibration import heldout_tokens
    from lmstack.train.evaluate import evaluate

    tokens, n_bytes = heldout_tokens(tok, cfg.eval_corpus, cfg.eval_tokens)
    seq = min(model.config.max_seq_len, 512)
    with torch.inference_mode():
        out = evaluate(model, tokens, n_bytes, seq, batch_size=4)
    return {"ppl": out["val_ppl"], "bpb": out["val_bpb"], "tokens": out["val_tokens"]}


def partial_dir(cfg: QuantizeConfig) -> Path:
    out = Path(cfg.out_dir)
    return out.with_name(out.name + ".partial")


def save_partial(cfg: QuantizeConfig, model: Any, qweights: dict[str, QuantizedWeight], done: int) -> None:
    """Finished blocks: the float model (fake-quantized weights, AWQ-folded norms), the integer weights so far."""
    from safetensors.torch import save_file

    from lmstack.quant.packing import gptq_tensors

    tensors, seen = {}, set()
    for k, v in model.state_dict().items():  # a tied head shares the embedding's storage: save a copy of it
        ptr = v.untyped_storage().data_ptr()
        tensors[f"model.{k}"] = v.detach().clone() if ptr in seen else v.detach().contiguous()
        seen.add(ptr)
    for name, qw in qweights.items():
        for suffix, t in gptq_tensors(qw.q, qw.scales, qw.zeros, qw.g_idx, qw.spec.bits).items():
            tensors[f"quant.{name}.{suffix}"] = t
    with atomic_dir(partial_dir(cfg)) as tmp:
        save_file(tensors, tmp / "state.safetensors")
        state = {"blocks_done": done, "config": config_to_dict(cfg), "layers": list(qweights)}
        atomic_write_text(tmp / "state.json", json.dumps(state, indent=2))


def load_partial(cfg: QuantizeConfig, model: Any) -> tuple[dict[str, QuantizedWeight], int]:
    from safetensors.torch import load_file

    from lmstack.quant.packing import GPTQ_SUFFIXES, from_gptq_tensors

    d = partial_dir(cfg)
    if not (d / "state.json").is_file():
        raise FileNotFoundError(f"--resume: no partial state at {d} (it is written when a run is interrupted)")
    state = json.loads((d / "state.json").read_text())
    same = ("model", "method", "bits", "group_size", "sym", "float_zero", "head", "head_bits", "act_order", "damp",
            "true_sequential", "mse", "fp_target", "alpha", "calib", "calib_samples", "calib_seq_len",
            "batch_size", "seed")  # fmt: skip
    defaults = {f.name: f.default for f in fields(QuantizeConfig)}  # options added since the state was written
    changed = [k for k in same if state["config"].get(k, defaults[k]) != getattr(cfg, k)]
    if changed:
        raise ValueError(f"--resume: {d} was made with different {', '.join('--' + k for k in changed)}")
    tensors = load_file(d / "state.safetensors")
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    qweights = {}
    for name in state["layers"]:
        layer = model.get_submodule(name)
        parts = {s: tensors[k] for s in GPTQ_SUFFIXES if (k := f"quant.{name}.{s}") in tensors}
        q, s, z, g = from_gptq_tensors(parts, cfg.bits, layer.in_features, layer.out_features)
        qweights[name] = QuantizedWeight(q, s, z, g, cfg.spec)
    return qweights, int(state["blocks_done"])


def calibrate(
    cfg: QuantizeConfig, model: Any, tok: Any, qweights: dict, start: int, float_blocks: Any = None
) -> tuple[dict, bool]:
    """Layer-by-layer GPTQ / AWQ from block `start` on; `float_blocks` (the unquantized blocks, --fp_target)
    carry the float model's activations beside the quantized model's. Returns (qweights, interrupted)."""
    from lmstack.quant.calibration import calibration_tokens
    from lmstack.quant.layerwise import block_inputs, run_block, stage_inputs

    source = cfg.calib.split(",") if "," in cfg.calib else cfg.calib
    tokens = calibration_tokens(tok, source, cfg.calib_samples, cfg.calib_seq_len, cfg.seed)
    batches = block_inputs(model, tokens, cfg.batch_size)
    ref = batches if float_blocks is not None else None
    for i in range(start):  # resume: the finished blocks are already quantized; replay their outputs
        batches = run_block(model.blocks[i], batches)
        ref = run_block(float_blocks[i], ref) if ref is not None else None
    L = len(model.blocks)
    done = start
    try:
        for i in progress(range(start, L), desc=f"{cfg.method} blocks", initial=start, total=L, unit="block"):
            reference = None
            if ref is not None:  # one float pass: this block's float stage inputs, the next block's float inputs
                reference, ref = stage_inputs(float_blocks[i], ref)
            qweights.update(quantize_block(cfg, model.blocks[i], batches, f"blocks.{i}", reference))
            batches = run_block(model.blocks[i], batches)
            done = i + 1
            if cfg.stop_after_blocks and done - start >= cfg.stop_after_blocks and done < L:
                raise KeyboardInterrupt("--stop_after_blocks")
        if cfg.head:
            qweights["lm_head"] = quantize_head(cfg, model, batches, ref)
    except KeyboardInterrupt:
        info(f"quantize: interrupted after {done} of {L} blocks; saving {partial_dir(cfg)} (continue with --resume)")
        save_partial(cfg, model, qweights, done)
        return qweights, True
    return qweights, False


def quantize(cfg: QuantizeConfig) -> dict[str, Any]:
    """Run the recipe; returns the report written to <out_dir>/quantize.json (or {"interrupted": True})."""
    from lmstack.model import load_model
    from lmstack.model.save_target import check_save_target
    from lmstack.quant.swap import apply_quantized, quantizable_linears, untie_head

    if not cfg.out_dir:
        raise ValueError("--out_dir is required (the quantized model directory to write)")
    out = Path(cfg.out_dir)
    check_save_target(out, cfg.overwrite, flag="--out_dir")  # before any slow work
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    model, tok = load_model(cfg.model, device="cpu", dtype="float32")
    if any(hasattr(m, "quantized_weight") for m in model.modules()):
        raise ValueError(f"--model {cfg.model} is already quantized; quantize its float original instead")
    before = heldout_ppl(model, tok, cfg)
    names = quantizable_linears(model, head=cfg.head and cfg.method != "nf4")
    widths = {model.get_submodule(n).in_features for n in names}
    cfg.group_size = cfg.group_size or pick_group_size(cfg.bits, widths)
    for name in names if cfg.method != "nf4" else ():  # the group size must divide every width: fail before slow work
        (cfg.head_spec if name == "lm_head" else cfg.spec).groups(model.get_submodule(name).in_features, where=name)
    tied = "lm_head" in names and model.lm_head.weight is model.embed.weight
    if "lm_head" in names:
        untie_head(model)
    qweights: dict[str, QuantizedWeight] = {}
    start = 0
    float_blocks = copy.deepcopy(model.blocks) if cfg.method == "gptq" and cfg.fp_target else None  # before resume
    if cfg.resume:
        qweights, start = load_partial(cfg, model)
    with interruptible(), torch.no_grad():
        if cfg.method == "rtn":
            from lmstack.quant.rtn import quantize_rtn

            spec = lambda n: cfg.head_spec if n == "lm_head" else cfg.spec  # noqa: E731
            qweights = {n: quantize_rtn(model.get_submodule(n).weight, spec(n), n, cfg.mse) for n in names}
        elif cfg.method == "nf4":
            from lmstack.quant.nf4 import quantize_nf4

            qweights = {n: quantize_nf4(model.get_submodule(n).weight) for n in names}
        else:
            qweights, interrupted = calibrate(cfg, model, tok, qweights, start, float_blocks)
            if interrupted:
                return {"interrupted": True}
    quant_s = time.perf_counter() - t0
    from lmstack.quant.checkpoint import save_quantized

    meta = {"method": cfg.method, "act_order": cfg.act_order, "damp": cfg.damp, "mse": cfg.mse,
            "fp_target": cfg.fp_target, "calib": cfg.calib, "calib_samples": cfg.calib_samples,
            "calib_seq_len": cfg.calib_seq_len}  # fmt: skip
    act_quant = cfg.method == "smoothquant"
    if act_quant:
        meta.update(act_quant="int8-per-token", alpha=cfg.alpha)
    shared = cfg.shared_table and tied and cfg.method in ("rtn", "gptq") and cfg.head_spec == QuantSpec(8, -1, True)
    if shared:  # the saved float table holds what the reloaded lookups give, for loaders that do not share it
        from lmstack.quant.embedding import QuantEmbedding
        from lmstack.quant.linear import QuantLinear

        meta["embedding"] = "lm_head"  # lmstack's loader: the input embedding reads the head's int8 table
        lookup = QuantEmbedding(QuantLinear(qweights["lm_head"]), DTYPES[cfg.dtype])
        model.embed.weight.data = lookup(torch.arange(lookup.num_embeddings)).float()
    save_quantized(model, qweights, out, tokenizer=tok, meta=meta, dtype=cfg.dtype, overwrite=cfg.overwrite)
    apply_quantized(model, qweights, act_quant=act_quant)
    if shared:
        model.embed = QuantEmbedding(model.lm_head, model.embed.weight.dtype)
    after = heldout_ppl(model, tok, cfg)
    report = {"config": config_to_dict(cfg), "quantize_s": round(quant_s, 2), "layers": len(qweights),
              "ppl_before": before, "ppl_after": after}  # fmt: skip
    atomic_write_text(out / "quantize.json", json.dumps(report, indent=2))
    remove_partial(cfg)
    return report


PARTIAL_FILES = {"state.json", "state.safetensors"}  # all that `save_partial` writes


def remove_partial(cfg: QuantizeConfig) -> None:
    """Delete `<out_dir>.partial/` once the finished directory supersedes it, but only if it holds exactly what
    `save_partial` writes: a directory of that name with anything else in it is someone else's, and stays."""
    d = partial_dir(cfg)
    if d.is_dir() and {p.name for p in d.iterdir()} == PARTIAL_FILES:
        shutil.rmtree(d)
    elif d.exists():
        info(f"quantize: left {d} in place (it holds files this command did not write)")


def main(cfg: QuantizeConfig) -> int:
    report = quantize(cfg)
    if report.get("interrupted"):
        return 130
    line = (
        f"{cfg.out_dir}: {report['layers']} layers quantized ({cfg.method}, int{cfg.bits}) in {report['quantize_s']} s"
    )
    if report["ppl_before"] and report["ppl_after"]:
        b, a = report["ppl_before"]["ppl"], report["ppl_after"]["ppl"]
        line += f"; held-out perplexity {b:.3f} -> {a:.3f} ({100 * (a / b - 1):+.1f}%)"
    print(line)
    return 0 if math.isfinite(report["ppl_after"]["ppl"] if report["ppl_after"] else 0.0) else 1


if __name__ == "__main__":
    import sys

    from lmstack.cli import main as cli

    sys.exit(cli(["quantize", *sys.argv[1:]]))
