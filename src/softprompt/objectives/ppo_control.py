"""PPO's stabilisers that carry state from one rollout to the next (trlx's names and arithmetic).

Adaptive KL coefficient (Ziegler et al., 2019; trlx's AdaptiveKLController). After each rollout
of n samples whose mean per-sequence KL to the reference is KL:

    e    = clip(KL / target - 1, -0.2, 0.2)
    beta = beta * (1 + e * n / horizon)

so beta grows while the policy drifts further than ``target`` nats per sequence and shrinks
while it stays closer; ``horizon`` (in samples) sets how fast.

Running reward scale (trlx's ``scale_reward: running``). The mean and variance of every score
seen so far, merged batch by batch (Chan et al.'s parallel update), and each batch's scores
divided by the running standard deviation (after the batch is merged in), then clipped to
[-cliprange_reward, cliprange_reward] when that is set.

Both hold plain floats, saved with the checkpoint so a resumed run continues them.
"""

from __future__ import annotations

import math

import torch


class AdaptiveKL:
    def __init__(self, beta: float, target: float, horizon: int):
        self.value, self.target, self.horizon = float(beta), float(target), int(horizon)

    def update(self, kl: float, n: int) -> None:
        if not math.isfinite(kl):
            return
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state.get("value", self.value))


class RunningMoments:
    def __init__(self):
        self.mean, self.var, self.count = 0.0, 1.0, 0

    def update(self, x: torch.Tensor) -> None:
        """Merge the finite values of ``x`` into the running mean and (population) variance."""
        x = x[torch.isfinite(x)].double()
        n = x.numel()
        if not n:
            return
        mean, var = float(x.mean()), float(x.var(unbiased=False))
        total = self.count + n
        delta = mean - self.mean
        m2 = self.var * self.count + var * n + delta ** 2 * self.count * n / total
        self.mean, self.var, self.count = self.mean + delta * n / total, m2 / total, total

    @property
    def std(self) -> float:
        return math.sqrt(self.var) if self.count > 1 else 1.0

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = (float(state.get("mean", self.mean)), float(state.get("var", self.var)),
                                           int(state.get("count", self.count)))


def scale_scores(scores: torch.Tensor, moments: RunningMoments | None, clip: float) -> torch.Tensor:
    """``scores`` / the running std (``moments`` updated with them first; None: unscaled), clipped
    to [-clip, clip] when ``clip`` > 0. Non-finite scores stay as they are (their rows are invalid)."""
    if moments is not None:
        moments.update(scores)
        scores = scores / (moments.std + 1e-8)
    if clip:
        scores = torch.where(torch.isfinite(scores), scores.clamp(-clip, clip), scores)
    return scores
