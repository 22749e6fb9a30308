from __future__ import annotations

from dataclasses import dataclass

from ..base import AdapterConfig, hfield, parse_init


@dataclass
class PrefixTuningConfig(AdapterConfig):
    """Prefix tuning (Li & Liang, 2021): n trainable keys and values in front of every layer's KV cache."""

    adapter_type = "prefix_tuning"

    num_virtual_tokens: int = hfield(20, "prefix length n (keys/values per layer)", ge=1)
    init: str = hfield("vocab", "'random', 'vocab' (the frozen model's own K/V of sampled frequent tokens) or "
                                "'text:<string>' (the K/V of that text: starts out equal to the hard prompt)")
    init_seed: int | None = hfield(None, "seed for the random/vocab init (None: the global torch RNG)", ge=0)
    reparameterize: bool = hfield(False, "produce the prefix with an MLP from n embeddings (more stable training)")
    encoder_hidden_size: int = hfield(512, "hidden width of the reparameterisation MLP", ge=1)
    dropout: float = hfield(0.0, "dropout on the prefix keys/values while training", ge=0, lt=1)

    def validate(self) -> None:
        kind, _ = parse_init(self.init)
        self._require(not (self.reparameterize and kind == "text"), "init",
                      "'random' or 'vocab' when reparameterize is on (text init sets the K/V directly)")
