"""What every objective shares: the step's inputs (with memoised forward passes) and its output."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..config.registry import Registry


@dataclass
class StepInputs:
    """One training batch and the classifier, with the plain forward pass computed once.

    ``features()`` and ``scores()`` run the classifier under the current prompt the first
    time they are asked for and reuse the result, so MLE, the contrastive anchor and the RL
    term share one forward pass.
    """

    batch: dict[str, torch.Tensor]  # input_ids, attention_mask, labels (and condition)
    classifier: Any
    epoch: int = 0
    step: int = 0
    _memo: dict = field(default_factory=dict)

    def features(self) -> torch.Tensor:
        if "features" not in self._memo:
            self._memo["features"] = self.classifier.features(self.batch)
        return self._memo["features"]

    def scores(self) -> torch.Tensor:
        if "scores" not in self._memo:
            self._memo["scores"] = self.classifier.scores_from_features(self.features())
        return self._memo["scores"]

    @property
    def labels(self) -> torch.Tensor:
        return self.batch["labels"]


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class Objective:
    """A loss term. Subclasses set ``name`` and ``config_class`` and implement ``__call__``."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type]

    def __init__(self, config):
        self.config = config

    def prepare(self, labels: list) -> None:
        """Called once with the training labels before training (e.g. to weight classes)."""

    def precompute(self, inputs) -> None:
        """Compute what a step's inputs hold fixed over all of them (an RL rollout's advantages)
        before the trainer splits them into minibatches (default: nothing)."""

    def state_dict(self) -> dict:
        """What the objective carries from step to step (JSON values), kept in checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`'s values (a resumed run)."""

    def __call__(self, inputs: StepInputs) -> ObjectiveOutput:
        raise NotImplementedError


OBJECTIVES: Registry[type[Objective]] = Registry("objective")
