"""DPO on a soft prompt (Rafailov et al., 2023), with TRL's names: beta, loss_type, label_smoothing.

With pi = the response's summed log-prob under the policy and ref = under the reference (the
model without the adapter, or the adapter as it started), computed once per pair:

    z = beta * ((pi_chosen - ref_chosen) - (pi_rejected - ref_rejected))
    sigmoid: -(1 - eps) log sigmoid(z) - eps log sigmoid(-z)        (eps = label_smoothing: cDPO)
    hinge:   max(0, 1 - z)                                          (SLiC)
    ipo:     (z / beta - 1 / (2 beta))^2, on per-token mean log-probs (Azar et al., 2023; as TRL)

and the implicit rewards beta * (pi - ref) give TRL's metrics: rewards/chosen, rewards/rejected,
rewards/accuracies (chosen above rejected), rewards/margins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..config.fields import hfield
from ..modeling.sft_data import SFTBatch
from .base import OBJECTIVES, Objective, ObjectiveOutput
from .sft import response_nll


@dataclass
class DPOConfig:
    beta: float = hfield(0.1, "dpo: the strength of the implicit KL to the reference (TRL's beta)", gt=0)
    loss_type: Literal["sigmoid", "hinge", "ipo"] = hfield(
        "sigmoid", "dpo: sigmoid (DPO), hinge (SLiC) or ipo (IPO, on per-token mean log-probs)")
    label_smoothing: float = hfield(0.0, "dpo sigmoid: the assumed fraction of flipped preferences (cDPO)",
                                    ge=0, lt=0.5)


@dataclass
class DPOInputs:
    batch: SFTBatch  # the chosen responses' rows, then the rejected ones'
    reference: torch.Tensor  # (2B,) the reference's log-probs of the same rows (per token for ipo)
    policy: Any
    epoch: int = 0
    step: int = 0


def sequence_logps(model, batch: SFTBatch, mean: bool = False) -> torch.Tensor:
    """Each row's summed log-prob of its loss tokens (``mean``: per loss token)."""
    nll, tokens = response_nll(model, batch)
    return -nll / tokens.clamp(min=1) if mean else -nll


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             config: DPOConfig) -> tuple[torch.Tensor, dict]:
    """(per-pair losses (B,), TRL's metrics as batch means)."""
    beta = config.beta
    logits = (chosen - ref_chosen) - (rejected - ref_rejected)
    if config.loss_type == "sigmoid":
        eps = config.label_smoothing
        losses = -(1 - eps) * F.logsigmoid(beta * logits) - eps * F.logsigmoid(-beta * logits)
    elif config.loss_type == "hinge":
        losses = torch.relu(1 - beta * logits)
    else:  # ipo
        losses = (logits - 1 / (2 * beta)) ** 2
    reward_c, reward_r = (beta * (chosen - ref_chosen)).detach(), (beta * (rejected - ref_rejected)).detach()
    metrics = {"rewards/chosen": float(reward_c.mean()), "rewards/rejected": float(reward_r.mean()),
               "rewards/accuracies": float((reward_c > reward_r).float().mean()),
               "rewards/margins": float((reward_c - reward_r).mean())}
    return losses, metrics


@OBJECTIVES.register("dpo")
class DPO(Objective):
    name = "dpo"
    config_class = DPOConfig

    def __call__(self, inputs: DPOInputs) -> ObjectiveOutput:
        logps = sequence_logps(inputs.policy.model, inputs.batch, mean=self.config.loss_type == "ipo")
        chosen, rejected = logps.chunk(2)
        ref_chosen, ref_rejected = inputs.reference.to(logps.device).chunk(2)
        losses, metrics = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, self.config)
        return ObjectiveOutput(losses.mean(), metrics)
