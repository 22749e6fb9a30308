"""Phases: which objectives are active in which epochs, with what weights."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass
class Phase:
    weights: dict[str, float]
    epochs: int | None = None  # how long the phase lasts; None = until the end


class Schedule:
    def __init__(self, phases: list[Phase]):
        if not phases:
            raise ConfigError("a schedule needs at least one phase")
        for i, p in enumerate(phases[:-1]):
            if p.epochs is None or p.epochs < 0:
                raise ConfigError(f"schedule phase {i + 1}: every phase but the last needs epochs >= 0")
        self.phases = phases

    def phase_index(self, epoch: int) -> int:
        start = 0
        for i, p in enumerate(self.phases):
            if p.epochs is None or epoch < start + p.epochs:
                return i
            start += p.epochs
        return len(self.phases) - 1

    def weights(self, epoch: int) -> dict[str, float]:
        return {k: w for k, w in self.phases[self.phase_index(epoch)].weights.items() if w != 0}

    def objectives(self) -> set[str]:
        return {k for p in self.phases for k, w in p.weights.items() if w != 0}
