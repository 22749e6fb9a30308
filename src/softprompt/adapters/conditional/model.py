from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError
from ..base import Adapter, embedding_init, parse_init
from .config import ConditionalPromptConfig


class ConditionalPrompt(Adapter):
    """P(c) = base + MLP(c): a per-input prompt computed from a condition vector c.

    ``base`` starts at the configured init and the MLP's last layer starts small, so at
    step 0 every condition gives (almost) the same prompt and training separates them.
    """

    config_class = ConditionalPromptConfig

    def __init__(self, config: ConditionalPromptConfig, backbone):
        super().__init__(config, backbone)
        n, hidden = config.num_virtual_tokens, backbone.hidden_size
        kind, text = parse_init(config.init)
        base = embedding_init(kind, text, n, backbone, config.init_seed)
        dtype = torch.float32  # trained weights stay fp32 whatever the backbone's dtype
        self.base = nn.Parameter(base.to(dtype))
        self.mlp = nn.Sequential(
            nn.Linear(config.condition_dim, config.hidden_dim),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden_dim, n * hidden),
        ).to(dtype)
        with torch.no_grad():
            self.mlp[-1].weight.mul_(0.1 * float(base.std()))
            self.mlp[-1].bias.zero_()
        self.num_sequence_tokens = n

    @property
    def needs_condition(self) -> bool:
        return True

    def prompt_embeddings(self, batch_size: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        if condition is None:
            raise ConfigError("conditional_prompt needs a condition vector per input (condition=...)")
        if condition.dim() != 2 or condition.shape != (batch_size, self.config.condition_dim):
            raise ConfigError(
                f"condition has shape {tuple(condition.shape)}, expected ({batch_size}, {self.config.condition_dim})"
            )
        delta = self.mlp(condition.to(self.base.dtype))
        return self.base.unsqueeze(0) + delta.view(batch_size, self.config.num_virtual_tokens, -1)
