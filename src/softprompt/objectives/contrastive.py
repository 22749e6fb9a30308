"""InfoNCE over mutated prompts (PTCPRL; docs/design.md "Contrastive over mutated prompts").

anchor   z    = f(x; P)
positive z+   = f(x; dropout(P))                    a second view of the same prompt
negatives z-_k = f(x; mutate_k(P)), k = 1..K       noise, shuffle or drop of virtual tokens
loss = -log exp(cos(z, z+)/tau) / (exp(cos(z, z+)/tau) + sum_k exp(cos(z, z-_k)/tau))

Every view is a differentiable function of P, so the loss reaches the prompt through all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config.fields import check_instance, hfield
from ..errors import ConfigError
from .base import OBJECTIVES, Objective, ObjectiveOutput, StepInputs

MUTATIONS = ("noise", "shuffle", "drop")


@dataclass
class ContrastiveConfig:
    k_negatives: int = hfield(4, "negatives per example, each a mutated prompt", ge=1)
    temperature: float = hfield(0.1, "InfoNCE temperature tau", gt=0)
    dropout: float = hfield(0.1, "dropout on the virtual tokens for the positive view", ge=0, lt=1)
    mutations: list[str] = hfield(list(MUTATIONS), "mutations used in turn for the negatives: noise, shuffle, drop")
    noise_std: float = hfield(1.0, "Gaussian noise std for 'noise', relative to the prompt's std", ge=0)
    drop_fraction: float = hfield(0.5, "fraction of virtual tokens removed by 'drop'", gt=0, lt=1)

    def __post_init__(self) -> None:
        check_instance(self, "contrastive")
        bad = [m for m in self.mutations if m not in MUTATIONS]
        if bad or not self.mutations:
            raise ConfigError(f"contrastive.mutations={self.mutations!r}: expected a non-empty list of {MUTATIONS}")


def mutate(prompt: torch.Tensor, kind: str, cfg: ContrastiveConfig) -> torch.Tensor:
    """A mutated copy of the virtual tokens (B, n, H); each row draws its own mutation."""
    b, n, _ = prompt.shape
    if kind == "noise":
        return prompt + torch.randn_like(prompt) * cfg.noise_std * prompt.detach().std()
    if kind == "shuffle":
        order = torch.rand(b, n, device=prompt.device).argsort(1)
        return prompt.gather(1, order.unsqueeze(-1).expand_as(prompt))
    keep = max(1, n - int(round(n * cfg.drop_fraction)))  # drop: remove tokens, keep the order of the rest
    kept = torch.rand(b, n, device=prompt.device).argsort(1)[:, :keep].sort(1).values
    return prompt.gather(1, kept.unsqueeze(-1).expand(-1, -1, prompt.shape[-1]))


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, tau: float) -> torch.Tensor:
    """anchor, positive: (B, H); negatives: (B, K, H). Cosine similarities over tau, target index 0."""
    candidates = torch.cat([positive.unsqueeze(1), negatives], 1)  # (B, 1+K, H)
    logits = F.cosine_similarity(anchor.unsqueeze(1), candidates, dim=-1) / tau
    return F.cross_entropy(logits, torch.zeros(len(anchor), dtype=torch.long, device=anchor.device))


@OBJECTIVES.register("contrastive")
class Contrastive(Objective):
    name = "contrastive"
    config_class = ContrastiveConfig

    def __call__(self, inputs: StepInputs) -> ObjectiveOutput:
        cfg, clf, batch = self.config, inputs.classifier, inputs.batch
        prompt = clf.prompt(batch)
        anchor = inputs.features()
        positive = clf.features(batch, prompt=F.dropout(prompt, cfg.dropout, training=True))
        negatives = torch.stack([
            clf.features(batch, prompt=mutate(prompt, cfg.mutations[k % len(cfg.mutations)], cfg))
            for k in range(cfg.k_negatives)
        ], 1)
        loss = info_nce(anchor.float(), positive.float(), negatives.float(), cfg.temperature)
        with torch.no_grad():
            pos = F.cosine_similarity(anchor, positive, dim=-1).mean().item()
            neg = F.cosine_similarity(anchor.unsqueeze(1), negatives, dim=-1).mean().item()
        return ObjectiveOutput(loss, {"cos_positive": pos, "cos_negative": neg})
