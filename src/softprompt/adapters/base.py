"""What every adapter shares: a validated dataclass config and a small module API.

An adapter contributes to the frozen backbone in one of three ways:
- ``prompt_embeddings``: n virtual token embeddings placed in the input
  sequence (prompt tuning, conditional prompts);
- ``prefix_key_values``: n per-layer key/value pairs placed in the KV cache
  in front of every sequence (prefix tuning);
- by changing backbone modules in place (LoRA through PEFT).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import build
from ..config.fields import check_instance, field_help, hfield  # noqa: F401  (hfield: re-exported for the adapter configs)
from ..errors import AdapterLoadError, ConfigError

log = logging.getLogger(__name__)


@dataclass
class AdapterConfig:
    """Base class; subclasses set ``adapter_type`` and add fields made with :func:`hfield`."""

    adapter_type: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_instance(self, "adapter")  # every numeric option's declared range (hfield ge/gt/le/lt)
        self.validate()

    def validate(self) -> None:
        """Checks across options (each option's own range is declared on its field): raise
        :class:`ConfigError` naming the field and what was expected."""

    def _require(self, ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise ConfigError(f"{self.adapter_type}.{key}={getattr(self, key)!r}: expected {expected}")

    def config_tag(self) -> tuple[str, str]:
        """The key and value that name this adapter in a saved config: ``type: lora``."""
        return "type", self.adapter_type

    def to_dict(self) -> dict[str, Any]:
        """The options, without the type (as ``softprompt_adapter.json`` stores them)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        """The config from a mapping of options, every key, type and range checked."""
        return build(cls, dict(data), where="adapter")

    @classmethod
    def help(cls) -> dict[str, str]:
        return field_help(cls)


def parse_init(init: str) -> tuple[str, str]:
    """``'random'`` / ``'vocab'`` / ``'text:<string>'`` -> (kind, text)."""
    if init in ("random", "vocab"):
        return init, ""
    if init.startswith("text:") and init[5:].strip():
        return "text", init[5:]
    raise ConfigError(f"init={init!r}: expected 'random', 'vocab' or 'text:<some text>'")


class Adapter(nn.Module):
    """Base class of the trainable parts attached to a frozen backbone."""

    config_class: ClassVar[type[AdapterConfig]]

    #: how many virtual tokens the adapter puts in the input sequence / in front of the KV cache
    num_sequence_tokens: int = 0
    num_prefix_tokens: int = 0

    def __init__(self, config: AdapterConfig, backbone):
        super().__init__()
        self.config = config
        self.backbone_info = backbone.describe()

    # -- contributions (override what applies) -------------------------------------------------
    def prompt_embeddings(self, batch_size: int, condition: torch.Tensor | None = None) -> torch.Tensor | None:
        return None

    def prefix_key_values(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        return None

    @property
    def needs_condition(self) -> bool:
        return False

    # -- weights ---------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.state_dict().items()}

    def load_adapter_state_dict(self, tensors: dict[str, torch.Tensor], source: str = "weights") -> None:
        own = self.adapter_state_dict()
        missing = sorted(set(own) - set(tensors))
        unexpected = sorted(set(tensors) - set(own))
        if missing or unexpected:
            raise AdapterLoadError(
                f"{source}: tensors do not match a {self.config.adapter_type} adapter "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        for name, t in tensors.items():
            if tuple(t.shape) != tuple(own[name].shape):
                raise AdapterLoadError(
                    f"{source}: tensor {name!r} has shape {tuple(t.shape)}, this backbone needs {tuple(own[name].shape)}"
                )
        self._assign(tensors)

    def _assign(self, tensors: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(tensors, strict=True)


def embedding_init(kind: str, text: str, n: int, backbone, seed: int | None) -> torch.Tensor:
    """Initial virtual-token embeddings (n, H) for prompt-style adapters, in the space the text's
    tokens reach the model in: the input-embedding module's outputs (on Gemma-style backbones
    that is the table times sqrt(H), not the raw table).

    ``random``: Gaussian with the per-dimension mean and std of the module's outputs over the
    whole vocabulary; ``vocab``: outputs for n tokens drawn from the 5,000 lowest (most
    frequent) ids; ``text``: outputs for the text's tokens, truncated to n with a warning, or
    repeated to fill n (as PEFT does).
    """
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    if kind == "random":
        mean, std, _ = embedding_statistics(backbone)
        return mean + std * torch.randn(n, mean.shape[0], generator=gen)
    return embed_ids(backbone, token_ids_for_init(kind, text, n, backbone, gen))


@torch.no_grad()
def embed_ids(backbone, ids: torch.Tensor) -> torch.Tensor:
    """What the input-embedding module gives token ids (n,): (n, H) float on the CPU, as text gets it."""
    module = backbone.input_embeddings()
    return module(ids.to(module.weight.device)).float().cpu()


@torch.no_grad()
def embedding_statistics(backbone, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(mean (H,), std (H,), std of all entries) of the input-embedding module's outputs over every
    id of its table, run ``chunk`` ids at a time (never the whole table's outputs at once).

    Chunks are merged with Chan et al.'s update in float64: for counts a, b, means m_a, m_b and
    sums of squared deviations M_a, M_b, M = M_a + M_b + (m_b - m_a)^2 ab / (a + b). Stds are
    unbiased (divide by count - 1), as ``Tensor.std``.
    """
    module = backbone.input_embeddings()
    vocab, device = module.weight.shape[0], module.weight.device
    count, mean, m2 = 0, None, None
    for start in range(0, vocab, chunk):
        x = module(torch.arange(start, min(start + chunk, vocab), device=device)).double().cpu()
        k, m, dev2 = x.shape[0], x.mean(0), ((x - x.mean(0)) ** 2).sum(0)
        if mean is None:
            count, mean, m2 = k, m, dev2
            continue
        delta, total = m - mean, count + k
        mean, m2 = mean + delta * k / total, m2 + dev2 + delta ** 2 * count * k / total
        count = total
    std = (m2 / max(count - 1, 1)).sqrt()
    spread = m2.sum() + count * ((mean - mean.mean()) ** 2).sum()  # squared deviations from the grand mean
    overall = float((spread / max(count * mean.shape[0] - 1, 1)).sqrt())
    return mean.float(), std.float(), overall


def token_ids_for_init(kind: str, text: str, n: int, backbone, gen: torch.Generator | None) -> torch.Tensor:
    tok = backbone.tokenizer
    if kind == "vocab":
        special = set(getattr(tok, "all_special_ids", []) or [])
        pool = torch.tensor([i for i in range(min(5000, len(tok))) if i not in special])
        return pool[torch.randint(len(pool), (n,), generator=gen)]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ConfigError(f"init text {text!r} has no tokens")
    if len(ids) > n:
        log.warning("init text has %d tokens, more than num_virtual_tokens=%d: truncated to the first %d",
                    len(ids), n, n)
        ids = ids[:n]
    reps = -(-n // len(ids))
    return torch.tensor((ids * reps)[:n])
