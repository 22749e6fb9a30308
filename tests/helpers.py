"""Reference implementations the tests compare against."""

from __future__ import annotations

import torch


@torch.no_grad()
def greedy_without_cache(model, prompt_ids, prompt_mask, steps: int, condition=None) -> torch.Tensor:
    """Greedy decoding that re-runs the whole sequence every step (no KV cache)."""
    ids, mask = prompt_ids, prompt_mask
    new = []
    for _ in range(steps):
        logits = model(ids, mask, condition=condition, logits_to_keep=1).logits[:, -1]
        token = logits.argmax(-1)
        new.append(token)
        ids = torch.cat([ids, token[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(token[:, None])], 1)
    return torch.stack(new, 1)


def encode(tok, texts):
    enc = tok(texts, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def fit_until_killed(trainer, epoch: int) -> None:
    """Run ``trainer`` and stop it like a crash right after it saved ``checkpoints/last`` at ``epoch``."""
    import pytest

    original = trainer._save

    def save_then_die(which):
        original(which)
        if which == "last" and trainer.counters["epoch"] == epoch:
            raise KeyboardInterrupt
    trainer._save = save_then_die
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(progress=False)
