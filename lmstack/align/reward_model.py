"""A reward model: the transformer with a scalar head read at the last token, trained with the Bradley-Terry loss.

    r(x, y) = w . h_last            h_last = final-norm hidden state of the last non-pad token of prompt + reply

The LM head is replaced by the identity, so the backbone returns hidden states (B, T, D) and one linear
`score` (D -> 1, no bias) maps the last real token's state to a scalar (Ouyang et al. 2022, "InstructGPT",
Sec. 3.5; Stiennon et al. 2020). Trained on preference pairs with the Bradley-Terry likelihood
P(y_w > y_l) = sigmoid(r_w - r_l):

    L = -log sigmoid(r_w - r_l - margin)  [+ c * mean((r_w + r_l)^2)]

the optional second term (Eisenstein et al. 2023) centers rewards at 0. This is TRL 1.16's
`RewardTrainer.compute_loss` (`trl/trainer/reward_trainer.py`; `center_rewards_coefficient`); the test runs it.
Worked example: r_w = 1, r_l = -1 gives L = log(1 + e^-2) = 0.126928; accuracy counts r_w > r_l.

Saved format: a Hugging Face *sequence-classification* directory that `transformers.AutoModelForSequenceClassification`
loads (tests/align/test_reward_model.py checks the rewards match):
    config.json          the backbone's HF config, `architectures: ["LlamaForSequenceClassification"]` (or the
                         family's equivalent; "LmstackForSequenceClassification" for our own layouts),
                         `num_labels: 1`, `pad_token_id`
    model.safetensors    the backbone's tensors under HF names (no `lm_head`) plus `score.weight` (1, D)
    tokenizer files, generation_config.json
HF picks the rightmost token that is not `pad_token_id`; here the last token is found from positions (padding
is -1), so content that happens to contain the pad id is still scored at its true end.
Left out: value heads for PPO, multi-objective heads, reward-model ensembles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmstack.common.atomic import atomic_dir, atomic_write_text
from lmstack.model import Transformer
from lmstack.model.hf import (
    DTYPES,
    config_from_hf,
    config_to_hf,
    read_safetensors,
    state_dict_from_hf,
    state_dict_to_hf,
)

SCORE = "score.weight"


class RewardModel(nn.Module):
    def __init__(self, backbone: Transformer, init_std: float | None = None) -> None:
        super().__init__()
        backbone.lm_head = nn.Identity()  # forward now returns the final-norm hidden states (B, T, D)
        self.backbone = backbone
        self.config = backbone.config
        self.score = nn.Linear(backbone.config.d_model, 1, bias=False)
        nn.init.normal_(self.score.weight, std=init_std or backbone.config.init_std)
        self.score.to(next(backbone.parameters()).dtype)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """input_ids, positions (B, T) (positions -1 on padding) -> rewards (B,) read at each row's last token."""
        hidden = self.backbone(input_ids, positions=positions).logits  # (B, T, D): lm_head is the identity
        last = positions.argmax(dim=-1)  # (B,) the column holding each row's highest position = its last token
        h = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, D)
        return self.score(h).squeeze(-1).float()

    def save_pretrained(self, path: str | Path, tokenizer: Any = None, pad_token_id: int = 0) -> Path:
        """Write the HF sequence-classification directory described in the module docstring (atomically)."""
        from safetensors.torch import save_file

        family, tensors = state_dict_to_hf(self.backbone)
        tensors.pop("lm_head.weight", None)
        tensors[SCORE] = self.score.weight
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
        hf = config_to_hf(self.config)
        arch = hf["architectures"][0].replace("LMHeadModel", "ForSequenceClassification")
        hf.update(architectures=[arch.replace("ForCausalLM", "ForSequenceClassification")], num_labels=1,
                  id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0}, pad_token_id=pad_token_id)  # fmt: skip
        with atomic_dir(path) as tmp:
            save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
            atomic_write_text(tmp / "config.json", json.dumps(hf, indent=2))
            gen = {k: getattr(self.config, k) for k in ("bos_token_id", "eos_token_id") if getattr(self.config, k)}
            atomic_write_text(tmp / "generation_config.json", json.dumps(gen, indent=2))
            if tokenizer is not None:
                tokenizer.save(tmp)
        return Path(path)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> RewardModel:
        """Load a directory written by `save_pretrained` (or an HF `*ForSequenceClassification` with 1 label)."""
        path = Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"reward model: no config.json in {path}")
        hf = json.loads(cfg_file.read_text())
        tensors = read_safetensors(path)
        if SCORE not in tensors or tensors[SCORE].shape[0] != 1:
            raise ValueError(f"reward model {path}: expected a {SCORE!r} tensor of shape (1, D) (a reward head)")
        score = tensors.pop(SCORE)
        cfg = config_from_hf(hf, where=str(cfg_file))
        backbone = Transformer.without_init(cfg, device)
        if not cfg.tie_embeddings:  # an untied LM head is not saved: stand in its (unused) tensor for the check
            tensors["lm_head.weight"] = backbone.lm_head.weight
        sd = state_dict_from_hf(tensors, hf["model_type"], backbone)  # checks every name and shape
        sd.pop("lm_head.weight", None)
        model = cls(backbone)  # replaces the LM head by the identity
        backbone.load_state_dict({k: v.to(DTYPES[cfg.dtype]) for k, v in sd.items()})
        with torch.no_grad():
            model.score.weight.copy_(score)
        return model.to(device).eval()


def bradley_terry_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> torch.Tensor:  # fmt: skip
    """Mean of -log sigmoid(r_w - r_l - margin) over pairs, plus the optional reward-centering term."""
    diff = chosen_rewards - rejected_rewards if margin is None else chosen_rewards - rejected_rewards - margin
    loss = -F.logsigmoid(diff).mean()
    if center_coef:
        loss = loss + center_coef * torch.mean((chosen_rewards + rejected_rewards) ** 2)
    return loss
