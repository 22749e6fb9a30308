"""The KV cache goes by the keyword each transformers version takes (``past_key_values`` before
5.24, ``cache`` after), so no call of ours warns; pytest turns that FutureWarning into an error."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from softprompt.hf_compat import cache_kwarg, cache_name, output_cache


class Before:
    def forward(self, input_ids=None, past_key_values=None, use_cache=None):
        return past_key_values


class After:
    def forward(self, input_ids=None, cache=None, use_cache=None):
        return cache


def test_the_cache_keyword_follows_the_models_forward():
    assert cache_kwarg(Before(), "kv") == {"past_key_values": "kv"}
    assert cache_kwarg(After(), "kv") == {"cache": "kv"}
    assert Before().forward(**cache_kwarg(Before(), "kv")) == After().forward(**cache_kwarg(After(), "kv")) == "kv"


def test_the_returned_cache_is_read_by_either_name():
    @dataclass
    class OldOutput:
        logits: torch.Tensor | None = None
        past_key_values: object = None

    @dataclass
    class NewOutput:
        logits: torch.Tensor | None = None
        cache: object = None

    assert output_cache(OldOutput(past_key_values="kv")) == output_cache(NewOutput(cache="kv")) == "kv"


def test_installed_models_and_softprompt_agree(llama, bert):
    import transformers
    from packaging.version import Version

    expected = "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"
    assert cache_name(llama.model) == cache_name(llama.model.base_model) == cache_name(bert.model) == expected
