"""Serving: a paged-KV continuous-batching engine and an OpenAI-compatible server.

    from lmstack.serve.engine import Engine, EngineConfig
    engine = Engine(model, tokenizer, EngineConfig())
    outputs = engine.generate(prompts, SamplingParams(max_new_tokens=64))

`lmstack serve --model NAME_OR_DIR` starts the HTTP server (server.py). See docs/serve.md. The bookkeeping half
(`block_pool`, `block_tables`, `sequence`, `scheduler`) imports no torch; import submodules directly.
"""
