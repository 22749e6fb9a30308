"""What differs between model families where soft prompts meet the backbone (docs/design.md,
"Model families"): sliding-window attention and learned absolute positions.

Everything else a family does differently is handled by transformers itself and needs nothing
here: Gemma's sqrt(hidden) embedding scale lives in its embedding module (virtual tokens start
from that module's outputs), Qwen3's per-head query/key norms act on the virtual tokens' keys like
on any token's, and PEFT knows each family's LoRA target modules (GPT-2's ``c_attn`` Conv1D).
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError

WINDOWED = ("sliding_attention", "chunked_attention")
#: the names transformers gives a learned absolute-position table (GPT-2, BERT, OPT)
POSITION_TABLES = ("wpe", "position_embeddings", "embed_positions")


def sliding_window(config) -> int | None:
    """The attention window of a model with sliding-window layers (Gemma-3's local layers, Mistral),
    else None. Within the window every layer sees the whole sequence."""
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    window = getattr(text, "sliding_window", None)
    if not window:
        return None
    layer_types = getattr(text, "layer_types", None)
    if layer_types is not None:
        return int(window) if any(t in WINDOWED for t in layer_types) else None
    return int(window) if getattr(text, "use_sliding_window", True) is not False else None


def position_limit(model: nn.Module) -> int | None:
    """How many positions a model with a learned absolute-position table has (GPT-2: 1024, BERT:
    512), else None (rotary positions have no table to run off)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and name.rsplit(".", 1)[-1] in POSITION_TABLES:
            return module.num_embeddings
    return None


def check_positions(limit: int | None, spec: str, used: int, virtual: int) -> None:
    """Refuse a layout of ``used`` positions (``virtual`` of them the adapter's) on a model whose
    position table holds ``limit`` (:func:`position_limit`; None: no table), with the numbers
    instead of an index error from inside torch."""
    if limit is not None and used > limit:
        raise ConfigError(f"{spec!r} has {limit} learned positions; this batch needs {used} ({virtual} virtual "
                          f"tokens + text + new tokens): shorten task.max_length, generation.max_prompt_tokens or "
                          f"generation.max_new_tokens, or use fewer virtual tokens")


def check_prefix_window(config, spec: str, n_prefix: int, length: int) -> None:
    """Refuse prefix tuning past a sliding window. The prefix sits in front of the left pads in the
    KV cache, so beyond the window how much of it a sliding layer still sees would depend on how
    much padding the row got from its batch-mates (and generation's sliding cache drops it)."""
    window = sliding_window(config)
    if window is not None and n_prefix and n_prefix + length > window:
        raise ConfigError(
            f"prefix tuning on {spec!r}: {n_prefix} prefix positions + {length} sequence positions exceed the "
            f"{window}-position sliding window of its local attention layers, where the prefix would leave the "
            f"window at a point set by the batch's padding; shorten the sequences (task.max_length, "
            f"generation.max_new_tokens) or use prompt_tuning, which slides like a hard prompt")
