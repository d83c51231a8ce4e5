"""Row building and completion log-probs: the worked example, padding invariance, masks, batch order."""

from __future__ import annotations

import math

import pytest
import torch

from lmstack.align.batching import batch_indices, completion_ids, end_of_reply_ids, fit, pad_rows, prompt_ids
from lmstack.align.logprobs import batched_sequence_logprobs, gather_logprobs, sequence_logprobs, token_logprobs
from lmstack.model import ModelConfig, Transformer, load_model


def test_worked_example():
    """logits (0, ln 3) give p = (1/4, 3/4); completion [1, 1] after prompt [0] scores 2 log(3/4) = -0.575364."""
    logits = torch.tensor([0.0, math.log(3)]).expand(1, 3, 2)
    per_token = gather_logprobs(logits, torch.tensor([[0, 1, 1]]))
    torch.testing.assert_close(per_token, torch.full((1, 2), math.log(0.75)))

    class Constant(torch.nn.Module):
        def forward(self, ids, positions=None):
            return type("O", (), {"logits": logits.expand(ids.shape[0], ids.shape[1], 2)})()

    rows = pad_rows([[0]], [[1, 1]])
    assert sequence_logprobs(Constant(), rows).item() == pytest.approx(2 * math.log(0.75))
    assert sequence_logprobs(Constant(), rows).item() == pytest.approx(-0.575364, abs=1e-6)
    assert sequence_logprobs(Constant(), rows, average=True).item() == pytest.approx(math.log(0.75))


def test_rows_layout():
    rows = pad_rows([[5, 6, 7], [8]], [[9], [10, 11]])
    assert rows.input_ids.tolist() == [[5, 6, 7, 9], [8, 10, 11, 0]]
    assert rows.positions.tolist() == [[0, 1, 2, 3], [0, 1, 2, -1]]
    assert rows.completion_mask.tolist() == [[0, 0, 0, 1], [0, 1, 1, 0]]
    assert rows.completion_lengths.tolist() == [1, 2]


def test_fit_keeps_prompt_end_and_completion_start():
    assert fit([1, 2, 3, 4], [5, 6], 4) == ([3, 4], [5, 6])
    assert fit([1, 2, 3], [4, 5, 6, 7], 3) == ([3], [4, 5])
    with pytest.raises(ValueError, match="empty"):
        fit([], [1], 0)


def test_padding_does_not_change_logprobs(tiny_model_kwargs):
    """A row's completion log-prob is the same alone and right-padded inside a batch with longer rows."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**tiny_model_kwargs)).eval()
    prompts, completions = [[3, 4, 5], [6, 7, 8, 9, 10, 11]], [[12, 13], [14, 15, 16, 17]]
    batch = sequence_logprobs(model, pad_rows(prompts, completions))
    alone = torch.cat([sequence_logprobs(model, pad_rows([p], [c])) for p, c in zip(prompts, completions)])
    torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-5)
    chunked = batched_sequence_logprobs(model, pad_rows(prompts, completions), batch_size=1)
    torch.testing.assert_close(chunked, alone, rtol=1e-5, atol=1e-5)


def test_prompt_tokens_get_no_gradient_signal(tiny_model_kwargs):
    """Per-token log-probs are exactly 0 outside the completion, so only completion tokens are scored."""
    model = Transformer(ModelConfig(**tiny_model_kwargs))
    per_token, mask = token_logprobs(model, pad_rows([[1, 2, 3, 4]], [[5, 6]]))
    assert mask.tolist() == [[0, 0, 0, 1, 1]]
    assert (per_token[0, :3] == 0).all() and (per_token[0, 3:] < 0).all()


def test_rendering_with_and_without_chatml(tiny_policy, tiny_plain_policy):
    _, tok = load_model(tiny_policy, device="cpu")
    assert tok.decode(prompt_ids(tok, "2 + 2 =")) == "<|im_start|>user\n2 + 2 =<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(completion_ids(tok, "4")) == "4<|im_end|>"
    assert end_of_reply_ids(tok) == [tok.special_tokens["<|im_end|>"]]
    _, plain = load_model(tiny_plain_policy, device="cpu")
    assert plain.decode(prompt_ids(plain, "2 + 2 =")) == "User: 2 + 2 =\nAssistant:"
    assert plain.decode(completion_ids(plain, "4")) == " 4<|endoftext|>"  # the EOS, as SFT renders it
    assert end_of_reply_ids(plain) == [plain.eos_id]


def test_chatml_prompt_carries_the_template_system_message():
    """SmolLM2's template inserts a default system message; prompts carry it, as SFT and `lmstack chat` do."""
    from lmstack.model import model_path
    from lmstack.tokenizer import Tokenizer
    from lmstack.tokenizer.chat import template_system_prompt

    tok = Tokenizer.load(model_path("smollm2-135m"))
    system = template_system_prompt(tok)
    assert system
    text = tok.decode(prompt_ids(tok, "2 + 2 ="))
    assert (
        text == f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n2 + 2 =<|im_end|>\n<|im_start|>assistant\n"
    )


def test_batch_order_is_a_function_of_seed_and_step():
    steps = [batch_indices(10, 4, s, seed=3) for s in range(5)]  # 20 draws = 2 epochs of 10
    assert sorted(steps[0] + steps[1] + steps[2][:2]) == list(range(10))  # epoch 1 is a permutation
    assert steps[3] == batch_indices(10, 4, 3, seed=3)
    assert steps[0] != batch_indices(10, 4, 0, seed=4)


def test_temperature_scores_the_tempered_policy():
    logits = torch.randn(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    expected = torch.log_softmax(logits[:, :-1] / 0.7, -1).gather(-1, ids[:, 1:, None])[..., 0]
    torch.testing.assert_close(gather_logprobs(logits, ids, temperature=0.7), expected)


def test_rendering_equals_sft_rendering(tiny_policy, tiny_plain_policy):
    """Prompt and reply ids are exactly what the fine-tuning stage trains on (`chat_data.prompt_and_answer`), so
    an SFT model is preference-tuned on the text it learned."""
    from lmstack.finetune.chat_data import prompt_and_answer
    from lmstack.model import model_path
    from lmstack.tokenizer import Tokenizer

    toks = [Tokenizer.load(model_path("smollm2-135m")), load_model(tiny_policy)[1], load_model(tiny_plain_policy)[1]]
    for tok in toks:
        for q, a in [("State the final answer to the following arithmetic problem: 58 + 26 =", "84"), ("Hi.\n", "-3")]:
            messages = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            assert prompt_and_answer(tok, messages) == (prompt_ids(tok, q), completion_ids(tok, a))
