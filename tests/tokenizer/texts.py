"""Text sets shared by the tokenizer tests: varied strings for parity, and a small real training corpus."""

from __future__ import annotations

import sysconfig
from pathlib import Path

from tests.conftest import EDGE_STRINGS

# Prose, code, numbers, whitespace runs, several scripts and special-token look-alikes (tiktoken parity set).
VARIED = [
    *EDGE_STRINGS,
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX! don't, DON'T, I'LL, we've",
    "camelCaseIdentifier snake_case_name SCREAMING_CASE HTTPServerError getHTTPResponse",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n// done\n",
    "    indented\n        more\n\t\ttabs\n   \n\n  trailing   ",
    "3.14159265358979 + 2.71828 = 5.85987; 1/3 = 0.333...; 10^100; -42; +7; 1e-9; ١٢٣ ½ Ⅻ",
    "Ünïcödé façade naïve coöperate Straße ÆØÅ æøå Ελληνικά Русский текст Українська",
    "हिन्दी भाषा तमिழ் தமிழ் ไทย ภาษาไทย ქართული Հայերեն አማርኛ",
    "日本語の文章です。漢字、ひらがな、カタカナ。中文句子：你好吗？我很好！",
    "مرحبا كيف حالك؟ العربية لغة جميلة. עברית: מה שלומך?",
    "emoji run 🤖🤖🤖🎉🎉 flags 🇯🇵🇺🇸 skin 👋🏿 zwj 🧑‍💻 keycap 1️⃣",
    "\u200b\u200c\u200d\ufeff zero-width and BOM, NBSP:\u00a0here, thin\u2009space, ideographic\u3000space",
    "<|endoftext|><|endoftext|>hello<|endoftext|> world <|im_start|>user\nhi<|im_end|>",
    "<|fim_prefix|>def f(<|fim_suffix|>)<|fim_middle|>x<|endofprompt|>",
    "a'b'c 's 't 're 've 'm 'll 'd 'S 'T 'RE 'LL",
    "\n\n\n\r\n\r\r\n \n \n",
    "x" * 50 + " " * 50 + "y" * 50 + "\t" * 10 + "!" * 20,
    "https://example.com/path?query=1&b=2#frag user@example.com C:\\Windows\\System32",
    "$$E = mc^2$$ \\frac{a}{b} ∑_{i=0}^{n} x_i ≤ ∞ ≠ ≈ ± × ÷ √",
]


def stdlib_text(max_chars: int = 400_000) -> list[str]:
    """Python's own standard-library sources (always present, realistic code + prose), sorted, capped."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs, total = [], 0
    for path in sorted(root.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        docs.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return docs


def multilingual_text() -> list[str]:
    """The varied set repeated: enough for non-ASCII merges to be learned too."""
    return [s * 3 for s in VARIED]
