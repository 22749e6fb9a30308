"""PPO with a value head on soft prompts (docs/design.md "PPO"), and its single-step variant.

Token-level PPO (trlx-style). At rollout time, without gradient, for each completion token t:

    kl_t     = logp_old_t - ref_t                     per-token KL estimate to the reference
    r_t      = -beta * kl_t  (+ score on the last token)       beta: the KL coefficient (trlx's kl_coef)
    V_t      = v_head(h_t)                            h_t: the last hidden state that predicts token t
    delta_t  = r_t + gamma * V_{t+1} - V_t            (V after the last token = 0)
    A_t      = delta_t + gamma * lam * A_{t+1}        GAE
    R_t      = A_t + V_t                              returns; A is whitened over the batch's tokens

Update (``num_iterations`` times per rollout):

    ratio_t  = exp(logp_t - logp_old_t)
    L_pg     = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - epsilon, 1 + epsilon_high))   (trlx's cliprange)
    V'_t     = V_old_t + clip(V_t - V_old_t, -cliprange_value, cliprange_value)
    L_v      = mean_t 0.5 * max((V_t - R_t)^2, (V'_t - R_t)^2)
    loss     = L_pg + vf_coef * L_v

Single-step PPO (hardPrompt2softPrompt): the whole response is one action.

    logp(a)  = sum_t logp_t,   V = v_head(h) at the last context token,   A = r - V_old
    L_pg     = mean max(-A * ratio, -A * clip(ratio)),   L_v = mean 0.5 * (V - r)^2 (clipped as above)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..config.fields import hfield
from .base import OBJECTIVES, Objective, ObjectiveOutput
from .grpo import RLConfig, _masked_mean


@dataclass
class ValueHeadPPOConfig(RLConfig):
    """What token-level and single-step PPO share: a value head, clipped ratio and value, a KL penalty."""

    num_generations: int = hfield(1, "completions sampled per prompt", ge=1)
    beta: float = hfield(0.05, "KL coefficient: per-token KL penalty folded into the rewards (trlx's init_kl_coef)",
                         ge=0)
    cliprange_value: float = hfield(0.2, "clip of the value change (0: off)", ge=0)
    vf_coef: float = hfield(0.5, "weight of the value loss", ge=0)
    whiten_advantages: bool = hfield(True, "normalise advantages over the batch's tokens")
    tune_v_head: bool = hfield(True, "train the value head (else it stays at its initial weights)")
    num_layers_unfrozen: int = hfield(0, "also train the top N transformer blocks (0: backbone frozen)", ge=0)



@dataclass
class PPOConfig(ValueHeadPPOConfig):
    gamma: float = hfield(1.0, "discount", ge=0, le=1)
    lam: float = hfield(0.95, "GAE lambda", ge=0, le=1)


@dataclass
class SingleStepPPOConfig(ValueHeadPPOConfig):
    """One action per response: no discount nor GAE (no gamma, lam)."""

    beta: float = hfield(0.0, "KL coefficient: the sequence log-ratio to the reference, subtracted from the reward",
                         ge=0)
    reference: Literal["initial_prompt", "none"] = hfield("none", "reference for the KL penalty: initial_prompt or none")


def token_rewards(score: torch.Tensor, logp_old: torch.Tensor, ref: torch.Tensor | None, mask: torch.Tensor,
                  beta: float) -> torch.Tensor:
    """r_t = -beta * (logp_old_t - ref_t), plus the score on each row's last real token."""
    mask = mask.float()
    r = -beta * (logp_old - ref) * mask if ref is not None and beta else torch.zeros_like(logp_old)
    last = (mask.sum(1).long() - 1).clamp(min=0)
    return r.scatter_add(1, last[:, None], (score * (mask.sum(1) > 0))[:, None].to(r.dtype))


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """(advantages, returns), each (N, T); positions where ``mask`` is 0 get 0."""
    mask = mask.float()
    values = values * mask
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_v = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.float()
    n = mask.sum().clamp(min=1)
    mean = (x * mask).sum() / n
    var = (((x - mean) * mask) ** 2).sum() / (n - 1).clamp(min=1)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def policy_loss(logp, old_logp, adv, mask, epsilon: float, epsilon_high: float | None = None):
    """mean over ``mask`` of max(-A ratio, -A clip(ratio, 1 - epsilon, 1 + epsilon_high)), and the clip fraction."""
    ratio = torch.exp(logp - old_logp)
    clamped = torch.clamp(ratio, 1 - epsilon, 1 + (epsilon if epsilon_high is None else epsilon_high))
    losses = torch.max(-adv * ratio, -adv * clamped)
    clipped = (-adv * clamped > -adv * ratio).float()
    m = mask.float()
    return (losses * m).sum() / m.sum().clamp(min=1), _masked_mean(clipped, m)


def value_loss(values, old_values, returns, mask, cliprange_value: float):
    m = mask.float()
    losses = (values - returns) ** 2
    if cliprange_value:
        v_clip = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
        losses = torch.max(losses, (v_clip - returns) ** 2)
    return 0.5 * (losses * m).sum() / m.sum().clamp(min=1)


@OBJECTIVES.register("ppo")
class PPO(Objective):
    name = "ppo"
    config_class = PPOConfig

    def __call__(self, inputs) -> ObjectiveOutput:
        c, ro = self.config, inputs.rollout
        mask = ro.mask
        if "advantages" not in ro.memo:
            r = token_rewards(torch.where(ro.valid, ro.rewards, 0.0), ro.old_logprobs, ro.ref_logprobs, mask,
                              c.beta)
            adv, ret = gae(r, ro.old_values, mask, c.gamma, c.lam)
            ro.memo["advantages"] = whiten(adv, mask) if c.whiten_advantages else adv
            ro.memo["returns"] = ret
        logp, values = inputs.logprobs_and_values()
        pg, clip_frac = policy_loss(logp, ro.old_logprobs, ro.memo["advantages"], mask, c.epsilon, c.clip_high)
        vf = value_loss(values, ro.old_values, ro.memo["returns"], mask, c.cliprange_value)
        metrics = {"policy_loss": pg.item(), "value_loss": vf.item(), "clip_fraction": clip_frac,
                   "value_mean": _masked_mean(values.detach(), mask)}
        if ro.ref_logprobs is not None:
            metrics["kl"] = _masked_mean(ro.old_logprobs - ro.ref_logprobs, mask)
        return ObjectiveOutput(pg + c.vf_coef * vf, metrics)


@OBJECTIVES.register("ppo_single_step")
class SingleStepPPO(Objective):
    name = "ppo_single_step"
    config_class = SingleStepPPOConfig

    def __call__(self, inputs) -> ObjectiveOutput:
        c, ro = self.config, inputs.rollout
        mask, rows = ro.mask.float(), ro.valid.float()
        old_seq = (ro.old_logprobs * mask).sum(1)
        if "advantages" not in ro.memo:
            reward = torch.where(ro.valid, ro.rewards, 0.0)
            if ro.ref_logprobs is not None and c.beta:
                reward = reward - c.beta * (old_seq - (ro.ref_logprobs * mask).sum(1))
            ro.memo["returns"] = reward
            adv = reward - ro.old_values[:, 0]
            ro.memo["advantages"] = whiten(adv, rows) if c.whiten_advantages and len(adv) > 1 else adv * rows
        logp, values = inputs.logprobs_and_values()
        seq = (logp * mask).sum(1)
        pg, clip_frac = policy_loss(seq, old_seq, ro.memo["advantages"], rows, c.epsilon, c.clip_high)
        vf = value_loss(values[:, 0], ro.old_values[:, 0], ro.memo["returns"], rows, c.cliprange_value)
        return ObjectiveOutput(pg + c.vf_coef * vf, {"policy_loss": pg.item(), "value_loss": vf.item(),
                                                     "clip_fraction": clip_frac,
                                                     "value_mean": _masked_mean(values[:, 0].detach(), rows)})
