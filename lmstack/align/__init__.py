"""Alignment: reward models, DPO / cDPO / robust DPO / IPO, ORPO and GRPO on preference pairs and verifiable
rewards (see docs/align.md).

    lmstack reward | dpo | orpo | grpo CONFIG.yaml --field=value

Components: `logprobs.py` (completion log-probs), `batching.py` (rows), `tasks.py` (verifiable problems and
rewards), `preferences.py` (pairs), `reward_model.py`, `dpo_loss.py`, `orpo_loss.py`, `grpo_loss.py`,
`rollouts.py`; recipes: `reward.py`, `dpo.py`, `orpo.py`, `grpo.py`.
"""
