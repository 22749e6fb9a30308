from __future__ import annotations

import torch
from torch import nn

from ...hf_compat import cache_kwarg
from ..base import (
    Adapter,
    embed_ids,
    embedding_statistics,
    parse_init,
    token_ids_for_init,
)
from .config import PrefixTuningConfig


@torch.no_grad()
def backbone_key_values(backbone, ids: torch.Tensor) -> torch.Tensor:
    """The frozen model's own per-layer K/V for token ids (n,): (layers, 2, kv_heads, n, head_dim)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=backbone.config)
    model = backbone.model
    model(input_ids=ids[None].to(model.device), use_cache=True, **cache_kwarg(model, cache))
    return torch.stack([torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers])


class PrefixTuning(Adapter):
    """Per-layer key/value prefixes of length n, optionally produced by an MLP."""

    config_class = PrefixTuningConfig

    def __init__(self, config: PrefixTuningConfig, backbone):
        super().__init__(config, backbone)
        self.shape = (backbone.num_layers, 2, backbone.num_kv_heads, config.num_virtual_tokens, backbone.head_dim)
        self.num_prefix_tokens = config.num_virtual_tokens
        dtype = torch.float32  # trained weights stay fp32 whatever the backbone's dtype
        kind, text = parse_init(config.init)
        gen = torch.Generator().manual_seed(config.init_seed) if config.init_seed is not None else None
        if config.reparameterize:  # the MLP's input starts at the scale of the embedding module's outputs
            hidden = backbone.hidden_size
            if kind == "vocab":
                start = embed_ids(backbone, token_ids_for_init("vocab", "", config.num_virtual_tokens, backbone, gen))
            else:
                scale = embedding_statistics(backbone)[2]
                start = torch.randn(config.num_virtual_tokens, hidden, generator=gen) * scale
            self.embeddings = nn.Parameter(start.to(dtype))
            out = self.shape[0] * 2 * self.shape[2] * self.shape[4]
            self.mlp = nn.Sequential(
                nn.Linear(hidden, config.encoder_hidden_size), nn.Tanh(), nn.Linear(config.encoder_hidden_size, out)
            ).to(dtype)
        else:
            if kind == "random":
                init = 0.02 * torch.randn(self.shape, generator=gen)
            else:
                ids = token_ids_for_init(kind, text, config.num_virtual_tokens, backbone, gen)
                init = backbone_key_values(backbone, ids).float().cpu()
            self.prefix = nn.Parameter(init.to(dtype))
        self.dropout = nn.Dropout(config.dropout)

    def _prefix(self) -> torch.Tensor:
        if not self.config.reparameterize:
            return self.prefix
        layers, _, heads, n, dim = self.shape
        flat = self.mlp(self.embeddings)  # (n, layers*2*heads*dim)
        return flat.view(n, layers, 2, heads, dim).permute(1, 2, 3, 0, 4)

    def prefix_key_values(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        prefix = self._prefix()
        kv = self.dropout(prefix.unsqueeze(2).expand(-1, -1, batch_size, -1, -1, -1))
        return [(kv[i, 0], kv[i, 1]) for i in range(kv.shape[0])]
