"""Scoring given text under a model: the log-likelihood of completions after their prompts
(perplexity reward, "perplexity under the base model"), and padding token lists for it."""

from __future__ import annotations

import torch


@torch.no_grad()
def completion_nll(lm, prompts: list[str], completions: list[str], batch_size: int = 16):
    """(summed NLL (N,), token count (N,)) of each completion given its prompt under ``lm`` (a SoftPromptModel)."""
    tok = lm.tokenizer
    nll, count = [], []
    for b in range(0, len(prompts), batch_size):
        p_ids, p_mask = _left_pad(tok, [tok(p, add_special_tokens=False)["input_ids"] for p in prompts[b:b + batch_size]])
        ids, mask = right_pad(tok, [tok(c, add_special_tokens=False)["input_ids"] or [tok.eos_token_id]
                                    for c in completions[b:b + batch_size]])
        dev = lm.device
        logp = lm.sequence_logprobs(p_ids.to(dev), p_mask.to(dev), ids.to(dev), mask.to(dev)).cpu()
        nll.append(-logp.sum(1))
        count.append(mask.sum(1))
    if not nll:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(nll), torch.cat(count)


def completion_perplexity(lm, prompts: list[str], completions: list[str]) -> torch.Tensor:
    """exp(mean NLL of each completion's tokens given its prompt), (N,)."""
    nll, count = completion_nll(lm, prompts, completions)
    return torch.exp(nll / count.clamp(min=1))


def right_pad(tok, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists as a right-padded (ids, mask) pair, for completions scored after their prompts."""
    width = max(len(s) for s in seqs)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    return ids, mask


def _left_pad(tok, seqs: list[list[int]]):
    seqs = [s or [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id] for s in seqs]
    width = max(len(s) for s in seqs)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
    return ids, mask
