"""REINFORCE on the verbalizer's label distribution (PTCPRL's RL term).

On ``rl_subset_size`` examples of the batch: sample a label a ~ p(. | x), reward r = 1 if
a is the gold label (regression: 1 - |a - y| / range), advantage A = r - mean(r) over the
subset, loss = -mean(A * log p(a | x)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config.fields import check_instance, hfield
from ..errors import ConfigError
from .base import OBJECTIVES, Objective, ObjectiveOutput, StepInputs


@dataclass
class LabelReinforceConfig:
    rl_subset_size: int = hfield(8, "examples of each batch that get a sampled label and a reward "
                                               "(>= 2: the baseline is the subset's mean reward)", ge=2)

    def __post_init__(self) -> None:
        check_instance(self, "label_reinforce")


@OBJECTIVES.register("label_reinforce")
class LabelReinforce(Objective):
    name = "label_reinforce"
    config_class = LabelReinforceConfig

    def __call__(self, inputs: StepInputs) -> ObjectiveOutput:
        scores, y, clf = inputs.scores(), inputs.labels, inputs.classifier
        if scores.shape[-1] == 1:
            raise ConfigError("label_reinforce needs a distribution over labels; a regression head has none")
        subset = torch.randperm(len(y), device=scores.device)[: self.config.rl_subset_size]
        dist = torch.distributions.Categorical(logits=scores[subset])
        action = dist.sample()
        if clf.regression:
            values = clf.values.to(scores.device)
            span = (values.max() - values.min()).clamp(min=1e-6)
            reward = 1 - (values[action] - y[subset].float()).abs() / span
        else:
            reward = (action == y[subset]).float()
        advantage = reward - reward.mean()
        loss = -(advantage.detach() * dist.log_prob(action)).mean()
        return ObjectiveOutput(loss, {"rl_reward": reward.mean().item()})
