"""The real SmolLM2-135M-Instruct (converted from its GGUF once): our logits equal `transformers`' on the same
directory, and greedy decoding through our KV-cache protocol answers the capital question with Paris."""

from __future__ import annotations

import pytest
import torch
import transformers

from lmstack.model import Transformer  # noqa: E402

pytestmark = pytest.mark.slow
PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def smollm() -> tuple[Transformer, object, object]:
    from lmstack.model.local_models import resolve_model

    directory = resolve_model("smollm2-135m")
    ours = Transformer.from_pretrained("smollm2-135m", dtype="float32")
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(directory)
    return ours, hf, tok


def test_matches_transformers_on_smollm2(smollm) -> None:
    ours, hf, tok = smollm
    assert ours.config.n_layers == 30 and ours.config.n_kv_heads == 3 and ours.config.tie_embeddings
    ids = torch.tensor([tok.encode(PROMPT)])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_greedy_with_cache_says_paris(smollm) -> None:
    from tests.model.test_cache import ConcatCache

    ours, _, tok = smollm
    ids = tok.encode(PROMPT)
    cache, out = ConcatCache(), []
    with torch.no_grad():
        logits = ours(torch.tensor([ids]), positions=torch.arange(len(ids))[None], cache=cache).logits
        for step in range(12):
            nxt = int(logits[0, -1].argmax())
            if nxt == ours.config.eos_token_id:
                break
            out.append(nxt)
            pos = torch.tensor([[len(ids) + step]])
            logits = ours(torch.tensor([[nxt]]), positions=pos, cache=cache).logits
    assert "Paris" in tok.decode(out)
