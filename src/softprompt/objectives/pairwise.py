"""Pairwise (comparative) reward-model loss: -log sigmoid(s_chosen - s_rejected - margin).

The batch holds the B chosen texts followed by the B rejected ones (same order), so one
forward pass scores both; ``scores()`` is (2B, 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..config.fields import check_instance, hfield
from .base import OBJECTIVES, Objective, ObjectiveOutput, StepInputs


@dataclass
class PairwiseConfig:
    margin: float = hfield(0.0, "the chosen response must outscore the rejected one by this much "
                                "(loss -log sigmoid(s_c - s_r - margin))", ge=0)

    def __post_init__(self):
        check_instance(self, "method")


def pairwise_loss(chosen, rejected, margin: float = 0.0):
    """Mean of -log sigmoid(s_c - s_r - margin) over the pairs."""
    return -F.logsigmoid(chosen - rejected - margin).mean()


@OBJECTIVES.register("pairwise")
class Pairwise(Objective):
    name = "pairwise"
    config_class = PairwiseConfig

    def __call__(self, inputs: StepInputs) -> ObjectiveOutput:
        scores = inputs.scores().squeeze(-1).float()
        n = scores.shape[0] // 2
        chosen, rejected = scores[:n], scores[n:]
        loss = pairwise_loss(chosen, rejected, self.config.margin)
        diff = (chosen - rejected).detach()
        return ObjectiveOutput(loss, {"accuracy": float((diff > 0).float().mean()), "margin": float(diff.mean())})
