from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError
from ..base import Adapter, embedding_init, parse_init
from .config import ConditionalPromptConfig


class ConditionalPrompt(Adapter):
    """P(c) = base + MLP(c): a per-input prompt computed from a condition vector c.

    ``base`` starts at the configured init and the MLP's last layer starts small, so at
    step 0 every condition gives (almost) the same prompt and training separates them. With
    ``condition_inits`` each listed condition starts on its own prompt instead: base is their
    mean, and :meth:`fit_conditions` (given the conditions' vectors) solves the output layer
    (min-norm least squares) so that P(c_i) equals condition i's init exactly.
    """

    config_class = ConditionalPromptConfig

    def __init__(self, config: ConditionalPromptConfig, backbone):
        super().__init__(config, backbone)
        n, hidden = config.num_virtual_tokens, backbone.hidden_size
        kind, text = parse_init(config.init)
        base = embedding_init(kind, text, n, backbone, config.init_seed)
        #: the prompt each listed condition starts on (not trained, not saved: see fit_conditions)
        self.condition_targets = {str(c): embedding_init(*parse_init(str(init)), n, backbone, config.init_seed)
                                  for c, init in config.condition_inits.items()}
        if self.condition_targets:
            base = torch.stack(list(self.condition_targets.values())).mean(0)
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

    @torch.no_grad()
    def fit_conditions(self, vectors: dict[str, torch.Tensor]) -> None:
        """Set the MLP's output layer so that P(vectors[c]) = the init of ``condition_inits[c]`` for
        every listed condition c: with H the first layers' features of the k conditions and D their
        targets minus base, [H 1] [W^T; b] = D has an exact min-norm solution (k <= hidden + 1)."""
        names = list(self.condition_targets)
        if not names:
            return
        missing = [c for c in names if c not in vectors]
        if missing:
            raise ConfigError(f"adapter.condition_inits names {missing}, for which no condition vector was given")
        last = self.mlp[-1]
        c = torch.stack([vectors[k] for k in names]).to(last.weight)
        was_training = self.mlp.training
        self.mlp.eval()  # no dropout in the fit
        h = self.mlp[:-1](c)
        self.mlp.train(was_training)
        target = torch.stack([self.condition_targets[k] for k in names]).to(last.weight).flatten(1) \
            - self.base.detach().flatten()
        design = torch.cat([h, torch.ones(len(names), 1, dtype=h.dtype, device=h.device)], 1)
        solution = torch.linalg.pinv(design.double()) @ target.double()  # (hidden + 1, n * H)
        last.weight.copy_(solution[:-1].T.to(last.weight.dtype))
        last.bias.copy_(solution[-1].to(last.bias.dtype))

    def prompt_embeddings(self, batch_size: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        if condition is None:
            raise ConfigError("conditional_prompt needs a condition vector per input (condition=...)")
        if condition.dim() != 2 or condition.shape != (batch_size, self.config.condition_dim):
            raise ConfigError(
                f"condition has shape {tuple(condition.shape)}, expected ({batch_size}, {self.config.condition_dim})"
            )
        delta = self.mlp(condition.to(self.base.dtype))
        return self.base.unsqueeze(0) + delta.view(batch_size, self.config.num_virtual_tokens, -1)
