"""The data stage: corpora, dedup, token shards and batches (docs/data.md).

`load_corpus`, `load_files` and `list_corpora` are re-exported lazily (so `python -m lmstack.data.corpus`
does not import the module twice); `shards`, `batches`, `dedup` and `prepare` are imported from their modules.
"""

from typing import Any

__all__ = ["list_corpora", "load_corpus", "load_files"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lmstack.data import corpus

        return getattr(corpus, name)
    raise AttributeError(f"module 'lmstack.data' has no attribute {name!r}")
