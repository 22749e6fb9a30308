"""Supervised fine-tuning examples as token ids: the prompt, the completion after it, and which
completion tokens carry the loss (TRL's completion-only and assistant-only losses).

- A prompt with a response (``chat`` off): the prompt as generation encodes it, the response
  and the end-of-sequence token as the completion; every completion token carries the loss.
- A conversation (``chat`` on; TRL's ``messages``, or a prompt with its response as the
  assistant's turn): the chat template renders it; the prompt is everything before the first
  assistant turn (with the template's generation prompt), the completion the rest, and only the
  tokens of assistant turns (with the template's end-of-turn tokens, so the model learns to
  stop) carry the loss, found by rendering the conversation turn by turn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError
from .generation import GenerationConfig, apply_chat_template, check_messages, encode_prompts
from .scoring import right_pad


@dataclass
class SFTBatch:
    prompt_ids: torch.Tensor  # (B, Lp) left-padded
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor  # (B, T) right-padded
    completion_mask: torch.Tensor  # attention: the completion's real tokens
    loss_mask: torch.Tensor  # the tokens that carry the loss (B, T)
    truncated: int = 0  # completions cut at max_completion_tokens

    def to(self, device) -> SFTBatch:
        return SFTBatch(*(t.to(device) for t in (self.prompt_ids, self.prompt_mask, self.completion_ids,
                                                  self.completion_mask, self.loss_mask)), self.truncated)


def conversation_of(example, response_field: str) -> list[dict]:
    """The example's whole conversation: its ``conversation`` (a ``messages`` record with its
    assistant turns), else its prompt (text or messages) with its response as the assistant turn."""
    if example.extra.get("conversation"):
        return example.extra["conversation"]
    prompt = example.extra.get("messages") or [{"role": "user", "content": example.text}]
    return [*prompt, {"role": "assistant", "content": response_of(example, response_field)}]


def response_of(example, response_field: str) -> str:
    value = example.extra.get(response_field)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"SFT example {example.index} ({example.text[:40]!r}) has no {response_field!r} response "
                        f"(method.response_field; its fields: {sorted(example.extra)})")
    return value


def _chat_parts(tokenizer, messages: list[dict], kwargs: dict) -> tuple[str, list[tuple[int, int]]]:
    """(completion text, assistant spans as character ranges of it) of a conversation whose prompt
    is ``messages[:first assistant turn]`` rendered with the generation prompt."""
    check_messages(messages, "an SFT conversation")
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not turns or turns[0] == 0:
        raise DataError("an SFT conversation needs a turn before the first assistant turn and an assistant turn to "
                        f"learn; roles: {[m['role'] for m in messages]}")
    full = apply_chat_template(tokenizer, messages, kwargs, add_generation_prompt=False)
    prompt = apply_chat_template(tokenizer, messages[:turns[0]], kwargs)
    spans = []
    for i in turns:
        start = len(apply_chat_template(tokenizer, messages[:i], kwargs))
        end_text = apply_chat_template(tokenizer, messages[:i + 1], kwargs, add_generation_prompt=False)
        if not (full.startswith(prompt) and full.startswith(end_text) and len(prompt) <= start <= len(end_text)):
            raise DataError("the chat template does not render this conversation turn by turn (an earlier turn "
                            "renders differently once later ones follow, as thinking templates do), so its "
                            "assistant tokens cannot be told apart")
        spans.append((start - len(prompt), len(end_text) - len(prompt)))
    return full[len(prompt):], spans


def _pad(rows: list[list[int]], width: int) -> torch.Tensor:
    return torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long)


def sft_batch(tokenizer, examples: list, config: GenerationConfig, response_field: str,
              max_completion_tokens: int) -> SFTBatch:
    """Token ids of ``examples`` for SFT (see the module's docstring); prompts are encoded as
    generation encodes them (``generation.max_prompt_tokens`` cuts their start), completions
    longer than ``max_completion_tokens`` are cut at the end (counted in ``truncated``)."""
    kwargs = dict(config.chat_template_kwargs or {})
    prompts, completions, masks = [], [], []
    for e in examples:
        if config.chat:
            conversation = conversation_of(e, response_field)
            completion, spans = _chat_parts(tokenizer, conversation, kwargs)
            enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
            ids = enc["input_ids"]
            mask = [int(any(a < end and b > start for start, end in spans)) for a, b in enc["offset_mapping"]]
            prompts.append(conversation[:next(i for i, m in enumerate(conversation) if m["role"] == "assistant")])
        else:
            eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
            ids = tokenizer(response_of(e, response_field), add_special_tokens=False)["input_ids"] + eos
            mask = [1] * len(ids)
            prompts.append(e.text)
        completions.append(ids)
        masks.append(mask)
    truncated = sum(len(ids) > max_completion_tokens for ids in completions)
    completions = [ids[:max_completion_tokens] for ids in completions]
    masks = [m[:max_completion_tokens] for m in masks]
    enc = encode_prompts(tokenizer, prompts, config, "cpu")  # chat: the template renders each prompt
    ids, attention = right_pad(tokenizer, completions)
    return SFTBatch(enc["input_ids"], enc["attention_mask"], ids, attention, _pad(masks, ids.shape[1]), truncated)
