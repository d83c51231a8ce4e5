"""The reward model's saved directory loads in transformers' AutoModelForSequenceClassification with equal rewards."""

from __future__ import annotations

import pytest
import torch

from lmstack.align.reward_model import RewardModel
from lmstack.model import ModelConfig, Transformer


@pytest.mark.parametrize("tie", [True, False])
def test_matches_hf_sequence_classification(tmp_path, tiny_model_kwargs, tie):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = RewardModel(Transformer(ModelConfig(**tiny_model_kwargs, tie_embeddings=tie))).eval()
    pad = 100
    model.save_pretrained(tmp_path / "rm", pad_token_id=pad)
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    assert type(hf).__name__ == "LlamaForSequenceClassification"
    ids = torch.randint(1, 99, (3, 9))
    ids[1, 6:] = pad  # right padding in row 1
    positions = torch.arange(9).expand(3, 9).clone()
    positions[1, 6:] = -1
    with torch.no_grad():
        ours = model(ids, positions)
        theirs = hf(ids).logits.squeeze(-1)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    back = RewardModel.from_pretrained(tmp_path / "rm")
    with torch.no_grad():
        torch.testing.assert_close(back(ids, positions), ours)


def test_reads_the_last_real_token(tiny_model_kwargs):
    """Padding after a row, whatever its ids, does not change the row's reward."""
    torch.manual_seed(1)
    model = RewardModel(Transformer(ModelConfig(**tiny_model_kwargs))).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 42, 9]])
    positions = torch.tensor([[0, 1, 2, -1, -1], [0, 1, 2, -1, -1]])
    with torch.no_grad():
        r = model(ids, positions)
        alone = model(ids[:1, :3], positions[:1, :3])
    torch.testing.assert_close(r, alone.expand(2), rtol=1e-5, atol=1e-5)


def test_refuses_a_directory_without_a_reward_head(tmp_path, tiny_model_kwargs):
    Transformer(ModelConfig(**tiny_model_kwargs)).save_pretrained(tmp_path / "lm")
    with pytest.raises(ValueError, match="score.weight"):
        RewardModel.from_pretrained(tmp_path / "lm")
