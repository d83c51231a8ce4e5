"""`lmstack chat`: a streaming terminal chat that keeps the conversation in the model's chat template.

Each turn renders the whole history with ChatML (`Tokenizer.render_chat`, add_generation_prompt=True),
streams the reply token by token (text never splits a UTF-8 character) and stops at `<|im_end|>`. A base model
whose tokenizer has no ChatML tokens (the CPU speedrun's) gets a plain transcript ("User: ...\nAssistant:")
and stops at the next "\nUser:" line. When the
history plus the reply budget no longer fits the context window, the oldest turns are dropped (the system
message is kept); a single message longer than the window is an error, not a silent cut. Without `--system`,
the system message the model's chat template inserts by default (SmolLM2 has one) is used, as HF would.

Commands typed at the prompt: /reset (forget the history), /exit or /quit (or Ctrl-D).
With `--json_mode` every reply is a JSON object.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmstack.common.config import section
from lmstack.generate.params import SamplingParams
from lmstack.model.causal_lm import CausalLM
from lmstack.tokenizer.chat import PLAIN_STOP, chat_stop_ids, has_chatml, render_prompt, template_system_prompt


@dataclass
class ChatConfig:
    model: str = "smollm2-135m"  # model directory, .gguf file or local model name (`lmstack models`)
    adapter: str = ""  # PEFT adapter directory (LoRA, prompt or prefix tuning) applied to --model
    system: str = ""  # system message kept at the top; "" = the default of the model's chat template, if any
    # decoding of each reply: every SamplingParams field (--sampling.temperature=0, --sampling.json_mode, ...)
    sampling: SamplingParams = section(SamplingParams, max_new_tokens=256, temperature=0.7, top_p=0.9)
    context: int = 0  # context window in tokens; 0 = the model's max_seq_len
    device: str = "auto"  # auto | cpu | cuda[:N] | mps
    dtype: str = ""  # float32 | bfloat16 | float16; "" = the model's own
    compile: bool = False  # torch.compile the model: leaner decode steps after a one-off compile

    def __post_init__(self) -> None:
        if self.context < 0:
            raise ValueError(f"--context={self.context}: must be >= 0")
        if self.dtype not in ("", "float32", "bfloat16", "float16"):
            raise ValueError(f"--dtype={self.dtype!r}: expected float32, bfloat16 or float16 (or empty)")
        if self.sampling.n != 1 or self.sampling.beam_width != 1:
            raise ValueError("--sampling.n and --sampling.beam_width must be 1 in a chat (one streamed reply)")

    def sampling_params(self, stop_ids: list[int], stop: list[str] | None = None) -> SamplingParams:
        """The reply's params: the section plus the template's end-of-turn ids and stop strings."""
        s = self.sampling
        return s.replace(stop_token_ids=[*s.stop_token_ids, *stop_ids], stop=[*s.stop, *(stop or [])])


def fit_history(tok: Any, messages: list[dict[str, str]], budget: int) -> tuple[list[dict[str, str]], list[int]]:
    """Drop the oldest non-system messages until the rendered prompt has <= budget tokens.

    Returns the kept messages and their prompt ids. Raises ValueError if even the last message alone is too long.
    """
    system = [m for m in messages[:1] if m["role"] == "system"]
    rest = messages[len(system) :]
    while rest:
        ids = render_prompt(tok, system + rest)
        if len(ids) <= budget:
            return system + rest, ids
        rest = rest[1:]
        while rest and rest[0]["role"] != "user":  # a conversation restarts on a user turn
            rest = rest[1:]
    raise ValueError(f"the message does not fit the context window ({budget} tokens for the prompt); shorten it")


def chat_turn(
    model: CausalLM,
    tok: Any,
    messages: list[dict[str, str]],
    params: SamplingParams,
    context: int,
    write: Callable[[str], None],
) -> tuple[list[dict[str, str]], str]:
    """Answer the last user message: returns the (possibly trimmed) history with the reply appended, and the reply."""
    from lmstack.generate.api import stream_generate
    from lmstack.generate.decode import GenerationStats

    messages, ids = fit_history(tok, messages, context - params.max_new_tokens)
    stats = GenerationStats()
    for event in stream_generate(model, ids, params, tokenizer=tok, stats=stats):
        write(event.text)
    reply = (stats.texts[0] if stats.texts else "").strip()
    return messages + [{"role": "assistant", "content": reply}], reply


def main(cfg: ChatConfig) -> int:
    from lmstack.generate.cli import prepare
    from lmstack.model import load_model

    model, tok = load_model(cfg.model, cfg.device, cfg.dtype)
    model = prepare(model, cfg.adapter, cfg.compile)
    chatml = has_chatml(tok)
    params = cfg.sampling_params(chat_stop_ids(tok), None if chatml else PLAIN_STOP)
    context = cfg.context or model.config.max_seq_len
    if context <= params.max_new_tokens:
        raise ValueError(f"--context={context} must exceed --max_new_tokens={params.max_new_tokens}")
    system = cfg.system or template_system_prompt(tok)
    base = [{"role": "system", "content": system}] if system else []
    messages = list(base)
    print(f"lmstack chat with {cfg.model}: /reset clears the history, /exit quits.", file=sys.stderr)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    while True:
        try:
            line = input("you> ")
        except EOFError:
            break
        if line.strip() in ("/exit", "/quit"):
            break
        if line.strip() == "/reset":
            messages = list(base)
            continue
        if not line.strip():
            continue
        write("bot> ")
        try:
            messages, _ = chat_turn(model, tok, messages + [{"role": "user", "content": line}], params, context, write)
        except ValueError as e:
            print(f"\n[error] {e}", file=sys.stderr)
            continue
        write("\n")
    return 0


if __name__ == "__main__":
    from lmstack.cli import main as cli_main

    sys.exit(cli_main(["chat", *sys.argv[1:]]))
