"""GRPO on soft prompts (docs/design.md "GRPO"), read top to bottom.

For each prompt, G completions o_1..o_G with rewards r_1..r_G:

    A_i = (r_i - mean_g r) / (std_g r + 1e-4)          scale_rewards="group"
        = (r_i - mean_g r) / (std_batch r + 1e-4)      scale_rewards="batch"
        =  r_i - mean_g r                              scale_rewards="none"
    (std is the unbiased sample std, as in TRL; samples whose reward was not finite are left out)

For each token t of o_i, with the log-probs of the policy now and at sampling time:

    ratio_t  = exp(logp_t - logp_old_t)
    loss_t   = -min(ratio_t * A_i, clip(ratio_t, 1 - epsilon, 1 + epsilon_high) * A_i) * w_t
             + beta * KL_t,   KL_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1     (k3 estimator)

    w_t = 1, or, when vLLM sampled the tokens (generation.backend: vllm), TRL's truncated
    importance weight min(pi_old(o_t) / pi_vllm(o_t), cap): logp_old_t is then the trainer's own
    forward pass, and w_t corrects for the engines' numerical mismatch (training/rollout.py).

Aggregation over the batch (loss_type):
    grpo    mean over each sequence's tokens, then mean over sequences
    dapo    sum over all tokens / number of tokens                 (token mean)
    dr_grpo sum over all tokens / (number of sequences * max_new_tokens)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..config.fields import check_instance, hfield
from ..errors import ConfigError
from .base import OBJECTIVES, Objective, ObjectiveOutput

STD_EPS = 1e-4


@dataclass
class RLConfig:
    """What every RL method shares, spelled as TRL's GRPOConfig spells it: samples per prompt,
    inner updates, the clip of the policy ratio, the KL coefficient and its reference."""

    num_generations: int = hfield(4, "completions sampled per prompt (G)", ge=2)
    num_iterations: int = hfield(1, "optimizer steps on each rollout batch (inner updates)", ge=1)
    epsilon: float = hfield(0.2, "clip of the policy ratio: 1 - epsilon below", gt=0, lt=1)
    epsilon_high: float | None = hfield(None, "clip of the policy ratio above: 1 + epsilon_high (default: epsilon)",
                                        gt=0)
    beta: float = hfield(0.0, "KL coefficient: weight of the KL to the reference (0: off, no reference pass)", ge=0)
    reference: Literal["initial_prompt", "none"] = hfield(
        "initial_prompt", "reference policy for KL: the frozen backbone with the initial prompt, or with no prompt")

    def __post_init__(self) -> None:
        check_instance(self, "method")  # each option's declared range

    @property
    def needs_reference(self) -> bool:
        return self.beta > 0

    @property
    def clip_high(self) -> float:
        return self.epsilon_high if self.epsilon_high is not None else self.epsilon

    def check_rewards(self, rewards) -> None:
        """Refuse rewards this method cannot use, before the run starts (default: any)."""


@dataclass
class GRPOConfig(RLConfig):
    loss_type: Literal["grpo", "dapo", "dr_grpo"] = hfield("dapo", "loss aggregation: grpo, dapo or dr_grpo")
    scale_rewards: Literal["group", "batch", "none"] = hfield("group", "advantage scale: group std, batch std, none")


def group_advantages(rewards: torch.Tensor, valid: torch.Tensor, group_size: int,
                     scale: str = "group") -> torch.Tensor:
    """A_i from rewards (N,) laid out group after group; 0 for samples that are not ``valid``."""
    v = valid.view(-1, group_size).float()
    r = torch.where(valid, rewards, 0.0).view(-1, group_size)
    n = v.sum(1, keepdim=True)
    centered = (r - (r * v).sum(1, keepdim=True) / n.clamp(min=1)) * v
    if scale == "group":
        std = ((centered ** 2).sum(1, keepdim=True) / (n - 1).clamp(min=1)).sqrt()
        centered = centered / (std + STD_EPS)
    elif scale == "batch":
        flat = r[v.bool()]
        std = flat.std() if flat.numel() > 1 else flat.new_zeros(())
        centered = centered / (std + STD_EPS)
    elif scale != "none":
        raise ConfigError(f"scale_rewards={scale!r}: expected group, batch or none")
    return centered.view(-1)


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      eps_low: float, eps_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token -min(ratio*A, clip(ratio)*A) (N, T) and where the clipped branch was taken."""
    ratio = torch.exp(logp - old_logp)
    a = advantages[:, None] if advantages.dim() == 1 else advantages
    unclipped, clipped = ratio * a, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * a
    return -torch.min(unclipped, clipped), clipped < unclipped


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """exp(ref - logp) - (ref - logp) - 1: non-negative estimate of KL(policy || ref) from samples of the policy.

    Unbiased when ref puts all its mass where the policy has mass. With top-k / top-p sampling
    the policy lives on its truncation set S and the (untruncated) reference does not, so its
    mean is KL(policy || ref) - (1 - p_ref(S)).
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str, max_tokens: int | None = None):
    mask = mask.float()
    if loss_type == "grpo":
        per_seq = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)
        rows = (mask.sum(1) > 0).float()
        return (per_seq * rows).sum() / rows.sum().clamp(min=1)
    if loss_type == "dapo":
        return (per_token * mask).sum() / mask.sum().clamp(min=1)
    if loss_type == "dr_grpo":
        return (per_token * mask).sum() / (per_token.shape[0] * (max_tokens or per_token.shape[1]))
    raise ConfigError(f"loss_type={loss_type!r}: expected grpo, dapo or dr_grpo")


@OBJECTIVES.register("grpo")
class GRPO(Objective):
    name = "grpo"
    config_class = GRPOConfig

    def __call__(self, inputs) -> ObjectiveOutput:
        c, ro = self.config, inputs.rollout
        if "advantages" not in ro.memo:  # fixed for all inner updates of this rollout
            ro.memo["advantages"] = group_advantages(ro.rewards, ro.valid, ro.group_size, c.scale_rewards)
        return clipped_policy_loss(inputs, ro.memo["advantages"], c)


def clipped_policy_loss(inputs, advantages: torch.Tensor, c, extra: dict | None = None) -> ObjectiveOutput:
    """GRPO's loss for the rollout's samples with per-sample ``advantages``: clipped ratio, optional
    k3 KL (``c.beta``), aggregated by ``c.loss_type``. Polychromic RL uses it with its own advantages."""
    ro = inputs.rollout
    logp = inputs.logprobs()
    per_token, clipped = clipped_surrogate(logp, ro.old_logprobs, advantages.to(logp.device), c.epsilon, c.clip_high)
    metrics = {**(extra or {}), "clip_fraction": _masked_mean(clipped.float(), ro.mask)}
    if ro.is_weights is not None:  # another engine sampled the tokens: TRL's truncated importance weights
        per_token = per_token * ro.is_weights
    if c.beta > 0:
        kl = k3_kl(logp, ro.ref_logprobs)
        per_token = per_token + c.beta * kl
        metrics["kl"] = _masked_mean(kl.detach(), ro.mask)
    return ObjectiveOutput(aggregate(per_token, ro.mask, c.loss_type, ro.max_new_tokens), metrics)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    mask = mask.float()
    return float((x * mask).sum() / mask.sum().clamp(min=1))
