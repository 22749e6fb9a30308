from __future__ import annotations

from dataclasses import dataclass

from ..base import AdapterConfig, hfield, parse_init


@dataclass
class PromptTuningConfig(AdapterConfig):
    """Prompt tuning (Lester et al., 2021): n trainable embeddings in front of the input."""

    adapter_type = "prompt_tuning"

    num_virtual_tokens: int = hfield(20, "number of virtual tokens placed after the left padding", ge=1)
    init: str = hfield("vocab", "'random' (statistics of the input embeddings, as the model scales them), "
                                "'vocab' (embeddings of sampled frequent tokens) or 'text:<string>' (embeddings "
                                "of that text's tokens)")
    init_seed: int | None = hfield(None, "seed for the random/vocab init (None: the global torch RNG)", ge=0)
    dropout: float = hfield(0.0, "dropout on the virtual tokens while training (a second view for contrastive losses)",
                            ge=0, lt=1)

    def validate(self) -> None:
        parse_init(self.init)
