"""`lmstack tokenize --tokenizer DIR "text"`: show how a tokenizer cuts a text (ids, pieces, bytes/token).

`--tokenizer` is a directory written by `train-tokenizer` (or any HF byte-level BPE tokenizer.json), or one
of the reference vocabularies `gpt2`, `cl100k`, `o200k`. Special-token text is encoded as its id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmstack.tokenizer.tokenizer import Tokenizer


@dataclass
class TokenizeConfig:
    text: str = field(default="", metadata={"positional": True})  # the text to tokenize
    tokenizer: str = "runs/tokenizer"  # tokenizer directory / tokenizer.json, or gpt2 | cl100k | o200k
    special: bool = True  # turn special-token text (<|endoftext|>) into its id; false: plain text

    def __post_init__(self) -> None:
        if not self.tokenizer:
            raise ValueError("--tokenizer: give a tokenizer directory or one of gpt2, cl100k, o200k")


def show_pieces(tok: Tokenizer, ids: list[int]) -> str:
    """One line per token: id and its bytes as readable text (escapes shown, partial UTF-8 as hex)."""
    lines = [f"{'id':>7}  piece"]
    for i in ids:
        raw = tok.id_to_bytes(i)
        try:
            piece = repr(raw.decode("utf-8"))
        except UnicodeDecodeError:
            piece = f"{raw!r} (part of a character)"
        lines.append(f"{i:>7}  {piece}")
    return "\n".join(lines)


def tokenize(cfg: TokenizeConfig) -> int:
    from lmstack.tokenizer.references import load_any

    tok = load_any(cfg.tokenizer)
    ids = tok.encode(cfg.text, allowed_special="all") if cfg.special else tok.encode_ordinary(cfg.text)
    n_bytes = len(cfg.text.encode("utf-8", "surrogatepass"))
    print(show_pieces(tok, ids))
    ratio = f"{n_bytes / len(ids):.2f}" if ids else "n/a"
    print(f"\n{len(ids)} tokens, {n_bytes} bytes ({ratio} bytes/token), vocab_size {tok.vocab_size}")
    print(f"ids: {ids}")
    return 0


if __name__ == "__main__":
    import sys

    from lmstack.cli import main

    sys.exit(main(["tokenize", *sys.argv[1:]]))
