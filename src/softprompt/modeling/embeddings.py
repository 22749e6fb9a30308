"""Sentence embeddings (sentence-transformers), for embedding diversity, conditions and the
embedding-cosine reward: one cached model per spec (an alias such as ``minilm-l6``, a directory or
a hub id)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from .backbones import check_model_spec, resolve


@functools.lru_cache(maxsize=2)
def sentence_encoder(spec: str = "minilm-l6", device: str = "cpu"):
    """A sentence-transformers model from an alias, directory or hub id (cached: one per process)."""
    from sentence_transformers import SentenceTransformer

    check_model_spec(spec)  # one line for a spec that cannot load here (offline and not cached, ...)
    return SentenceTransformer(resolve(spec)[0], device=device, model_kwargs={"use_safetensors": True})


def encode(texts: Sequence[str], spec: str = "minilm-l6", device: str = "cpu", batch_size: int = 128) -> torch.Tensor:
    return sentence_encoder(spec, device).encode(list(texts), batch_size=batch_size, convert_to_tensor=True,
                                                 normalize_embeddings=True).float().cpu()
