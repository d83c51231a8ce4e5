"""SFT records: reading chat / instruction JSONL and rendering it with the model's chat template + loss mask.

Accepted JSONL lines (one JSON object per line; blank lines are ignored):

    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}, ...]}          chat (OpenAI / HF "messages" format)
    {"instruction": "...", "input": "...", "output": "..."}               Alpaca-style; "input" may be absent

An instruction record becomes [user: instruction + "\\n\\n" + input, assistant: output]. A malformed line (not
JSON, missing fields, wrong roles, no assistant turn) is a `ValueError` naming the file and line number; with
`skip_invalid=True` it is skipped instead and counted, never silently dropped.

Rendering (`render_example`) gives token ids and a loss mask of equal length:
  - tokenizers with ChatML tokens (SmolLM2): `Tokenizer.render_chat` -- the mask is 1 on assistant content and its
    `<|im_end|>` (tokenizer/chat.py explains the rule); a conversation without a system message gets the one the
    model's chat template inserts by default (SmolLM2's does), as HF's `apply_chat_template` and `lmstack chat`
    would, so training and inference see the same prompt;
  - tokenizers without them (the speedrun's base model): the plain transcript `lmstack chat` uses for such models,
    "User: ...\\nAssistant: <reply>" then EOS (or "\\n" without an EOS token); the mask is 1 on " <reply>" + EOS.
Examples longer than `max_len` are cut from the right (counted; a cut loses the ending) -- or dropped when the cut
leaves no supervised token. Left out: tool calls, multi-modal parts, per-turn loss weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmstack.tokenizer.chat import has_chatml, template_system_prompt

ROLES = ("system", "user", "assistant")
Messages = list[dict[str, str]]


@dataclass
class Rendered:
    ids: list[int]  # (T,) token ids of the whole conversation
    mask: list[int]  # (T,) 1 where the token is a target the model learns to produce


def record_to_messages(obj: Any) -> Messages:
    """A parsed JSONL record -> validated messages; ValueError says what is wrong (without the location)."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        messages = obj["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
                raise ValueError(f"messages[{i}] must be {{'role': one of {list(ROLES)}, 'content': a string}}")
        if not any(m["role"] == "assistant" for m in messages):
            raise ValueError("no assistant message: nothing to learn from")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    if "instruction" in obj or "output" in obj:
        for key in ("instruction", "output"):
            if not isinstance(obj.get(key), str):
                raise ValueError(f"'{key}' must be a string")
        prompt = obj["instruction"] + (f"\n\n{obj['input']}" if obj.get("input") else "")
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": obj["output"]}]
    raise ValueError(f"expected a 'messages' list or 'instruction'/'output' fields, got keys {sorted(obj)}")


def read_jsonl(path: str | Path, skip_invalid: bool = False) -> tuple[list[Messages], int]:
    """Every conversation in a JSONL file and the number of skipped lines (always 0 unless `skip_invalid`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--data: no such file: {path}")
    out: list[Messages] = []
    skipped = 0
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                out.append(record_to_messages(json.loads(line)))
            except (json.JSONDecodeError, ValueError) as e:
                if not skip_invalid:
                    raise ValueError(f"{path}:{n}: {e} (pass --skip_invalid=true to skip bad lines)") from None
                skipped += 1
    if not out:
        raise ValueError(f"--data: {path} holds no valid record")
    return out, skipped


def render_example(tok: Any, messages: Messages) -> Rendered:
    """Ids + loss mask with the model's template (ChatML when the tokenizer has it, else a plain transcript)."""
    if has_chatml(tok):
        system = template_system_prompt(tok)
        if system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}, *messages]
        ids, mask = tok.render_chat(messages)
        return Rendered(ids, mask)
    ids: list[int] = []
    mask: list[int] = []
    names = {"system": "", "user": "User: ", "assistant": "Assistant:"}
    for m in messages:
        if m["role"] == "assistant":
            head, reply = tok.encode(names["assistant"]), tok.encode(" " + m["content"])
            end = [tok.eos_id] if tok.eos_id is not None else tok.encode("\n")
            ids += head + reply + end
            mask += [0] * len(head) + [1] * (len(reply) + len(end))
        else:
            seg = tok.encode(f"{names[m['role']]}{m['content']}\n")
            ids += seg
            mask += [0] * len(seg)
    return Rendered(ids, mask)


def render_all(tok: Any, conversations: Iterable[Messages], max_len: int) -> tuple[list[Rendered], dict[str, int]]:
    """Render and cut to `max_len` tokens; returns the examples and counts {"truncated", "dropped"}."""
    out, counts = [], {"truncated": 0, "dropped": 0}
    for messages in conversations:
        r = render_example(tok, messages)
        if len(r.ids) > max_len:
            counts["truncated"] += 1
            r = Rendered(r.ids[:max_len], r.mask[:max_len])
        if sum(r.mask[1:]) == 0:  # the first token is never a target (nothing precedes it)
            counts["dropped"] += 1
            continue
        out.append(r)
    return out, counts


def prompt_and_answer(tok: Any, messages: Messages) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) where the answer is the last assistant turn's supervised tokens (content + end).

    What greedy decoding must emit after the prompt for an exact match (`exact_match.py`)."""
    r = render_example(tok, messages)
    last = len(r.mask) - 1
    while last >= 0 and not r.mask[last]:
        last -= 1
    first = last
    while first > 0 and r.mask[first - 1]:
        first -= 1
    return r.ids[:first], r.ids[first : last + 1]
