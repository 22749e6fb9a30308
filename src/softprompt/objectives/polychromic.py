"""Polychromic RL (Hamid et al., 2025; docs/design.md "Polychromic"), read top to bottom.

For each prompt, N = ``num_generations`` samples y_1..y_N with rewards r_1..r_N are split into
M sets S_1..S_M of n = ``set_size`` samples each (every n-subset when there are at most
``num_sets`` of them, else random partitions of the N samples until M sets):

    q(S)       = mean_{i in S} r_i                                  quality of a set
    d(S)       = distinct samples / n   after lower-casing and dropping punctuation  (diversity=distinct)
               = mean_{i<j in S} (1 - cos(e_i, e_j))    e = sentence embeddings      (diversity=embedding)
               = sum_{i<j} w_ij (1 - cos(e_i, e_j)) / sum_{i<j} w_ij,  w_ij = r_i r_j
                                 (diversity_weighting=quality: only pairs of good samples count as diverse)
    f(S)       = q(S) * d(S) ** lambda                     mode=multiplicative (lambda = 1: the paper's f_poly)
               = q(S) + lambda * d(S)                      mode=additive
               = z(q)(S) + lambda * z(d)(S)                mode=additive, normalize (z: over the prompt's sets)
    A_i        = mean_{S contains i} f(S)  -  mean_S f(S)                         each sample's advantage
               (divided by the std of the prompt's A_i + 1e-4 when scale_rewards=group, or of the
                batch's when scale_rewards=batch, as GRPO does)

and the clipped policy loss of GRPO with these advantages (optional k3 KL, ``loss_type``).
lambda = ``diversity_weight``; lambda = 0 is the plain objective: with every n-subset as a set,
A_i = (N-n)/(n(N-1)) (r_i - mean r), so scale_rewards=group gives GRPO's advantages exactly. The diversity is
measured without gradient but enters every sample's advantage, so it moves the weights; a
loss ``CE - lambda * D`` with D detached would not.

The seed's knobs: diversity is used for the first ``max_examples_for_diversity`` prompts of a
batch and on every ``compute_every_n_steps``-th step; other prompts and steps use lambda = 0.
Mixed with MLE on reference responses (the seed's SFT + diversity): ``mle_weight * mle + polychromic``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ..config.fields import check_instance, hfield
from ..errors import ConfigError, DataError
from ..metrics.diversity import distinct_samples, mean_cosine_distance
from ..modeling.embeddings import encode
from ..modeling.scoring import right_pad
from .base import OBJECTIVES, Objective, ObjectiveOutput
from .grpo import STD_EPS, GRPOConfig, clipped_policy_loss


@dataclass
class PolychromicConfig(GRPOConfig):
    """GRPO's sampling, clip, KL and loss (every key of :class:`GRPOConfig`), with set advantages."""

    num_generations: int = hfield(8, "samples per prompt (N)", ge=2)
    set_size: int = hfield(4, "samples per set (n)", ge=2)
    num_sets: int = hfield(70, "sets per prompt (M); all n-subsets when there are at most this many", ge=1)
    diversity_weight: float = hfield(1.0, "lambda: exponent of the diversity (multiplicative) or its weight "
                                          "(additive); 0 = quality only", ge=0)
    mode: Literal["multiplicative", "additive"] = hfield("multiplicative", "f(S) = q * d**lambda, or q + lambda*d")
    normalize: bool = hfield(False, "additive: z-score q and d over the prompt's sets first, so lambda weighs "
                                    "diversity against quality whatever the reward's units")
    diversity: Literal["distinct", "embedding"] = hfield(
        "embedding", "set diversity: mean pairwise cosine distance of sentence embeddings, or the distinct fraction "
                     "after normalisation (near 1 on sampled text, so it rarely separates sets)")
    diversity_weighting: Literal["uniform", "quality"] = hfield(
        "uniform", "diversity=embedding: weigh each pair's distance by r_i * r_j (rewards in [0, 1]), so a poor "
                   "outlier does not make its sets diverse")
    embedding_model: str = hfield("minilm-l6", "diversity=embedding: sentence-transformers model")
    max_examples_for_diversity: int | None = hfield(None, "prompts per batch whose sets use diversity (None: all)",
                                                     ge=0)
    compute_every_n_steps: int = hfield(1, "use diversity on every n-th step (others: lambda = 0)", ge=1)
    mle_weight: float = hfield(0.0, "weight of MLE on the prompts' reference responses (0: off)", ge=0)
    response_field: str = hfield("response", "mle_weight > 0: the prompt file's column with the reference response")

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, expected: str) -> None:
            if not ok:
                raise ConfigError(f"method.{key}={getattr(self, key)!r}: expected {expected}")

        check_instance(self, "method")  # each option's declared range
        need(self.set_size <= self.num_generations, "set_size", f"<= num_generations ({self.num_generations})")
        need(self.diversity_weighting == "uniform" or self.diversity == "embedding", "diversity_weighting",
             "uniform with diversity=distinct (quality weights pairs of embeddings)")

    @property
    def multiplies_rewards(self) -> bool:
        """f(S) = q * d**lambda with lambda > 0: a negative q would turn more diversity into a lower score."""
        return self.mode == "multiplicative" and self.diversity_weight > 0

    def check_rewards(self, rewards) -> None:
        """Refuse rewards that can be negative under the multiplicative f (before the run starts);
        a Python reward function's range is checked on its values at each step instead."""
        if self.multiplies_rewards and rewards.nonnegative() is False:
            parts = ", ".join(f"{p.name} (weight {p.weight:g})" for p in rewards.parts
                              if p.weight < 0 or p.nonnegative is False)
            raise ConfigError(f"method.mode=multiplicative with diversity_weight > 0 needs rewards >= 0 (f = q * "
                              f"d**lambda: a negative q turns more diversity into a lower score), and these can be "
                              f"negative: {parts}; give each such reward item `transform: sigmoid` or `transform: "
                              f"threshold`, or use mode=additive")


def make_sets(n_samples: int, set_size: int, num_sets: int, generator: torch.Generator) -> list[tuple[int, ...]]:
    """Every ``set_size``-subset of range(n_samples) if there are at most ``num_sets``; else
    ``num_sets`` sets from random partitions (each partition covers the samples evenly)."""
    if math.comb(n_samples, set_size) <= num_sets:
        return list(itertools.combinations(range(n_samples), set_size))
    sets: list[tuple[int, ...]] = []
    while len(sets) < num_sets:
        perm = torch.randperm(n_samples, generator=generator).tolist()
        sets += [tuple(sorted(perm[k:k + set_size])) for k in range(0, n_samples - set_size + 1, set_size)]
    return sets[:num_sets]


def set_scores(rewards: Sequence[float], diversity: Sequence[float], weight: float, mode: str,
               normalize: bool = False) -> torch.Tensor:
    """f(S) for each set from its quality q (mean reward) and diversity d."""
    q, d = torch.as_tensor(rewards, dtype=torch.float), torch.as_tensor(diversity, dtype=torch.float)
    if mode == "multiplicative":
        return q * d.pow(weight)
    if mode == "additive":
        if normalize and len(q) > 1:
            q, d = _z(q), _z(d)
        return q + weight * d
    raise ConfigError(f"method.mode={mode!r}: expected multiplicative or additive")


def _z(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / (x.std() + STD_EPS)


def sample_advantages(n_samples: int, sets: list[tuple[int, ...]], f: torch.Tensor) -> torch.Tensor:
    """A_i = mean f of the sets containing i - mean f over all sets; 0 for samples in no set."""
    member = torch.zeros(len(sets), n_samples)
    for s, members in enumerate(sets):
        member[s, list(members)] = 1.0
    count = member.sum(0)
    per_sample = (member * f[:, None]).sum(0) / count.clamp(min=1)
    return torch.where(count > 0, per_sample - f.mean(), 0.0)


def polychromic_advantages(rewards: torch.Tensor, valid: torch.Tensor, group_size: int, config: PolychromicConfig,
                           set_diversity: Callable[[int, list[int]], float], use_diversity: Sequence[bool],
                           generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """Advantages (N,) for N = B * G samples laid out group after group.

    ``set_diversity(group, indices)`` gives d(S) for samples ``indices`` of prompt ``group``;
    ``use_diversity[b]`` says whether prompt b uses it (else lambda = 0). Samples whose reward
    is not finite join no set and get advantage 0.
    """
    adv = torch.zeros(len(rewards))
    in_sets = torch.zeros(len(rewards), dtype=torch.bool)
    div_seen, q_seen, f_seen = [], [], []
    for b in range(len(rewards) // group_size):
        base = b * group_size
        ok = [i for i in range(group_size) if bool(valid[base + i])]
        if len(ok) < config.set_size:
            continue
        sets = [tuple(ok[i] for i in s) for s in make_sets(len(ok), config.set_size, config.num_sets, generator)]
        q = [float(rewards[[base + i for i in s]].mean()) for s in sets]
        weight = config.diversity_weight if use_diversity[b] else 0.0
        d = [set_diversity(b, list(s)) for s in sets] if weight > 0 else [1.0] * len(sets)
        f = set_scores(q, d, weight, config.mode, config.normalize)
        a = sample_advantages(group_size, sets, f)
        if config.scale_rewards == "group":  # as GRPO: unit spread of the prompt's advantages
            members = torch.tensor(ok)
            a = a / (a[members].std() + STD_EPS)
        adv[base:base + group_size] = a
        in_sets[base:base + group_size] = torch.tensor([i in ok for i in range(group_size)])
        q_seen += q
        f_seen += f.tolist()
        if weight > 0:
            div_seen += d
    if config.scale_rewards == "batch" and int(in_sets.sum()) > 1:  # as GRPO: one spread for the whole batch
        adv = adv / (adv[in_sets].std() + STD_EPS)
    metrics = {"set_quality": _mean(q_seen), "f_poly": _mean(f_seen)}
    if div_seen:
        metrics["diversity_score"] = _mean(div_seen)
    return adv, metrics


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


@OBJECTIVES.register("polychromic")
class Polychromic(Objective):
    name = "polychromic"
    config_class = PolychromicConfig

    def __call__(self, inputs) -> ObjectiveOutput:
        c, ro = self.config, inputs.rollout
        if "advantages" not in ro.memo:  # fixed for all inner updates of this rollout
            ro.memo["advantages"], ro.memo["poly_metrics"] = self.advantages(ro, inputs.step)
        return clipped_policy_loss(inputs, ro.memo["advantages"], c, ro.memo["poly_metrics"])

    def advantages(self, ro, step: int) -> tuple[torch.Tensor, dict]:
        c, g = self.config, ro.group_size
        groups = len(ro.rewards) // g
        on_step = step % c.compute_every_n_steps == 0
        limit = groups if c.max_examples_for_diversity is None else c.max_examples_for_diversity
        use = [on_step and b < limit for b in range(groups)]
        texts, rewards, valid = ro.gen.texts, ro.rewards.cpu(), ro.valid.cpu()
        weighted = c.diversity == "embedding" and c.diversity_weighting == "quality" and c.diversity_weight > 0
        if weighted:
            _check_reward_range(rewards, valid & torch.tensor(use).repeat_interleave(g), g, 0.0, 1.0,
                                "method.diversity_weighting=quality (it weighs pairs by r_i * r_j)")
        elif c.multiplies_rewards:  # a Python reward function's range is only known from its values
            _check_reward_range(rewards, valid, g, 0.0, None, "method.mode=multiplicative (f = q * d**lambda; a "
                                "negative q turns more diversity into a lower score)")
        if c.diversity == "distinct":
            def diversity(b: int, idx: list[int]) -> float:
                return distinct_samples([texts[b * g + i] for i in idx])
        else:
            sims = self._similarities(texts, g, use, ro.completion_ids.device)

            def diversity(b: int, idx: list[int]) -> float:
                quality = rewards[[b * g + i for i in idx]].float() if weighted else None
                return mean_cosine_distance(sims[b][idx][:, idx], quality)
        generator = torch.Generator().manual_seed(step)  # partitions: reproducible
        return polychromic_advantages(rewards, valid, g, c, diversity, use, generator)

    def _similarities(self, texts: list[str], g: int, use: list[bool], device="cpu") -> dict[int, torch.Tensor]:
        """Cosine similarity matrix of each prompt's samples (only prompts that use diversity); the
        sentence encoder runs on ``device``, the policy's."""
        wanted = [b for b, u in enumerate(use) if u]
        if not wanted or self.config.diversity_weight == 0:
            return {}
        emb = encode([texts[b * g + i] for b in wanted for i in range(g)], self.config.embedding_model, str(device))
        return {b: emb[k * g:(k + 1) * g] @ emb[k * g:(k + 1) * g].T for k, b in enumerate(wanted)}


def _check_reward_range(rewards: torch.Tensor, used: torch.Tensor, g: int, low: float, high: float | None,
                        why: str) -> None:
    """Every used reward must lie in [low, high] (high None: no upper bound), else a ConfigError
    naming the prompt, the sample and the value."""
    inside = (rewards >= low) & ((rewards <= high) if high is not None else torch.ones_like(used))
    bad = (used & ~inside).nonzero()
    if len(bad):
        i = int(bad[0])
        span = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ConfigError(f"{why} needs rewards {span}, got {float(rewards[i]):.4g} (prompt {i // g}, sample "
                          f"{i % g}): give the reward item `transform: sigmoid` or `transform: threshold`, or use a "
                          f"reward in {'[0, 1]' if high is not None else 'that range'}")


@dataclass
class ResponseMLEConfig:
    response_field: str = hfield("response", "the prompt example's field with the reference response")


@OBJECTIVES.register("response_mle")
class ResponseMLE(Objective):
    """Cross-entropy on reference response tokens given the prompt (docs/design.md "MLE"), for RL
    prompts that carry a reference response (the seed's SFT term)."""

    name = "response_mle"
    config_class = ResponseMLEConfig

    def __call__(self, inputs) -> ObjectiveOutput:
        ro = inputs.rollout
        model = inputs.policy.model
        if "response_ids" not in ro.memo:
            ro.memo["response_ids"] = self._tokenize(model, ro.examples)
        ids, mask = (t.to(model.device) for t in ro.memo["response_ids"])
        logp = model.sequence_logprobs(ro.gen.prompt_ids, ro.gen.prompt_mask, ids, mask)
        loss = -(logp * mask).sum() / mask.sum().clamp(min=1)
        return ObjectiveOutput(loss, {"response_tokens": float(mask.sum())})

    def _tokenize(self, model, examples) -> tuple[torch.Tensor, torch.Tensor]:
        tok = model.tokenizer
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        return right_pad(tok, [tok(reference_response(e, self.config.response_field), add_special_tokens=False)
                               ["input_ids"] + eos for e in examples])


def reference_response(example, field: str, where: str = "the rollout") -> str:
    """The example's reference response (its prompt file's ``field`` column), or a DataError naming the prompt."""
    extra = getattr(example, "extra", None) or {}
    value = extra.get(field)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"prompts from {where!r}: prompt {example.index} ({example.text[:40]!r}) has no {field!r} "
                        f"(method.mle_weight > 0 trains on reference responses; columns: {sorted(extra)})")
    return value
