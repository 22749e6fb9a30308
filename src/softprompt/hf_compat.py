"""What differs between the transformers versions softprompt supports (``transformers>=5.0,<6``).

transformers 5.24 renamed the KV-cache argument of every model's ``forward`` from
``past_key_values`` to ``cache`` (the old name still works there, with a FutureWarning on every
call, and goes in 5.40), and the outputs' ``past_key_values`` field to ``cache``. Every call
that passes or reads a KV cache goes through these two helpers, so the same code runs on both
sides of the rename without the warning.
"""

from __future__ import annotations

import functools
import inspect


@functools.lru_cache(maxsize=None)
def _cache_name(model_class: type) -> str:
    params = inspect.signature(model_class.forward).parameters  # follows the deprecation decorator's wraps
    return "cache" if "cache" in params else "past_key_values"


def cache_name(model) -> str:
    """The keyword ``model``'s forward takes its KV cache by: ``cache`` (transformers >= 5.24) or
    ``past_key_values`` (earlier, and models whose code predates the rename)."""
    return _cache_name(type(model))


def cache_kwarg(model, cache) -> dict:
    """``{'cache': cache}`` or ``{'past_key_values': cache}``, as ``model``'s forward names it."""
    return {cache_name(model): cache}


def output_cache(out):
    """The KV cache a forward returned: ``out.cache`` (transformers >= 5.24) or ``out.past_key_values``."""
    return out.cache if hasattr(out, "cache") else getattr(out, "past_key_values", None)
