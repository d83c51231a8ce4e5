"""Tokenizer stage: byte-level BPE (train, encode, decode), regex pre-tokenization, special tokens, ChatML.

    from lmstack.tokenizer import Tokenizer, StreamDecoder
    tok = Tokenizer.train(texts, vocab_size=4096, pattern="gpt4", special_tokens=["<|endoftext|>"])
    ids = tok.encode("hello world");  tok.decode(ids) == "hello world"
    tok.save("out/tok");  Tokenizer.load("out/tok")

Files: patterns.py (split regexes), bpe.py (merge loops), trainer.py (learning merges), special.py, tokenizer.py
(the class), hf_format.py + persist.py (tokenizer.json / tiktoken files), chat.py (ChatML + loss mask),
stream.py (incremental decoding), batch.py (multi-process encode), commands.py (`lmstack tokenize`),
wordpiece.py (BERT's WordPiece encoding, `WordPieceTokenizer`).
"""

from lmstack.tokenizer.stream import StreamDecoder
from lmstack.tokenizer.tokenizer import Tokenizer
from lmstack.tokenizer.wordpiece import WordPieceTokenizer

__all__ = ["StreamDecoder", "Tokenizer", "WordPieceTokenizer"]
