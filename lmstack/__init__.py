"""lmstack: a complete large-language-model stack from first principles, in Python and PyTorch.

Stages (ARCHITECTURE.md): tokenizer -> data -> model -> train -> finetune -> align -> quant -> generate -> serve,
with rag and eval beside them. `import lmstack` stays light: stages are imported where they are used.
"""

__version__ = "0.1.0"
