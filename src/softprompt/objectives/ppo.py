"""PPO with a value head on soft prompts (docs/design.md "PPO"), and its single-step variant.

Token-level PPO (trlx-style). At rollout time, without gradient, for each completion token t:

    kl_t     = logp_old_t - ref_t                     per-token KL estimate to the reference
    r_t      = -beta * kl_t  (+ score on the last token)       beta: the KL coefficient (trlx's kl_coef)
    V_t      = v_head(h_t)                            h_t: the last hidden state that predicts token t
    delta_t  = r_t + gamma * V_{t+1} - V_t            (V after the last token = 0)
    A_t      = delta_t + gamma * lam * A_{t+1}        GAE
    R_t      = A_t + V_t                              returns; A is whitened over the batch's tokens

Update (``num_iterations`` times per rollout, each over ``num_mini_batches`` minibatches):

    ratio_t  = exp(logp_t - logp_old_t)
    L_pg     = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - epsilon, 1 + epsilon_high))   (trlx's cliprange)
    V'_t     = V_old_t + clip(V_t - V_old_t, -cliprange_value, cliprange_value)
    L_v      = mean_t 0.5 * max((V_t - R_t)^2, (V'_t - R_t)^2)
    H        = mean_t entropy of the sampling policy at t
    loss     = L_pg + vf_coef * L_v - entropy_coef * H       (L_pg off for the first vf_warmup_steps)

When vLLM sampled the tokens (generation.backend: vllm), each term of L_pg is weighted by
min(pi_old / pi_vllm, cap) (per token; per sequence for single-step PPO), as GRPO's is.

With ``kl_penalty: loss`` the KL leaves the rewards (r_t is the score alone) and enters the
loss instead, as GRPO's does: L_pg += beta * mean_t k3(logp_t, ref_t) (OpenRLHF's use_kl_loss).

The stabilisers (objectives/ppo_control.py): the score may be divided by its running std and
clipped (``scale_reward``, ``cliprange_reward``) before it enters r; with ``adaptive_kl`` beta
follows the rollouts' KL toward ``target``, the next rollout's rewards using the new beta.

Single-step PPO (hardPrompt2softPrompt): the whole response is one action.

    logp(a)  = sum_t logp_t,   V = v_head(h) at the last context token,   A = r - V_old
    L_pg     = mean max(-A * ratio, -A * clip(ratio)),   L_v = mean 0.5 * (V - r)^2 (clipped as above)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..config.fields import hfield
from ..errors import ConfigError
from .base import OBJECTIVES, Objective, ObjectiveOutput
from .grpo import RLConfig, _masked_mean, k3_kl
from .ppo_control import AdaptiveKL, RunningMoments, scale_scores


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
    adaptive_kl: bool = hfield(False, "adapt beta after each rollout toward `target` (trlx's AdaptiveKLController; "
                                      "beta is where it starts)")
    target: float = hfield(6.0, "adaptive_kl: the KL to the reference per sequence (nats, over its tokens) that "
                                "beta steers toward", gt=0)
    horizon: int = hfield(10000, "adaptive_kl: samples over which beta may move by 20%", ge=1)
    scale_reward: Literal["none", "running"] = hfield("none", "divide each score by the running std of all scores "
                                                              "so far (trlx's scale_reward: running)")
    cliprange_reward: float = hfield(0.0, "clip each score, after scaling, to +-this (0: off; trlx uses 10)", ge=0)
    num_mini_batches: int = hfield(1, "split each rollout into this many minibatches of whole prompt groups, an "
                                      "optimizer step each, in every inner update (TRL's num_mini_batches)", ge=1)
    vf_warmup_steps: int = hfield(0, "the first this-many optimizer steps train only the value head (policy loss "
                                     "off), so the first advantages come from a fitted critic", ge=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adaptive_kl and not self.beta:
            raise ConfigError("config key 'method.adaptive_kl'=true needs 'method.beta' > 0: the coefficient it "
                              "starts from (it adapts by multiplying)")


@dataclass
class PPOConfig(ValueHeadPPOConfig):
    gamma: float = hfield(1.0, "discount", ge=0, le=1)
    lam: float = hfield(0.95, "GAE lambda", ge=0, le=1)
    entropy_coef: float = hfield(0.0, "weight of the sampling policy's mean token entropy, subtracted from the loss "
                                      "(CleanRL's ent_coef)", ge=0)
    kl_penalty: Literal["reward", "loss"] = hfield(
        "reward", "where the KL to the reference enters: reward (trlx: -beta * log-ratio on each token's reward) or "
                  "loss (OpenRLHF's use_kl_loss: + beta * the k3 KL of the current policy, token mean, as GRPO)")


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


def policy_loss(logp, old_logp, adv, mask, epsilon: float, epsilon_high: float | None = None, weights=None):
    """mean over ``mask`` of max(-A ratio, -A clip(ratio, 1 - epsilon, 1 + epsilon_high)), each term
    times ``weights`` when given (vLLM's truncated importance weights), and the clip fraction."""
    ratio = torch.exp(logp - old_logp)
    clamped = torch.clamp(ratio, 1 - epsilon, 1 + (epsilon if epsilon_high is None else epsilon_high))
    losses = torch.max(-adv * ratio, -adv * clamped)
    if weights is not None:
        losses = losses * weights
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


class ValueHeadPPO(Objective):
    """The state both PPO variants carry across rollouts: beta (adaptive or fixed) and the running
    reward scale; saved with the checkpoint (``state_dict``)."""

    def __init__(self, config):
        super().__init__(config)
        self.kl = AdaptiveKL(config.beta, config.target, config.horizon)
        self.moments = RunningMoments() if config.scale_reward == "running" else None

    @property
    def beta(self) -> float:
        return self.kl.value

    def scores(self, ro) -> torch.Tensor:
        """The rollout's scores, scaled and clipped as configured; 0 on invalid rows."""
        scaled = scale_scores(ro.rewards, self.moments, self.config.cliprange_reward)
        return torch.where(ro.valid, scaled, 0.0)

    def adapt(self, kl_per_sequence: float, samples: int) -> None:
        if self.config.adaptive_kl:
            self.kl.update(kl_per_sequence, samples)

    def policy_on(self, inputs) -> bool:
        return inputs.step >= self.config.vf_warmup_steps

    def state_dict(self) -> dict:
        return {"kl": self.kl.state_dict(), "moments": self.moments.state_dict() if self.moments else None}

    def load_state_dict(self, state: dict) -> None:
        self.kl.load_state_dict(state.get("kl") or {})
        if self.moments is not None and state.get("moments"):
            self.moments.load_state_dict(state["moments"])


@OBJECTIVES.register("ppo")
class PPO(ValueHeadPPO):
    name = "ppo"
    config_class = PPOConfig

    def precompute(self, inputs) -> None:
        """Rewards, GAE and the (whitened) advantages, once per rollout over all of it; then beta adapts."""
        c, ro = self.config, inputs.rollout
        if "advantages" in ro.memo:
            return
        mask, beta = ro.mask, self.beta
        r = token_rewards(self.scores(ro), ro.old_logprobs, ro.ref_logprobs, mask,
                          beta if c.kl_penalty == "reward" else 0.0)
        adv, ret = gae(r, ro.old_values, mask, c.gamma, c.lam)
        ro.memo.update(advantages=whiten(adv, mask) if c.whiten_advantages else adv, returns=ret, beta=beta)
        if ro.ref_logprobs is not None:
            kl = ((ro.old_logprobs - ro.ref_logprobs) * mask).sum(1)
            ro.memo["kl_per_sequence"] = float(kl[ro.valid].mean()) if ro.valid.any() else float("nan")
            self.adapt(ro.memo["kl_per_sequence"], int(ro.valid.sum()))

    def __call__(self, inputs) -> ObjectiveOutput:
        c, ro = self.config, inputs.rollout
        mask = ro.mask
        self.precompute(inputs)
        logp, values = inputs.logprobs_and_values()
        pg, clip_frac = policy_loss(logp, ro.old_logprobs, ro.memo["advantages"], mask, c.epsilon, c.clip_high,
                                    ro.is_weights)
        vf = value_loss(values, ro.old_values, ro.memo["returns"], mask, c.cliprange_value)
        metrics = {"policy_loss": pg.item(), "value_loss": vf.item(), "clip_fraction": clip_frac,
                   "value_mean": _masked_mean(values.detach(), mask), "kl_coef": ro.memo["beta"]}
        policy = pg
        if c.kl_penalty == "loss" and ro.ref_logprobs is not None and ro.memo["beta"]:
            kl_loss = _masked_mean_t(k3_kl(logp, ro.ref_logprobs), mask)
            policy = pg + ro.memo["beta"] * kl_loss
            metrics["kl_loss"] = kl_loss.item()
        loss = c.vf_coef * vf + (policy if self.policy_on(inputs) else 0.0 * policy)
        if c.entropy_coef:
            entropy = _masked_mean_t(inputs.entropy(), mask)
            loss = loss - c.entropy_coef * entropy
            metrics["entropy"] = entropy.item()
        if ro.ref_logprobs is not None:
            metrics["kl"] = _masked_mean(ro.old_logprobs - ro.ref_logprobs, mask)
            metrics["kl_per_sequence"] = ro.memo["kl_per_sequence"]
        return ObjectiveOutput(loss, metrics)


def _masked_mean_t(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ``mask``, as a tensor (the gradient flows)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1)


@OBJECTIVES.register("ppo_single_step")
class SingleStepPPO(ValueHeadPPO):
    name = "ppo_single_step"
    config_class = SingleStepPPOConfig

    def precompute(self, inputs) -> None:
        """The returns (score - beta * sequence KL) and advantages, once per rollout; then beta adapts."""
        c, ro = self.config, inputs.rollout
        if "advantages" in ro.memo:
            return
        mask, rows = ro.mask.float(), ro.valid.float()
        reward, beta = self.scores(ro), self.beta
        if ro.ref_logprobs is not None:
            kl = ((ro.old_logprobs - ro.ref_logprobs) * mask).sum(1)
            reward = reward - beta * kl if beta else reward
            self.adapt(float(kl[ro.valid].mean()) if ro.valid.any() else float("nan"), int(ro.valid.sum()))
        adv = reward - ro.old_values[:, 0]
        ro.memo.update(returns=reward, beta=beta,
                       advantages=whiten(adv, rows) if c.whiten_advantages and len(adv) > 1 else adv * rows)

    def __call__(self, inputs) -> ObjectiveOutput:
        c, ro = self.config, inputs.rollout
        mask, rows = ro.mask.float(), ro.valid.float()
        old_seq = (ro.old_logprobs * mask).sum(1)
        self.precompute(inputs)
        logp, values = inputs.logprobs_and_values()
        seq = (logp * mask).sum(1)
        pg, clip_frac = policy_loss(seq, old_seq, ro.memo["advantages"], rows, c.epsilon, c.clip_high,
                                    ro.sequence_is_weights)
        vf = value_loss(values[:, 0], ro.old_values[:, 0], ro.memo["returns"], rows, c.cliprange_value)
        loss = c.vf_coef * vf + (pg if self.policy_on(inputs) else 0.0 * pg)
        return ObjectiveOutput(loss, {"policy_loss": pg.item(), "value_loss": vf.item(), "clip_fraction": clip_frac,
                                      "value_mean": _masked_mean(values[:, 0].detach(), rows),
                                      "kl_coef": ro.memo["beta"]})
