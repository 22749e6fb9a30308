"""Condition vectors for a conditional prompt: one per input, from a field of its example.

``condition.field`` names the field (``condition`` from ``prompts.conditions``, a topic, ...);
``condition.encoder`` turns its text into a vector: a sentence-transformers model (the
normalised sentence embedding, cached per text) or ``onehot`` over ``condition.values``. The
encoder runs, and the vectors are returned, on the device given (the policy's).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..modeling.embeddings import sentence_encoder
from .data import example_field


class Conditioner:
    def __init__(self, section, device="cpu"):
        if not section.field:
            raise ConfigError("a conditional_prompt adapter needs condition.field: the example field holding "
                              "each input's condition (e.g. condition.field=condition with prompts.conditions)")
        self.field, self.encoder_spec, self.values = section.field, section.encoder, list(section.values)
        self.device = device
        self._cache: dict[str, torch.Tensor] = {}
        self._encoder = None
        if self.encoder_spec == "onehot":
            self.dim = len(self.values)
        else:
            self._encoder = sentence_encoder(self.encoder_spec, str(device))
            dim = getattr(self._encoder, "get_embedding_dimension", None) or \
                self._encoder.get_sentence_embedding_dimension  # sentence-transformers < 6
            self.dim = dim()

    def text_of(self, example) -> str:
        value = example_field(example, self.field)
        if value is None:
            raise ConfigError(f"condition.field={self.field!r}: example {getattr(example, 'index', '?')} "
                              f"({getattr(example, 'text', example)!r:.60}) has no such field")
        return str(value)

    @torch.no_grad()
    def __call__(self, examples: list) -> torch.Tensor:
        return self.vectors([self.text_of(e) for e in examples])

    @torch.no_grad()
    def vectors(self, texts: list[str]) -> torch.Tensor:
        """The condition vectors (len(texts), dim) of condition texts, on the encoder's device."""
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if new and self._encoder is None:
            for t in new:
                if t not in self.values:
                    raise ConfigError(f"condition {t!r} is not one of condition.values {self.values}")
                self._cache[t] = torch.nn.functional.one_hot(torch.tensor(self.values.index(t)), self.dim).float()
        elif new:
            vectors = self._encoder.encode(new, convert_to_tensor=True, normalize_embeddings=True).float().cpu()
            self._cache.update(zip(new, vectors))
        return torch.stack([self._cache[t] for t in texts]).to(self.device)


def conditioner_for(config, adapter, device="cpu") -> Conditioner | None:
    """The run's Conditioner when its adapter reads a condition (its size checked), else None;
    ``device``: where the adapter is (its encoder runs there, its vectors go there)."""
    if adapter is None or not adapter.needs_condition:
        return None
    cond = Conditioner(config.condition, device)
    want = adapter.config.condition_dim
    if cond.dim != want:
        raise ConfigError(f"condition.encoder={cond.encoder_spec!r} gives {cond.dim}-d vectors but "
                          f"adapter.condition_dim={want}; set adapter.condition_dim={cond.dim}")
    return cond
