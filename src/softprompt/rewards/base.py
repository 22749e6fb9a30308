"""Rewards: registered components, composed by a weighted sum with each part logged.

A reward maps (prompts, completions, examples) to one float per completion. Configs name
rewards from the ``REWARDS`` registry (``{name: lexicon_sentiment, weight: 1.0, ...}``);
library users may also pass any Python callable with that signature to :class:`RewardSet`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from ..config import build
from ..config.fields import hfield
from ..config.registry import Registry
from ..errors import ConfigError, SoftPromptError, closest

log = logging.getLogger(__name__)


class RewardError(SoftPromptError):
    """A reward function misbehaved (wrong number of values, not numbers)."""


@dataclass
class RewardContext:
    """What a reward may borrow from the run: the policy's frozen backbone (perplexity), the device
    its models run on (the policy's, unless the reward item's ``device`` says otherwise) and the
    dtype the frozen models it loads compute in (the policy's backbone's, ``model.dtype``)."""

    backbone: Any = None
    device: str | torch.device = "cpu"
    dtype: str | torch.dtype = torch.float32

    @property
    def load_kw(self) -> dict:
        """``dtype`` and ``device`` for :func:`softprompt.modeling.backbones.load_backbone`."""
        return {"dtype": self.dtype, "device": self.device}


class Reward:
    """Subclasses set ``config_class`` (a dataclass) and implement ``__call__``."""

    config_class: ClassVar[type]
    #: every value is >= 0 (a probability, a match): what polychromic's multiplicative f(S) needs
    nonnegative: ClassVar[bool] = False

    def __init__(self, config, context: RewardContext):
        self.config, self.context = config, context

    def __call__(self, prompts: list[str], completions: list[str], examples: list) -> Sequence[float]:
        raise NotImplementedError


REWARDS: Registry[type[Reward]] = Registry("reward")

RewardFn = Callable[[list[str], list[str], list], Sequence[float]]


@dataclass
class RewardItem:
    """Keys every reward item takes, besides its own options."""

    name: str = hfield("", "the reward's registered name (below)")
    weight: float = hfield(1.0, "its weight in the sum (negative: a penalty)", finite=True)
    transform: Literal["none", "sigmoid", "threshold"] = hfield(
        "none", "map the value v before weighting: sigmoid((v - center) / temperature), or 1 if v >= center "
                "else 0; e.g. a reward model's unbounded score into [0, 1] for polychromic's multiplicative f")
    center: float = hfield(0.0, "transform: the value mapped to 0.5 (sigmoid) or the pass mark (threshold)",
                          finite=True)
    temperature: float = hfield(1.0, "transform=sigmoid: the spread", gt=0)
    device: str | None = hfield(None, "where this reward's model runs (cpu, cuda, cuda:1, ...); default: the "
                                      "policy's device")

    def apply(self, values: torch.Tensor) -> torch.Tensor:
        if self.transform == "sigmoid":
            return torch.sigmoid((values - self.center) / self.temperature)
        if self.transform == "threshold":
            return torch.where(torch.isfinite(values), (values >= self.center).to(values.dtype), values)
        return values


ITEM_KEYS = tuple(f.name for f in dataclasses.fields(RewardItem))


@dataclass
class RewardPart:
    name: str
    weight: float
    fn: RewardFn
    nonnegative: bool | None = None  # every value >= 0; None: not known (a Python callable)


@dataclass
class RewardSet:
    """total = sum_k weight_k * reward_k; each part kept for logging."""

    parts: list[RewardPart] = field(default_factory=list)
    dropped: int = 0  # completions whose total reward was NaN or infinite, over the run

    @classmethod
    def from_config(cls, section: list[dict], context: RewardContext | None = None) -> RewardSet:
        return cls([make_part(item, i, context or RewardContext()) for i, item in enumerate(section)])

    @classmethod
    def of(cls, *fns: RewardFn | tuple[str, float, RewardFn]) -> RewardSet:
        """From callables (weight 1, named after the function) or (name, weight, callable) triples."""
        parts = []
        for f in fns:
            name, weight, fn = f if isinstance(f, tuple) else (getattr(f, "__name__", "reward"), 1.0, f)
            parts.append(RewardPart(name, float(weight), fn))
        return cls(parts)

    def __post_init__(self) -> None:
        if not self.parts:
            raise ConfigError("an RL method needs at least one reward (config key 'rewards')")
        names = [p.name for p in self.parts]
        seen: dict[str, int] = {}
        for p in self.parts:
            if names.count(p.name) > 1:  # two parts of one kind are logged as name_1, name_2
                seen[p.name] = seen.get(p.name, 0) + 1
                p.name = f"{p.name}_{seen[p.name]}"

    def nonnegative(self) -> bool | None:
        """True when every total is >= 0 (each part is, with a weight >= 0); False when a part can
        be negative; None when a part is a Python callable whose range is not known."""
        if any(p.weight < 0 or p.nonnegative is False for p in self.parts):
            return False
        return True if all(p.nonnegative for p in self.parts) else None

    def probe(self, examples: list) -> None:
        """Call every part once on a few prompts (completion = a short text) so a reward that
        fails or returns the wrong number of values is caught before training starts."""
        prompts = [e.text for e in examples[:2]]
        self([*prompts], [" and it was fine."] * len(prompts), examples[:2])
        self.dropped = 0

    def __call__(self, prompts: list[str], completions: list[str], examples: list) -> tuple[torch.Tensor, dict]:
        """(total (N,) with NaN where a part was not finite, {part name: values (N,)})."""
        n = len(completions)
        total = torch.zeros(n, dtype=torch.float64)
        parts = {}
        for p in self.parts:
            values = p.fn(prompts, completions, examples)
            values = _as_tensor(values, p.name, n)
            parts[p.name] = values
            total += p.weight * values
        bad = ~torch.isfinite(total)
        if bad.any():
            self.dropped += int(bad.sum())
            log.warning("dropped %d of %d completions whose reward was NaN or infinite (%d so far)",
                        int(bad.sum()), n, self.dropped)
            total[bad] = float("nan")
        return total.float(), parts


def _as_tensor(values: Any, name: str, n: int) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        values = values.detach().double().cpu().reshape(-1)
    else:
        try:
            values = torch.tensor([float(v) for v in values], dtype=torch.float64)
        except (TypeError, ValueError) as e:
            raise RewardError(f"reward {name!r} must return numbers, one per completion: {e}") from None
    if len(values) != n:
        raise RewardError(f"reward {name!r} returned {len(values)} values for {n} completions")
    return values


def make_part(item: Any, index: int, context: RewardContext) -> RewardPart:
    where = f"rewards[{index}]"
    if isinstance(item, str):
        item = {"name": item}
    if not isinstance(item, dict) or "name" not in item:
        raise ConfigError(f"config key {where!r}: expected a mapping with a 'name' ({', '.join(REWARDS.names())})")
    cls = REWARDS.get(item["name"])
    known = [*ITEM_KEYS, *(f.name for f in dataclasses.fields(cls.config_class))]
    for key in item:
        if key not in known:
            raise ConfigError(f"unknown config key '{where}.{key}'{closest(str(key), known)} for reward "
                              f"{item['name']!r}; valid keys: {', '.join(known)}")
    options = {k: v for k, v in item.items() if k not in ITEM_KEYS}
    common = build(RewardItem, {k: v for k, v in item.items() if k in ITEM_KEYS}, where=where)
    if common.device is not None:
        context = dataclasses.replace(context, device=_device(common.device, f"{where}.device"))
    fn = cls(build(cls.config_class, options, where=where), context)
    if common.transform == "none":
        return RewardPart(common.name, float(common.weight), fn, bool(fn.nonnegative))
    return RewardPart(common.name, float(common.weight), _transformed(fn, common), True)  # in [0, 1]


def _device(name: str, key: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"config key {key!r}={name!r}: expected a device such as cpu, cuda or cuda:1") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config key {key!r}={name!r}: this machine has no CUDA device")
    return device


def _transformed(fn: RewardFn, item: RewardItem) -> RewardFn:
    def call(prompts, completions, examples):
        return item.apply(_as_tensor(fn(prompts, completions, examples), item.name, len(completions)))

    return call
