"""The fine-tuning stage (docs/finetune.md): SFT data and rendering, packing, LoRA / QLoRA / prompt / prefix tuning,
PEFT-format adapters, greedy exact match, and the `sft` recipe (also `lora`, `qlora`, `prompt-tune`,
`prefix-tune`). Reusable pieces for later stages (alignment):

    from lmstack.finetune.chat_data import read_jsonl, render_example, render_all   # records -> ids + loss mask
    from lmstack.finetune.packing import make_batch                                 # pack / pad into batches
    from lmstack.finetune.builtin_data import load_builtin                          # embedded sets, fixed split
    from lmstack.finetune.peft_format import load_adapter                           # any PEFT adapter -> model
    from lmstack.finetune.sft import SFTConfig, train                               # the recipe itself
"""
