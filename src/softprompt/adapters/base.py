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

from ..errors import ConfigError
from ..fields import check_instance, field_help, hfield  # noqa: F401  (hfield: re-exported for the adapter configs)

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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        """The config from a mapping of options, every key, type and range checked."""
        from ..config import build

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
        from ..errors import AdapterLoadError

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
    """Initial virtual-token embeddings (n, H) for prompt-style adapters.

    ``random``: Gaussian with the embedding matrix's mean and std per dimension;
    ``vocab``: embeddings of n tokens drawn from the 5,000 lowest (most frequent) ids;
    ``text``: embeddings of the text's tokens, truncated to n with a warning, or
    repeated to fill n (as PEFT does).
    """
    weight = backbone.input_embeddings().weight.detach().float()
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    if kind == "random":
        mean, std = weight.mean(0), weight.std(0)
        return mean + std * torch.randn(n, weight.shape[1], generator=gen)
    ids = token_ids_for_init(kind, text, n, backbone, gen)
    return weight[ids].clone()


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
