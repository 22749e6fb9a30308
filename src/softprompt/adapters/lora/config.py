from __future__ import annotations

from dataclasses import dataclass

from ..base import AdapterConfig, hfield


@dataclass
class LoRAConfig(AdapterConfig):
    """LoRA (Hu et al., 2021) through PEFT: low-rank updates to the backbone's linear layers."""

    adapter_type = "lora"

    r: int = hfield(8, "rank of the update", ge=1)
    alpha: int = hfield(16, "scaling numerator: the update is scaled by alpha / r", ge=1)
    dropout: float = hfield(0.0, "dropout on the LoRA input while training", ge=0, lt=1)
    target_modules: list[str] | None = hfield(None, "module names to adapt (None: PEFT's default for the architecture; "
                                                     "['all-linear'] for every linear layer)")

    def validate(self) -> None:
        self._require(self.target_modules is None or (isinstance(self.target_modules, list) and self.target_modules),
                      "target_modules", "null or a non-empty list of module names")
