from __future__ import annotations

from dataclasses import dataclass

from ..base import AdapterConfig, hfield, parse_init


@dataclass
class ConditionalPromptConfig(AdapterConfig):
    """A small MLP maps a condition vector (e.g. a sentence embedding) to the n virtual tokens."""

    adapter_type = "conditional_prompt"

    num_virtual_tokens: int = hfield(20, "number of virtual tokens produced per input")
    condition_dim: int = hfield(384, "size of the condition vector (384 for minilm-l6 sentence embeddings)")
    hidden_dim: int = hfield(256, "hidden width of the MLP")
    init: str = hfield("vocab", "initial virtual tokens for a zero condition: 'random', 'vocab' or 'text:<string>'")
    init_seed: int | None = hfield(None, "seed for the init (None: the global torch RNG)")
    dropout: float = hfield(0.0, "dropout inside the MLP while training")

    def validate(self) -> None:
        self._require_positive_int("num_virtual_tokens")
        self._require_positive_int("condition_dim", "hidden_dim")
        self._require_probability("dropout")
        parse_init(self.init)
