"""What every workload shares: counting the examples a length limit truncates."""

from __future__ import annotations


def count_overlong(tokenizer, texts: dict[str, list[str]], limit: int, key: str, what: str) -> dict:
    """How many of each split's texts are longer than ``limit`` tokens (they get truncated); one
    warning with the counts, and the counts for the run's ``data.json``."""
    import logging

    counts: dict = {"max_length": limit}
    for name, items in texts.items():
        lengths = [len(ids) for ids in tokenizer(items)["input_ids"]] if items else []
        counts.update({f"{name}_{what}": len(items), f"{name}_truncated": sum(n > limit for n in lengths),
                       f"{name}_longest_tokens": max(lengths, default=0)})
    cut = {name: counts[f"{name}_truncated"] for name in texts}
    if any(cut.values()):
        logging.getLogger("softprompt").warning(
            "%s longer than %s=%d tokens are truncated from the left: %s (longest: %d tokens)", what, key, limit,
            ", ".join(f"{n} of {counts[f'{name}_{what}']} {name}" for name, n in cut.items()),
            max(counts[f"{name}_longest_tokens"] for name in texts))
    return counts
