"""Supervised fine-tuning on responses: cross-entropy on the completion tokens that carry the loss
(the response, or a conversation's assistant turns; see ``modeling/sft_data.py``), given the prompt,
averaged over those tokens in the batch (TRL's SFT loss)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..modeling.sft_data import SFTBatch
from .base import OBJECTIVES, Objective, ObjectiveOutput


@dataclass
class SFTInputs:
    batch: SFTBatch
    policy: Any  # rollout.Policy: .model is the SoftPromptModel
    epoch: int = 0
    step: int = 0


@dataclass
class SFTConfig:
    """No options: what carries the loss is the data's (response_field, assistant turns)."""


def response_nll(model, batch: SFTBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed negative log-likelihood of the loss tokens per row (B,), loss tokens per row (B,))."""
    logp = model.sequence_logprobs(batch.prompt_ids, batch.prompt_mask, batch.completion_ids, batch.completion_mask)
    mask = batch.loss_mask.to(logp.dtype)
    return -(logp * mask).sum(1), mask.sum(1)


@OBJECTIVES.register("sft")
class SFT(Objective):
    name = "sft"
    config_class = SFTConfig

    def __call__(self, inputs: SFTInputs) -> ObjectiveOutput:
        nll, tokens = response_nll(inputs.policy.model, inputs.batch)
        n = tokens.sum()
        return ObjectiveOutput(nll.sum() / n.clamp(min=1), {"loss_tokens": float(n)})
