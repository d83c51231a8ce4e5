"""`lmstack generate`: text from a model; every `SamplingParams` field is a flag of the `sampling` section.

    lmstack generate "The capital of France is" --model smollm2-135m --sampling.temperature 0 \
        --sampling.max_new_tokens 20
    lmstack generate "Name three colors." --chat --sampling.json_schema schema.json
    lmstack generate "To be or not" --draft_model DIR --sampling.num_draft_tokens 4 --print_stats

The sampling flags are derived from the `SamplingParams` dataclass itself (`--help` lists them all), so they
cannot drift from what `generate()` accepts: `--sampling.logit_bias '{"50256": -100}'`,
`--sampling.bad_words_ids '[[11, 12]]'`, `--sampling.stop_token_ids 2,3`, `--sampling.ignore_eos`, ...
A mapping flag (`logit_bias`, `json_schema`) takes inline JSON or the path of a JSON/YAML file.

The prompt is encoded as is, or with `--chat` wrapped in the model's ChatML template as one user message.
With one output and no beam search the text streams to stdout as it is generated; otherwise each output is
printed after a `--- i` line. A constrained output that hit the token budget before completing is flagged on
stderr (finish reason "length"). `--print_stats` prints token counts, speed and acceptance to stderr.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from lmstack.common.config import section
from lmstack.generate.params import SamplingParams
from lmstack.model.causal_lm import CausalLM
from lmstack.tokenizer.chat import chat_stop_ids, template_system_prompt


@dataclass
class GenerateConfig:
    prompt: str = field(default="", metadata={"positional": True})  # text to continue (or the user message, --chat)
    model: str = "smollm2-135m"  # model directory, .gguf file or local model name (`lmstack models`)
    adapter: str = ""  # PEFT adapter directory (LoRA, prompt or prefix tuning) applied to --model
    chat: bool = False  # wrap the prompt in the chat template as a user message
    system: str = ""  # system message (with --chat); "" = the chat template's default, if any
    # decoding: every SamplingParams field (--sampling.temperature=0, --sampling.top_p=0.9, ...)
    sampling: SamplingParams = section(SamplingParams, max_new_tokens=128, temperature=0.7)
    draft_model: str = ""  # draft model (directory or name) for speculative decoding
    device: str = "auto"  # auto | cpu | cuda[:N] | mps
    dtype: str = ""  # float32 | bfloat16 | float16; "" = the model's own
    print_stats: bool = False  # print token counts, tokens/s and acceptance to stderr
    compile: bool = False  # torch.compile the model (dynamic shapes): leaner decode steps after a one-off compile

    def __post_init__(self) -> None:
        if self.dtype not in ("", "float32", "bfloat16", "float16"):
            raise ValueError(f"--dtype={self.dtype!r}: expected float32, bfloat16 or float16 (or empty)")


def maybe_compile(model: CausalLM, enabled: bool) -> Any:
    """`torch.compile(model, dynamic=True)`: one graph per step instead of ~60 Python module calls.

    The compiled module forwards `.config` / `.parameters()` to the model, so `generate` takes it as is. The first
    call compiles (tens of seconds on CPU); later prompt lengths reuse the graph, a new batch size of 1 vs > 1
    recompiles once. Equal to eager decoding (tests/generate/test_compile.py)."""
    if not enabled:
        return model
    import torch

    return torch.compile(model, dynamic=True)


def prepare(model: CausalLM, adapter: str, compile: bool) -> CausalLM:
    """The model as `generate` / `chat` run it: the adapter applied, the weights in the batch-1 decode layout
    (`fast_forward.decode_layout`: same values, ~1.5x faster matrix-vector products on CPU), compiled if asked."""
    from lmstack.generate.fast_forward import decode_layout

    return maybe_compile(decode_layout(with_adapter(model, adapter)), compile)


def with_adapter(model: CausalLM, adapter: str) -> CausalLM:
    """`--adapter DIR`: the model with a PEFT adapter applied (LoRA merged into the weights: no extra cost)."""
    if not adapter:
        return model
    from lmstack.finetune.peft_format import load_adapter

    return load_adapter(model, adapter, merge=True)


def encode_prompt(cfg: GenerateConfig, tok: Any) -> list[int]:
    if not cfg.chat:
        ids = tok.encode(cfg.prompt)
        if not ids:
            raise ValueError("--prompt is empty; give a text to continue")
        return ids
    system = cfg.system or template_system_prompt(tok)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": cfg.prompt}]
    return tok.render_chat(messages, add_generation_prompt=True)[0]


def generate_main(cfg: GenerateConfig) -> int:
    from lmstack.generate.api import generate, stream_generate
    from lmstack.generate.decode import GenerationStats
    from lmstack.model import load_model

    model, tok = load_model(cfg.model, cfg.device, cfg.dtype)
    model = prepare(model, cfg.adapter, cfg.compile)
    draft = load_model(cfg.draft_model, cfg.device, cfg.dtype)[0] if cfg.draft_model else None
    extra = chat_stop_ids(tok) if cfg.chat else []
    params = cfg.sampling.replace(stop_token_ids=[*cfg.sampling.stop_token_ids, *extra])
    prompt = encode_prompt(cfg, tok)
    stats = GenerationStats()
    t0 = time.perf_counter()
    if params.n == 1 and params.beam_width == 1:
        for event in stream_generate(model, prompt, params, tokenizer=tok, draft_model=draft, stats=stats):
            sys.stdout.write(event.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        outs = generate(model, [prompt], params, tokenizer=tok, draft_model=draft, stats=stats, allow_incomplete=True)
        texts = stats.texts or [tok.decode(o) for o in outs]
        for i, text in enumerate(texts):
            print(f"--- {i}\n{text}")
    if cfg.print_stats:
        dt = time.perf_counter() - t0
        line = {
            "prompt_tokens": stats.prompt_tokens,
            "new_tokens": stats.new_tokens,
            "seconds": round(dt, 3),
            "tokens_per_s": round(stats.new_tokens / dt, 2) if dt > 0 else None,
            "target_forwards": stats.forwards,
        }
        if stats.drafted:
            line |= {"acceptance_rate": round(stats.acceptance_rate, 3), "draft_forwards": stats.draft_forwards}
            line["tokens_per_target_call"] = round(stats.new_tokens / max(stats.forwards - 1, 1), 2)
        print(json.dumps(line), file=sys.stderr)
    incomplete = [i for i, r in enumerate(stats.finish_reasons) if r != "stop"] if params.constrained else []
    if incomplete:
        print(f"lmstack generate: error: output(s) {incomplete} incomplete: --sampling.max_new_tokens="
              f"{params.max_new_tokens} ran out before the output matched its constraint", file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    from lmstack.cli import main

    sys.exit(main(["generate", *sys.argv[1:]]))
