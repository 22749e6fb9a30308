"""Supervised MLE: cross-entropy on the label words (or the head's classes)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..fields import hfield
from .base import OBJECTIVES, Objective, ObjectiveOutput, StepInputs


@dataclass
class MLEConfig:
    label_smoothing: float = hfield(0.0, "label smoothing of the cross-entropy")


def two_hot(y: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Soft target over sorted ``values`` whose expectation is y (regression through label words)."""
    y = y.float().clamp(values[0], values[-1])
    hi = torch.searchsorted(values, y).clamp(1, len(values) - 1)
    lo = hi - 1
    w_hi = (y - values[lo]) / (values[hi] - values[lo])
    target = torch.zeros(len(y), len(values), device=y.device)
    target.scatter_(1, lo[:, None], (1 - w_hi)[:, None])
    target.scatter_add_(1, hi[:, None], w_hi[:, None])
    return target


@OBJECTIVES.register("mle")
class MLE(Objective):
    name = "mle"
    config_class = MLEConfig

    def __call__(self, inputs: StepInputs) -> ObjectiveOutput:
        scores, y, clf = inputs.scores(), inputs.labels, inputs.classifier
        if not clf.regression:
            loss = F.cross_entropy(scores, y.long(), label_smoothing=self.config.label_smoothing)
            acc = (scores.argmax(-1) == y).float().mean().item()
            return ObjectiveOutput(loss, {"train_accuracy": acc})
        if scores.shape[-1] == 1:  # a regression head
            return ObjectiveOutput(F.mse_loss(scores.squeeze(-1), y.float()))
        target = two_hot(y, clf.values.to(scores.device))
        return ObjectiveOutput(-(target * scores.log_softmax(-1)).sum(-1).mean())
