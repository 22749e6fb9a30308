"""Methods, chosen by ``method.name``: a typed config that says which objectives run in which phase.

A method is only configuration: its objectives are registered components and the trainer is
the same for all. Classification methods (``mle``, ``ptcprl``) train on labelled examples;
RL methods (``grpo``, ``ppo``, ``ppo_single_step``, ``polychromic``) train on prompts, with rewards;
``reward_pairwise`` trains a comparative reward model on preference pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from ..config import build
from ..config.fields import hfield
from ..config.registry import Registry
from ..errors import ConfigError
from ..objectives import Phase, Schedule
from ..objectives.contrastive import ContrastiveConfig
from ..objectives.grpo import GRPOConfig
from ..objectives.label_reinforce import LabelReinforceConfig
from ..objectives.mle import MLEConfig
from ..objectives.pairwise import PairwiseConfig
from ..objectives.polychromic import PolychromicConfig, ResponseMLEConfig
from ..objectives.ppo import PPOConfig, SingleStepPPOConfig

METHODS: Registry[type] = Registry("method")


def method_name(section) -> str:
    """The ``name`` of a method section, or a ConfigError saying what a method section is."""
    if not isinstance(section, dict) or "name" not in section:
        raise ConfigError(f"config key 'method' must be a mapping with a 'name' ({', '.join(METHODS.names())})")
    return section["name"]


def method_config(section: dict):
    """The typed config of ``section`` (``{name: ..., options...}``), every key checked."""
    options = {k: v for k, v in section.items() if k != "name"}
    return build(METHODS.get(method_name(section)), options, where="method")


def method_defaults(name: str) -> dict:
    cls = METHODS.get(name)
    return {"name": name, **{f.name: getattr(cls(), f.name) for f in fields(cls)}}


@METHODS.register("mle")
@dataclass
class MLEMethod:
    """Cross-entropy on the label words (or the head's classes)."""

    kind: ClassVar[str] = "classification"
    label_smoothing: float = hfield(0.0, "mle: label smoothing", ge=0, lt=1)
    class_weights: str | list[float] | None = hfield(
        None, "mle: per-class loss weights, a list or 'balanced' (from the training labels' counts)",
        ge=0)

    def mle(self) -> MLEConfig:
        return MLEConfig(label_smoothing=self.label_smoothing, class_weights=self.class_weights)

    def objectives(self) -> dict[str, object]:
        return {"mle": self.mle()}

    def schedule(self) -> Schedule:
        return Schedule([Phase({"mle": 1.0})])


@METHODS.register("ptcprl")
@dataclass
class PTCPRLMethod(MLEMethod):
    """PTCPRL: MLE for ``phase1_epochs``, then alpha*MLE + beta*contrastive + gamma*RL."""

    phase1_epochs: int = hfield(1, "epochs of MLE only before the combined phase", ge=0)
    alpha: float = hfield(1.0, "weight of MLE in the combined phase", ge=0)
    beta: float = hfield(0.1, "weight of the contrastive term", ge=0)
    gamma: float = hfield(0.1, "weight of the RL term (label_reinforce)", ge=0)
    k_negatives: int = hfield(4, "contrastive: mutated prompts per example", ge=1)
    temperature: float = hfield(0.1, "contrastive: InfoNCE temperature", gt=0)
    contrastive_dropout: float = hfield(0.1, "contrastive: dropout on the prompt for the positive view", ge=0, lt=1)
    mutations: list[str] = hfield(["noise", "shuffle", "drop"], "contrastive: mutations used for negatives")
    noise_std: float = hfield(1.0, "contrastive: noise std relative to the prompt's std", ge=0)
    drop_fraction: float = hfield(0.5, "contrastive: fraction of virtual tokens dropped", gt=0, lt=1)
    rl_subset_size: int = hfield(8, "label_reinforce: examples per batch that get a sampled label", ge=2)

    def objectives(self) -> dict[str, object]:
        return {
            "mle": self.mle(),
            "contrastive": ContrastiveConfig(
                k_negatives=self.k_negatives, temperature=self.temperature, dropout=self.contrastive_dropout,
                mutations=list(self.mutations), noise_std=self.noise_std, drop_fraction=self.drop_fraction),
            "label_reinforce": LabelReinforceConfig(rl_subset_size=self.rl_subset_size),
        }

    def schedule(self) -> Schedule:
        return Schedule([Phase({"mle": 1.0}, epochs=self.phase1_epochs),
                         Phase({"mle": self.alpha, "contrastive": self.beta, "label_reinforce": self.gamma})])


class _RLMethod:
    kind: ClassVar[str] = "rl"
    objective: ClassVar[str] = ""

    def objectives(self) -> dict[str, object]:
        return {self.objective: self}

    def schedule(self) -> Schedule:
        return Schedule([Phase({self.objective: 1.0})])


@METHODS.register("grpo")
@dataclass
class GRPOMethod(_RLMethod, GRPOConfig):
    """GRPO: G samples per prompt, group-normalised advantages, clipped ratio, optional k3 KL."""

    objective: ClassVar[str] = "grpo"


@METHODS.register("ppo")
@dataclass
class PPOMethod(_RLMethod, PPOConfig):
    """Token-level PPO with a value head, KL penalty folded into the rewards, GAE."""

    objective: ClassVar[str] = "ppo"


@METHODS.register("ppo_single_step")
@dataclass
class SingleStepPPOMethod(_RLMethod, SingleStepPPOConfig):
    """Single-step PPO (hardPrompt2softPrompt): one action = the whole response, A = r - V(context)."""

    objective: ClassVar[str] = "ppo_single_step"


@METHODS.register("polychromic")
@dataclass
class PolychromicMethod(_RLMethod, PolychromicConfig):
    """Polychromic RL: sets of samples scored by quality x diversity, the set score in every
    sample's advantage; optionally alpha * MLE on reference responses (the seed's SFT + diversity)."""

    objective: ClassVar[str] = "polychromic"

    def objectives(self) -> dict[str, object]:
        out: dict[str, object] = {"polychromic": self}
        if self.alpha > 0:
            out["response_mle"] = ResponseMLEConfig(response_field=self.response_field)
        return out

    def schedule(self) -> Schedule:
        weights = {"polychromic": 1.0, **({"response_mle": self.alpha} if self.alpha > 0 else {})}
        return Schedule([Phase(weights)])


@METHODS.register("reward_pairwise")
@dataclass
class PairwiseRewardMethod(PairwiseConfig):
    """A comparative reward model: encoder + its own soft prefix + scalar head on
    ``context [SEP] response``, trained with -log sigmoid(s_chosen - s_rejected - margin)."""

    kind: ClassVar[str] = "preference"

    def objectives(self) -> dict[str, object]:
        return {"pairwise": PairwiseConfig(margin=self.margin)}

    def schedule(self) -> Schedule:
        return Schedule([Phase({"pairwise": 1.0})])
