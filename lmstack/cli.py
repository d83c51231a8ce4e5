"""`lmstack <command> [config.yaml ...] [--field=value ...]`: one subcommand per user task.

This file is only a table: command -> (module, config dataclass, function, one-line help). Each function takes
the resolved config and returns an exit code (or None for 0). Modules are imported only when their command
runs, so `lmstack --help` is instant.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import NamedTuple

import yaml


class Command(NamedTuple):
    module: str  # dotted module path, imported lazily
    config: str  # name of the config dataclass in that module
    func: str  # name of the function called with the config
    help: str  # one line for `lmstack --help`


COMMANDS: dict[str, Command] = {
    "corpus": Command("lmstack.data.corpus", "CorpusConfig", "main", "list, show or fetch the embedded corpora"),
    "train-tokenizer": Command(
        "lmstack.data.train_tokenizer", "TrainTokenizerConfig", "main", "train a BPE tokenizer on a corpus"
    ),
    "tokenize": Command("lmstack.tokenizer.commands", "TokenizeConfig", "tokenize", "show a text's pieces and ids"),
    "convert": Command(
        "lmstack.quant.convert", "ConvertConfig", "main", "convert between HF dirs, GGUF files and quantized dirs"
    ),
    "models": Command("lmstack.model.local_models", "ModelsConfig", "main", "list models available offline"),
    "calc": Command("lmstack.model.calc", "CalcConfig", "main", "parameters, FLOPs, memory and KV-cache sizes"),
    "prepare-data": Command("lmstack.data.prepare", "PrepareConfig", "main", "dedup + tokenize a corpus into shards"),
    "pretrain": Command("lmstack.train.pretrain", "PretrainConfig", "main", "pretrain a transformer on token shards"),
    "distill": Command("lmstack.train.distill", "DistillConfig", "main", "distill a teacher into a small student"),
    "scaling": Command("lmstack.train.scaling", "ScalingConfig", "main", "scaling-law sweep and L(N, D) fit"),
    "speedrun": Command("lmstack.train.speedrun", "SpeedrunConfig", "main", "tokenizer -> pretrain -> report on CPU"),
    "quantize": Command(
        "lmstack.quant.quantize", "QuantizeConfig", "main", "quantize a model: RTN / GPTQ / AWQ, 4 or 8 bits"
    ),
    "sft": Command("lmstack.finetune.sft", "SFTConfig", "main", "supervised fine-tuning (full; --method for others)"),
    "lora": Command("lmstack.finetune.sft", "LoraConfig", "main", "LoRA fine-tuning -> PEFT adapter"),
    "qlora": Command("lmstack.finetune.sft", "QLoraConfig", "main", "QLoRA: LoRA over an NF4 base -> PEFT adapter"),
    "prompt-tune": Command("lmstack.finetune.sft", "PromptTuneConfig", "main", "prompt tuning -> PEFT adapter"),
    "prefix-tune": Command("lmstack.finetune.sft", "PrefixTuneConfig", "main", "prefix tuning -> PEFT adapter"),
    "generate": Command("lmstack.generate.cli", "GenerateConfig", "generate_main", "generate text from a model"),
    "chat": Command("lmstack.generate.chat", "ChatConfig", "main", "streaming terminal chat with a model"),
    "eval": Command("lmstack.eval.run", "EvalConfig", "main", "score a model on benchmarks (cached, with CIs)"),
    "report": Command("lmstack.eval.report_card", "ReportConfig", "main", "one-page report card of a model"),
    "reward": Command("lmstack.align.reward", "RewardConfig", "main", "train a reward model on preference pairs"),
    "dpo": Command("lmstack.align.dpo", "DPOConfig", "main", "preference-tune a model: DPO / cDPO / robust / IPO"),
    "orpo": Command("lmstack.align.orpo", "ORPOConfig", "main", "SFT + odds-ratio preference tuning in one stage"),
    "grpo": Command("lmstack.align.grpo", "GRPOConfig", "main", "RL from verifiable rewards with group advantages"),
    "pipeline": Command("lmstack.align.pipeline", "PipelineConfig", "main", "stages in order (pretrain -> sft -> dpo)"),
    # serve runs through lmstack.rag.serving: the serving stage's server plus --embedding_model / --rag_index
    "serve": Command("lmstack.rag.serving", "RagServeConfig", "main", "OpenAI-compatible server + web chat page"),
    "rag": Command("lmstack.rag.cli", "RagConfig", "main", "retrieval-augmented QA: index | query | ask | eval"),
    "rag-train-reranker": Command(
        "lmstack.rag.train_reranker", "TrainRerankerConfig", "main", "train the cross-encoder on mined pairs"
    ),
    "rag-doc2query": Command(
        "lmstack.rag.doc2query", "Doc2QueryConfig", "main", "write the question each passage answers (reranker data)"
    ),
}


def usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [
        "usage: lmstack <command> [config.yaml ...] [--field=value ...]",
        "",
        "lmstack: a complete LLM stack from first principles. Commands:",
        "",
    ]
    lines += [f"  {name:<{width}}  {cmd.help}" for name, cmd in COMMANDS.items()]
    lines += ["", "`lmstack <command> --help` lists a command's options; `--print-config` shows the resolved config."]
    return "\n".join(lines)


def resolve(name: str) -> tuple[type, object]:
    """The config class and function behind a command name."""
    cmd = COMMANDS[name]
    module = importlib.import_module(cmd.module)
    return getattr(module, cmd.config), getattr(module, cmd.func)


def main(argv: list[str] | None = None) -> int:
    """Run one command; a reader that closes the pipe early (`lmstack ... | head -1`) ends it quietly."""
    try:
        code = run(argv)
        sys.stdout.flush()  # inside the try: a closed pipe fails here, not in the interpreter's exit handler
        return code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more can reach the reader
        return 141  # 128 + SIGPIPE, what a Unix tool killed by the closed pipe reports


def run(argv: list[str] | None = None) -> int:
    from lmstack.common.config import ConfigError, config_to_dict, format_help, load_config

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"lmstack: unknown command '{name}'.{hint} See `lmstack --help`.", file=sys.stderr)
        return 2
    config_cls, func = resolve(name)
    if "-h" in rest or "--help" in rest:
        doc = (sys.modules[COMMANDS[name].module].__doc__ or "").strip().split("\n\n")[0]
        print(format_help(config_cls, f"lmstack {name}", doc))
        return 0
    print_config = "--print-config" in rest
    rest = [a for a in rest if a != "--print-config"]
    try:
        cfg = load_config(config_cls, rest)
    except (ConfigError, FileNotFoundError) as e:
        print(f"lmstack {name}: error: {e}", file=sys.stderr)
        return 2
    if print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False).rstrip())
        return 0
    try:
        code = func(cfg)
    except (ValueError, FileNotFoundError) as e:  # bad input: the message names the file, flag or value
        print(f"lmstack {name}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the environment failed us (disk full, permissions): one line, no traceback
        print(f"lmstack {name}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lmstack {name}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
