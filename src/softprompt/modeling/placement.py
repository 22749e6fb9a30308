"""Where virtual tokens go (docs/design.md, "Placement").

Prompt tuning: ``[pad..pad][P1..Pn][tokens][trailing pads]``: the n virtual tokens are
inserted right before each row's first real token, so left padding stays in front and a
row's output does not depend on its batch-mates. Prefix tuning: n keys/values per layer
in front of every sequence in the KV cache, with mask 1.

Position ids count real tokens only and start at the first non-pad position. In a causal
LM real tokens continue after the virtual ones (positions n, n+1, ...), so a prompt or
prefix initialised from a text equals that text as a hard prompt; in an encoder with a
prefix, real tokens start at 0 as the encoder was trained.
"""

from __future__ import annotations

import torch


def leading_pads(mask: torch.Tensor) -> torch.Tensor:
    """Number of pad positions before each row's first real token: (B,)."""
    return (mask.cumsum(1) == 0).sum(1)


def insert_virtual(
    embeds: torch.Tensor, mask: torch.Tensor, virtual: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Insert ``virtual`` (B, n, H) before each row's first real token of ``embeds`` (B, L, H).

    Returns the (B, n+L, H) embeddings and the (B, n+L) mask. Input column j >= first real
    token lands at column j + n, so the last L output columns line up with the input.
    """
    batch, length, hidden = embeds.shape
    n = virtual.shape[1]
    cols = torch.arange(length + n, device=embeds.device).unsqueeze(0)  # (1, L+n)
    start = leading_pads(mask).unsqueeze(1)  # (B, 1)
    in_virtual = (cols >= start) & (cols < start + n)
    # source index into cat([embeds, virtual]): pads keep their column, virtual k -> L + k, token j -> j
    src = torch.where(cols < start, cols, torch.where(in_virtual, length + cols - start, cols - n))
    full = torch.cat([embeds, virtual.to(embeds.dtype)], dim=1).gather(1, src.unsqueeze(-1).expand(-1, -1, hidden))
    full_mask = torch.cat([mask, mask.new_ones(batch, n)], dim=1).gather(1, src)
    return full, full_mask


def position_ids(seq_mask: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Positions counting real tokens from ``offset``; pads get ``offset`` (they are masked)."""
    return (seq_mask.long().cumsum(1) - 1).clamp(min=0) + offset
