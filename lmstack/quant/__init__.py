"""Quantization: RTN, GPTQ, AWQ and SmoothQuant into packed 4/8-bit weights run by fused CPU kernels, NF4 with
double quantization (`nf4.py`, QLoRA's base weights), quantized checkpoints, an INT8 KV cache and GGUF export.

    lmstack quantize --model smollm2-135m --method gptq --bits 4 --out_dir runs/smol-gptq4
    model, tok = lmstack.model.load_model("runs/smol-gptq4")     # QuantLinear layers, fused int4 kernel

See docs/quant.md for each method, the checkpoint format and the measurements.
"""

from lmstack.quant.linear import QuantLinear, kernel_report
from lmstack.quant.rtn import QuantizedWeight, QuantSpec, quantize_rtn

__all__ = ["QuantLinear", "QuantSpec", "QuantizedWeight", "kernel_report", "quantize_rtn"]
