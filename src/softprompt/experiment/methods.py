"""Methods, chosen by ``method.name``: a typed config that says which objectives run in which phase.

A method is only configuration: its objectives are registered components and the trainer is
the same for all. Classification methods (``mle``, ``ptcprl``) train on labelled examples;
RL methods (``grpo``, ``ppo``, ``ppo_single_step``, ``polychromic``) train on prompts, with rewards;
``sft`` trains a generation adapter on prompts with responses (or conversations), ``dpo`` on
preference pairs;
``reward_pairwise`` trains a comparative reward model on preference pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Literal

from ..config import build
from ..config.fields import hfield
from ..config.registry import Registry
from ..errors import ConfigError
from ..objectives import Phase, Schedule
from ..objectives.contrastive import ContrastiveConfig
from ..objectives.dpo import DPOConfig
from ..objectives.grpo import GRPOConfig
from ..objectives.label_reinforce import LabelReinforceConfig
from ..objectives.mle import MLEConfig
from ..objectives.pairwise import PairwiseConfig
from ..objectives.polychromic import PolychromicConfig, ResponseMLEConfig
from ..objectives.ppo import PPOConfig, SingleStepPPOConfig
from ..objectives.sft import SFTConfig

METHODS: Registry[type] = Registry("method")


@dataclass
class Method:
    """What a method declares, read by the trainer and the assembly of a run (never probed):
    the kind of data it trains on, the objectives it runs in which phases, and its capabilities."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "classification"  # classification | preference | rl | sft | dpo
    value_head: ClassVar[bool] = False  # the policy carries a scalar value head (PPO)

    def config_tag(self) -> tuple[str, str]:
        """The key and value that name this method in a saved config: ``name: grpo``."""
        return "name", self.name

    @property
    def samples_per_prompt(self) -> int:
        return 1

    @property
    def inner_updates(self) -> int:
        """Passes over each batch (an RL rollout is reused this many times)."""
        return 1

    @property
    def mini_batches(self) -> int:
        """Optimizer steps per pass over a batch: it is split into this many minibatches."""
        return 1

    @property
    def layers_unfrozen(self) -> int:
        """Transformer blocks of the backbone trained too (0: the backbone stays frozen)."""
        return 0

    @property
    def tunes_value_head(self) -> bool:
        return False

    @property
    def reference_responses(self) -> str | None:
        """The prompt field holding reference responses this method trains on (MLE), or None."""
        return None

    @property
    def needs_reference(self) -> bool:
        """Whether a KL reference policy is computed."""
        return False

    def check_rewards(self, rewards) -> None:
        """Refuse rewards this method cannot use, before the run starts (default: any)."""

    def objectives(self) -> dict[str, object]:
        raise NotImplementedError

    def schedule(self) -> Schedule:
        raise NotImplementedError


def register(name: str):
    """Register a method class under ``name`` (also its ``name``)."""
    def deco(cls):
        cls.name = name
        return METHODS.register(name)(cls)
    return deco


def method_name(section) -> str:
    """The ``name`` of a method section, or a ConfigError saying what a method section is."""
    if not isinstance(section, dict) or "name" not in section:
        raise ConfigError(f"config key 'method' must be a mapping with a 'name' ({', '.join(METHODS.names())})")
    return section["name"]


def method_config(section: dict) -> Method:
    """The typed method of ``section`` (``{name: ..., options...}``), every key checked."""
    options = {k: v for k, v in section.items() if k != "name"}
    return build(METHODS.get(method_name(section)), options, where="method")


def method_defaults(name: str) -> dict:
    cls = METHODS.get(name)
    return {"name": name, **{f.name: getattr(cls(), f.name) for f in fields(cls)}}


@register("mle")
@dataclass
class MLEMethod(Method):
    """Cross-entropy on the label words (or the head's classes)."""

    label_smoothing: float = hfield(0.0, "mle: label smoothing", ge=0, lt=1)
    class_weights: str | list[float] | None = hfield(
        None, "mle: per-class loss weights, a list or 'balanced' (from the training labels' counts)", ge=0)

    def mle(self) -> MLEConfig:
        return MLEConfig(label_smoothing=self.label_smoothing, class_weights=self.class_weights)

    def objectives(self) -> dict[str, object]:
        return {"mle": self.mle()}

    def schedule(self) -> Schedule:
        return Schedule([Phase({"mle": 1.0})])


@register("ptcprl")
@dataclass
class PTCPRLMethod(MLEMethod):
    """PTCPRL: MLE for ``phase1_epochs``, then mle_weight * MLE + contrastive_weight * contrastive
    + rl_weight * RL (the seed's alpha, beta, gamma)."""

    phase1_epochs: int = hfield(1, "epochs of MLE only before the combined phase", ge=0)
    mle_weight: float = hfield(1.0, "weight of MLE in the combined phase (the seed's alpha)", ge=0)
    contrastive_weight: float = hfield(0.1, "weight of the contrastive term (the seed's beta)", ge=0)
    rl_weight: float = hfield(0.1, "weight of the RL term, label_reinforce (the seed's gamma)", ge=0)
    k_negatives: int = hfield(4, "contrastive: mutated prompts per example", ge=1)
    contrastive_temperature: float = hfield(0.1, "contrastive: InfoNCE temperature tau", gt=0)
    contrastive_dropout: float = hfield(0.1, "contrastive: dropout on the prompt for the positive view", ge=0, lt=1)
    mutations: list[str] = hfield(["noise", "shuffle", "drop"], "contrastive: mutations used for negatives")
    noise_std: float = hfield(1.0, "contrastive: noise std relative to the prompt's std", ge=0)
    drop_fraction: float = hfield(0.5, "contrastive: fraction of virtual tokens dropped", gt=0, lt=1)
    rl_subset_size: int = hfield(8, "label_reinforce: examples per batch that get a sampled label", ge=2)

    def objectives(self) -> dict[str, object]:
        return {
            "mle": self.mle(),
            "contrastive": ContrastiveConfig(
                k_negatives=self.k_negatives, temperature=self.contrastive_temperature,
                dropout=self.contrastive_dropout, mutations=list(self.mutations), noise_std=self.noise_std,
                drop_fraction=self.drop_fraction),
            "label_reinforce": LabelReinforceConfig(rl_subset_size=self.rl_subset_size),
        }

    def schedule(self) -> Schedule:
        return Schedule([Phase({"mle": 1.0}, epochs=self.phase1_epochs),
                         Phase({"mle": self.mle_weight, "contrastive": self.contrastive_weight,
                                "label_reinforce": self.rl_weight})])


@dataclass
class RLMethod(Method):
    """An RL method: one objective on rollouts of ``num_generations`` samples per prompt. Listed
    after the objective's config in a method's bases, so the config's own properties come first."""

    kind: ClassVar[str] = "rl"
    objective: ClassVar[str] = ""

    @property
    def samples_per_prompt(self) -> int:
        return self.num_generations

    @property
    def inner_updates(self) -> int:
        return self.num_iterations

    @property
    def mini_batches(self) -> int:
        return getattr(self, "num_mini_batches", 1)

    def objectives(self) -> dict[str, object]:
        return {self.objective: self}

    def schedule(self) -> Schedule:
        return Schedule([Phase({self.objective: 1.0})])


@register("grpo")
@dataclass
class GRPOMethod(GRPOConfig, RLMethod):
    """GRPO: G samples per prompt, group-normalised advantages, clipped ratio, optional k3 KL."""

    objective: ClassVar[str] = "grpo"


class _ValueHead:
    """PPO's capabilities: a value head (trained unless tune_v_head is off) and unfrozen blocks."""

    value_head: ClassVar[bool] = True

    @property
    def layers_unfrozen(self) -> int:
        return self.num_layers_unfrozen

    @property
    def tunes_value_head(self) -> bool:
        return self.tune_v_head


@register("ppo")
@dataclass
class PPOMethod(PPOConfig, _ValueHead, RLMethod):
    """Token-level PPO with a value head, KL penalty folded into the rewards, GAE."""

    objective: ClassVar[str] = "ppo"


@register("ppo_single_step")
@dataclass
class SingleStepPPOMethod(SingleStepPPOConfig, _ValueHead, RLMethod):
    """Single-step PPO (hardPrompt2softPrompt): one action = the whole response, A = r - V(context)."""

    objective: ClassVar[str] = "ppo_single_step"


@register("polychromic")
@dataclass
class PolychromicMethod(PolychromicConfig, RLMethod):
    """Polychromic RL: sets of samples scored by quality x diversity, the set score in every
    sample's advantage; optionally mle_weight * MLE on reference responses (the seed's SFT + diversity)."""

    objective: ClassVar[str] = "polychromic"

    @property
    def reference_responses(self) -> str | None:
        return self.response_field if self.mle_weight > 0 else None

    def objectives(self) -> dict[str, object]:
        out: dict[str, object] = {"polychromic": self}
        if self.mle_weight > 0:
            out["response_mle"] = ResponseMLEConfig(response_field=self.response_field)
        return out

    def schedule(self) -> Schedule:
        weights = {"polychromic": 1.0, **({"response_mle": self.mle_weight} if self.mle_weight > 0 else {})}
        return Schedule([Phase(weights)])


@register("sft")
@dataclass
class SFTMethod(Method):
    """Supervised fine-tuning of a generation adapter on responses (TRL's SFT): cross-entropy on the
    response tokens given the prompt; for a conversation (generation.chat), on its assistant turns
    only. Data: the prompt sources' examples (prompts.*) with a response field, or TRL 'messages'."""

    kind: ClassVar[str] = "sft"
    response_field: str = hfield("response", "the examples' field holding the response to learn (a prompt file's "
                                             "column; 'answer' for the capitals source); a 'messages' record "
                                             "brings its own assistant turns")
    max_completion_tokens: int = hfield(256, "completions (response, or the conversation from the first assistant "
                                             "turn on) longer than this are cut at the end, counted in data.json",
                                        ge=1)

    def objectives(self) -> dict[str, object]:
        return {"sft": SFTConfig()}

    def schedule(self) -> Schedule:
        return Schedule([Phase({"sft": 1.0})])


@register("dpo")
@dataclass
class DPOMethod(DPOConfig, Method):
    """DPO on preference pairs (preferences.*: the seed's table or prompt/chosen/rejected): the
    responses' log-probs under the adapter against the reference's, computed once per pair."""

    kind: ClassVar[str] = "dpo"
    reference: Literal["none", "initial_prompt"] = hfield(
        "none", "dpo: the reference model: the backbone without the adapter (none; LoRA's layers off), or with the "
                "adapter as it started (initial_prompt)")
    empty_context_prompt: str | None = hfield(
        None, "dpo: the prompt of pairs without a context (pairs built from a task have none), e.g. 'What did you "
              "think of the film?'; unset: such pairs are refused")
    max_completion_tokens: int = hfield(256, "dpo: responses longer than this are cut at the end", ge=1)

    def objectives(self) -> dict[str, object]:
        return {"dpo": DPOConfig(beta=self.beta, loss_type=self.loss_type, label_smoothing=self.label_smoothing)}

    def schedule(self) -> Schedule:
        return Schedule([Phase({"dpo": 1.0})])


@register("reward_pairwise")
@dataclass
class PairwiseRewardMethod(PairwiseConfig, Method):
    """A comparative reward model: encoder + its own soft prefix + scalar head on
    ``context [SEP] response``, trained with -log sigmoid(s_chosen - s_rejected - margin)."""

    kind: ClassVar[str] = "preference"

    def objectives(self) -> dict[str, object]:
        return {"pairwise": PairwiseConfig(margin=self.margin)}

    def schedule(self) -> Schedule:
        return Schedule([Phase({"pairwise": 1.0})])
