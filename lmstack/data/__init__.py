"""The data stage: corpora, dedup, token shards and batches (docs/data.md).

Only the corpus API is imported here (standard library only); `shards`, `batches`, `dedup` and `prepare` pull
in numpy/torch and are imported from their own modules.
"""

from lmstack.data.corpus import list_corpora, load_corpus, load_files

__all__ = ["list_corpora", "load_corpus", "load_files"]
