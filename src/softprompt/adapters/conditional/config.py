from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError
from ..base import AdapterConfig, hfield, parse_init


@dataclass
class ConditionalPromptConfig(AdapterConfig):
    """A small MLP maps a condition vector (e.g. a sentence embedding) to the n virtual tokens."""

    adapter_type = "conditional_prompt"

    num_virtual_tokens: int = hfield(20, "number of virtual tokens produced per input", ge=1)
    condition_dim: int = hfield(384, "size of the condition vector (384 for minilm-l6 sentence embeddings)", ge=1)
    hidden_dim: int = hfield(256, "hidden width of the MLP", ge=1)
    init: str = hfield("vocab", "initial virtual tokens for a zero condition: 'random', 'vocab' or 'text:<string>'")
    init_seed: int | None = hfield(None, "seed for the init (None: the global torch RNG)", ge=0)
    dropout: float = hfield(0.0, "dropout inside the MLP while training", ge=0, lt=1)
    condition_inits: dict = hfield({}, "a starting prompt per condition, {condition text: 'text:<string>', 'vocab' or "
                                       "'random'}: the MLP's output layer is fitted so that each listed condition "
                                       "starts on its own prompt (base: their mean), instead of all on 'init'")

    def validate(self) -> None:
        parse_init(self.init)
        self._require(isinstance(self.condition_inits, dict), "condition_inits",
                      "a mapping {condition text: init}")
        for condition, init in self.condition_inits.items():
            try:
                parse_init(str(init))
            except ConfigError as e:
                raise ConfigError(f"adapter.condition_inits[{condition!r}]: {e}") from None
        self._require(len(self.condition_inits) <= self.hidden_dim + 1, "condition_inits",
                      f"at most hidden_dim + 1 = {self.hidden_dim + 1} conditions (one exact fit each)")
