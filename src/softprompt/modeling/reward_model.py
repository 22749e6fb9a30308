"""Comparative reward models: an encoder + its own soft prefix + a scalar head.

The score of a response in a context is the head's output on the pooled representation of
``context [SEP] response`` (the tokenizer's separator; a newline for tokenizers without one).
Training (``method.name=reward_pairwise``) pushes s(chosen) above s(rejected); the run folder
can then be named as a ``reward_model`` reward in any RL config.
"""

from __future__ import annotations

import torch

from .classifiers import EmbeddingClassifier


class PairwiseRewardModel(EmbeddingClassifier):
    kind = "reward_model"

    def __init__(self, model, pooling: str | None = None, max_length: int = 256):
        super().__init__(model, 1, pooling=pooling, regression=True)
        self.max_length = max_length
        sep = self.tokenizer.sep_token
        self.separator = f" {sep} " if sep else "\n"

    def text(self, context: str, response: str) -> str:
        return f"{context}{self.separator}{response}" if context else response

    def batch(self, contexts: list[str], responses: list[str]) -> dict:
        """Tokenized ``context [SEP] response`` rows (left-truncated: the response is kept)."""
        return self.tokenize([self.text(c, r) for c, r in zip(contexts, responses)], self.max_length)

    @torch.no_grad()
    def score(self, contexts: list[str], responses: list[str], batch_size: int = 32) -> torch.Tensor:
        """Scalar scores (N,) of the responses in their contexts."""
        out = []
        for b in range(0, len(responses), batch_size):
            batch = self.batch(contexts[b:b + batch_size], responses[b:b + batch_size])
            out.append(self.scores(batch).squeeze(-1).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)
