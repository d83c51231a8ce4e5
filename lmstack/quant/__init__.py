"""The quantization stage (docs/quant.md). `nf4.py`: NormalFloat-4 with double quantization (QLoRA's base weights)."""
