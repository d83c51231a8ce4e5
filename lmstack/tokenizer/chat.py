"""The chat template (ChatML) and the loss mask that supervised fine-tuning trains on.

ChatML (OpenAI 2023; the format SmolLM2 and Qwen use) wraps every message in role tokens:

    <|im_start|>system\\nYou are helpful.<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n
    <|im_start|>assistant\\nHello!<|im_end|>\\n          (one string; wrapped here for width)

`<|im_start|>` and `<|im_end|>` are single special tokens; the role name, the newlines and the content are
ordinary text. `render_chat` returns the ids and a loss mask that is 1 exactly on what the model must learn to
*produce*: every token holding a byte of an assistant message's content, plus that message's `<|im_end|>` (so
it learns to stop). The role header (`<|im_start|>assistant\\n`) and the newline after `<|im_end|>` are 0: the
header is given at inference (add_generation_prompt) and generation stops at `<|im_end|>`, so that newline is
never generated. A token straddling header and content (content starting with a newline) counts as content.

The ids equal what Hugging Face `apply_chat_template(..., tokenize=True)` gives with `CHATML_TEMPLATE` (saved
into `tokenizer_config.json`), as long as message contents do not contain special-token text: here contents
are always encoded as ordinary text (a user cannot inject `<|im_end|>`); HF would turn it into the special id.
Left out: tool calls, multimodal parts, default system prompts (SmolLM2's template adds one when none is given).
"""

from __future__ import annotations

import re
from typing import Any, Protocol

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
PLAIN_STOP = ["\nUser:"]  # where a plain-transcript reply ends (base models without ChatML tokens)

# Jinja for transformers' apply_chat_template; renders exactly the text render_chat tokenizes.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class _Encoder(Protocol):
    special_tokens: dict[str, int]

    def encode_ordinary(self, text: str) -> list[int]: ...

    def decode_bytes(self, ids: list[int]) -> bytes: ...


def render_chat_text(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """The ChatML text of a conversation (what CHATML_TEMPLATE renders)."""
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


def _content_mask(tok: _Encoder, ids: list[int], start: int, end: int) -> list[int]:
    """1 for each token of `ids` (one encoded segment) overlapping bytes [start, end) of that segment."""
    mask, pos = [], 0
    for i in ids:
        n = len(tok.decode_bytes([i]))
        mask.append(1 if pos < end and pos + n > start else 0)
        pos += n
    return mask


def render_chat(
    tok: _Encoder, messages: list[dict[str, str]], add_generation_prompt: bool = False
) -> tuple[list[int], list[int]]:
    """ChatML ids and loss mask (1 = assistant content and its <|im_end|>), both of length T."""
    for name in (IM_START, IM_END):
        if name not in tok.special_tokens:
            raise ValueError(f"render_chat: the tokenizer has no {name} special token (train it with ChatML tokens)")
    start_id, end_id = tok.special_tokens[IM_START], tok.special_tokens[IM_END]
    ids: list[int] = []
    mask: list[int] = []
    for n, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"messages[{n}]: expected {{'role': ..., 'content': ...}}, got {m!r}")
        role, content = str(m["role"]), str(m["content"])
        # The segment between <|im_start|> and <|im_end|> is encoded as one text, as HF tokenizes it.
        segment = tok.encode_ordinary(f"{role}\n{content}")
        learn = role == "assistant"
        head = len(f"{role}\n".encode("utf-8", "surrogatepass"))
        seg_mask = (
            _content_mask(tok, segment, head, head + len(content.encode("utf-8", "surrogatepass")))
            if learn
            else [0] * len(segment)
        )
        newline = tok.encode_ordinary("\n")
        ids += [start_id, *segment, end_id, *newline]
        mask += [0, *seg_mask, int(learn), *[0] * len(newline)]
    if add_generation_prompt:
        prompt = tok.encode_ordinary("assistant\n")
        ids += [start_id, *prompt]
        mask += [0] * (1 + len(prompt))
    return ids, mask


def has_chatml(tok: Any) -> bool:
    """True when the tokenizer has ChatML's role tokens (SmolLM2 does; the speedrun's base model does not)."""
    return IM_START in getattr(tok, "special_tokens", {})


def template_system_prompt(tok: Any) -> str:
    """The system message a ChatML chat template inserts when none is given (SmolLM2's does), else ""."""
    template = str(getattr(tok, "config", {}).get("chat_template") or "")
    m = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", template, re.S)
    return m.group(1) if m else ""


def chat_stop_ids(tok: Any) -> list[int]:
    """ChatML's end-of-turn token, which ends an assistant reply ([] without ChatML)."""
    return [tok.special_tokens[IM_END]] if IM_END in getattr(tok, "special_tokens", {}) else []


def render_prompt(tok: Any, messages: list[dict[str, str]]) -> list[int]:
    """Prompt ids ending where the assistant's reply starts: ChatML when the tokenizer has its tokens, else a
    plain "User: ... / Assistant:" transcript (whose replies end at `PLAIN_STOP`)."""
    if has_chatml(tok):
        return render_chat(tok, messages, add_generation_prompt=True)[0]
    names = {"system": "", "user": "User: ", "assistant": "Assistant: "}
    text = "".join(f"{names.get(m['role'], m['role'] + ': ')}{m['content']}\n" for m in messages)
    return tok.encode(text + "Assistant:")
