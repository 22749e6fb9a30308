from __future__ import annotations

import torch
from torch import nn

from ..base import Adapter, embedding_init, parse_init
from .config import PromptTuningConfig


class PromptTuning(Adapter):
    """n virtual token embeddings P (n, H) shared by every input."""

    config_class = PromptTuningConfig

    def __init__(self, config: PromptTuningConfig, backbone):
        super().__init__(config, backbone)
        kind, text = parse_init(config.init)
        init = embedding_init(kind, text, config.num_virtual_tokens, backbone, config.init_seed)
        dtype = torch.float32  # trained weights stay fp32 whatever the backbone's dtype
        self.embeddings = nn.Parameter(init.to(dtype))
        self.dropout = nn.Dropout(config.dropout)
        self.num_sequence_tokens = config.num_virtual_tokens

    def prompt_embeddings(self, batch_size: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        # dropout after expanding: each row gets its own mask
        return self.dropout(self.embeddings.unsqueeze(0).expand(batch_size, -1, -1))
