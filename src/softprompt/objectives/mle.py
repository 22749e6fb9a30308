"""Supervised MLE: cross-entropy on the label words (or the head's classes)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config.fields import check_instance, hfield
from ..errors import ConfigError
from .base import OBJECTIVES, Objective, ObjectiveOutput, StepInputs


@dataclass
class MLEConfig:
    label_smoothing: float = hfield(0.0, "label smoothing of the cross-entropy", ge=0, lt=1)
    class_weights: str | list[float] | None = hfield(
        None, "per-class loss weights: a list, or 'balanced' (n / (classes * count) from the training labels)",
        ge=0)

    def __post_init__(self):
        check_instance(self, "mle")
        w = self.class_weights
        if isinstance(w, str) and w != "balanced":
            raise ConfigError(f"mle class_weights: expected 'balanced' or a list of numbers, found {w!r}")
        if isinstance(w, list) and (not w or any(not isinstance(x, (int, float)) or x < 0 for x in w)):
            raise ConfigError(f"mle class_weights: expected non-negative numbers, found {w!r}")


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

    def __init__(self, config):
        super().__init__(config)
        w = config.class_weights
        self.weight = torch.tensor(w, dtype=torch.float) if isinstance(w, list) else None

    def prepare(self, labels: list) -> None:
        """Turn ``class_weights: balanced`` into weights from the training labels' counts."""
        if self.config.class_weights != "balanced" or not labels or isinstance(labels[0], float):
            return
        counts = torch.bincount(torch.tensor(labels, dtype=torch.long)).float()
        self.weight = torch.where(counts > 0, len(labels) / (len(counts) * counts.clamp(min=1)), 0.0)

    def __call__(self, inputs: StepInputs) -> ObjectiveOutput:
        scores, y, clf = inputs.scores(), inputs.labels, inputs.classifier
        if not clf.regression:
            weight = None
            if self.weight is not None:
                if len(self.weight) > scores.shape[-1]:
                    raise ConfigError(f"mle class_weights: {len(self.weight)} weights for {scores.shape[-1]} classes")
                weight = F.pad(self.weight, (0, scores.shape[-1] - len(self.weight)), value=1.0).to(scores.device)
            loss = F.cross_entropy(scores, y.long(), weight=weight, label_smoothing=self.config.label_smoothing)
            acc = (scores.argmax(-1) == y).float().mean().item()
            return ObjectiveOutput(loss, {"train_accuracy": acc})
        if scores.shape[-1] == 1:  # a regression head
            return ObjectiveOutput(F.mse_loss(scores.squeeze(-1), y.float()))
        target = two_hot(y, clf.values.to(scores.device))
        return ObjectiveOutput(-(target * scores.log_softmax(-1)).sum(-1).mean())
